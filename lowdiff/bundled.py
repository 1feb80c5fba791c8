"""The files shipped inside the package (lowdiff/assets): bundled models, the bundled VAE and
the FID classifier, named on the command line as `bundled:NAME`."""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

ASSETS = Path(__file__).resolve().parent / "assets"
PREFIX = "bundled:"


def names() -> list[str]:
    return sorted(p.name for p in ASSETS.iterdir() if p.is_dir())


def models() -> list[str]:
    """The bundled models (`lowdiff sample --checkpoint bundled:NAME`): model directories, not the
    VAE or the classifiers."""
    return [n for n in names() if (ASSETS / n / "model.safetensors").is_file()]


def resolve(spec: str | Path) -> Path:
    """`bundled:NAME` -> lowdiff/assets/NAME; any other spec is a path, returned as is."""
    text = str(spec)
    if not text.startswith(PREFIX):
        return Path(spec)
    name = text[len(PREFIX):]
    if name not in names():
        raise CheckpointError(f"no bundled asset {name!r}; bundled: {', '.join(names())}")
    return ASSETS / name
