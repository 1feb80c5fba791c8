"""Colour emoji from Noto Color Emoji as a small real RGB dataset (the FFHQ-64 analogue of
our CPU experiments, from the Debian packages fonts-noto-color-emoji and unicode-data).

Every fully-qualified emoji of Unicode's emoji-test.txt is rendered with the font's colour
bitmaps (Pillow with RAQM shaping, so ZWJ sequences and flags are one glyph), cropped to
its ink, padded to a square, composited on white and resized (Lanczos). Labels are the
emoji-test.txt groups (Smileys & Emotion, People & Body, ...). Pixel-identical renders are
kept once. Deterministic: the order is emoji-test.txt's.

Files: Debian packages fonts-noto-color-emoji and unicode-data (`make setup` installs them).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from .base import DatasetError, ImageDataset

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_SIZE = 109                                # the font's only bitmap strike
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}


def read_emoji_test(path: Path = EMOJI_TEST) -> list[tuple[str, str]]:
    """(sequence, group) for each fully-qualified emoji of emoji-test.txt, in file order."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing: install the Debian package unicode-data "
                           "(apt-get install unicode-data, or `make setup` as root)")
    out, group = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            codes = line.split(";", 1)[0].split()
            out.append(("".join(chr(int(c, 16)) for c in codes), group))
    return out


def render_emoji(text: str, font: ImageFont.FreeTypeFont, resolution: int) -> np.ndarray | None:
    """One emoji as uint8 (3, R, R) on white; None when it does not render as one glyph."""
    canvas = Image.new("RGBA", (4 * FONT_SIZE, 2 * FONT_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    w, h = glyph.size
    if w > 1.6 * FONT_SIZE:                     # several glyphs side by side: not one emoji here
        return None
    side = max(w, h)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - w) // 2, (side - h) // 2))
    img = square.convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def load_emoji(resolution: int = 64, skin_tones: bool = False, limit: int | None = None,
               font_path: Path = EMOJI_FONT, emoji_test: Path = EMOJI_TEST) -> ImageDataset:
    """The emoji dataset at `resolution` (a power of two); without skin-tone variants by default."""
    if resolution < 8 or resolution & (resolution - 1):
        raise DatasetError(f"emoji resolution must be a power of two >= 8, got {resolution}")
    if not font_path.is_file():
        raise DatasetError(f"{font_path} is missing: install the Debian package fonts-noto-color-emoji "
                           "(apt-get install fonts-noto-color-emoji, or `make setup` as root)")
    if not features.check("raqm"):
        raise DatasetError("Pillow was built without RAQM text shaping: emoji sequences would render as "
                           "several glyphs; install the PyPI Pillow wheel")
    font = ImageFont.truetype(str(font_path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    entries = [(t, g) for t, g in read_emoji_test(emoji_test) if skin_tones or not SKIN_TONES & set(t)]
    groups = list(dict.fromkeys(g for _, g in entries))
    images, labels, seen = [], [], set()
    for text, group in entries:
        img = render_emoji(text, font, resolution)
        if img is None:
            continue
        digest = hashlib.sha1(img.tobytes()).digest()
        if digest in seen:
            continue
        seen.add(digest)
        images.append(img)
        labels.append(groups.index(group))
        if limit is not None and len(images) >= limit:
            break
    if not images:
        raise DatasetError(f"no emoji rendered from {font_path}")
    name = f"emoji-{resolution}" + ("-skin-tones" if skin_tones else "")
    return ImageDataset(np.stack(images), np.array(labels, dtype=np.int64), name, groups)
