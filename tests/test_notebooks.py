"""The teaching notebooks: jupytext sources ``notebooks/NN_name.py`` built into the committed
``notebooks/NN_name.ipynb`` by ``scripts/build_notebooks.py``, committed with full-mode outputs,
small, and executable top to bottom in quick mode on this environment's kernel.

The execution tests run a copy of each committed notebook (the committed files are never
rewritten) with ``PYRO_SPAM_QUICK=1``; a cell that raises fails the test with the cell's traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
MAX_BYTES = 1_500_000  # readable on GitHub; a figure at the notebooks' 72 dpi is well under 200 kB
CELL_TIMEOUT = 300  # seconds per cell; in quick mode the slowest cell takes well under a minute


def _builder():
    """The notebook builder, imported from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BUILDER = _builder()
SOURCES = {src.stem: src for src in BUILDER.sources()}
NAMES = sorted(f"{stem}.ipynb" for stem in SOURCES)


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NB_DIR / name, as_version=4)


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
    return "".join(parts)


def test_every_source_has_its_committed_notebook():
    """The notebooks folder pairs each source ``NN_name.py`` with ``NN_name.ipynb`` and holds nothing unpaired."""
    assert SOURCES, "no notebook sources found in notebooks/"
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == NAMES
    assert sorted(p.name for p in NB_DIR.glob("*.py")) == sorted(src.name for src in SOURCES.values())


@pytest.mark.parametrize("name", NAMES)
def test_committed_cells_match_the_source(name):
    """Committed cell sources equal the jupytext source's cells, so editing one without the other is caught."""
    committed, built = _read(name), BUILDER.build(SOURCES[name.removesuffix(".ipynb")])
    hint = f"notebooks/{name} differs from notebooks/{name.removesuffix('.ipynb')}.py: rebuild with --execute"
    assert [c.cell_type for c in committed.cells] == [c.cell_type for c in built.cells], hint
    for i, (a, b) in enumerate(zip(committed.cells, built.cells, strict=True)):
        assert a.source == b.source, f"cell {i}: {hint}"


def test_every_source_starts_with_the_shared_setup_cell():
    """The setup cell (imports, quick-mode switch, seed) is the first code cell of every notebook, word for word."""
    setups = {name: next(c.source for c in BUILDER.build(src).cells if c.cell_type == "code")
              for name, src in SOURCES.items()}
    assert len(set(setups.values())) == 1, f"the notebooks' first code cells differ: {sorted(setups)}"
    assert 'print("quick mode" if QUICK else "full mode")' in next(iter(setups.values()))


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_come_from_one_full_run(name):
    """Every code cell ran once, in order, in full mode, without an error; figures are embedded; the file is small."""
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not executed top to bottom in one run"
    assert _text(code[0]).strip() == "full mode", "committed outputs must come from a full-mode run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name} was committed with an error output: {errors[0].ename}: {errors[0].evalue}"
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 2, f"{name} shows {images} figures"
    size = (NB_DIR / name).stat().st_size
    assert size < MAX_BYTES, f"{name} is {size / 1e6:.2f} MB (limit {MAX_BYTES / 1e6:.1f} MB)"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_in_quick_mode(name, tmp_path, monkeypatch):
    """A copy of the committed notebook runs top to bottom in quick mode on this environment's python."""
    from nbclient import NotebookClient

    nb = _read(name)
    probe = nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)")
    nb.cells.insert(0, probe)
    for cell in nb.cells:  # start from a clean copy: the committed outputs must not mask a failure
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    monkeypatch.setenv(BUILDER.QUICK_ENV, "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # conftest's Agg cannot show()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(nb, tmp_path / name)  # kept in pytest's tmp dir for inspection
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert _text(code[0]).strip() == sys.prefix, "the kernel is not this environment's python"
    assert _text(code[1]).strip() == "quick mode"
