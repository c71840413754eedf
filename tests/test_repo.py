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
    for path in [*(ROOT / "pages").glob("*.py"), *(ROOT / "app").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for mod in mods:
                    assert not mod.startswith(("torch", "fer_core.train")), f"{path.name} imports {mod}"


# --------------------------------------------------------------------------------------------- layers
PACKAGE = ROOT / "fer_core"


def _module_name(path: Path) -> str:
    """``fer_core/data/registry.py`` -> ``fer_core.data.registry``; a package's ``__init__.py`` -> the package;
    ``pages/home.py`` -> ``pages.home``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (imports under ``if TYPE_CHECKING`` never
    run, so they are left out): project modules by their full name (``from fer_core import io`` is
    ``fer_core.io`` alone, a name defined in a package is the package), others by their top-level name
    (``torch``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name if a.name.split(".")[0] in ("fer_core", "app", "pages") else a.name.split(".")[0]
                         for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] not in ("fer_core", "app", "pages"):
                found.add(base.split(".")[0])
                return
            submodules = {f"{base}.{a.name}" for a in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in the module itself, not only its submodules
                found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    """Import edges between the modules of fer_core, app and pages (plus the third-party names they import)."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "app").rglob("*.py"), *(ROOT / "pages").glob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or through others (importing ``a.b`` runs package ``a`` first),
    each with one import chain that gets there."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        here = todo.pop()
        following = set(graph.get(here, ()))
        following |= {".".join(m.split(".")[:i]) for m in following for i in range(1, m.count(".") + 1)}
        for nxt in sorted(following):
            if nxt not in paths:
                paths[nxt] = [*paths[here], nxt]
                todo.append(nxt)
    return paths


def test_layer_rules_hold_through_every_import_chain():
    """The layers of docs/CONTRACTS.md, followed transitively (function-level imports included): plain files import
    no torch; the app never reaches training; data sets never reach models."""
    graph = _graph()
    assert "fer_core.io" in graph and "fer_core.runs" in graph and "pages.home" in graph
    broken = []
    for module in graph:
        reach = _reach(graph, module)
        if module == "fer_core.io":
            broken += [f"fer_core.io reaches torch: {' -> '.join(reach['torch'])}"] if "torch" in reach else []
        if module.startswith(("app.", "pages.")):
            broken += [f"{module} reaches {bad}: {' -> '.join(reach[bad])}" for bad in
                       ("fer_core.train", "fer_core.methods", "fer_core.optim") if bad in reach]
        if module.startswith("fer_core.data"):
            models = [chain for bad, chain in reach.items() if bad.split(".")[:2] == ["fer_core", "models"]]
            broken += [f"{module} reaches fer_core.models: {' -> '.join(min(models, key=len))}"] if models else []
    assert not broken, "\n".join(broken)


def test_no_import_cycle_in_fer_core_or_app():
    """No two modules of fer_core (or of app) import each other, directly or round a longer loop (function-level
    imports count: a lazy import only hides a cycle). A submodule of a package that re-exports it, such as
    ``app.charts.curves``, imports what it shares from a sibling (``app.charts.common``), never from the package."""
    graph = {m: {d for d in deps if d.startswith(("fer_core", "app"))} for m, deps in _graph().items()
             if m.startswith(("fer_core", "app"))}
    cycles = []
    for module in sorted(graph):
        for dep in sorted(graph[module]):  # an explicit edge back to `module` from anything `dep` imports
            chain = _explicit_path(graph, dep, module)
            if chain:
                cycles.append(" -> ".join([module, *chain]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def _explicit_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A chain of explicit imports from ``start`` to ``goal`` (None if there is none)."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        here = todo.pop()
        if here == goal:
            return paths[here]
        for nxt in sorted(graph.get(here, ())):
            if nxt not in paths:
                paths[nxt] = [*paths[here], nxt]
                todo.append(nxt)
    return None


def test_modules_that_only_read_runs_import_no_torch():
    """What the app's run pages and ``python -m fer_core runs`` need loads without torch (seconds saved per page,
    and no CUDA initialisation in the app's process for a table)."""
    code = ("import sys; sys.path.insert(0, '.'); import fer_core.io, fer_core.runs, fer_core.lifecycle, "
            "fer_core.config, fer_core.sweep, fer_core.compare, app.ui; print(sorted(m for m in sys.modules "
            "if m == 'torch' or m.startswith('torch.')))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_no_name_is_defined_twice_at_module_level():
    """A second ``def``/``class`` of the same name at the top of a module silently replaces the first (Home's
    polling fragment once called a data-set helper that had taken its run-state helper's name)."""
    twice = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "app").rglob("*.py"), *(ROOT / "pages").glob("*.py"),
                 *(ROOT / "scripts").glob("*.py"), *(ROOT / "bench").glob("*.py"), *(ROOT / "tools").glob("*.py"),
                 *(ROOT / "tests").glob("*.py")]:
        seen: dict[str, int] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name in seen:
                    twice.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} (first at line "
                                 f"{seen[node.name]})")
                seen.setdefault(node.name, node.lineno)
    assert not twice, "\n".join(twice)
