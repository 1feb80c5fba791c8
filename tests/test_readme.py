"""The README cannot drift from the CLI: every `lowdiff` line of its code blocks (and every
`torchrun ... -m lowdiff.cli` line) parses with today's options, names bundled models that
exist, and the runnable blocks keep the files they read inside the repository."""
import re
import shlex
from pathlib import Path

import pytest

from lowdiff import bundled
from lowdiff.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def command_lines() -> list[tuple[str, list[str]]]:
    """(block language, lowdiff argv) of every command line in the README's code blocks."""
    out = []
    for lang, body in BLOCK.findall((ROOT / "README.md").read_text()):
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["lowdiff"]:
                out.append((lang, words[1:]))
            elif words[:1] == ["torchrun"] and "lowdiff.cli" in words:
                out.append((lang, words[words.index("lowdiff.cli") + 1:]))
    return out


LINES = command_lines()


def test_the_readme_has_command_lines_in_runnable_and_template_blocks():
    assert len([1 for lang, _ in LINES if lang == "bash"]) >= 30
    assert any(lang == "text" for lang, _ in LINES)


@pytest.mark.parametrize("lang, argv", LINES, ids=[" ".join(a)[:70] for _, a in LINES])
def test_every_readme_command_parses(lang, argv):
    args = build_parser().parse_args(argv)          # argparse exits (SystemExit 2) on an unknown or bad option
    spec = getattr(args, "checkpoint", None)
    if spec and spec.startswith(bundled.PREFIX):
        assert spec[len(bundled.PREFIX):] in bundled.models()
    if lang == "bash":                               # runnable as written: inputs come from runs/ or the package
        for option in ("ref", "images", "plan", "data"):
            value = getattr(args, option, None)
            assert not (isinstance(value, str) and value.startswith("..")), f"--{option} {value} leaves the repo"
