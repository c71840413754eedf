"""Security: a checkpoint is data, never code; names cannot leave the runs folder; the app reads data only from
its configured roots, writes only under the runs folder, keeps uploads in memory, listens locally and sends
nothing anywhere (docs/RELIABILITY.md lists each check).

The malicious checkpoints are real: their pickle calls ``exec`` to create a marker file on load, which the control
case shows happening with ``weights_only=False``; every public path that reads a ``.pt``/``.pth`` (or is handed
one in disguise) must refuse it without the marker ever appearing.
"""

from __future__ import annotations

import io as _io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from apphelpers import app, copy_run
from fsaudit import outside, recording
from PIL import Image

from fer_core import io
from fer_core.cli import main
from fer_core.config import ConfigError, load_config
from fer_core.models import create_model, list_models
from fer_core.models.weights import WeightsMismatchError, read_state_dict
from fer_core.runs import CheckpointError, load_trainer_state, load_weights

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"


# --------------------------------------------------------------------------------------------- malicious pickles
class Payload:
    """Unpickling this runs ``exec`` on a line of Python that creates ``marker``."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').write('code ran')"

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a malicious checkpoint ran code"


def evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The payload as a torch zip checkpoint (wrapped in a state dict and bare), a legacy raw pickle, and a pickle
    under the names of safetensors and trainer-state files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"zip_state_dict": folder / "wrapped.pth", "zip_bare": folder / "bare.pt",
             "legacy_pickle": folder / "legacy.bin", "disguised": folder / "model.safetensors"}
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "extra": Payload(marker)}, files["zip_state_dict"])
    torch.save(Payload(marker), files["zip_bare"])
    files["legacy_pickle"].write_bytes(pickle.dumps({"fc.weight": Payload(marker)}, protocol=2))
    shutil.copy(files["zip_state_dict"], files["disguised"])
    return files


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: without weights_only the same files do run the payload (so the refusals below mean something)."""
    marker = tmp_path / "PWNED"
    files = evil_files(tmp_path / "evil", marker)
    torch.load(files["zip_bare"], weights_only=False)
    assert marker.read_text() == "code ran"
    marker.unlink()
    pickle.loads(files["legacy_pickle"].read_bytes())
    assert marker.exists()


def test_read_state_dict_and_load_weights_refuse_code(tmp_path, marker):
    model = create_model("small_cnn", num_classes=2)
    for kind, path in evil_files(tmp_path / "evil", marker).items():
        with pytest.raises(WeightsMismatchError, match=f"cannot read weights .*{path.name}") as info:
            read_state_dict(path)
        if kind != "disguised":
            assert "refused on purpose" in str(info.value) and "Unsupported global" in str(info.value), kind
        with pytest.raises(WeightsMismatchError, match=path.name):
            load_weights(model, path)


def test_trainer_state_refuses_code(tmp_path, marker):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for path in evil_files(tmp_path / "evil", marker).values():
        shutil.copy(path, ckpt / "last_state.pt")
        with pytest.raises(CheckpointError, match=r"cannot read the trainer state .*last_state\.pt.*refused"):
            load_trainer_state(ckpt)


@pytest.mark.parametrize("name", list_models())
def test_every_models_weights_path_refuses_code(name, tmp_path, marker):
    """``model.weights_path`` (``--set model.weights_path=...``) of every registered model: a pickle with code is
    refused (models without pretrained weights refuse the option itself)."""
    evil = evil_files(tmp_path / "evil", marker)["zip_state_dict"]
    with pytest.raises((ValueError, RuntimeError)) as info:
        create_model(name, num_classes=7, pretrained=True, weights_path=str(evil))
    message = str(info.value)
    assert "cannot read weights" in message or "no pretrained weights" in message, message


def test_a_poisoned_torchvision_cache_file_is_refused(tmp_path, marker, monkeypatch):
    """torch.hub loads a file already in its cache without checking its hash, and unpickles it fully unless told
    otherwise: ImageNet weights are loaded with weights_only=True, so a tampered cache file cannot run code."""
    import torchvision.models as tvm

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(evil_files(tmp_path / "evil", marker)["zip_state_dict"],
                cache / os.path.basename(tvm.ResNet18_Weights.IMAGENET1K_V1.url))
    with pytest.raises(RuntimeError, match=r"could not load torchvision's cached ImageNet weights .*resnet18.*"
                       r"Unsupported global: GLOBAL exec.*refused on purpose"):
        create_model("resnet18", num_classes=7, pretrained=True)


def test_training_with_a_malicious_weights_path_fails_without_running_it(tmp_path, marker, capsys):
    evil = evil_files(tmp_path / "evil", marker)["zip_state_dict"]
    root = tmp_path / "runs"
    code = main(["train", "--quiet", "--config", str(SMOKE), "--runs-dir", str(root), "--run-id", "evil",
                 "--set", "model.name=mini_xception", "--set", "model.input_size=null",
                 "--set", "model.pretrained=true", "--set", f"model.weights_path={evil}"])
    assert code == 1
    assert "cannot read weights" in capsys.readouterr().err
    status = io.read_status(root / "evil")
    assert status["state"] == "failed" and "cannot read weights" in status["error"]


def test_resume_and_predict_refuse_code_planted_in_a_run(smoke_run, runs_root, marker, capsys):
    """A finished run whose trainer state and best weights were replaced by pickles with code: resuming fails
    (exit 1, the run marked failed, naming the file), and loading its weights for prediction or in the app
    fails with a message, never running the payload."""
    from fer_core.predict import Predictor

    run = copy_run(smoke_run[0], runs_root, "planted")
    files = evil_files(runs_root.parent / "evil", marker)
    shutil.copy(files["zip_state_dict"], run / "checkpoints" / "last_state.pt")
    io.write_status(run, state="cancelled")
    assert main(["train", "--quiet", "--resume", "planted"]) == 1
    assert "cannot read the trainer state" in capsys.readouterr().err
    assert io.read_status(run)["state"] == "failed" and "last_state.pt" in io.read_status(run)["error"]

    shutil.copy(files["disguised"], run / "checkpoints" / "best.safetensors")
    io.write_status(run, state="done")
    with pytest.raises(Exception, match="(?i)header|deserializ|safetensors"):
        Predictor.from_run(run)
    at = app("../pages/explain.py", run="planted")
    assert not at.exception, [e.value for e in at.exception]
    assert any("Could not load run planted" in e.value for e in at.error), [e.value for e in at.error]


# --------------------------------------------------------------------------------------------- path traversal
HOSTILE_IDS = ["../x", "../../etc", "/etc", "/tmp/x", "a/b", "a/../../b", "..", ".", ".hidden", "-flag", "",
               "a\\b", "a..b", "x" * 201, "a\x00b", "runs/../x", "~", "~root", "a b/c", "\u2025", "C:\\x"]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_run_ids_cannot_leave_the_runs_folder(bad, runs_root):
    with pytest.raises(ValueError):
        io.run_path(bad)
    with pytest.raises(ValueError):
        io.create_run_dir(bad, config="name: x\n", state="queued")
    assert list(runs_root.iterdir()) == []


def test_cli_refuses_run_ids_and_groups_outside_the_runs_folder(runs_root, tmp_path, capsys):
    for bad in ("../escape", str(tmp_path / "abs"), "a/b"):
        assert main(["train", "--config", str(SMOKE), "--run-id", bad]) == 2
        assert "--run-id: invalid run id" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="group: '../x' is not a valid group name"):
        load_config(SMOKE, ["group=../x"])
    assert main(["sweep", "--config", str(SMOKE), "--grid", "seed=0,1", "--group", "../x", "--dry-run"]) == 2
    assert "group" in capsys.readouterr().err
    assert list(runs_root.iterdir()) == [] and not (tmp_path / "abs").exists() and not (tmp_path / "x").exists()


def test_names_become_safe_run_ids():
    for name in ["../../etc/passwd", "/abs/path", "a\x00b", "..", "....", "~/x", "ä/ö", "x" * 500, "-rf", " "]:
        run_id = io.new_run_id(name)
        assert io.check_run_id(run_id) == run_id and "/" not in run_id and ".." not in run_id, (name, run_id)


def test_links_out_of_the_runs_folder_are_neither_listed_nor_opened(runs_root, tmp_path, smoke_run):
    elsewhere = copy_run(smoke_run[0], tmp_path, "elsewhere")
    (runs_root / "sneaky").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the runs folder"):
        io.run_path("sneaky")
    runs = io.list_runs()
    assert list(runs) == [] and [Path(s["path"]).name for s in runs.skipped] == ["sneaky"]
    assert "outside the runs folder" in runs.skipped[0]["reason"]


PAGES_WITH_RUN_PARAM = ["../pages/run.py", "../pages/confusion.py", "../pages/scn.py", "../pages/compare.py"]


@pytest.mark.parametrize("page", PAGES_WITH_RUN_PARAM)
def test_pages_ignore_run_links_that_leave_the_runs_folder(page, runs_root, tmp_path, smoke_run):
    """``?run=``, ``?runs=`` and ``?group=`` naming folders outside the runs folder (one holding a readable run):
    the page warns or falls back to a real run, never raises and never reads the outside folder's files."""
    copy_run(smoke_run[0], runs_root, "20260101-000000-inside-0001")
    away = copy_run(smoke_run[0], tmp_path, "outside")
    with recording() as rec:
        for bad in ("../outside", str(away), "..", "a/../../outside"):
            at = app(page, run=bad, runs=bad, group=bad)
            assert not at.exception, (bad, [e.value for e in at.exception])
    assert [p for p in rec.read_paths() if away in p.parents] == []


def test_train_page_ignores_run_links_that_leave_the_runs_folder(runs_root, tmp_path, smoke_run):
    copy_run(smoke_run[0], tmp_path, "outside")
    for bad in ("../outside", str(tmp_path / "outside"), "a/../../outside"):
        at = app("../pages/train.py", run=bad, group=bad)
        assert not at.exception, (bad, [e.value for e in at.exception])


# --------------------------------------------------------------------------------------------- where the app writes
def _matplotlib_cache() -> list[Path]:
    import matplotlib

    return [Path(matplotlib.get_configdir()), Path(matplotlib.get_cachedir())]


def test_app_pages_write_only_under_the_runs_folder_and_never_reach_the_network(runs_root, smoke_run):
    """Every page with a finished run present (so charts, tables and model loading run), under an audit hook:
    files written only under the runs folder or the data cache, and no connection, bind or name lookup."""
    copy_run(smoke_run[0], runs_root, "20260101-000000-audit-0001")
    pages = ["home", "train", "run", "compare", "confusion", "explain", "predict", "scn"]
    with recording() as rec:
        for page in pages:
            at = app(f"../pages/{page}.py")
            assert not at.exception, (page, [e.value for e in at.exception])
    cache = Path(os.environ["FER_CACHE_DIR"])
    assert outside(rec.written_paths(), runs_root, cache, *_matplotlib_cache()) == []
    assert rec.network == []


def test_training_writes_only_its_run_folder_and_the_data_cache(runs_root):
    cache = Path(os.environ["FER_CACHE_DIR"])
    with recording() as rec:
        assert main(["train", "--quiet", "--config", str(SMOKE), "--run-id", "audited", "--set", "train.epochs=1",
                     "--set", "eval.subsets=[all]"]) == 0
    assert outside(rec.written_paths(), runs_root, cache) == []
    assert outside([Path(d).resolve() for d in rec.mkdirs], runs_root, cache) == []
    assert rec.network == []


def test_uploaded_photos_stay_in_memory(runs_root):
    """The Explain page's upload path (app/pickers.py face_picker -> _read_photo -> fer_core.face.load_image on the
    bytes): reading, detecting, cropping and explaining an upload opens no file for writing (matplotlib's own font
    cache aside), and a broken upload likewise."""
    from skimage import data

    buf = _io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG")
    at = app("../pages/explain.py", {"explain.methods": ["gradcam"]})
    with recording() as rec:
        at.file_uploader[0].set_value(("holiday-photo.jpg", buf.getvalue(), "image/jpeg")).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any(c.startswith("gradcam ·") for el in at.image for c in el.captions)
        at.file_uploader[0].set_value(("broken.jpg", buf.getvalue()[:5000], "image/jpeg")).run()
        assert len(at.error) == 1 and "broken.jpg" in at.error[0].value
    assert outside(rec.written_paths(), *_matplotlib_cache()) == [], rec.writes
    assert rec.renames == [] and rec.network == []


# --------------------------------------------------------------------------------------------- data roots
def test_real_data_sets_are_read_only_from_fer_data(monkeypatch, tmp_path):
    """``$FER_DATA/<name>`` is the only folder a real data set is taken from when no root is given (the app never
    gives one: tests/test_app_data.py::test_real_datasets_come_only_from_fer_data checks its pages)."""
    from fer_core.data import configured_datasets, resolve_root

    monkeypatch.delenv("FER_DATA", raising=False)
    assert configured_datasets() == {} and resolve_root("rafdb") is None
    (tmp_path / "rafdb").mkdir()
    (tmp_path / "notadataset").mkdir()
    monkeypatch.setenv("FER_DATA", str(tmp_path))
    assert configured_datasets() == {"rafdb": tmp_path / "rafdb"}
    assert resolve_root("rafdb") == tmp_path / "rafdb" and resolve_root("fer2013") is None
    assert resolve_root("synthfaces") is None  # generated, reads no files


# --------------------------------------------------------------------------------------------- server settings
def test_streamlit_reads_a_local_private_capped_config():
    """What Streamlit itself makes of .streamlit/config.toml when started from the repository root (no
    STREAMLIT_* variables): localhost only, no usage statistics, uploads capped at 20 MB, XSRF protection on.
    (tests/test_repo.py::test_streamlit_config_is_local_and_private checks the file's text.)"""
    code = ("import json; from streamlit import config as c; c.get_config_options(force_reparse=True); "
            "print(json.dumps({k: c.get_option(k) for k in ['server.address', 'browser.gatherUsageStats', "
            "'server.maxUploadSize', 'server.enableXsrfProtection', 'server.headless']}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "server.address": "127.0.0.1", "browser.gatherUsageStats": False, "server.maxUploadSize": 20,
        "server.enableXsrfProtection": True, "server.headless": True}
