"""Screenshot every page of the app in a real headless Chromium (a developer tool, not part of CI).

Usage::

    python scripts/screenshots.py --out screenshots                 # pages over $FER_RUNS_DIR (or ./runs)
    python scripts/screenshots.py --out screenshots --runs /tmp/r   # over another runs folder
    python scripts/screenshots.py --out screenshots --demo          # empty folder: click the demo button,
                                                                    # shoot the progress bar and the finished run

Needs Debian's Chromium (``apt-get install -y --no-install-recommends chromium``) and the ``playwright`` Python
package (``requirements-dev.txt``); no browser download. The app runs as ``streamlit run app/Home.py`` on a free
port; after each action the script waits for Streamlit's "connected" and "script not running" markers, the same way
Streamlit's own end-to-end tests do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CONNECTED = "[data-testid=stApp][data-test-connection-state=CONNECTED]"
IDLE = "[data-test-script-state=notRunning]"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the app is connected and no script run is in progress, then let plotly finish drawing."""
    page.wait_for_selector(CONNECTED, timeout=timeout_ms)
    page.wait_for_selector(IDLE, timeout=timeout_ms, state="attached")
    page.wait_for_timeout(600)


def exceptions_on(page) -> list[str]:
    """Texts of any Streamlit exception boxes on the page."""
    return [e.inner_text() for e in page.query_selector_all("[data-testid=stException]")]


def shoot(page, out: Path, name: str) -> Path:
    """Save a full-page PNG ``out/name.png`` and return its path; fails if the page shows an exception."""
    errors = exceptions_on(page)
    path = out / f"{name}.png"
    # Streamlit scrolls inside its main container, not the body: grow the viewport to the content's height.
    viewport = page.viewport_size
    height = page.evaluate("() => (document.querySelector('[data-testid=stMain]') || document.body).scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], min(int(height), 12000))})
    page.wait_for_timeout(800)  # plotly redraws at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)
    if errors:
        raise RuntimeError(f"{name}: the page shows an exception (screenshot {path}):\n" + "\n".join(errors))
    print(f"saved {path}")
    return path


def open_page(page, url: str) -> None:
    """Navigate to ``url`` and wait until the app is idle."""
    page.goto(url)
    wait_idle(page)


def shoot_pages(page, base: str, runs_dir: Path, out: Path) -> list[Path]:
    """Home, then the Run page of the newest run of each state (done, running, failed, interrupted...)."""
    sys.path.insert(0, str(ROOT))
    from fer_core import io

    shots = []
    open_page(page, base)
    shots.append(shoot(page, out, "home"))
    seen: set[str] = set()
    for run in io.list_runs(runs_dir):
        if run["state"] in seen:
            continue
        seen.add(run["state"])
        open_page(page, f"{base}/run?run={run['run_id']}")
        shots.append(shoot(page, out, f"run_{run['state']}"))
        if run["state"] == "done":
            page.get_by_role("tab", name="occlusion").click()
            wait_idle(page)
            shots.append(shoot(page, out, "run_done_occlusion"))
            page.get_by_text("Normalise rows").click()
            wait_idle(page)
            shots.append(shoot(page, out, "run_done_occlusion_counts"))
    if not seen:
        open_page(page, f"{base}/run")
        shots.append(shoot(page, out, "run_empty"))
    return shots


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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve the app, drive Chromium, write the PNGs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder for the PNGs")
    parser.add_argument("--runs", type=Path, default=None, help="runs folder (default: $FER_RUNS_DIR or ./runs)")
    parser.add_argument("--demo", action="store_true", help="start from an empty runs folder and click the demo")
    parser.add_argument("--demo-config", type=Path, default=None,
                        help="config the demo button trains (sets FER_DEMO_CONFIG; default configs/synth_quick.yaml)")
    parser.add_argument("--demo-timeout", type=float, default=600.0, help="seconds to wait for the demo run")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install -y --no-install-recommends chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    if args.demo_config:
        os.environ["FER_DEMO_CONFIG"] = str(args.demo_config.resolve())
    # A plain SIGTERM (e.g. from `timeout`) must still stop the app server: turn it into an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.demo:
            runs_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fer-demo-runs-")))
        else:
            runs_dir = (args.runs or Path(os.environ.get("FER_RUNS_DIR") or ROOT / "runs")).resolve()
        base = stack.enter_context(serve_app(runs_dir, args.out / "streamlit.log"))
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        if args.demo:
            shoot_demo(page, base, args.out, args.demo_timeout)
        else:
            shoot_pages(page, base, runs_dir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
