"""notebooks/quickstart.ipynb runs top to bottom (synth → infer → fine-tune → evaluate → adapt).

About a minute on 2 cores, with the bundled model (or DETECTOR_WEIGHTS naming another
bundle); part of the default suite, so CI executes the notebook.
"""

import json
import os
from pathlib import Path

from detector.bundle import BUNDLED_WEIGHTS

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
WEIGHTS = Path(os.environ.get("DETECTOR_WEIGHTS", BUNDLED_WEIGHTS))


def test_notebook_outputs_are_stripped():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_quickstart_notebook_runs(tmp_path, monkeypatch, cli_env):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", cli_env["PYTHONPATH"])  # the kernel imports this checkout
    monkeypatch.setenv("QUICKSTART_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("DETECTOR_WEIGHTS", str(WEIGHTS))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    report = json.loads((tmp_path / "work" / "evaluate" / "report.json").read_text())
    assert report["n_scenes"] == 2 and not report["failed"]
    assert (tmp_path / "work" / "infer" / "scene_000.counts.json").exists()
    card = json.loads((tmp_path / "work" / "adapt" / "adapted.json").read_text())
    assert card["adapted_from"]["held_out"]["after"]["scenes"] == 2
