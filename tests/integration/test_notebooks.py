"""Execute the notebooks headless on small settings so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def run_notebook(name: str, overrides: str) -> nbformat.NotebookNode:
    """Run notebooks/NAME with ``overrides`` injected after its tagged parameters cell."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
            images += "image/png" in out.get("data", {})
    return "\n".join(text), images


def test_quickstart_notebook() -> None:
    nb = run_notebook(
        "quickstart.ipynb",
        "N_SAMPLES = 40\nRHOS = [0.8, 0.95]\nN_AROUND = 12\nSTEPS = 4\nN_LATENT = 60",
    )
    text, images = _outputs(nb)
    assert "moses-spcauchy-small.pt" in text
    assert "valid " in text
    # grid of samples, similarity plot, analogue grid, interpolation grid, sphere
    assert images >= 5


def test_mnist_sphere_notebook(tmp_path: Path) -> None:
    out = tmp_path / "mnist"
    nb = run_notebook(
        "mnist_sphere.ipynb",
        f"EPOCHS = 1\nTRAIN_SUBSET = 600\nTEST_SUBSET = 200\nLL_IMAGES = 10\nOUT = {str(out)!r}",
    )
    text, images = _outputs(nb)
    assert "best test reconstruction" in text
    assert (out / "latent_sphere.png").exists()
    assert images >= 4  # sphere, reconstructions, prior samples, curves


def test_own_molecules_notebook(tmp_path: Path) -> None:
    data = tmp_path / "mine.csv"
    rows = (REPO / "data" / "chembl_drugs" / "drugs.csv").read_text().splitlines()
    data.write_text("\n".join(rows[:121]) + "\nCC(=O)Oc1ccccc1C(=O)O\n")
    out = tmp_path / "run"
    nb = run_notebook(
        "own_molecules.ipynb",
        f"DATA = {str(data)!r}\nOUT = {str(out)!r}\nMAX_STEPS = 3\nN_SAMPLES = 10\nN_AROUND = 6",
    )
    text, images = _outputs(nb)
    assert "new tokens added to the vocabulary" in text and "[C@@H]" in text
    assert "molecules encoded" in text and "analogues of" in text
    assert (out / "model.pt").exists() and (out / "latent.csv").exists()
    assert images >= 4  # training curves, latent map, samples grid, analogues grid


def test_design_notebook(tmp_path: Path) -> None:
    out = tmp_path / "design"
    nb = run_notebook("design.ipynb", f"BUDGET = 60\nOUT = {str(out)!r}\nTOP = 4")
    text, images = _outputs(nb)
    assert "aggregate" in text and "60 calls" in text
    assert (out / "results.csv").exists() and (out / "best.png").exists()
    assert images >= 2  # score curve, grid of the best molecules
