"""The one way benchmark scripts write into docs/*.md: a tagged section, replaced in place
when it already exists, appended otherwise."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, tag: str, text: str, title: str = "# Benchmarks\n\n") -> None:
    """Put `text` between `<!-- tag -->` and `<!-- end -->` in `path`."""
    path = Path(path)
    old = path.read_text() if path.exists() else title
    begin = f"<!-- {tag} -->"
    block = f"{begin}\n{text.rstrip()}\n<!-- end -->\n"
    if begin in old:
        head, _, rest = old.partition(begin)
        rest = rest.partition("<!-- end -->")[2].lstrip("\n")
        path.write_text(head + block + ("\n" + rest if rest else ""))
    else:
        path.write_text(old.rstrip() + "\n\n" + block)
