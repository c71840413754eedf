"""The real-browser tests: the app served on 127.0.0.1 and driven in headless Chromium.

The first runs the tour of ``scripts/screenshots.py`` (the same one ``make screenshots`` uses for the README) over an
empty runs folder: the tour trains a tiny SCN run first, launches ``configs/smoke.yaml`` from the Train page and
watches it finish, clicks a confusion-matrix cell, uploads a photo on the Explain page, and checks what each page
shows, failing with the page and step that went wrong. About two minutes. The second is a new user's first click:
Home's demo button on an empty runs folder, followed to the end by Home's own 1-second polling fragment (which
AppTest cannot fire). They need Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package
(``requirements-dev.txt``); without either they are skipped, saying which is missing.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from apphelpers import TINY
from PIL import Image

from fer_core import io
from fer_core.config import load_config

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


def _needs_a_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}: apt-get install -y --no-install-recommends chromium "
                    "(.ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="needs the playwright package: pip install -r "
                        "requirements-dev.txt (make test installs it)")


def test_every_page_works_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _needs_a_browser()
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


def _table_rows(table) -> list[list[str]]:
    """The cell texts of an ``st.dataframe``, row by row (from the grid's accessibility table; its canvas has none)."""
    return [[cell.inner_text() for cell in row.locator("[role=gridcell]").all()]
            for row in table.locator("tbody tr").all()]


def test_demo_button_is_followed_to_done_without_a_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fresh clone, no runs: the demo button trains a run, Home's "Training now" panel follows it with no exception
    (the polling fragment once called a helper that a later one of the same name had replaced), and when the run
    ends the page reruns by itself: the success message, and the runs table saying done, without a reload."""
    _needs_a_browser()
    from playwright.sync_api import sync_playwright

    screenshots = _screenshots_module(monkeypatch)
    runs = tmp_path / "runs"
    runs.mkdir()
    demo = tmp_path / "demo.yaml"  # configs/smoke.yaml made tiny: seconds, most of them the child's start
    demo.write_text(load_config(ROOT / "configs" / "smoke.yaml", TINY).to_yaml())
    monkeypatch.setenv("FER_DEMO_CONFIG", str(demo))
    shots = tmp_path / "png"
    shots.mkdir()

    with (screenshots.serve_app(runs, tmp_path / "streamlit.log") as base, sync_playwright() as pw):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=screenshots.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            screenshots.open_page(page, base)
            page.get_by_text("No runs yet").wait_for(timeout=30_000)

            def no_exception(when: str) -> None:
                shown = screenshots.exceptions_on(page)
                if shown:
                    screenshots.grab(page, shots / "demo_failed.png")
                assert not shown, f"{when}: the page shows an exception (screenshot in {shots}):\n" + "\n".join(shown)

            page.get_by_role("button", name="Train a demo model on SynthFACS").click()
            page.get_by_role("heading", name="Training now").wait_for(timeout=60_000)
            no_exception("right after the click")
            finished = page.get_by_text("has finished")
            deadline, polls = time.monotonic() + 180, 0
            while not finished.count():  # look at every step: the panel redraws once a second
                no_exception(f"while the demo run trains ({polls / 2:.0f} s after the click)")
                assert time.monotonic() < deadline, "no 'has finished' 180 s after the click"
                page.wait_for_timeout(500)
                polls += 1
            assert polls >= 2, "the run ended before the panel had polled it once: make the demo slower"
            screenshots.wait_idle(page)
            no_exception("after the run finished")

            (run_dir,) = runs.iterdir()
            assert io.run_state(run_dir) == "done"
            assert page.get_by_role("heading", name="Training now").count() == 0
            table = page.get_by_test_id("stDataFrame").first  # the runs table (the models table comes later)
            rows = _table_rows(table)
            assert len(rows) == 1 and rows[0][:2] == [f"run?run={run_dir.name}", "done"], rows
        finally:
            browser.close()
