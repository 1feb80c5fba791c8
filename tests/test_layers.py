"""The package's import structure: no cycles, and no import from a lower layer to a higher
one, in the layer order documented in docs/architecture.md ("Layers" line)."""
import ast
import re
from pathlib import Path

import lowdiff

PACKAGE = Path(lowdiff.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def documented_layers() -> dict[str, int]:
    """{top-level part: layer} from the line 'Layers, lowest first: a, b | c | ...'."""
    line = next(line for line in DOC.read_text().splitlines() if line.startswith("Layers, lowest first:"))
    groups = line.split(":", 1)[1].strip().rstrip(".").split("|")
    return {re.sub(r"[`\s]", "", name): i for i, group in enumerate(groups) for name in group.split(",")}


def module_name(path: Path) -> str:
    parts = ("lowdiff",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every lowdiff module `path` imports, at any depth of the file (function-level too)."""
    name, is_package = module_name(path), path.name == "__init__.py"
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lowdiff")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("lowdiff"):
                continue
            for alias in node.names:                     # `from . import pyramid` names a module
                candidate = f"{base}.{alias.name}"
                out.add(candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).is_file() else base)
    return out - {name}


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_part_of_the_package_has_a_documented_layer():
    layers = documented_layers()
    assert {part(m) for m in GRAPH} <= set(layers), set(map(part, GRAPH)) - set(layers)


def test_no_import_goes_up_a_layer():
    layers = documented_layers()
    upward = [(m, t) for m, targets in GRAPH.items() for t in targets if layers[part(t)] > layers[part(m)]]
    assert not upward, upward


def test_no_import_cycles():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_sampling_never_imports_training_code():
    def reach(m, seen):
        for t in GRAPH.get(m, ()):
            if t not in seen:
                seen.add(t)
                reach(t, seen)
        return seen
    assert not {m for m in reach("lowdiff.pipeline", set()) if part(m) == "train"}
