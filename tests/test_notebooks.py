"""Every tutorial notebook under ``notebooks/`` executes top to bottom without an error.

Each notebook runs in a fresh kernel (ipykernel's ``python3``, which jupyter_client starts with
this interpreter, ``sys.executable``) with a temporary working directory, so a notebook that
writes beside itself cannot dirty the checkout.
"""

from __future__ import annotations

from pathlib import Path

import nbclient  # from the test extra (pip install -e '.[test]'), with nbformat and ipykernel
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_notebook_folder_is_not_empty():
    # Parametrizing over an empty list would silently skip; an empty folder is a broken checkout.
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}; the tutorials are missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    assert all(not cell.outputs for cell in code_cells), f"{path.name} was saved with outputs; clear them"

    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on the first failing cell

    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    assert all(cell.execution_count is not None for cell in code_cells), f"{path.name}: a cell did not run"
    assert list(tmp_path.iterdir()) == [], f"{path.name} left files in its working directory"
