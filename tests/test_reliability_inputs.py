"""Bad input never crashes anything: broken, disguised, huge and odd images (through fer_core.face.load_image, the
predictor, the ``predict`` command and the Explain page's uploader), bad configs (refused before any run starts,
naming the key) and bad checkpoints (docs/RELIABILITY.md lists every case and its outcome).

All images are made here with Pillow and NumPy; none is committed. tests/test_face.py holds the first cases of
each kind (empty, truncated JPEG, HTML, a PNG bomb, each odd format once); this file runs the whole matrix through
every entry point.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from apphelpers import app, charts_on, copy_run
from PIL import Image, ImageFile
from skimage import data

from app import pickers
from fer_core import io as runio
from fer_core.cli import main
from fer_core.config import ConfigError, load_config
from fer_core.face import ImageError, NoFaceFound, faces, load_image
from fer_core.lifecycle import launch_train
from fer_core.models.weights import WeightsMismatchError, read_state_dict
from fer_core.predict import Predictor

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
ASTRONAUT_BOX = (177, 66, 95, 95)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def card(h: int = 24, w: int = 36) -> np.ndarray:
    """An asymmetric RGB test card: every flip and rotation of it differs."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * y) % 256], axis=2).astype(np.uint8)
    img[: h // 3, : w // 4] = (250, 20, 20)
    return img


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def with_header_size(fmt: str, width: int, height: int) -> bytes:
    """A small valid JPEG, GIF or BMP with its header's size fields rewritten."""
    raw = bytearray(encode(Image.new("RGB" if fmt != "GIF" else "P", (16, 16)), fmt))
    if fmt == "JPEG":
        at = raw.find(b"\xff\xc0") + 5
        raw[at:at + 4] = struct.pack(">HH", height, width)
    elif fmt == "GIF":
        raw[6:10] = struct.pack("<HH", width, height)
    else:
        raw[18:26] = struct.pack("<ii", width, height)
    return bytes(raw)


def png_with_chunk(kind: bytes, body: bytes) -> bytes:
    good = encode(Image.fromarray(card()), "PNG")
    return good[:33] + chunk(kind, body) + good[33:]


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _jpeg() -> bytes:
    return encode(Image.fromarray(data.astronaut()), "JPEG")


def _png() -> bytes:
    return encode(Image.fromarray(card(60, 80)), "PNG")


# (file name as uploaded, bytes, what the message says): each must raise ImageError naming the file
BAD: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "zero_bytes": ("photo.jpg", lambda: b"", r"\(0 bytes\)"),
    "truncated_jpeg_half": ("photo.jpg", lambda: _jpeg()[: len(_jpeg()) // 2], "damaged or incomplete"),
    "truncated_jpeg_header": ("photo.jpg", lambda: _jpeg()[:10], "not an image Pillow recognises"),
    "truncated_png_half": ("photo.png", lambda: _png()[: len(_png()) // 2], "damaged or incomplete"),
    "truncated_png_header": ("photo.png", lambda: _png()[:30], "not an image Pillow recognises"),
    "truncated_gif_frame": ("anim.gif", lambda: animated_gif()[:85], "damaged or incomplete"),
    "truncated_webp": ("photo.webp", lambda: encode(Image.fromarray(card()), "WEBP")[:40], "cannot read"),
    "truncated_tiff": ("scan.tif", lambda: encode(Image.fromarray(card()), "TIFF")[:100], "cannot read"),
    "truncated_bmp": ("photo.bmp", lambda: encode(Image.fromarray(card()), "BMP")[:100], "damaged or incomplete"),
    "text_as_jpg": ("photo.jpg", lambda: b"name,label\nalice,happy\n" * 20, "it is text, not an image"),
    "html_as_jpg": ("photo.jpg", lambda: b"<!DOCTYPE html><html><body>404</body></html>", "HTML web page"),
    "svg_as_png": ("photo.png", lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
                   "SVG drawing"),
    "pdf_as_jpg": ("photo.jpg", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF document"),
    "random_bytes": ("photo.jpg", lambda: np.random.default_rng(0).bytes(4096), "not an image Pillow recognises"),
    "png_bomb_49mp": ("bomb.png", lambda: png_claiming(7000, 7000), "49.0 megapixels, over the limit"),
    "png_bomb_4gp": ("bomb.png", lambda: png_claiming(65000, 65000), "before decoding it"),
    "jpeg_bomb_3.6gp": ("bomb.jpg", lambda: with_header_size("JPEG", 60000, 60000), "before decoding it"),
    "gif_bomb_4.3gp": ("bomb.gif", lambda: with_header_size("GIF", 65535, 65535), "before decoding it"),
    "bmp_bomb_900mp": ("bomb.bmp", lambda: with_header_size("BMP", 30000, 30000), "before decoding it"),
    "png_text_chunk_bomb": ("bomb.png", lambda: png_with_chunk(b"zTXt", b"c\0\0" + zlib.compress(b"A" * 50_000_000)),
                            "expands beyond Pillow's safety limit"),
    "png_icc_profile_bomb": ("bomb.png", lambda: png_with_chunk(b"iCCP", b"i\0\0" + zlib.compress(b"A" * 50_000_000)),
                             "expands beyond Pillow's safety limit"),
}


def odd_but_fine() -> dict[str, tuple[str, bytes]]:
    """Readable images in every awkward mode and container: (file name, bytes)."""
    rgb = card()
    im = Image.fromarray(rgb)
    grey16 = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    frames = [Image.fromarray(rgb), Image.new("RGB", im.size, (0, 0, 255))]
    trans = im.convert("P")
    return {
        "png_16bit": ("deep.png", encode(grey16, "PNG")),
        "tiff_16bit": ("deep.tif", encode(grey16, "TIFF")),
        "tiff_float32": ("float.tif", encode(Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF")),
        "tiff_int32": ("int.tif", encode(Image.fromarray(rgb[..., 0].astype(np.int32) * 1000), "TIFF")),
        "jpeg_cmyk": ("print.jpg", encode(im.convert("CMYK"), "JPEG", quality=95)),
        "tiff_cmyk": ("print.tif", encode(im.convert("CMYK"), "TIFF")),
        "jpeg_ycbcr": ("ycc.jpg", encode(im.convert("YCbCr"), "JPEG")),
        "tiff_lab": ("lab.tif", encode(im.convert("LAB"), "TIFF")),
        "png_palette": ("palette.png", encode(im.convert("P"), "PNG")),
        "png_palette_transparency": ("palette.png", encode(trans, "PNG", transparency=0)),
        "png_rgba": ("alpha.png", encode(im.convert("RGBA"), "PNG")),
        "png_grey_alpha": ("la.png", encode(im.convert("LA"), "PNG")),
        "png_1bit": ("bits.png", encode(im.convert("1"), "PNG")),
        "png_without_iend": ("cut.png", encode(im, "PNG")[:-12]),
        "gif_animated": ("anim.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        "webp_animated": ("anim.webp", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                                              lossless=True)),
        "webp_lossy": ("photo.webp", encode(im, "WEBP", quality=80)),
        "bmp": ("photo.bmp", encode(im, "BMP")),
        "ico": ("icon.ico", encode(im, "ICO")),
        "tga": ("photo.tga", encode(im, "TGA")),
        "tiny_10x10": ("tiny.png", encode(Image.fromarray(rgb[:10, :10]), "PNG")),
        "one_pixel": ("dot.png", encode(Image.fromarray(rgb[:1, :1]), "PNG")),
        "exif_orientation_9_invalid": ("odd.jpg", encode(im, "JPEG", exif=_exif(9))),
    }


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# --------------------------------------------------------------------------------------------- load_image
@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_files_raise_a_clear_image_error(case, tmp_path):
    name, make, message = BAD[case]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert "object at 0x" not in str(info.value), "the message shows an object's repr"
    with pytest.raises(ImageError, match=message):  # the same as bytes (the uploader's path)
        load_image(path.read_bytes())


def test_every_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch):
    decoded = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.format) or real(im))
    for case in [c for c in BAD if "bomb" in c and "chunk" not in c and "profile" not in c]:
        tracemalloc.start()
        with pytest.raises(ImageError, match="before decoding"):
            load_image(BAD[case][1]())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2_000_000, (case, peak)
    assert decoded == []


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    """``max_pixels=`` per call, ``--max-pixels`` on the command line, ``$FER_MAX_PIXELS`` for a whole process
    (the app), refused from the header in every case."""
    small = tmp_path / "small.png"
    small.write_bytes(encode(Image.fromarray(card(40, 50)), "PNG"))
    with pytest.raises(ImageError, match="max_pixels=1,000 "):
        load_image(small, max_pixels=1000)
    assert main(["predict", str(small), "--whole-image", "--max-pixels", "1000"]) == 1
    code = ("from fer_core.face import load_image, DEFAULT_MAX_PIXELS as D; import sys; print(D)\n"
            "try: load_image(sys.argv[1])\nexcept ValueError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(small)], env={**os.environ, "FER_MAX_PIXELS": "1_500"},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[0] == "1500" and "over the limit max_pixels=1,500" in out.stdout, out.stderr
    bad = subprocess.run([sys.executable, "-c", "import fer_core.face"], env={**os.environ, "FER_MAX_PIXELS": "lots"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "FER_MAX_PIXELS must be a positive whole number" in bad.stderr


@pytest.mark.parametrize("case", list(odd_but_fine()))
def test_odd_but_valid_images_come_out_rgb(case, tmp_path):
    name, raw = odd_but_fine()[case]
    path = tmp_path / name
    path.write_bytes(raw)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
    with Image.open(path) as im:
        w, h = im.size
    assert out.shape[:2] == (h, w)


# transpose that stores an image so that EXIF orientation N shows it upright (Pillow's exif_transpose inverse)
STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
         7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation, tmp_path):
    upright = card()
    stored = Image.fromarray(upright)
    if STORE[orientation] is not None:
        stored = stored.transpose(STORE[orientation])
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=_exif(orientation))
    assert np.array_equal(load_image(path), upright)


def test_decoding_memory_is_bounded_per_pixel():
    """Peak Python/NumPy memory while decoding, per pixel, for the costliest modes (transparency, floats,
    16-bit): at most 16 bytes, so the 40 MP limit bounds one image's decoding to about 640 MB plus Pillow's own
    copy (4 bytes a pixel)."""
    rng = np.random.default_rng(0)
    h, w = 400, 500
    base = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    samples = {
        "rgb_png": encode(Image.fromarray(base[..., :3]), "PNG", compress_level=1),
        "rgba_png": encode(Image.fromarray(base), "PNG", compress_level=1),
        "palette_transparency": encode(Image.fromarray(base[..., :3]).convert("P"), "PNG", transparency=0),
        "grey16_png": encode(Image.fromarray(base[..., 0].astype(np.uint16) * 257), "PNG"),
        "float_tiff": encode(Image.fromarray(base[..., 0].astype(np.float32) / 255), "TIFF"),
        "int32_tiff": encode(Image.fromarray(base[..., 0].astype(np.int32) * 1000), "TIFF"),
        "cmyk_jpeg": encode(Image.fromarray(base[..., :3]).convert("CMYK"), "JPEG"),
    }
    for name, raw in samples.items():
        tracemalloc.start()
        out = load_image(raw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert out.shape == (h, w, 3)
        assert peak / (h * w) <= 16, f"{name}: {peak / (h * w):.1f} bytes per pixel"


# --------------------------------------------------------------------------------------------- faces and predict
@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_model()


def several_faces(n: int) -> np.ndarray:
    crop = data.astronaut()[20:300, 100:360]
    return np.concatenate([crop if i % 2 == 0 else crop[:, ::-1] for i in range(n)], axis=1)


def test_many_faces_are_all_found_and_classified(predictor, tmp_path, capsys):
    found = faces(several_faces(3), mode="all")
    assert len(found) == 3
    assert [f.area for f in found] == sorted((f.area for f in found), reverse=True)
    path = tmp_path / "group.png"
    Image.fromarray(several_faces(3)).save(path)
    assert main(["predict", str(path), "--all-faces", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["faces"]) == 3 and all(abs(sum(f["probs"].values()) - 1) < 1e-3 for f in result["faces"])


def test_an_exif_rotated_photo_is_searched_upright(predictor):
    sideways = Image.fromarray(data.astronaut()).transpose(Image.Transpose.ROTATE_90)
    raw = encode(sideways, "JPEG", quality=95, exif=_exif(6))
    with pytest.raises(NoFaceFound):  # as stored, the face lies on its side: the cascades miss it
        faces(np.asarray(sideways))
    (pred,) = predictor.predict(raw)
    assert np.abs(np.subtract(pred.box, ASTRONAUT_BOX)).max() <= 4 and pred.top == "happy"


def test_predict_and_explain_commands_on_every_bad_file_exit_1_with_a_message(tmp_path, capsys):
    for case, (name, make, _message) in BAD.items():
        path = tmp_path / case / name
        path.parent.mkdir()
        path.write_bytes(make())
        for argv in (["predict", str(path)], ["explain", str(path), "--method", "saliency",
                                              "--out", str(tmp_path / "overlay.png")]):
            assert main(argv) == 1, (case, argv[0])
            err = capsys.readouterr().err
            assert err.startswith("error: ") and str(path) in err and "Traceback" not in err, (case, err)
    assert not (tmp_path / "overlay.png").exists()


def test_predict_command_on_odd_files_and_tiny_images(tmp_path, capsys):
    for case, (name, raw) in odd_but_fine().items():
        path = tmp_path / f"{case}-{name}"
        path.write_bytes(raw)
        assert main(["predict", str(path), "--whole-image", "--json"]) == 0, case
        assert len(json.loads(capsys.readouterr().out)["faces"]) == 1
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(odd_but_fine()["tiny_10x10"][1])
    assert main(["predict", str(tiny)]) == 1
    assert "only 10 x 10 pixels" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- the app's uploader
def test_explain_page_survives_every_bad_upload_and_keeps_serving(runs_root):
    """One browser session uploads every bad file in turn: each gives one error naming the file and no exception;
    odd formats, a tiny image and a photo of several faces work; then a good photo is still explained."""
    at = app("../pages/explain.py", {"explain.methods": ["gradcam"]})

    def upload(name: str, raw: bytes, mime: str) -> None:  # the widget is looked up afresh after every rerun
        if Path(name).suffix.lstrip(".") not in pickers.IMAGE_TYPES:  # the uploader refuses other extensions;
            name = f"{Path(name).stem}.png"                      # the content decides anyway
        at.file_uploader[0].set_value((name, raw, mime)).run()

    for case, (name, make, _message) in BAD.items():
        upload(name, make(), "image/jpeg")
        assert not at.exception, (case, [e.value for e in at.exception])
        assert len(at.error) == 1 and f"Could not read **{Path(name).stem}." in at.error[0].value, case
        assert not charts_on(at)
    for case, (name, raw) in odd_but_fine().items():
        upload(name, raw, "image/png")
        assert not at.exception and not at.error, (case, [e.value for e in at.error])
        assert any("No face found" in w.value for w in at.warning), case  # test cards hold no face
    upload("group.png", encode(Image.fromarray(several_faces(3)), "PNG"), "image/png")
    assert not at.exception and at.radio[-1].label == "3 faces found: which one?"
    upload("me.jpg", _jpeg(), "image/jpeg")
    assert not at.exception and not at.error
    (chart,) = charts_on(at)
    assert len(chart["data"][0]["y"]) == 7


def animated(first: np.ndarray, fmt: str, **kw) -> bytes:
    """A three-frame animation whose first frame is ``first``, then a blue and a yellow frame."""
    h, w = first.shape[:2]
    frames = [Image.fromarray(first), Image.new("RGB", (w, h), (0, 0, 255)), Image.new("RGB", (w, h), (255, 255, 0))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw)


def few_colours(h: int = 24, w: int = 36) -> np.ndarray:
    """An asymmetric RGB image of four colours, which GIF's 256-colour palette keeps exactly."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 240, np.uint8)
    img[: h // 3, : w // 4] = (250, 20, 20)
    img[h // 2:, w // 2:] = (20, 30, 200)
    img[(x + 2 * y) % 7 == 0] = (10, 160, 40)
    return img


@pytest.mark.parametrize(("name", "kw"), [("anim.gif", {}), ("anim.webp", {"lossless": True})])
def test_animated_gif_and_webp_give_their_first_frame(name, kw, tmp_path):
    first = few_colours()
    raw = animated(first, "GIF" if name.endswith(".gif") else "WEBP", **kw)
    with Image.open(io.BytesIO(raw)) as im:
        assert im.n_frames == 3
    path = tmp_path / name
    path.write_bytes(raw)
    assert np.array_equal(load_image(path), first)
    assert np.array_equal(load_image(raw), first)
    with Image.open(path) as im:  # an animation already opened (and moved to a later frame) by the caller
        im.seek(2)
        assert np.array_equal(load_image(im), first)


@pytest.mark.parametrize(("name", "mime", "kw"), [("party.gif", "image/gif", {}),
                                                  ("party.webp", "image/webp", {"quality": 90})])
def test_an_animated_image_upload_is_explained_from_its_first_frame(name, mime, kw, runs_root):
    """The Explain page on an animation whose first frame is a photo (then two plain frames): the face is found in
    the first frame and explained, as for the photo itself; no error, no "no face" warning."""
    raw = animated(data.astronaut(), "GIF" if name.endswith(".gif") else "WEBP", **kw)
    at = app("../pages/explain.py", {"explain.methods": ["gradcam"]})
    at.file_uploader[0].set_value((name, raw, mime)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error and not at.warning, [e.value for e in [*at.error, *at.warning]]
    assert at.metric[0].value == "happy"  # the pretrained model on the smiling face of frame 1
    (chart,) = charts_on(at)
    assert len(chart["data"][0]["y"]) == 7


# --------------------------------------------------------------------------------------------- configs
BAD_CONFIGS = [
    ("train.optimizer.lr=-0.1", "train.optimizer.lr: must be > 0 (got -0.1)"),
    ("train.optimizer.lr=0", "train.optimizer.lr: must be > 0 (got 0)"),
    ("train.optimizer.lr=.inf", "train.optimizer.lr: input should be a finite number"),
    ("train.optimizer.lr=.nan", "train.optimizer.lr: "),
    ("train.optimizer.lr=fast", "train.optimizer.lr: input should be a valid number"),
    ("train.batch_size=0", "train.batch_size: must be > 0 (got 0)"),
    ("train.batch_size=-8", "train.batch_size: must be > 0 (got -8)"),
    ("train.batch_size=2.5", "train.batch_size: input should be a valid integer"),
    ("train.epochs=0", "train.epochs: must be > 0 (got 0)"),
    ("train.epochs=true", "train.epochs: input should be a valid integer"),
    ("train.epochs=[3]", "train.epochs: input should be a valid integer"),
    ("model.name=resnet9000", "model.name: unknown model 'resnet9000'; valid: "),
    ("data.name=imagenet", "data.name: unknown data set 'imagenet'; valid: "),
    ("train.optimizer.name=rmsprop", "train.optimizer.name: must be one of"),
    ("train.method.name=dino", "train.method: input tag 'dino'"),
    ("train.optimizer.momentum=1.5", "train.optimizer.momentum: must be < 1 (got 1.5)"),
    ("train.optimizer.sam.rho=.inf", "train.optimizer.sam.rho: input should be a finite number"),
    ("train.scheduler.gamma=2", "train.scheduler.gamma: must be <= 1 (got 2)"),
    ("train.scheduler.milestones=[10, -5]", "train.scheduler.milestones.1: must be > 0 (got -5)"),
    ("data.label_noise=1.0", "data.label_noise: must be < 1 (got 1.0)"),
    ("train.device=tpu", "train.device: must be cpu, cuda or cuda:N (got 'tpu')"),
    ("seed=-1", "seed: must be >= 0 (got -1)"),
    ("seed=100000000000000000000", "seed: must be < 4294967296"),
    ("group=../../etc", "group: '../../etc' is not a valid group name"),
    ("trian.epochs=3", "unknown key 'trian' (valid: name, seed, group, tags, data, model, train, eval)"),
    ("train.optimiser.lr=0.1", "unknown key 'train.optimiser'"),
    ("model.input_size=-32", "model.input_size: must be > 0 (got -32)"),
    ("train.stages=[]", "train.stages: give at least one stage"),
    ("eval.splits=[dev]", "eval.splits.0: must be one of"),
    ("train.augment.erasing_scale=[0.5, 0.1]", "train.augment.erasing_scale: must be two fractions"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_CONFIGS)
def test_bad_config_values_are_refused_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [override])
    assert expected in str(info.value)


def test_fp16_with_sam_is_refused():
    with pytest.raises(ConfigError, match="train.precision fp16 cannot be combined with SAM"):
        load_config(SMOKE, ["train.precision=fp16", "train.optimizer.sam.enabled=true"])


@pytest.mark.parametrize(("override", "expected"), [
    ("train.optimizer.lr=-0.1", "train.optimizer.lr: must be > 0"),
    ("train.batch_size=0", "train.batch_size: must be > 0"),
    ("model.name=resnet9000", "model.name: unknown model"),
    ("train.epochs=true", "train.epochs: input should be a valid integer"),
    ("data.options.nonsense=1", "data.options: unknown synthfaces option(s) nonsense; valid: "),
    ("data.options.image_size=5", "data.options: synthfaces option image_size=5 is invalid"),
    ("model.options.nonsense=1", "model.options: model small_cnn with options"),
    ("train.method.name=scn", "train.method: scn needs a model with importance weights (model.name: scn); "
                              "model.name is small_cnn"),
    ("train.region_bias.weight=0.5", "train.region_bias needs a model with part attention"),
    ("data.name=rafdb", "data.root: rafdb reads its files from disk"),
])
def test_the_train_command_refuses_bad_configs_before_any_run_starts(override, expected, runs_root, monkeypatch,
                                                                     capsys):
    monkeypatch.delenv("FER_DATA", raising=False)
    assert main(["train", "--config", str(SMOKE), "--set", override]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert list(runs_root.iterdir()) == []


def test_train_command_refuses_a_missing_gpu_before_any_run_starts(runs_root, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", "--config", str(SMOKE), "--set", "train.device=cuda"]) == 2
    assert "train.device: cuda is not available here" in capsys.readouterr().err
    assert list(runs_root.iterdir()) == []


def test_the_app_launcher_refuses_bad_configs_before_creating_anything(runs_root):
    with pytest.raises(ConfigError, match="train.optimizer.lr: must be > 0"):
        launch_train(SMOKE, ["train.optimizer.lr=-1"])
    assert list(runs_root.iterdir()) == []


def test_a_launched_run_with_a_config_the_schema_accepts_but_training_cannot_is_marked_failed(runs_root, capsys):
    """A queued run (made by the app's launcher) whose trainer refuses the config: the run says failed and why,
    instead of staying queued until it reads as interrupted."""
    run = runio.create_run_dir("queued-bad", config=load_config(SMOKE, ["data.options.nonsense=1"]).to_yaml(),
                               state="queued")
    assert main(["train", "--config", str(run / "config.yaml"), "--run-id", "queued-bad"]) == 2
    status = runio.read_status(run)
    assert status["state"] == "failed" and "data.options: unknown synthfaces option" in status["error"]


# --------------------------------------------------------------------------------------------- checkpoints
def test_truncated_weights_are_refused_at_every_cut(smoke_run, tmp_path):
    """best.safetensors cut at 12 points from the first byte to the last: always a WeightsMismatchError naming
    the file, never a crash or a half-loaded model."""
    whole = (smoke_run[0] / "checkpoints" / "best.safetensors").read_bytes()
    for cut in np.linspace(0, len(whole) - 1, 12).astype(int):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(whole[:cut])
        with pytest.raises(WeightsMismatchError, match=path.name):
            read_state_dict(path)


def test_truncated_trainer_state_stops_resume_with_a_message(smoke_run, runs_root, capsys):
    run = copy_run(smoke_run[0], runs_root, "cut-state")
    state = run / "checkpoints" / "last_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    best = (run / "checkpoints" / "best.safetensors").read_bytes()
    runio.write_status(run, state="cancelled")
    assert main(["train", "--quiet", "--resume", "cut-state"]) == 1
    assert "cannot read the trainer state" in capsys.readouterr().err
    status = runio.read_status(run)
    assert status["state"] == "failed" and "last_state.pt" in status["error"]
    assert (run / "checkpoints" / "best.safetensors").read_bytes() == best  # the weights are left alone


def test_weights_of_another_model_or_head_are_refused(smoke_run, runs_root):
    """A run whose best weights come from another model (resnet18), or from the same model with another head:
    loading names the mismatched keys, and the app shows the error and keeps serving."""
    from safetensors.torch import save_file

    from fer_core.models import create_model

    other = copy_run(smoke_run[0], runs_root, "other-model")
    meta = {"class_names": json.dumps(["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"])}
    save_file({k: v.contiguous() for k, v in create_model("resnet18", num_classes=7).state_dict().items()},
              str(other / "checkpoints" / "best.safetensors"), metadata=meta)
    with pytest.raises(WeightsMismatchError, match=r"do not fit SmallCNN: missing from the file"):
        Predictor.from_run(other)
    head = copy_run(smoke_run[0], runs_root, "other-head")
    state = read_state_dict(head / "checkpoints" / "best.safetensors")
    state["fc.weight"], state["fc.bias"] = torch.zeros(5, state["fc.weight"].shape[1]), torch.zeros(5)
    save_file(state, str(head / "checkpoints" / "best.safetensors"), metadata=meta)
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch \(2\): fc.bias \(5,\) vs model \(7,\)"):
        Predictor.from_run(head)
    at = app("../pages/explain.py", run="other-model")
    assert not at.exception and any("Could not load run other-model" in e.value and "do not fit" in e.value
                                    for e in at.error)


def test_commands_on_a_run_with_truncated_weights_exit_1_with_a_message(smoke_run, runs_root, capsys):
    run = copy_run(smoke_run[0], runs_root, "cut-weights")
    best = run / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:2000])
    assert main(["evaluate", "cut-weights"]) == 1
    err = capsys.readouterr().err
    assert "best.safetensors" in err and "Traceback" not in err


def test_truncated_weights_in_the_app_are_a_message(smoke_run, runs_root):
    run = copy_run(smoke_run[0], runs_root, "cut-app")
    best = run / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:2000])
    at = app("../pages/explain.py", run="cut-app")
    assert not at.exception and any("Could not load run cut-app" in e.value for e in at.error)
    shutil.rmtree(run)
