"""Datasets, one module per format, and `open_dataset`, the one place that turns a dataset
spec (a name or a path) into a dataset:

  base       ImageDataset (uint8 (N, C, H, W) in memory, labels, class names)
  idx        IDX files, Fashion-MNIST           cifar      CIFAR-10 python archive (no unpickling)
  folder     EDM image folders / zips            synthetic  generated shapes (tests)
  emoji      Noto Color Emoji rendered at a size
  latents    VAE latent datasets (`lowdiff dataset encode`) and decoding
  vae        autoencoders: loading (diffusers / LDM layout) and training (`lowdiff vae train`)

latents and vae need diffusers only when they encode or decode.
"""
from __future__ import annotations

from pathlib import Path

from .base import LATENT_MANIFEST, DatasetError, ImageDataset, pad_images
from .cifar import is_cifar, load_cifar10
from .folder import load_image_folder, save_image_folder
from .idx import load_fashion_mnist, load_idx_dataset, read_idx, write_idx
from .synthetic import make_synthetic


def is_latent_dir(path: str | Path) -> bool:
    """A latent dataset written by `lowdiff dataset encode` (its manifest latents.json)."""
    return (Path(path) / LATENT_MANIFEST).is_file()

__all__ = ["DatasetError", "ImageDataset", "SPEC_FORMS", "load_cifar10", "load_fashion_mnist", "load_image_folder",
           "make_synthetic", "open_dataset", "read_idx", "save_image_folder", "test_split", "write_idx"]

SPEC_FORMS = ("'fashion-mnist' or 'fashion-mnist:test'",
              "a cifar-10-python.tar.gz file or cifar-10-batches-py directory",
              "an IDX image file (*.idx, *-idx3-ubyte.gz)", "'synthetic', 'synthetic:N' or 'synthetic:N:RES'",
              "a directory or .zip of PNG/JPG images (optional dataset.json with labels)",
              "a latent directory written by `lowdiff dataset encode` (latents.json)",
              "'emoji' or 'emoji:RES' (Noto Color Emoji rendered at RES, default 64)")


def _spec_error(spec: str, reason: str) -> DatasetError:
    """A DatasetError for a bad spec, listing the accepted forms."""
    forms = "\n  ".join(SPEC_FORMS)
    return DatasetError(f"{reason}: {spec!r}; accepted dataset specs:\n  {forms}")


def _parse_synthetic(spec: str) -> ImageDataset:
    """'synthetic', 'synthetic:N' or 'synthetic:N:RES'."""
    parts = spec.split(":")[1:]
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise _spec_error(spec, "bad synthetic dataset spec")
    num, res = (int(p) for p in parts + ["256", "32"][len(parts):])
    return make_synthetic(num=num, resolution=res)


def _open_path(path: Path, split: str, use_labels: bool) -> ImageDataset:
    """Dispatch an existing path on its kind."""
    if is_cifar(path):
        return load_cifar10(path, split)
    name = path.name.lower()
    if path.is_file() and (name.endswith((".idx", ".gz")) or "idx" in name) and not name.endswith(".zip"):
        return load_idx_dataset(path)
    if path.is_dir() or name.endswith(".zip"):
        return load_image_folder(path, use_labels)
    raise _spec_error(str(path), "unrecognised dataset file")


def test_split(spec: str) -> str:
    """The held-out split of a dataset spec that has one (fashion-mnist, a CIFAR archive); else an error."""
    if spec.partition(":")[0] == "fashion-mnist":
        return "fashion-mnist:test"
    if Path(spec).exists() and is_cifar(Path(spec)):
        return spec
    raise DatasetError(f"--data {spec} has no test split of its own: pass --test-data (e.g. the test zip)")


def open_dataset(spec: str, *, split: str = "train", pad_to: int | None = None, side: int | None = None,
                 use_labels: bool = True) -> ImageDataset:
    """Open a dataset by name or path (see SPEC_FORMS); `pad_to` zero-pads any images to that resolution;
    `side`, the side of the network it is for, pads only the datasets made to be padded (Fashion-MNIST's
    28x28 images, else to 32x32); other sizes are left for the caller to refuse."""
    head, _, tail = spec.partition(":")
    if head == "fashion-mnist":
        if tail not in ("", "train", "test"):
            raise _spec_error(spec, "bad Fashion-MNIST split")
        return load_fashion_mnist(split=tail or split, pad_to=pad_to or side or 32)
    if head == "emoji":
        if tail and not tail.isdigit():
            raise _spec_error(spec, "bad emoji resolution")
        from .emoji import load_emoji
        ds = load_emoji(int(tail or 64))
    elif head == "synthetic":
        ds = _parse_synthetic(spec)
    elif is_latent_dir(spec):
        from .latents import LatentDataset
        return LatentDataset(spec)
    elif Path(spec).exists():
        ds = _open_path(Path(spec), split, use_labels)
    else:
        raise _spec_error(spec, "unknown dataset (not a known name and no such file or directory)")
    if pad_to is not None and pad_to != ds.resolution:
        ds = ImageDataset(pad_images(ds.images, pad_to, ds.name), ds.labels, ds.name, ds.class_names)
    return ds
