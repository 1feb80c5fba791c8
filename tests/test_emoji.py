"""The colour emoji dataset (Noto Color Emoji + Unicode's emoji-test.txt): labels from the
groups, deterministic renders, clear errors when the Debian packages are missing."""
import numpy as np
import pytest

from lowdiff.data import open_dataset
from lowdiff.errors import DatasetError
from lowdiff.data.emoji import EMOJI_FONT, EMOJI_TEST, load_emoji, read_emoji_test

needs_files = pytest.mark.skipif(not (EMOJI_FONT.is_file() and EMOJI_TEST.is_file()),
                                 reason="fonts-noto-color-emoji / unicode-data not installed")


@needs_files
def test_emoji_renders_labelled_rgb_images_deterministically():
    a = load_emoji(32, limit=12)
    b = load_emoji(32, limit=12)
    assert a.images.shape == (12, 3, 32, 32) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert a.class_names[0] == "Smileys & Emotion" and len(a.class_names) == 9
    assert a.images[:, :, 0, 0].min() > 200                     # composited on white
    assert len({img.tobytes() for img in a.images}) == 12         # duplicates are dropped


@needs_files
def test_emoji_skin_tones_are_excluded_by_default():
    entries = read_emoji_test()
    assert any("\U0001F3FB" in t for t, _ in entries)
    assert len(entries) > 3000


def test_emoji_errors_say_what_to_install(tmp_path):
    with pytest.raises(DatasetError, match="fonts-noto-color-emoji"):
        load_emoji(64, font_path=tmp_path / "none.ttf")
    with pytest.raises(DatasetError, match="unicode-data"):
        read_emoji_test(tmp_path / "none.txt")
    with pytest.raises(DatasetError, match="power of two"):
        load_emoji(48)
    with pytest.raises(DatasetError, match="bad emoji resolution"):
        open_dataset("emoji:big")
