"""The package's house rules (CONTRIBUTING.md), checked on the source so that a change that breaks one fails.

- Stages are subpackages; only the shared vocabulary sits at the top of ``il6axis``.
- No import cycles between il6axis modules (imports inside functions count: a lazy import that closes a
  cycle is still a cycle in the design).
- No module over :data:`MAX_LINES` lines.
- No E402 suppressions: the matplotlib backend is set once (``il6axis.figures``) and scripts put ``workflow/``
  on ``sys.path`` through ``_workflow_path``.
- Loggers are named after their module (``logging.getLogger(__name__)``), so a moved module's log records
  move with it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workflow" / "il6axis"
MAX_LINES = 600
TOP_LEVEL = {"__init__", "errors", "runlog", "vocabulary", "jsonio"}
STAGES = {"acquire", "cohort", "de", "analysis", "figures", "report", "singlecell", "reads"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """il6axis modules that ``path`` imports: ``from il6axis.a import b`` counts as ``il6axis.a.b`` when
    that is a module, else as ``il6axis.a``."""
    found: set[str] = set()
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("il6axis")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("il6axis"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {m for m in found if m in known and m != this}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported_modules(path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    """The checker itself can fail: a three-module ring is reported, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_resolution_sees_from_imports_of_modules(tmp_path):
    """``from il6axis.x import y`` is an edge to module ``x.y`` when y is a module, else to ``x``; relative
    imports resolve against the importing module's package; imports inside functions count."""
    pkg = tmp_path / "il6axis"
    (pkg / "de").mkdir(parents=True)
    for name in ("__init__.py", "de/__init__.py", "de/contract.py", "errors.py"):
        (pkg / name).write_text("")
    (pkg / "de" / "nb.py").write_text(
        "from il6axis.de import contract\nfrom .contract import X\n"
        "def f():\n    from il6axis.errors import E\n"
    )
    known = {"il6axis", "il6axis.de", "il6axis.de.contract", "il6axis.de.nb", "il6axis.errors"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert imported_modules(pkg / "de" / "nb.py", known) == {"il6axis.de.contract", "il6axis.errors"}
    finally:
        PACKAGE = saved


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_sit_in_stage_subpackages():
    stray = []
    for name in modules():
        parts = name.split(".")[1:]
        if not parts:
            continue
        if len(parts) == 1 and parts[0] not in TOP_LEVEL and parts[0] not in STAGES:
            stray.append(name)
        if len(parts) >= 2 and parts[0] not in STAGES:
            stray.append(name)
    assert not stray, f"modules outside the stage subpackages {sorted(STAGES)}: {stray}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_size(name):
    lines = modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (limit {MAX_LINES}): split it by job"


def python_sources() -> list[Path]:
    return [
        p
        for folder in ("workflow", "tests", "bench")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if ".snakemake" not in p.parts
    ]


def test_no_e402_suppressions():
    marker = "noqa: " + "E402"  # split so that this file does not match itself
    offenders = [
        str(p.relative_to(ROOT)) for p in python_sources() if marker in p.read_text(encoding="utf-8")
    ]
    assert not offenders, (
        f"`{marker}` in {offenders}: import il6axis.figures (backend) / _workflow_path first"
    )


def test_loggers_are_named_after_their_module():
    hard_coded = re.compile(r"logging\.getLogger\(\s*[\"']")
    offenders = [
        module_name(p) for p in PACKAGE.rglob("*.py") if hard_coded.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"use logging.getLogger(__name__) in {offenders}"
