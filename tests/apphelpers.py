"""Plain helpers shared by the app's tests (tests/test_app*.py): running a page with AppTest, reading its charts,
copying run folders and waiting for runs. Fixtures (``finished_run``, ``smoke_run``, ``runs_root``) are in
conftest.py; import these as ``from apphelpers import ...`` (pytest puts tests/ on ``sys.path``).
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

from app import ui
from fer_core import io
from fer_core.data.synthfaces import SUBSETS as SYNTH_SUBSETS

ROOT = Path(__file__).resolve().parent.parent
HOME = str(ROOT / "app" / "Home.py")
TIMEOUT = 60
# The smallest run that still has two epochs (two points per curve) and every test subset.
TINY = ("data.options.image_size=32", "data.options.train_size=64", "data.options.val_size=32",
        "data.options.test_size=96", "model.input_size=32", "train.epochs=2", "train.batch_size=32")
SUBSETS = ["all", *SYNTH_SUBSETS]
"""The test subsets a SynthFACS run is evaluated on, in the order the pages show them (:func:`app.ui.subset_order`)."""


def ok(at: AppTest) -> AppTest:
    """``at`` after checking that its last run raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def app(page: str | None = None, state: Mapping[str, Any] | None = None, **query: str) -> AppTest:
    """Run the app (optionally switched to ``page``, a path relative to app/Home.py such as ``../pages/run.py``)
    with query parameters ``query`` and ``state`` preset in session_state (as if the user had set the widgets)."""
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page)
        at.query_params.update(query)
        at.run()
    return ok(at)


def charts_on(at: AppTest) -> list[dict]:
    """The plotly figures on the page, as dicts."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def array(value: object) -> np.ndarray:
    """A plotly JSON array: a plain list, or a typed array ``{"dtype", "bdata" (base64), "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(value)


def texts(elements) -> list[str]:
    """The values of AppTest elements (titles, subheaders, ...)."""
    return [e.value for e in elements]


def copy_run(source: Path, root: Path, run_id: str, **status: object) -> Path:
    """Copy a run folder under a new id; with ``status``, merge it into status.json (as a newer run) and drop
    eval/ unless the state is done."""
    target = root / run_id
    shutil.copytree(source, target)
    if status:
        io.write_status(target, created=time.time(), **status)
        if status.get("state") != "done":
            shutil.rmtree(target / "eval")
    return target


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true, and return that; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.2)
    return value


def wait_until_stopped(run_dir: Path, timeout: float = 120.0) -> str:
    """Poll a run folder until its state is no longer queued/running; return the final state."""
    wait_for(lambda: io.run_state(run_dir) not in ui.ACTIVE_STATES, timeout,
             f"run {run_dir.name} to stop (see {run_dir / 'log.txt'})")
    return io.run_state(run_dir)
