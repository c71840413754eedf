"""Drive every page of the app in a real headless Chromium, doing what a user does, and save a screenshot of each.

Usage::

    python scripts/screenshots.py --out screenshots                 # the tour over $FER_RUNS_DIR (or ./runs)
    python scripts/screenshots.py --out screenshots --runs /tmp/r   # over another runs folder
    python scripts/screenshots.py --out docs/screenshots --compact --from-runs runs --copy exp-base-s0 \\
        --copy e1-scn-noise --compare exp-base-baseline-label_noise0.3,exp-base-scn-label_noise0.3
                                                                    # the README's screenshots (`make screenshots`)
    python scripts/screenshots.py --out screenshots --demo          # empty folder: click the demo button,
                                                                    # shoot the progress bar and the finished run

The tour opens the eleven pages in turn and checks each: Home; Data sets (the SynthFACS playground, a class prototype
picked); Train (the ``configs/smoke.yaml`` recipe chosen and launched, followed until the page says it finished);
Run; Compare runs (two runs); Confusion browser (a cell of the matrix clicked, its faces and Grad-CAM overlays
shown); Explain a face (a photo uploaded, the maps of every fast method shown); Predict photos (the photo and a
broken file uploaded together: the table, the chart and the unreadable file shown); Explain a video (the example
clip of two SynthFACS faces: a timeline per face with the true classes, scrubbed to a frame whose face, probabilities
and Grad-CAM map are shown); Filters and activations (a few
channels, few steps); SCN attention. A runs folder without a finished SCN run gets a tiny one first
(``python -m fer_core train``, seconds). Every check that fails raises :class:`TourError` naming the page and the
step, after saving ``<page>_failed.png``. The app server, the runs the tour starts and any tiny run it trains are
always stopped before the script returns.

Needs Debian's Chromium (``apt-get install -y --no-install-recommends chromium``) and the ``playwright`` Python
package (``requirements-dev.txt``); no browser download. The app runs as ``streamlit run app/Home.py`` on a free
port; after each action the script waits for Streamlit's "connected" and "script not running" markers, the same way
Streamlit's own end-to-end tests do, and then for what the action should show.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CONNECTED = "[data-testid=stApp][data-test-connection-state=CONNECTED]"
IDLE = "[data-test-script-state=notRunning]"
PAGES = ("home", "datasets", "train", "run", "compare", "confusion", "explain", "predict", "video", "filters", "scn")
"""The tour's pages in order; each is saved as ``<name>.png`` and opened at ``/<url path>`` (Home at ``/``)."""
URL_PATHS = {name: "" if name == "home" else name for name in PAGES}
# A tiny SCN run (3 epochs on 64 faces of 32x32, 30% label noise): the one tests/test_app_data.py trains.
SCN_OVERRIDES = ("data.options.image_size=32", "data.options.train_size=64", "data.options.val_size=32",
                 "data.options.test_size=32", "model.input_size=32", "train.batch_size=32", "train.epochs=3",
                 "model.name=scn", "model.options.backbone=small_cnn", "train.method.name=scn",
                 "train.method.relabel_epoch=1", "train.method.margin_2=0.0", "data.label_noise=0.3",
                 "name=tiny-scn")
LOGS = ("streamlit.log", "scn_run.log")  # kept in --out only when the tour fails
TRAIN_RECIPE = "smoke.yaml"  # the Train page's recipe: a whole run in seconds
STEP_CHOICES = [2, 4, 8, 16, 32, 64, 128, 256]  # the Filters page's gradient-ascent steps slider
FAST_METHODS = ("saliency", "gradcam", "gradcam++", "layercam", "scorecam_fast")  # app/pickers.py's FAST_METHODS
VIDEO_TIME_S = 3.0  # the Explain a video page is scrubbed to the first frame at or after this time of its example


class TourError(AssertionError):
    """A page did not show what the tour expected; the message names the page and the step."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, wait: float = 10.0) -> None:
    """SIGTERM a child started with ``start_new_session=True`` and its whole process group; SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def serve_app(runs_dir: Path, log_path: Path, port: int | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Run the app on a free port with ``FER_RUNS_DIR=runs_dir``; yield its base URL; stop it afterwards.

    Raises:
        RuntimeError: the server did not answer ``/_stcore/health`` within ``timeout`` seconds (see ``log_path``).
    """
    port = port or free_port()
    env = {**os.environ, "FER_RUNS_DIR": str(runs_dir)}
    cmd = [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}; see {log_path}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy in {timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
        yield base
    finally:
        _stop_group(proc)


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the app is connected and no script run is in progress, then let plotly finish drawing."""
    page.wait_for_selector(CONNECTED, timeout=timeout_ms)
    page.wait_for_selector(IDLE, timeout=timeout_ms, state="attached")
    page.wait_for_timeout(600)


def expect(locator):
    """Playwright's retrying assertions on ``locator`` (``to_have_count``, ``to_contain_text``...), up to 30 s."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=30_000)
    return playwright_expect(locator)


def exceptions_on(page) -> list[str]:
    """Texts of any Streamlit exception boxes on the page."""
    return [e.inner_text() for e in page.query_selector_all("[data-testid=stException]")]


def errors_on(page) -> list[str]:
    """Texts of any ``st.error`` boxes on the page."""
    return [e.inner_text() for e in page.query_selector_all("[data-testid=stAlertContentError]")]


def compact_png(path: Path) -> None:
    """Rewrite a screenshot as a 256-colour PNG (a third of the size; median cut keeps the heatmaps' blues)."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def grab(page, path: Path) -> None:
    """A full-page screenshot of the app into ``path``, mouse and focus out of the way (no plotly toolbar, no
    tooltip, no focus ring)."""
    page.mouse.move(page.viewport_size["width"] // 2, 5)  # the empty header: no hover effect anywhere
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focus ring
    # Streamlit scrolls inside its main container, not the body: grow the viewport to the content's height.
    viewport = page.viewport_size
    height = page.evaluate("() => (document.querySelector('[data-testid=stMain]') || document.body).scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], min(int(height), 12000))})
    page.wait_for_timeout(800)  # plotly redraws at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)


def shoot(page, out: Path, name: str, *, compact: bool = False, allow_errors: bool = False) -> Path:
    """Save a full-page PNG ``out/name.png`` and return its path; fails if the page shows an exception (or, unless
    ``allow_errors``, an ``st.error`` message)."""
    problems = exceptions_on(page) + ([] if allow_errors else errors_on(page))
    path = out / f"{name}.png"
    grab(page, path)
    if compact:
        compact_png(path)
    if problems:
        raise TourError(f"{name}: the page shows an error (screenshot {path}):\n" + "\n".join(problems))
    print(f"saved {path} ({path.stat().st_size // 1024} KB)", flush=True)
    return path


def open_page(page, url: str) -> None:
    """Navigate to ``url`` and wait until the app is idle."""
    page.goto(url)
    wait_idle(page)


# --------------------------------------------------------------------------------------------- runs
def runs_in(runs_dir: Path) -> list[dict]:
    """The run summaries of ``fer_core.io.list_runs``, newest first."""
    from fer_core import io

    return list(io.list_runs(runs_dir))


def find_run(runs: list[dict], wanted: str, what: str) -> dict:
    """The newest finished run whose id or config name is ``wanted``."""
    for r in runs:
        if r["state"] == "done" and wanted in (r["run_id"], r.get("name")):
            return r
    raise TourError(f"{what}: no finished run named {wanted!r} in the runs folder "
                    f"({', '.join(r['run_id'] for r in runs) or 'empty'})")


def copy_runs(source: Path, names: list[str], target: Path) -> None:
    """Copy runs (by id, config name or group) from ``source`` into ``target``; never writes into ``source``."""
    from fer_core import io

    found = list(io.list_runs(source))
    for name in names:
        chosen = [r for r in found if name in (r["run_id"], r.get("group"))]
        chosen = chosen or [r for r in found if r.get("name") == name][:1]
        if not chosen:
            raise SystemExit(f"--copy {name}: no run or group of that name in {source}")
        for r in chosen:
            if not (target / r["run_id"]).exists():
                shutil.copytree(r["path"], target / r["run_id"], ignore=shutil.ignore_patterns("*.lock"))


def start_scn_run(runs_dir: Path, log_path: Path) -> subprocess.Popen:
    """Start training the tiny SCN run into ``runs_dir`` (a child process in its own session; seconds)."""
    cmd = [sys.executable, "-m", "fer_core", "train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--quiet",
           "--runs-dir", str(runs_dir), "--run-id", "tour-tiny-scn"]
    for item in SCN_OVERRIDES:
        cmd += ["--set", item]
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_active_runs(runs_dir: Path) -> None:
    """Cancel every queued or running run in ``runs_dir`` (the ones the tour launched from the Train page)."""
    from fer_core import io, lifecycle

    for r in io.list_runs(runs_dir):
        if r["state"] in ("queued", "running"):
            with contextlib.suppress(Exception):
                lifecycle.cancel_run(r["path"])
                print(f"cancelled {r['run_id']}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- the tour
@dataclass
class Tour:
    """One browser tab going through the pages; ``step`` names what it is doing for the error messages."""

    page: Any
    base: str
    runs_dir: Path
    out: Path
    compact: bool = False
    train_timeout: float = 180.0
    filters: tuple[int, int] = (3, 8)  # channels per layer, gradient-ascent steps
    main_run: str | None = None
    scn_job: subprocess.Popen | None = None
    name: str = ""
    shots: list[Path] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Turn any failure inside into a :class:`TourError` naming the page and ``what``, with a screenshot."""
        try:
            yield
        except Exception as err:
            failed = self.out / f"{self.name}_failed.png"
            with contextlib.suppress(Exception):
                grab(self.page, failed)
            shown = "\n".join(exceptions_on(self.page) + errors_on(self.page)) if not self.page.is_closed() else ""
            raise TourError(f"{self.name} page, step '{what}': {type(err).__name__}: {err}"
                            + (f"\nthe page shows: {shown}" if shown else "") + f"\n(screenshot {failed})") from err

    def open(self, name: str, **query: str) -> None:
        """Go to a page (``?query``), wait until the app is idle and its title is there."""
        self.name = name
        url = f"{self.base}/{URL_PATHS[name]}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with self.step(f"open {url}"):
            open_page(self.page, url)
            self.page.locator("h1").first.wait_for(timeout=30_000)

    def see(self, text: str | re.Pattern, what: str | None = None, timeout: float = 60.0, within: Any = None):
        """Wait until ``text`` is visible (in ``within``, default the page); returns its locator."""
        with self.step(what or f"see {text!r}"):
            found = (within or self.page).get_by_text(text).first
            found.wait_for(timeout=int(timeout * 1000))
            return found

    def heading(self, text: str) -> None:
        with self.step(f"see the heading {text!r}"):
            self.page.get_by_role("heading", name=text).first.wait_for(timeout=30_000)

    def idle(self) -> None:
        with self.step("wait for the app to finish the script run"):
            wait_idle(self.page)

    def widget(self, testid: str, label: str):
        """The widget of a kind (``stSelectbox``, ``stNumberInput``...) whose label contains ``label``."""
        return self.page.get_by_test_id(testid).filter(has=self.page.get_by_test_id("stWidgetLabel").filter(
            has_text=label)).first

    def choose(self, label: str, option: str) -> None:
        """Pick ``option`` in the select box labelled ``label``."""
        with self.step(f"choose {option!r} in {label!r}"):
            box = self.widget("stSelectbox", label)
            box.click()
            box.locator("input").fill(option)
            self.page.get_by_role("option", name=option, exact=True).first.click()
        self.idle()

    def number(self, label: str, value: int) -> None:
        """Type ``value`` into the number box labelled ``label``."""
        with self.step(f"set {label!r} to {value}"):
            field_ = self.widget("stNumberInput", label).locator("input")
            field_.fill(str(value))
            field_.press("Enter")
        self.idle()

    def images(self, caption: str | re.Pattern):
        """Image elements whose caption contains ``caption``."""
        return self.page.get_by_test_id("stImageCaption").filter(has_text=caption)

    def shoot(self) -> Path:
        with self.step("save the screenshot"):
            self.page.wait_for_selector("[data-testid=stSpinner]", state="detached", timeout=60_000)
            path = shoot(self.page, self.out, self.name, compact=self.compact)
        self.shots.append(path)
        return path


def tour_home(t: Tour) -> None:
    t.open("home")
    t.heading("FER Lab")
    for title in ("Runs", "Data sets", "Models"):
        t.heading(title)
    with t.step("the runs table lists the runs"):
        expect(t.page.get_by_test_id("stDataFrame")).to_have_count(2)  # the runs, the models
    t.shoot()


def tour_datasets(t: Tour) -> None:
    t.open("datasets")
    t.heading("Data sets")
    t.heading("Classes")
    with t.step("open the SynthFACS playground tab"):
        t.page.get_by_role("tab", name="SynthFACS playground").click()
    t.choose("Start from a class prototype", "surprise")
    with t.step("the face is redrawn with surprise's action units and the model predicts"):
        t.images("AU 1 1.00").first.wait_for(timeout=30_000)  # surprise raises the brows: AU 1 and 2
        t.page.get_by_test_id("stMetric").filter(has_text="Prediction").first.wait_for(timeout=30_000)
        panel = t.page.get_by_test_id("stTabPanel").filter(has_text="Move the facial").first
        expect(panel.locator("[data-testid=stPlotlyChart]")).to_have_count(1)  # the probabilities
    t.shoot()


def tour_train(t: Tour) -> str:
    """Launch the smoke recipe from the form, follow it until it finished; returns its run id."""
    t.open("train")
    t.heading("New run")
    t.choose("Start from a recipe", TRAIN_RECIPE)
    with t.step("the form shows the recipe's values"):
        name = t.widget("stTextInput", "run name").locator("input")
        name.wait_for(timeout=30_000)
        expect(name).to_have_value("smoke")
    with t.step("the config validates (no problems listed)"):
        expect(t.page.get_by_text("Fix these before launching")).to_have_count(0)
    with t.step("click Launch training"):
        t.page.get_by_role("button", name="Launch training").click()
        t.page.wait_for_url(re.compile(r"[?&]run="), timeout=60_000)
    run_id = urllib.parse.parse_qs(urllib.parse.urlparse(t.page.url).query)["run"][0]
    print(f"launched {run_id}", flush=True)
    t.see(re.compile(r"Finished \d+ epochs"), f"run {run_id} reaches done in the page", timeout=t.train_timeout)
    t.idle()
    with t.step("the finished run shows its learning curves"):
        t.page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=30_000)
    t.shoot()
    return run_id


def tour_run(t: Tour, run_id: str) -> None:
    t.open("run", run=run_id)
    t.heading("Learning curves")
    t.heading("Evaluation")
    with t.step(f"run {run_id} is shown with its curves and confusion matrix"):
        expect(t.page.get_by_role("heading", name=run_id).first).to_be_visible()
        t.page.locator("[data-testid=stPlotlyChart]").nth(2).wait_for(timeout=30_000)
    t.shoot()


def tour_compare(t: Tour, run_ids: list[str]) -> None:
    t.open("compare", runs=",".join(run_ids))
    for title in ("Config differences", "Metrics per test subset", "Learning curves", "Two runs in detail"):
        t.heading(title)
    with t.step(f"the runs {', '.join(run_ids)} are the ones compared"):
        picked = t.widget("stMultiSelect", "Runs to compare")
        for run_id in run_ids:
            expect(picked).to_contain_text(run_id)
        t.page.locator("[data-testid=stPlotlyChart]").nth(2).wait_for(timeout=30_000)
    t.shoot()


def _cell_to_click(run_dir: Path) -> tuple[list[str], int, int, int, int]:
    """(class names, true, predicted, faces in the cell, faces of the true class) of the cell the tour clicks: the
    second most frequent confusion (the page preselects the first), else the fullest diagonal cell."""
    import numpy as np

    from fer_core import compare, io

    result = io.read_eval(run_dir)["test/all"]
    counts = np.asarray(result["confusion"], dtype=int)
    skip = tuple(compare.top_confusion(counts))
    order = sorted(((int(counts[i, j]), i != j, i, j) for i in range(len(counts)) for j in range(len(counts))
                    if (i, j) != skip and counts[i, j] > 0), key=lambda c: (c[1], c[0]), reverse=True)
    if not order:
        raise TourError(f"confusion page: {run_dir.name}'s test/all matrix has no second non-empty cell to click")
    n, _mistake, true, pred = order[0]
    return list(result["class_names"]), true, pred, n, int(counts[true].sum())


def tour_confusion(t: Tour, run_id: str) -> None:
    t.open("confusion", run=run_id)
    t.heading("Confusion browser")
    names, true, pred, n, row = _cell_to_click(t.runs_dir / run_id)
    with t.step(f"click the cell true {names[true]} / predicted {names[pred]} in the matrix"):
        chart = t.page.get_by_test_id("stPlotlyChart").first
        chart.wait_for(timeout=30_000)
        points = chart.locator(".scatterlayer path.point")  # the invisible marker over each cell, row by row
        expect(points).to_have_count(len(names) ** 2)
        box = points.nth(true * len(names) + pred).bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        t.page.mouse.move(x, y)
        t.page.wait_for_timeout(300)
        t.page.mouse.click(x, y)
    t.see(f"{n} of the {row} {names[true]} faces", f"the page describes the clicked cell ({n} faces)")
    t.idle()
    shown = min(n, 12)
    with t.step(f"the {shown} faces of the cell appear with Grad-CAM overlays of {names[pred]}"):
        t.images(f"Grad-CAM of {names[pred]}").nth(shown - 1).wait_for(timeout=60_000)
        expect(t.images("Grad-CAM of")).to_have_count(shown)
    t.shoot()


def tour_explain(t: Tour, photo: Path) -> None:
    t.open("explain")
    t.heading("Explain a face")
    with t.step(f"upload {photo.name}"):
        t.page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(photo))
    t.heading("Prediction")
    t.idle()
    with t.step("the face is found and every fast method's map is drawn"):
        expect(t.page.get_by_text("No face found")).to_have_count(0)
        t.images("the crop the model sees").first.wait_for(timeout=30_000)
        for method in FAST_METHODS:
            t.images(f"{method} ·").first.wait_for(timeout=60_000)
        expect(t.page.get_by_test_id("stMetric").filter(has_text="Top class")).to_have_count(1)
    t.shoot()


def tour_predict(t: Tour, photo: Path) -> None:
    t.open("predict")
    t.heading("Predict photos")
    bad = photo.with_name("not_a_photo.jpg")
    bad.write_bytes(b"this is text, not a JPEG")
    with t.step(f"upload {photo.name} and a broken file together"):
        t.page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(photo), str(bad)])
    t.heading("Every face")
    t.idle()
    with t.step("the table, the per-class chart and the unreadable file are shown"):
        t.page.locator("[data-testid=stPlotlyChart]").first.wait_for(timeout=60_000)
        expect(t.page.get_by_text("not_a_photo.jpg").first).to_be_visible()
        expect(t.page.get_by_test_id("stDownloadButton")).to_have_count(1)
    t.shoot()


def tour_video(t: Tour) -> None:
    t.open("video")
    t.heading("Explain a video")
    with t.step("click Try an example clip"):
        t.page.get_by_role("button", name="Try an example clip").click()
    t.heading("Timeline")  # the clip rendered (first time: seconds) and every frame predicted
    t.idle()
    with t.step(f"scrub to {VIDEO_TIME_S:.1f} s"):
        slider = t.widget("stSlider", "Frame")
        for _ in range(1000):  # one key press at a time, reading the time the thumb shows ("2.40 s (frame 24)")
            shown = float(slider.get_by_test_id("stSliderThumbValue").inner_text().split(" s")[0])
            if shown >= VIDEO_TIME_S:
                break
            slider.get_by_role("slider").press("ArrowRight")
            t.page.wait_for_timeout(150)
        assert shown >= VIDEO_TIME_S, f"the slider shows {shown} s"
    t.idle()
    t.see(re.compile(rf"The frame at {shown:.2f} s"), "the page shows the scrubbed frame")
    with t.step("a timeline per face with the true classes, the face's crop, probabilities and Grad-CAM map"):
        expect(t.page.get_by_text(re.compile(r"^Face \d · smoothed class = true class in"))).to_have_count(2)
        t.images("the crop the model sees").first.wait_for(timeout=60_000)
        t.images("gradcam ·").first.wait_for(timeout=60_000)
        expect(t.page.locator("[data-testid=stPlotlyChart]")).to_have_count(3)  # two timelines, the probabilities
        expect(t.page.get_by_test_id("stDownloadButton")).to_have_count(1)
    t.shoot()


def tour_filters(t: Tour) -> None:
    channels, steps = t.filters
    t.open("filters")
    t.heading("Filters and activations")
    t.number("Channels per layer", channels)
    with t.step(f"set the gradient-ascent steps to {steps}"):
        slider = t.widget("stSlider", "Gradient-ascent steps")
        for _ in range(2 * len(STEP_CHOICES)):  # one key press at a time, reading the value the thumb shows
            shown = int(slider.get_by_test_id("stSliderThumbValue").inner_text().strip())
            if shown == steps:
                break
            slider.get_by_role("slider").press("ArrowRight" if shown < steps else "ArrowLeft")
            t.page.wait_for_timeout(250)
        assert shown == steps, f"the slider shows {shown}"
    t.idle()
    t.see(f"optimised for {steps} steps", "the filters are redrawn with the new number of steps")
    with t.step(f"{channels} channels per layer are drawn"):
        t.images(f"channel {channels - 1}").first.wait_for(timeout=60_000)
        expect(t.images(f"channel {channels}")).to_have_count(0)  # no more channels than asked for
    t.shoot()


def tour_scn(t: Tour, run_id: str) -> None:
    t.open("scn", run=run_id)
    for title in ("Importance weights", "Faces SCN trusts least and most", "Relabel events"):
        t.heading(title)
    with t.step("the weight histograms and the 8 lowest- and 8 highest-weighted faces are drawn"):
        t.page.locator("[data-testid=stPlotlyChart]").nth(1).wait_for(timeout=30_000)
        t.images(re.compile(r"^\d\.\d{3} · ")).nth(15).wait_for(timeout=60_000)
    t.shoot()


def _newest(runs: list[dict], scn: bool | None = None, exclude: tuple[str, ...] = ()) -> dict | None:
    for r in runs:
        if r["state"] == "done" and r["run_id"] not in exclude and (scn is None or (r.get("model") == "scn") == scn):
            return r
    return None


def tour(page, base: str, runs_dir: Path, out: Path, photo: Path, *, compact: bool = False,
         compare: list[str] | None = None, main_run: str | None = None, train_timeout: float = 180.0,
         filters: tuple[int, int] = (3, 8), scn_job: subprocess.Popen | None = None) -> list[Path]:
    """Every page in turn (see the module docstring); returns the screenshots, ``out/<page>.png``."""
    t = Tour(page, base, runs_dir, out, compact=compact, train_timeout=train_timeout, filters=filters)
    if scn_job is not None:  # before Home, so that no page changes under the tour while that run trains
        t.name = "home"
        with t.step("wait for the tiny SCN run to finish training"):
            code = scn_job.wait(timeout=300)
            assert code == 0, f"`python -m fer_core train` (tiny SCN) exited with {code}; see {out / LOGS[1]}"
    tour_home(t)
    tour_datasets(t)
    launched = tour_train(t)
    runs = runs_in(runs_dir)
    main = find_run(runs, main_run, "--run")["run_id"] if main_run else launched
    tour_run(t, main)
    if compare:
        ids = [find_run(runs, name, "--compare")["run_id"] for name in compare]
    else:
        other = _newest(runs, exclude=(main,))
        ids = [main] + ([other["run_id"]] if other else [])
    tour_compare(t, ids)
    tour_confusion(t, main)
    tour_explain(t, photo)
    tour_predict(t, photo)
    tour_video(t)
    tour_filters(t)
    scn = _newest(runs, scn=True)
    if scn is None:
        raise TourError("scn page: no finished SCN run in the runs folder")
    tour_scn(t, scn["run_id"])
    return t.shots


def astronaut_photo(folder: Path) -> Path:
    """``skimage.data.astronaut()`` (one smiling face) as a JPEG in ``folder``."""
    from PIL import Image
    from skimage import data

    path = folder / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=90)
    return path


def shoot_demo(page, base: str, out: Path, timeout_s: float) -> list[Path]:
    """Empty runs folder: click the demo button, shoot the progress bar, wait for the run to finish, shoot again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shots = []
    open_page(page, base)
    shots.append(shoot(page, out, "demo_0_empty"))
    page.get_by_role("button", name="Train a demo model on SynthFACS").click()
    page.wait_for_selector("[data-testid=stProgress]", timeout=60_000)
    with contextlib.suppress(PlaywrightTimeout):  # catch the bar part-way if the run is slow enough to show it
        page.get_by_text("· epoch 1/").wait_for(timeout=int(timeout_s * 1000))
    wait_idle(page)
    shots.append(shoot(page, out, "demo_1_progress"))
    finished = page.get_by_text("has finished")
    finished.wait_for(timeout=int(timeout_s * 1000))
    wait_idle(page)
    shots.append(shoot(page, out, "demo_2_finished"))
    page.get_by_role("link", name="See its learning curves").click()
    wait_idle(page)
    page.wait_for_timeout(1000)
    shots.append(shoot(page, out, "demo_3_run"))
    return shots


def _keep_logs(work: Path, out: Path) -> bool:
    """Copy the app server's and the tiny SCN run's logs next to the screenshots (after a failure)."""
    for log in LOGS:
        if (work / log).exists():
            shutil.copy(work / log, out / log)
            print(f"kept {out / log}", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve the app, drive Chromium, write the PNGs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder for the PNGs")
    parser.add_argument("--runs", type=Path, default=None,
                        help="runs folder (default: $FER_RUNS_DIR or ./runs); the tour adds its own runs to it")
    parser.add_argument("--from-runs", type=Path, default=None,
                        help="copy --copy runs from this folder into a temporary runs folder and tour that")
    parser.add_argument("--copy", action="append", default=[], metavar="RUN_OR_GROUP",
                        help="with --from-runs: a run id, a run name or a group to copy (repeat for more)")
    parser.add_argument("--run", default=None, help="run (id or name) for the Run and Confusion pages "
                        "(default: the one the tour launches from the Train page)")
    parser.add_argument("--compare", default=None, help="two or more runs (ids or names, comma-separated) for the "
                        "Compare page (default: the --run run and the newest other finished run)")
    parser.add_argument("--filters", default="3,8", metavar="CHANNELS,STEPS",
                        help="channels per layer and gradient-ascent steps on the Filters page (default 3,8)")
    parser.add_argument("--compact", action="store_true", help="save 256-colour PNGs (for docs/screenshots)")
    parser.add_argument("--train-timeout", type=float, default=180.0, help="seconds for the Train page's run")
    parser.add_argument("--demo", action="store_true", help="start from an empty runs folder and click the demo")
    parser.add_argument("--demo-config", type=Path, default=None,
                        help="config the demo button trains (sets FER_DEMO_CONFIG; default configs/synth_quick.yaml)")
    parser.add_argument("--demo-timeout", type=float, default=600.0, help="seconds to wait for the demo run")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    try:
        channels, steps = (int(v) for v in args.filters.split(","))
        assert steps in STEP_CHOICES and 1 <= channels <= 32
    except (ValueError, AssertionError):
        parser.error(f"--filters: CHANNELS (1-32),STEPS (one of {STEP_CHOICES}), not {args.filters!r}")
    filters = (channels, steps)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install -y --no-install-recommends chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    if args.demo_config:
        os.environ["FER_DEMO_CONFIG"] = str(args.demo_config.resolve())
    # A plain SIGTERM (e.g. from `timeout`) must still stop the app server and the runs: turn it into an exception.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    args.out.mkdir(parents=True, exist_ok=True)
    for stale in [*args.out.glob("*_failed.png"), *(args.out / log for log in LOGS)]:
        stale.unlink(missing_ok=True)
    start = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fer-tour-")))
            stack.push(lambda kind, *_: kind is not None and _keep_logs(work, args.out))  # on failure only
            if args.demo:
                runs_dir = work / "runs"
                runs_dir.mkdir()
            elif args.from_runs:
                runs_dir = work / "runs"
                runs_dir.mkdir()
                copy_runs(args.from_runs.resolve(), args.copy, runs_dir)
            else:
                runs_dir = (args.runs or Path(os.environ.get("FER_RUNS_DIR") or ROOT / "runs")).resolve()
                runs_dir.mkdir(parents=True, exist_ok=True)
            scn_job = None
            if not args.demo:
                stack.callback(stop_active_runs, runs_dir)
                if _newest(runs_in(runs_dir), scn=True) is None:
                    scn_job = start_scn_run(runs_dir, work / LOGS[1])
                    stack.callback(_stop_group, scn_job)
            base = stack.enter_context(serve_app(runs_dir, work / LOGS[0]))
            pw = stack.enter_context(sync_playwright())
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            stack.callback(browser.close)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            if args.demo:
                shoot_demo(page, base, args.out, args.demo_timeout)
            else:
                tour(page, base, runs_dir, args.out, astronaut_photo(work), compact=args.compact,
                     compare=[c for c in (args.compare or "").split(",") if c] or None, main_run=args.run,
                     train_timeout=args.train_timeout, filters=filters, scn_job=scn_job)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"done in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
