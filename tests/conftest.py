"""Shared fixtures: an isolated runs folder, and one tiny finished training run shared by the engine and app tests.

Plain helpers of the app tests are in apphelpers.py."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# The app's package (app/) sits at the repository root, which `python -m pytest` puts on sys.path and a plain
# `pytest` does not; the app tests import it either way.
if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Rendered SynthFACS splits go to a cache folder private to this test session, so tests never read a cache left
# by other code (or another version of it) and never write into the user's ~/.cache. Child processes inherit it;
# the folder is removed when the session ends (pytest_sessionfinish), after every test and its children.
CACHE_DIR = tempfile.mkdtemp(prefix="fer_test_cache_")
os.environ["FER_CACHE_DIR"] = CACHE_DIR

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this session's SynthFACS cache folder, so test runs leave no ``fer_test_cache_*`` behind."""
    shutil.rmtree(CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def records_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The experiment runner records finished runs and the reports read a run from its record when its folder is
    not there (scripts/experiments.py, ``results/``): each test gets an empty records folder of its own, never the
    repository's records nor another test's."""
    folder = tmp_path_factory.mktemp("records")
    monkeypatch.setenv("FER_RECORDS_DIR", str(folder))
    return folder


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs folder, also set as ``$FER_RUNS_DIR`` so nothing writes into the repository's ``runs/``."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("FER_RUNS_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``configs/smoke.yaml`` trained once (2 epochs on tiny SynthFACS): ``(run_dir, result of train())``.

    Tests may read it; tests that modify a run must copy it first.
    """
    from fer_core.train import train

    run_dir = tmp_path_factory.mktemp("smoke_runs") / "smoke-run"
    events: list[dict] = []
    result = train(SMOKE, run_dir, progress=events.append)
    result["events"] = events
    return run_dir, result


@pytest.fixture(scope="session")
def finished_run(smoke_run: tuple[Path, dict]) -> Path:
    """The session's tiny finished training run (``smoke_run``: configs/smoke.yaml, 2 epochs), checked to be done."""
    run_dir, result = smoke_run
    if result["state"] != "done":
        from app.ui import log_tail

        pytest.fail(f"the smoke run ended {result['state']}:\n{log_tail(run_dir)[1]}")
    return run_dir


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: small forward passes are faster on one, far faster when other work keeps the
    cores busy. Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
