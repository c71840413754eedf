"""The real-browser test: the app served on 127.0.0.1 and driven through every page in headless Chromium.

It runs the tour of ``scripts/screenshots.py`` (the same one ``make screenshots`` uses for the README) over an empty
runs folder: the tour trains a tiny SCN run first, launches ``configs/smoke.yaml`` from the Train page and watches it
finish, clicks a confusion-matrix cell, uploads a photo on the Explain page, and checks what each page shows, failing
with the page and step that went wrong. It needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright``
package (``requirements-dev.txt``); without either it is skipped, saying which is missing. About two minutes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_core import io

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _screenshots_module(monkeypatch: pytest.MonkeyPatch):
    """scripts/screenshots.py as a module (registered while the test runs, as its dataclass needs)."""
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "screenshots", module)
    spec.loader.exec_module(module)
    return module


def test_every_page_works_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}: apt-get install -y --no-install-recommends chromium "
                    "(.ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="needs the playwright package: pip install -r "
                        "requirements-dev.txt (make test installs it)")
    screenshots = _screenshots_module(monkeypatch)
    runs, out = tmp_path / "runs", tmp_path / "png"
    runs.mkdir()
    monkeypatch.setenv("FER_RUNS_DIR", str(runs))

    assert screenshots.main(["--out", str(out), "--runs", str(runs)]) == 0

    assert sorted(p.stem for p in out.glob("*.png")) == sorted(screenshots.PAGES), "one screenshot per page"
    for name in screenshots.PAGES:
        path = out / f"{name}.png"
        assert path.stat().st_size > 30_000, f"{path.name} is nearly empty"
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"))
        assert pixels.shape[1] == 1400 and pixels.shape[0] >= 900, f"{path.name} is {pixels.shape}"
        assert pixels.std() > 10, f"{path.name} is nearly uniform"

    # The tour's two runs (the tiny SCN run, and the run launched from the Train page) finished, and nothing it
    # started is still alive.
    found = {r["run_id"]: r for r in io.list_runs(runs)}
    assert len(found) == 2 and {r["state"] for r in found.values()} == {"done"}
    assert {r["model"] for r in found.values()} == {"scn", "small_cnn"}
    for run in found.values():
        status = io.read_status(run["path"])
        assert not (status.get("pid") and io.pid_alive(status["pid"], status.get("pid_start"))), run["run_id"]
    assert not (out / "streamlit.log").exists(), "logs are kept only when the tour fails"
