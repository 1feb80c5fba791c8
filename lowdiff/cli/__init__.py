"""`lowdiff` command line (see `lowdiff COMMAND --help`): one module per command, each with its
options (`register`) and its handler (`run`) side by side; shared option groups in `common`.

Every option is checked before any work starts (values, devices, output paths, reference
statistics); a problem is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..checks import resolve_device
from ..errors import LowdiffError
from . import bench, dataset, evaluation, presets, sample, train, tune, vae
from .common import INTERRUPTED, Parser

PACKAGE = Path(__file__).resolve().parents[1]             # lowdiff/: where our own warnings come from
COMMANDS = (presets, train, sample, evaluation, dataset, vae, bench, tune)     # in `lowdiff --help` order


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="lowdiff", description="LowDiff: cascaded multi-resolution diffusion with one "
                                "unified network. Train, sample, evaluate, benchmark and tune.")
    p.add_argument("--version", action="version", version=f"lowdiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if hasattr(args, "device"):
        args.device = resolve_device(args.device)
    warnings.formatwarning = _format_warning
    try:
        return args.func(args) or 0
    except (LowdiffError, ValueError, OSError) as e:
        print(f"lowdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "alloc" not in str(e) and "out of memory" not in str(e):
            raise
        print(f"lowdiff {args.command}: error: out of memory ({str(e).splitlines()[0][:120] or 'MemoryError'}); "
              "lower --batch, or use a smaller model", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lowdiff {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """lowdiff's own warnings as `lowdiff: warning: ...`; those of torch and other libraries
    keep their origin (file:line: Category: message)."""
    if Path(filename).resolve().is_relative_to(PACKAGE):
        return f"lowdiff: warning: {message}\n"
    return f"{filename}:{lineno}: {category.__name__}: {message}\n"


__all__ = ["INTERRUPTED", "build_parser", "main"]
