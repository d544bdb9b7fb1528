"""The layering and style rules hold: import-linter's contracts (pyproject.toml), ruff, and no import
cycle among the package's modules counting every import (top level, ``TYPE_CHECKING`` and
function-local alike). Run by the test command, so CI enforces them on every change."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_spam"


def _tool(name: str) -> str:
    """The console script installed next to this interpreter (the [dev] extra installs both tools)."""
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the [dev] extra: pip install -c constraints.txt -e '.[dev]'")
    return found


def test_import_contracts_hold():
    """lint-imports: imports point down the layers, the manual ELBO imports no Pyro, and numbers,
    drawing, the report and persistence import no torch or Pyro."""
    out = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_is_clean():
    """ruff check (rules in pyproject.toml) passes on the package, the tests, the benchmarks, the
    scripts and the notebook sources."""
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "pyro_spam", "tests", "benchmarks", "scripts", "notebooks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every pyro_spam module that ``path`` imports, wherever the import statement stands."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    # `from pkg import mod` names a module; `from mod import name` names the module itself
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    """No cycle in the module import graph (every kind of import counted): one-way data flow."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, _module_name(p), modules) for p in files}
    # parents' __init__ files are imported implicitly and hold no code that imports back
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for mod in sorted(graph):
        if state.get(mod) is None and visit(mod, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(dict.fromkeys(cycle))
