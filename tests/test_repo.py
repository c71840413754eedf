"""Repository invariants: set-up files, pins and app wiring that a fresh clone relies on.

Ruff itself runs in ``make test`` (one place for lint); these tests check what ruff cannot.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _requirements(path: Path) -> dict[str, str]:
    """Parse ``name<spec>`` lines of a requirements file into {normalised name: specifier}."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line)
        assert m, f"{path.name}: cannot parse requirement line {line!r}"
        out[m.group(1).lower().replace("_", "-")] = m.group(2).replace(" ", "")
    return out


def test_torch_pinned_exactly_and_opencv_below_5():
    reqs = _requirements(ROOT / "requirements.txt")
    assert reqs["torch"] == "==2.14.1"
    assert reqs["torchvision"] == "==0.29.1"
    assert "<5" in reqs["opencv-python-headless"], "opencv 5 has no CascadeClassifier; keep <5"
    assert "opencv-python" not in reqs, "only the headless OpenCV build belongs in requirements"


def test_pyproject_dependencies_match_requirements():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = _requirements(ROOT / "requirements.txt")
    for dep in meta["dependencies"]:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", dep.replace(" ", ""))
        name, spec = m.group(1).lower().replace("_", "-"), m.group(2)
        assert name in reqs, f"pyproject dependency {name} missing from requirements.txt"
        assert reqs[name] == spec, f"{name}: pyproject says {spec!r}, requirements.txt says {reqs[name]!r}"
    assert meta["requires-python"] == ">=3.11"


def test_streamlit_config_is_local_and_private():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["headless"] is True
    assert 1 <= cfg["server"]["maxUploadSize"] <= 200
    assert cfg["browser"]["gatherUsageStats"] is False


def test_ci_script_runs_the_readme_test_command():
    script = ROOT / ".ci" / "run"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test$", text, re.M)
    assert os.access(script, os.X_OK), ".ci/run must be executable (git update-index --chmod=+x)"


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block, "README needs a code block with the set-up commands"
    commands = [ln.split("#", 1)[0].strip() for ln in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def test_makefile_reinstalls_only_when_requirements_change():
    text = (ROOT / "Makefile").read_text()
    stamp_rule = re.search(r"^\$\(STAMP\):(.*)$", text, re.M)
    assert stamp_rule, "Makefile needs a stamp rule"
    for dep in ("requirements.txt", "pyproject.toml"):
        assert dep in stamp_rule.group(1)
    assert re.search(r"^test: \$\(STAMP\)", text, re.M)
    assert re.search(r"^run: \$\(STAMP\)", text, re.M)


def test_dockerfile_is_healthy_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") or "FROM python:3.11-slim" in text
    assert "FROM python:3.11-slim" in text
    assert "/_stcore/health" in text and "HEALTHCHECK" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "EXPOSE 8501" in text
    docker_ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in docker_ignore and "runs" in docker_ignore


def _navigation_pages() -> set[str]:
    """Page file names registered with ``st.Page(ROOT / "pages" / NAME)`` in app/Home.py."""
    tree = ast.parse((ROOT / "app" / "Home.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.BinOp) and isinstance(arg.right, ast.Constant):
                names.add(arg.right.value)
    return names


def test_every_page_is_in_the_navigation():
    on_disk = {p.name for p in (ROOT / "pages").glob("*.py") if not p.name.startswith("_")}
    assert on_disk, "no pages found"
    assert on_disk == _navigation_pages(), "pages/ and the st.navigation list in app/Home.py disagree"


def test_pages_stay_thin():
    """Pages draw; ML lives in fer_core. No page imports torch or trains in the app process."""
    for path in [*(ROOT / "pages").glob("*.py"), *(ROOT / "app").glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for mod in mods:
                    assert not mod.startswith(("torch", "fer_core.train")), f"{path.name} imports {mod}"
