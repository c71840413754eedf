"""Faces from photos: image reading (formats, EXIF, broken files, bombs), Haar detection, crops, alignment, the
predictor on a real face (skimage's astronaut), and the ``predict`` / ``explain`` commands."""

from __future__ import annotations

import io
import json
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data

from fer_core.cli import main
from fer_core.face import ImageError, NoFaceFound, crop_face, detect_faces, faces, find_eyes, load_image
from fer_core.predict import Predictor

ASTRONAUT_BOX = (177, 66, 95, 95)  # OpenCV's frontal cascade at scaleFactor 1.1 (TOOLING.md)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_model()


@pytest.fixture(scope="module")
def astronaut_png(astronaut, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


def _noise(h: int = 200, w: int = 300) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth RGB test card with an asymmetric block, so JPEG round trips stay close and rotations show."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=2).astype(np.uint8)
    img[: h // 3, : w // 4] = (250, 20, 20)
    return img


# --------------------------------------------------------------------------------------------- detection
def test_astronaut_face_found_and_aligned(astronaut):
    found = faces(astronaut)
    assert len(found) == 1
    face = found[0]
    assert np.abs(np.subtract(face.box, ASTRONAUT_BOX)).max() <= 4, face.box
    assert face.detector == "frontal_default"
    side = face.crop_box[2]
    assert face.crop.shape == (side, side, 3) and face.crop.dtype == np.uint8
    assert abs(side - 1.4 * face.box[2]) <= 1  # margin 0.2 on every side
    assert face.aligned and face.eyes is not None and abs(face.angle) < 10 and face.note == ""
    assert face.neighbours >= 5
    (lx, ly), (rx, ry) = face.eyes
    assert lx < rx and ly < face.box[1] + face.box[3] / 2
    assert faces(astronaut, mode="all")[0].box == face.box


def test_large_photo_keeps_the_real_face_first(astronaut):
    big = cv2.resize(astronaut, (1536, 1536))  # detected on a 1024 copy, where Haar also sees weak false faces
    face = faces(big)[0]
    assert np.abs(np.subtract(face.box, np.multiply(ASTRONAUT_BOX, 3))).max() <= 12, face.box
    assert face.neighbours > 20 and face.aligned


def test_alignment_levels_the_eyes_of_a_tilted_face(astronaut):
    rot = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((224, 113), 15, 1.0), (512, 512),
                         borderMode=cv2.BORDER_REPLICATE)
    face = detect_faces(rot)[0]
    assert face.aligned and -20 < face.angle < -5  # turned counter-clockwise: levelled by a clockwise rotation
    s = face.crop.shape[0]
    inner = round(0.2 / 1.4 * s)
    eyes, note = find_eyes(cv2.cvtColor(face.crop, cv2.COLOR_RGB2GRAY), (inner, inner, s - 2 * inner, s - 2 * inner))
    assert eyes is not None, note
    (lx, ly), (rx, ry) = eyes
    assert abs(ry - ly) < 0.05 * (rx - lx)
    unaligned = detect_faces(rot, align=False)[0]
    assert not unaligned.aligned and unaligned.angle == 0 and unaligned.eyes is None


def test_crop_is_square_exact_and_padded_at_borders(astronaut):
    face = crop_face(astronaut, (100, 100, 50, 50), margin=0.2, align=False)
    assert face.crop_box == (90, 90, 70, 70) and face.detector == "given"
    assert np.array_equal(face.crop, astronaut[90:160, 90:160])
    corner = crop_face(astronaut, (0, 0, 40, 40), margin=0.5, align=False).crop
    assert corner.shape == (80, 80, 3)
    assert np.array_equal(corner[:20, 20], np.repeat(astronaut[0:1, 0], 20, axis=0))  # edge pixels repeated
    assert np.array_equal(corner[20:, 20:], astronaut[:60, :60])
    with pytest.raises(ValueError, match="no area"):
        crop_face(astronaut, (0, 0, 0, 10))


def test_profile_fallback_maps_mirrored_boxes_back(monkeypatch):
    from fer_core import face as face_module

    calls = []

    def fake(name, grey, *args):  # only the profile cascade on the mirror image "sees" a face
        calls.append(name)
        mirrored = grey[:, :10].mean() > 128
        return [((10, 20, 50, 50), 30)] if name == "profile" and mirrored else []

    monkeypatch.setattr(face_module, "_run_cascade", fake)
    img = np.zeros((200, 300, 3), np.uint8)
    img[:, 150:] = 255
    (face,) = detect_faces(img, align=False)
    assert calls == ["frontal_default", "frontal_alt", "profile", "profile"]
    # working copy: padded by 20 px, 340 wide; mirrored x = 340 - 10 - 50 = 280 -> 260 in the image
    assert face.detector == "profile_mirrored" and face.box == (260, 0, 50, 50) and face.neighbours == 30


def test_eyes_not_found_is_recorded_not_raised():
    face = crop_face(np.full((100, 100, 3), 128, np.uint8), (20, 20, 60, 60))
    assert not face.aligned and face.eyes is None and "eyes not found" in face.note


def test_no_face_in_noise_and_whole_image_fallback():
    noise = _noise()
    with pytest.raises(NoFaceFound, match="whole_image_if_none=True"):
        faces(noise)
    (face,) = faces(noise, whole_image_if_none=True)
    assert face.whole_image and face.detector == "whole_image" and face.box == (50, 0, 200, 200)
    assert np.array_equal(face.crop, noise[:, 50:250]) and "centre square" in face.note
    with pytest.raises(ValueError, match="valid: 'largest', 'all'"):
        faces(noise, mode="biggest")


def test_tiny_image_has_no_face():
    with pytest.raises(NoFaceFound, match="only 10 x 10 pixels"):
        faces(np.full((10, 10, 3), 200, np.uint8))


def test_small_face_image_is_found():
    lfw = (data.lfw_subset()[0] * 255).round().astype(np.uint8)  # a 25x25 face crop
    (face,) = faces(lfw)
    assert face.box[2] >= 12


# --------------------------------------------------------------------------------------------- prediction
def test_astronaut_predicted_happy(predictor, astronaut):
    (pred,) = predictor.predict(astronaut)
    assert list(pred.probs) == list(predictor.class_names)
    assert abs(sum(pred.probs.values()) - 1) < 1e-4
    assert pred.top == "happy" and pred.score > 0.9, pred.probs
    assert pred.ranked()[0][0] == "happy" and pred.aligned and pred.detector == "frontal_default"
    assert np.abs(np.subtract(pred.box, ASTRONAUT_BOX)).max() <= 4
    crop_pred = predictor.predict_crop(pred.crop)
    assert crop_pred.top == "happy" and crop_pred.detector == "given"
    assert abs(crop_pred.probs["happy"] - pred.probs["happy"]) < 1e-5
    json.dumps(pred.to_dict())


def test_predict_is_thread_safe(predictor, astronaut):
    expected = predictor.predict(astronaut)[0].probs
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(predictor.predict(astronaut)[0].probs))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r == expected for r in results)


def test_predict_no_face_and_class_names(predictor):
    with pytest.raises(NoFaceFound):
        predictor.predict(_noise())
    (pred,) = predictor.predict(_noise(), whole_image_if_none=True)
    assert pred.detector == "whole_image"
    assert predictor.class_index("happy") == predictor.class_names.index("happy")
    with pytest.raises(ValueError, match="valid: anger, disgust, fear, happy"):
        predictor.class_index("joy")


# --------------------------------------------------------------------------------------------- reading
def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_grey_png(tmp_path):
    grey = _smooth()[..., 0]
    out = load_image(_save(Image.fromarray(grey), tmp_path / "grey.png"))
    assert out.shape == (*grey.shape, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], grey) for c in range(3))


def test_rgba_png_composited_on_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[...] = (200, 100, 50, 255)
    rgba[:, :4, 3] = 0
    rgba[:, 4:8, 3] = 128
    out = load_image(_save(Image.fromarray(rgba), tmp_path / "rgba.png"))
    assert (out[:, :4] == 255).all()
    assert np.array_equal(out[0, 8], [200, 100, 50])
    half = (np.array([200, 100, 50]) * 128 + 255 * 127) / 255
    assert np.abs(out[0, 5].astype(int) - half).max() <= 1


def test_palette_gif_with_transparency(tmp_path):
    im = Image.new("P", (16, 16), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(0, (0, 0, 8, 16))
    out = load_image(_save(im, tmp_path / "palette.gif", transparency=0))
    assert (out[:, :8] == 255).all()
    assert (out[:, 8:] == [0, 0, 255]).all()


def test_animated_gif_and_webp_give_the_first_frame(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (20, 20), c) for c in colours]
    gif = _save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    webp = _save(frames[0], tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    for path in (gif, webp):
        with Image.open(path) as im:
            assert im.n_frames == 3
        out = load_image(path)
        assert out.shape == (20, 20, 3) and (np.abs(out.astype(int) - colours[0]) <= 2).all(), path


def test_16_bit_png_scaled_to_8_bits(tmp_path):
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    im = Image.fromarray(ramp)
    path = _save(im, tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = load_image(path)
    assert np.array_equal(out[..., 0], np.rint(ramp / 257).astype(np.uint8))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_cmyk_jpeg(tmp_path):
    rgb = _smooth()
    path = _save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = load_image(path)
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() < 6


def test_webp_lossless(tmp_path):
    rgb = _smooth()
    assert np.array_equal(load_image(_save(Image.fromarray(rgb), tmp_path / "x.webp", lossless=True)), rgb)


def test_exif_orientation_6_comes_out_upright(tmp_path):
    upright = _smooth(40, 60)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(stored, tmp_path / "sideways.jpg", quality=95, exif=exif)
    out = load_image(path)
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() < 4
    assert out[:5, :5, 0].mean() > 200  # the red block is back at the top left


def test_sources_bytes_file_pil_and_arrays(tmp_path):
    rgb = _smooth()
    path = _save(Image.fromarray(rgb), tmp_path / "x.png")
    assert np.array_equal(load_image(str(path)), rgb)
    assert np.array_equal(load_image(path.read_bytes()), rgb)
    with open(path, "rb") as f:
        assert np.array_equal(load_image(f), rgb)
    assert np.array_equal(load_image(Image.fromarray(rgb)), rgb)
    assert np.array_equal(load_image(rgb), rgb)
    assert np.array_equal(load_image(rgb / 255.0), rgb)
    assert np.array_equal(load_image(rgb.astype(np.uint16) * 257), rgb)
    assert np.array_equal(load_image(rgb[..., 0]), np.repeat(rgb[..., :1], 3, axis=2))
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=2)
    assert (load_image(rgba) == 255).all()
    with pytest.raises(ImageError, match="expected H x W"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="pass a path, bytes"):
        load_image(3.5)
    with pytest.raises(FileNotFoundError, match="no such image file"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("kind, message", [
    ("empty", "empty"),
    ("truncated", "damaged or incomplete"),
    ("html", "HTML web page"),
])
def test_unreadable_files_name_the_file_and_the_formats(tmp_path, kind, message):
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(data.astronaut()).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    else:
        path.write_text("<!DOCTYPE html>\n<html><body>Not found</body></html>\n")
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value) and "JPEG, PNG, WebP" in str(info.value)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels, with a few bytes of pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(im):
        decoded.append(im.format)
        return real_load(im)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    ours = tmp_path / "bomb.png"
    ours.write_bytes(_png_header(7000, 7000))  # 49 MP: over our 40 MP default, under Pillow's limits
    with pytest.raises(ImageError, match=r"7000 x 7000 = 49.0 megapixels, over the limit max_pixels=40,000,000") \
            as info:
        load_image(ours)
    assert str(ours) in str(info.value)
    pillows = tmp_path / "huge.png"
    pillows.write_bytes(_png_header(30000, 30000))  # 900 MP: Pillow's own hard limit refuses it first
    with pytest.raises(ImageError, match="refused .*huge.png before decoding it.*exceeds limit"):
        load_image(pillows, max_pixels=None)
    assert decoded == []
    small = _save(Image.fromarray(_smooth()), tmp_path / "small.png")
    with pytest.raises(ImageError, match="max_pixels=1,000"):
        load_image(small, max_pixels=1000)
    assert decoded == []
    assert load_image(small).shape == (48, 64, 3) and decoded  # the spy does see real decoding


# --------------------------------------------------------------------------------------------- commands
def test_cli_predict(astronaut_png, tmp_path, capsys):
    assert main(["predict", str(astronaut_png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("face 1: box x=17") and "frontal_default" in out[0]
    assert out[1].split() == ["class", "probability"] and out[3].split()[0] == "happy"
    assert main(["predict", str(astronaut_png), "--json", "--all-faces"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "mini_xception_fer2013" and len(result["faces"]) == 1
    assert result["faces"][0]["top"] == "happy" and list(result["faces"][0]["probs"])[3] == "happy"
    noise = _save(Image.fromarray(_noise()), tmp_path / "noise.png")
    assert main(["predict", str(noise)]) == 1
    err = capsys.readouterr().err
    assert "no face found" in err and "--whole-image" in err and str(noise) in err
    assert main(["predict", str(noise), "--whole-image", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"][0]["detector"] == "whole_image"
    assert main(["predict", str(tmp_path / "missing.png")]) == 1
    assert "no such image file" in capsys.readouterr().err
    assert main(["predict", str(astronaut_png), "--model", "nope"]) == 2
    assert "valid: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["predict", str(astronaut_png), "--model", "small_cnn", "--run", "x"])
    assert info.value.code == 2


def test_cli_explain(astronaut_png, tmp_path, capsys):
    from fer_core.explain import list_methods

    method = "saliency"
    assert method in list_methods()
    out = tmp_path / "overlay.png"
    assert main(["explain", str(astronaut_png), "--method", method, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "top class: happy" in printed and f"{method} for happy" in printed
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size[0] == im.size[1] and abs(im.size[0] - 134) <= 6
    assert main(["explain", str(astronaut_png), "--method", "nope", "--out", str(out)]) == 2
    assert method in capsys.readouterr().err
    assert main(["explain", str(astronaut_png), "--method", method, "--out", str(out), "--target", "joy"]) == 2
    assert "valid: anger, disgust, fear, happy, sad, surprise, neutral" in capsys.readouterr().err
