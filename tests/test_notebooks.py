"""Execute the example notebooks headless with small parameters (papermill-style)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED = EXAMPLES.parents[1] / "shared" / "data" / "brain-tumor-figshare"

SMALL = {
    "01_quickstart.ipynb": dict(n_pool=120, n_test=60, image_size=32, initial=12, rounds=2,
                                query_size=8, epochs=2),
    "02_sklearn_integration.ipynb": dict(n_samples=150, image_size=32, epochs=2, alphas=[0.0, 1.0],
                                         uncertainties=["entropy"], budget=44, seeds=1),
    "03_real_mri.ipynb": dict(data_path=str(SHARED), image_size=32, initial=30, rounds=1,
                              query_size=10, epochs=2),
    "04_labelling_campaign.ipynb": dict(data_path=str(SHARED), n_pool=60, image_size=32,
                                        batch=8, epochs=2),
}


def inject(nb, params):
    """Insert a cell after the one tagged "parameters", as papermill does."""
    pos = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(pos + 1, cell)
    return nb


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, tmp_path):
    if name == "03_real_mri.ipynb" and not (SHARED / "labels.csv").is_file():
        pytest.skip(f"{SHARED} absent")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks without outputs"
    inject(nb, SMALL[name])
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images or name == "02_sklearn_integration.ipynb"  # the plots were drawn


def test_docs_build_without_warnings(tmp_path):
    sphinx = pytest.importorskip("sphinx.cmd.build")
    root = EXAMPLES.parent
    status = sphinx.build_main(["-W", "--keep-going", "-q", "-b", "html", "-d",
                                str(tmp_path / "doctrees"), str(root / "docs"),
                                str(tmp_path / "html")])
    assert status == 0
    assert (tmp_path / "html" / "api.html").read_text().count("dual_criterion_sampling") > 1
