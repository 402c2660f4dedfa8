"""`experiments/quickstart.ipynb` runs top to bottom on CPU and is committed without outputs (issue 6).

Needs the notebook tools (`nbformat`, `nbclient`, `ipykernel`); skips without
them. The pairing with `quickstart.py` is checked when `jupytext` is installed.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
NOTEBOOK = EXPERIMENTS / "quickstart.ipynb"


def test_notebook_is_stripped_and_paired():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, f"{NOTEBOOK}: no code cells"
  assert all(not c.outputs and c.execution_count is None for c in code), (
      f"{NOTEBOOK}: outputs must be stripped before committing")
  jupytext = pytest.importorskip("jupytext")
  paired = jupytext.read(EXPERIMENTS / "quickstart.py")
  assert [c.source for c in paired.cells] == [c.source for c in nb.cells], (
      "quickstart.ipynb and quickstart.py differ: run `jupytext --sync experiments/quickstart.py`")


def test_notebook_executes(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  monkeypatch.setenv("SSLMD_QUICKSTART_DIR", str(tmp_path))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "")  # One CPU device in the kernel, as on a laptop.
  monkeypatch.delenv("MPLBACKEND", raising=False)  # The kernel's inline backend draws the figures.
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(EXPERIMENTS)}})
  with warnings.catch_warnings():
    # The kernel machinery (jupyter_client, zmq, tornado) may warn about its own deprecations.
    warnings.simplefilter("ignore", DeprecationWarning)
    client.execute()
  text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.get("output_type") == "stream")
  assert "abs_rel" in text and "5-frame ATE" in text, text[-2000:]
  assert (tmp_path / "run" / "eval" / "metrics.json").exists()
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) >= 3, "expected the loss, depth and trajectory figures"
  assert os.path.exists(tmp_path / "run" / "config.json")
