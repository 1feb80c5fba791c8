"""Colour end to end: channel order and value range through the readers (image folders / zips,
CIFAR archives, emoji), grids, sample folders and the FID classifier."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_preset
from lowdiff.data import ImageDataset, load_cifar10, open_dataset, save_image_folder
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.images import FolderWriter, save_grid
from lowdiff.pipeline import Pipeline
from test_data import write_tar


def known_rgb() -> np.ndarray:
    """(3, 32, 32) uint8: red rises left to right, green top to bottom, blue constant, a pure red corner."""
    ramp = np.arange(32, dtype=np.uint8) * 8
    img = np.stack([np.tile(ramp, (32, 1)), np.tile(ramp[:, None], (1, 32)), np.full((32, 32), 200, np.uint8)])
    img[:, :4, :4] = np.array([255, 0, 0], np.uint8)[:, None, None]
    return img


def fake_cifar_with(img: np.ndarray, path):
    """A CIFAR-10 python archive whose first test image is `img` (CIFAR rows: R plane, G plane, B plane)."""
    row = img.reshape(1, 3072)
    batch = pickle.dumps({b"labels": [3], b"data": row, b"filenames": [b"x.png"]})
    meta = pickle.dumps({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                          b"horse", b"ship", b"truck"]})
    write_tar(path, {"test_batch": batch, "batches.meta": meta,
                     **{f"data_batch_{i}": batch for i in range(1, 6)}})
    return path


def test_a_known_rgb_image_survives_readers_grid_and_folder(tmp_path):
    img = known_rgb()
    ds = ImageDataset(img[None], np.array([3]), "known", [str(c) for c in range(10)])
    save_image_folder(ds, tmp_path / "ds.zip")
    from_zip = open_dataset(str(tmp_path / "ds.zip"))
    from_cifar = load_cifar10(fake_cifar_with(img, tmp_path / "cifar-10-python.tar.gz"), split="test")
    for loaded in (from_zip, from_cifar):                     # both readers: (N, 3, H, W), R first
        assert loaded.images.shape == (1, 3, 32, 32) and loaded.images.dtype == np.uint8
        assert np.array_equal(loaded.images[0], img) and loaded.labels.tolist() == [3]
    save_grid(torch.from_numpy(img[None]), tmp_path / "g.png", pad=0, ncol=1)
    grid = Image.open(tmp_path / "g.png")
    assert grid.mode == "RGB" and np.array_equal(np.asarray(grid).transpose(2, 0, 1), img)
    writer = FolderWriter(tmp_path / "out")
    writer(torch.from_numpy(img[None]), [7])
    again = open_dataset(str(tmp_path / "out"))
    assert np.array_equal(again.images[0], img)
    assert tuple(np.asarray(Image.open(tmp_path / "out" / "000007.png"))[0, 0]) == (255, 0, 0)


def test_an_rgb_model_samples_colour_images_that_reload_equal(tmp_path):
    torch.manual_seed(0)
    preset = tiny_preset(channels=3, label_dim=10)
    out = Pipeline(Denoiser.from_preset(preset).eval(), preset)(seeds=[0, 1, 2], batch=3)
    assert out.images.shape == (3, 3, 32, 32) and out.images.dtype == torch.uint8
    writer = FolderWriter(tmp_path / "s", [str(c) for c in range(10)])
    writer(out.images, out.seeds, out.class_labels)
    back = open_dataset(str(tmp_path / "s"), use_labels=False)
    assert np.array_equal(back.images, out.images.numpy())
    save_grid(out.images, tmp_path / "g.png", scale=2)
    assert Image.open(tmp_path / "g.png").mode == "RGB"
    save_grid(out.images, tmp_path / "labelled.png", ncol=1, row_labels=["a", "b", "c"])
    labelled = np.asarray(Image.open(tmp_path / "labelled.png"))
    assert tuple(labelled[0, 0]) == (255, 255, 255)                 # white behind the labels, not red


def test_rgb_classifier_reads_rgb_and_gray(tmp_path):
    from lowdiff.eval.classifier import ImageClassifier
    model = ImageClassifier(width=4, name="cifar-cnn-v1").eval()
    assert model.in_channels == 3 and model.feature_dim == 32
    rgb = torch.from_numpy(known_rgb()[None]).repeat(2, 1, 1, 1)
    gray = rgb[:, :1]
    with torch.inference_mode():
        assert model(rgb).shape == (2, 10)
        assert torch.allclose(model(gray), model(gray.expand(2, 3, 32, 32)))       # gray repeated to RGB
        assert not torch.allclose(model(rgb), model(rgb.flip(1)))                  # channel order matters


@pytest.mark.skipif(not __import__("lowdiff.data.emoji", fromlist=["EMOJI_FONT"]).EMOJI_FONT.is_file(),
                    reason="fonts-noto-color-emoji not installed")
def test_emoji_and_cifar_readers_agree_on_layout(tmp_path):
    from lowdiff.data.emoji import load_emoji
    emoji = load_emoji(32, limit=4)
    cifar = load_cifar10(fake_cifar_with(known_rgb(), tmp_path / "cifar-10-python.tar.gz"), split="test")
    for ds in (emoji, cifar):
        assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (3, 32, 32) and ds.channels == 3
        assert ds.labels.dtype == cifar.labels.dtype


CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR_JPEG / "cifar10-jpeg-test.zip").is_file(), reason="shared CIFAR-10 JPEGs not here")
def test_the_shared_cifar_jpeg_zip_reads_as_cifar10():
    """The EDM-layout zip of CIFAR-10 JPEGs reads like the python archive would: 10,000 RGB
    32x32 test images, 1,000 per class, classes in CIFAR-10 order."""
    ds = open_dataset(str(CIFAR_JPEG / "cifar10-jpeg-test.zip"))
    assert ds.images.shape == (10_000, 3, 32, 32) and ds.images.dtype == np.uint8
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"] and len(ds.class_names) == 10
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    means = ds.images.reshape(10_000, 3, -1).mean(axis=(0, 2))
    assert 120 < means[0] < 130 and 118 < means[1] < 127 and 108 < means[2] < 118     # CIFAR-10's R > G > B
