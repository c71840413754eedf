"""Property-based fuzzing (hypothesis) of the two places untrusted input enters: image decoding and configs (and
the run ids derived from names). Deterministic for CI: ``derandomize=True`` (the examples follow from the test's
code, not a random seed), no example database, no deadline; each test takes a few seconds.

Properties: ``load_image`` on any bytes or array returns an RGB ``uint8`` image or raises ``ImageError`` (never
anything else), and on the valid seed images always returns their pixels (an error is allowed only once they are
damaged); a header claiming more pixels than the limit is refused before decoding; ``load_config`` on any
mapping or override returns a ``Config`` or raises ``ConfigError`` whose every line names a key; a valid config
survives its own YAML; any name gives a valid run id and no id leaves the runs folder.
"""

from __future__ import annotations

import io
import struct
import typing
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from pydantic import BaseModel

from fer_core import io as runio
from fer_core.config import Config, ConfigError, load_config
from fer_core.face import ImageError, load_image

# Pillow warns on headers between 89 and 179 megapixels before load_image refuses them; the outcome is what counts.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MANY = settings(FUZZ, max_examples=1000)  # decoding a damaged 12x16 image takes well under a millisecond


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    frames = [im, Image.new("RGB", im.size, (0, 255, 0))]
    return {
        "png": _encode(im, "PNG"), "jpeg": _encode(im, "JPEG"), "gif": _encode(im, "GIF"),
        "gif_animated": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp": _encode(im, "WEBP"), "webp_animated": _encode(frames[0], "WEBP", save_all=True,
                                                              append_images=frames[1:]),
        "bmp": _encode(im, "BMP"), "tiff": _encode(im, "TIFF"), "ico": _encode(im, "ICO"),
        "png16": _encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
        "rgba": _encode(im.convert("RGBA"), "PNG"), "cmyk": _encode(im.convert("CMYK"), "JPEG"),
        "exif": _encode(im, "JPEG", exif=Image.Exif()), "palette": _encode(im.convert("P"), "PNG", transparency=1),
    }


SEEDS = _seeds()
SEED_RGB = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)  # what the seeds encode
LOSSLESS = ("png", "gif", "gif_animated", "bmp", "tiff", "ico", "rgba")
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM",
          b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00", b"P6\n", b"<!DOCTYPE html>", b"%PDF-"]


def _check(source, valid: bool = False, **kw) -> None:
    """The property: an RGB uint8 image, or ImageError; ``valid``: an image, never an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about truncated TIFF reads; only the outcome matters here
        try:
            out = load_image(source, **kw)
        except ImageError as err:
            if valid:
                raise AssertionError(f"a valid image was refused: {err}") from None
            return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] > 0 and out.shape[1] > 0


@MANY
@given(st.one_of(st.binary(max_size=1024),
                 st.tuples(st.sampled_from(MAGICS), st.binary(max_size=1024)).map(lambda t: t[0] + t[1])))
def test_any_bytes_decode_or_raise_image_error(raw):
    _check(raw)


@MANY
@given(st.sampled_from(sorted(SEEDS)),
       st.lists(st.tuples(st.sampled_from(["set", "delete", "insert", "truncate"]), st.floats(0, 1),
                          st.binary(min_size=1, max_size=8)), min_size=1, max_size=6))
def test_damaged_images_of_every_format_decode_or_raise_image_error(fmt, edits):
    raw = bytearray(SEEDS[fmt])
    for op, where, payload in edits:
        i = min(int(where * len(raw)), max(len(raw) - 1, 0))
        if op == "set":
            raw[i:i + len(payload)] = payload
        elif op == "delete":
            del raw[i:i + len(payload)]
        elif op == "insert":
            raw[i:i] = payload
        else:
            del raw[i:]
    _check(bytes(raw), valid=bytes(raw) == SEEDS[fmt])  # edits that change nothing leave a valid image


def test_every_seed_image_decodes_to_its_pixels_and_animations_to_their_first_frame():
    for fmt, raw in SEEDS.items():
        _check(raw, valid=True)
        out = load_image(raw).astype(int)
        assert out.shape == SEED_RGB.shape, fmt
        if fmt in LOSSLESS:
            assert np.array_equal(out, SEED_RGB), fmt
        elif fmt == "png16":
            assert np.array_equal(out, np.repeat(SEED_RGB[..., :1], 3, axis=2)), fmt
        else:  # lossy: near the image (random noise compresses badly), far from the animations' green frame 2
            near, green = np.abs(out - SEED_RGB).mean(), np.abs(out - [0, 255, 0]).mean()
            assert near < 60 and near < green / 2, (fmt, near, green)


def test_every_truncation_and_byte_of_every_format_decodes_or_raises_image_error():
    """Exhaustive where random edits are sparse: each seed image cut at every length, and each of its bytes set to
    0x00 and to 0xFF in turn (an animated GIF cut inside its second frame's header once raised struct.error)."""
    for raw in SEEDS.values():
        _check(raw, valid=True)
        for cut in range(len(raw)):
            _check(raw[:cut])
        for i in range(len(raw)):
            for value in (0x00, 0xFF):
                _check(raw[:i] + bytes([value]) + raw[i + 1:], valid=raw[i] == value)  # unchanged: still valid


@FUZZ
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32,
                                         np.float64, np.bool_]),
                  shape=st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=6),
                                  st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 5)))))
def test_any_array_becomes_rgb_or_raises_image_error(arr):
    _check(arr)


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@FUZZ
@given(st.integers(1, 70_000), st.integers(1, 70_000), st.integers(1, 1_000_000))
def test_claimed_sizes_over_the_limit_are_refused_before_decoding(width, height, limit):
    raw = _png_claiming(width, height)
    if width * height > limit:
        with pytest.raises(ImageError, match="before decoding it"):
            load_image(raw, max_pixels=limit)
    else:
        _check(raw, max_pixels=limit)


# --------------------------------------------------------------------------------------------- configs
def _key_paths(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every key path of the config schema (sections followed through unions), e.g. ``train.optimizer.lr``."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        ann = field.annotation
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
        members = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        for member in members:
            out += _key_paths(member, f"{path}.")
    return sorted(set(out))


KEYS = _key_paths()
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["sgd", "adamw", "scn", "small_cnn", "synthfaces",
                                                           "cosine", "cpu", "cuda", "backbone", "fp16"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def _nest(items: list[tuple[str, object]]) -> dict:
    data: dict = {}
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return data


def _assert_names_keys(err: ConfigError) -> None:
    roots = {k.split(".")[0] for k in KEYS} | {"<top>"}
    for problem in err.problems:
        head = problem.removeprefix("unknown key '").split(":")[0].split("'")[0].split(".")[0]
        assert head in roots or problem.startswith(("unknown key", "the top level", "--set")), problem


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8)), VALUES), max_size=6))
def test_any_config_mapping_validates_or_names_the_bad_keys(items):
    try:
        cfg = load_config(_nest([(k, v) for k, v in items if k and "." not in k[:1]]))
    except ConfigError as err:
        _assert_names_keys(err)
        return
    assert isinstance(cfg, Config)
    assert load_config(yaml.safe_load(cfg.to_yaml())) == cfg  # a config that validates survives its own YAML


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=30),
                          st.tuples(st.sampled_from(KEYS), st.text(max_size=12)).map(lambda t: f"{t[0]}={t[1]}")),
                max_size=4))
def test_any_override_strings_validate_or_raise_config_error(overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError as err:
        _assert_names_keys(err)
        return
    assert isinstance(cfg, Config)


@FUZZ
@given(st.text(max_size=80), st.text(max_size=40))
def test_names_make_valid_ids_and_no_id_leaves_the_runs_folder(name, run_id):
    made = runio.new_run_id(name)
    assert runio.check_run_id(made) == made
    base = Path("/tmp/fer-fuzz-runs")
    try:
        path = runio.run_path(run_id, base)
    except ValueError:
        return
    assert path.parent == base.resolve() and path.name == run_id
