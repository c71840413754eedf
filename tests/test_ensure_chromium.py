"""`make test` and Chromium: scripts/ensure_chromium.sh (the one place that installs it; .ci/run and the Makefile
both call it) and the Makefile's `test` target, checked with `make -n` and with a fake apt-get and chromium path.
Nothing is installed and the real /usr/bin/chromium is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ensure_chromium.sh"
INSTALL = "apt-get install -y --no-install-recommends chromium"


def make_n(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`make -n test ARGS` (prints the commands, runs none; the venv stamps are taken as up to date)."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    environ = {k: v for k, v in os.environ.items() if k not in ("BROWSER", "MAKEFLAGS", "MFLAGS")} | env
    return subprocess.run(["make", "-C", str(ROOT), "-n", "-o", ".venv/.installed", "-o", ".venv/.installed-dev",
                           "test", *args], capture_output=True, text=True, env=environ, timeout=60)


def commands(result: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in result.stdout.splitlines() if line.strip() and not line.startswith("make")]


def test_make_test_checks_chromium_before_ruff_and_pytest():
    for env in ({}, {"BROWSER": "firefox"}):  # BROWSER in the environment is the user's web browser: ignored
        result = make_n(**env)
        assert result.returncode == 0, result.stderr
        assert commands(result)[-3:] == ["bash scripts/ensure_chromium.sh", ".venv/bin/python -m ruff check .",
                                         ".venv/bin/python -m pytest"]


def test_make_test_browser_skip_runs_the_rest_and_says_so():
    for result in (make_n("BROWSER=skip"), make_n(BROWSER="skip")):
        assert result.returncode == 0, result.stderr
        text = "\n".join(commands(result))
        assert "ensure_chromium" not in text and '-m pytest -m "not browser"' in text
        assert "the browser test (tests/test_browser.py) was skipped, not run" in text
    wrong = make_n("BROWSER=no")
    assert wrong.returncode != 0 and "BROWSER=no is not understood" in wrong.stderr and "BROWSER=skip" in wrong.stderr


def test_ci_installs_chromium_through_the_same_script():
    text = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/ensure_chromium.sh\nmake test\n" in text and "apt-get install" not in text
    assert "apt-get install" not in (ROOT / "Makefile").read_text()


def run_script(tmp_path: Path, uid: int, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, CHROMIUM=str(tmp_path / "chromium"), EUID_OVERRIDE=str(uid), LOG=str(tmp_path / "log"),
                   **env)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=environ, timeout=60)


@pytest.fixture
def fake_apt(tmp_path: Path) -> Path:
    """An apt-get that logs its arguments; with CREATE set, `install` creates $CHROMIUM; FAIL is its exit status."""
    apt = tmp_path / "apt-get"
    apt.write_text('#!/usr/bin/env bash\necho "apt-get $*" >> "$LOG"\n'
                   'if [ "$1" = install ] && [ -n "${CREATE:-}" ]; then printf "#!/bin/sh\\n" > "$CHROMIUM"; '
                   'chmod +x "$CHROMIUM"; fi\nexit "${FAIL:-0}"\n')
    apt.chmod(0o755)
    return apt


def test_script_does_nothing_when_chromium_is_there(tmp_path, fake_apt):
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    result = run_script(tmp_path, 0, APT_GET=str(fake_apt))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not (tmp_path / "log").exists()


def test_script_installs_as_root_with_apt_get(tmp_path, fake_apt):
    result = run_script(tmp_path, 0, APT_GET=str(fake_apt), CREATE="1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log").read_text().splitlines() == ["apt-get update", f"apt-get {INSTALL.split(' ', 1)[1]}"]
    (tmp_path / "chromium").unlink()
    failed = run_script(tmp_path, 0, APT_GET=str(fake_apt), FAIL="100")
    assert failed.returncode == 1 and "could not install chromium" in failed.stderr


def test_script_stops_with_the_command_to_run(tmp_path, fake_apt):
    user = run_script(tmp_path, 1000, APT_GET=str(fake_apt))
    assert user.returncode == 2 and user.stdout == ""
    assert f"sudo sh -c 'apt-get update && {INSTALL}'" in user.stderr and "make test BROWSER=skip" in user.stderr
    assert not (tmp_path / "log").exists(), "a non-root user's make test never calls apt-get"
    no_apt = run_script(tmp_path, 0, APT_GET=str(tmp_path / "missing-apt-get"))
    assert no_apt.returncode == 2 and "apt-get is not available" in no_apt.stderr
    assert "make test BROWSER=skip" in no_apt.stderr
