"""Shared fixtures: an isolated runs folder for every test that asks for one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs folder, also set as ``$FER_RUNS_DIR`` so nothing writes into the repository's ``runs/``."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("FER_RUNS_DIR", str(root))
    return root
