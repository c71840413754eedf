"""FER2013 and FERPlus loaders on tiny fixtures written in the exact published CSV formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fer_core.data.fer2013 as fer2013
import fer_core.data.ferplus  # noqa: F401  (registers "ferplus")
from fer_core.data import build_dataset
from fer_core.labels import CLASSES, DATASET_ORDERS

USAGE = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 3
EMOTION = [i % 7 for i in range(12)]
# neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF   (10 taggers per row)
VOTES = [
    ([0, 8, 1, 0, 0, 0, 0, 1, 0, 0], "fer0000000.png"),  # clear majority: happy
    ([4, 0, 0, 4, 0, 0, 0, 0, 0, 2], "fer0000001.png"),  # tie neutral/sad: no majority
    ([1, 1, 1, 1, 1, 5, 0, 0, 0, 0], "fer0000002.png"),  # single votes are noise: disgust 5 of 5
    ([0, 0, 0, 0, 0, 0, 0, 0, 7, 3], "fer0000003.png"),  # unknown
    ([0, 1, 0, 0, 0, 0, 0, 0, 0, 9], "fer0000004.png"),  # not a face
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], ""),  # empty image name
    ([0, 0, 0, 0, 0, 0, 0, 6, 2, 2], "fer0000006.png"),  # contempt 6 of 10
    ([0, 0, 0, 0, 0, 0, 10, 0, 0, 0], "fer0000007.png"),  # fear
    ([0, 0, 0, 0, 9, 0, 0, 0, 0, 1], "fer0000008.png"),  # anger (the single NF vote is noise)
    ([0, 0, 7, 3, 0, 0, 0, 0, 0, 0], "fer0000009.png"),  # surprise
    ([2, 0, 0, 8, 0, 0, 0, 0, 0, 0], "fer0000010.png"),  # sad
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], "fer0000011.png"),  # neutral
]


def _pixels(i: int) -> np.ndarray:
    return ((np.arange(48 * 48) + 17 * i) % 256).astype(np.uint8)


def _row(i: int, emotion=None, usage=None, pixels=None) -> str:
    pix = " ".join(map(str, _pixels(i))) if pixels is None else pixels
    return f"{EMOTION[i] if emotion is None else emotion},{pix},{USAGE[i] if usage is None else usage}\n"


def _write(root, rows=None):
    root.mkdir(exist_ok=True)
    rows = rows if rows is not None else [_row(i) for i in range(12)]
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(rows))
    lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"]
    lines += [f"{u},{name},{','.join(map(str, v))}\n" for u, (v, name) in zip(USAGE, VOTES, strict=True)]
    (root / "fer2013new.csv").write_text("".join(lines))
    return root


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    return _write(tmp_path / "fer")


def _names(ds):
    return [ds.classes[i] for i in ds.labels]


def test_fer2013_splits_labels_and_images(root):
    sizes = {s: len(fer2013.FER2013(root, split=s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 6, "val": 3, "test": 3}
    ds = fer2013.FER2013(root, split="val")
    assert ds.classes == CLASSES[:7] and ds.num_classes == 7 and ds.channels == 3 and ds.image_size == 48
    assert ds.labels.dtype == np.int64
    assert _names(ds) == [DATASET_ORDERS["fer2013"][EMOTION[i]] for i in (6, 7, 8)]
    assert _names(ds) == ["neutral", "anger", "disgust"]  # FER2013 codes 6, 0, 1
    item = ds[1]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.uint8
    assert item["label"] == CLASSES.index("anger") and item["index"] == 1
    for c in range(3):
        assert np.array_equal(item["image"][c].numpy().ravel(), _pixels(7))
    assert "label_dist" not in item
    with pytest.raises(IndexError):
        ds[3]


def test_fer2013_cache_skips_parsing_and_follows_content(root, tmp_path, monkeypatch):
    first = fer2013.FER2013(root, split="train")
    cached = list(root.glob("fer2013.v*.npz"))
    assert len(cached) == 1 and str((root / "fer2013.csv").stat().st_size) in cached[0].name

    def boom(path):
        raise AssertionError("parsed again")

    monkeypatch.setattr(fer2013, "parse_fer2013_csv", boom)
    second = fer2013.FER2013(root, split="train")
    assert np.array_equal(second.labels, first.labels) and torch.equal(second[2]["image"], first[2]["image"])
    # an edited CSV (same file name) has another key, so it is parsed again
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(_row(i) for i in range(11)))
    with pytest.raises(AssertionError, match="parsed again"):
        fer2013.FER2013(root, split="train")
    monkeypatch.undo()
    # the cache_dir option puts the cache elsewhere (a read-only data folder)
    elsewhere = tmp_path / "elsewhere"
    ds = fer2013.FER2013(root, split="test", cache_dir=elsewhere)
    assert len(ds) == 2 and len(list(elsewhere.glob("*.npz"))) == 1 and ds.config["cache_dir"] == str(elsewhere)


@pytest.mark.parametrize(("bad", "message"), [
    (_row(2, pixels="1 2 3"), "expected 2304 pixel values"),
    (_row(2, emotion=7), "bad emotion '7'"),
    (_row(2, usage="Validation"), "unknown Usage 'Validation'"),
    (_row(2, pixels=" ".join(["300"] * 2304)), "integers 0-255"),
])
def test_fer2013_malformed_row_names_file_and_line(tmp_path, bad, message):
    rows = [_row(i) for i in range(12)]
    rows[2] = bad  # the third data row is line 4 of the file (after the header)
    root = _write(tmp_path / "bad", rows)
    with pytest.raises(ValueError, match=message) as err:
        fer2013.FER2013(root, split="train")
    assert f"{root / 'fer2013.csv'}: line 4" in str(err.value)


def test_fer2013_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        fer2013.FER2013(tmp_path / "nowhere", split="train")
    text = str(err.value)
    assert str(tmp_path / "nowhere" / "fer2013.csv") in text
    assert "challenges-in-representation-learning-facial-expression-recognition-challenge" in text


def test_build_dataset_registry(root):
    ds = build_dataset("fer2013", root=root, split="test")
    assert ds.name == "fer2013" and ds.split == "test" and len(ds) == 3
    with pytest.raises(ValueError, match=r"unknown option\(s\) .* for fer2013; valid: cache_dir"):
        build_dataset("fer2013", root=root, split="test", label_set="basic8")
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset("fer2013", root=root, split="dev")
    with pytest.raises(ValueError, match="unknown subset"):
        build_dataset("fer2013", root=root, split="test", subset="occlusion")
    plus = build_dataset("ferplus", root=root, split="val", mode="probability")
    assert plus.name == "ferplus" and plus.mode == "probability"


def test_ferplus_majority(root, monkeypatch):
    fer2013.FER2013(root, split="train")  # fills the pixel cache: FERPlus must reuse it
    monkeypatch.setattr(fer2013, "parse_fer2013_csv", lambda path: pytest.fail("FERPlus parsed the pixels again"))
    train = fer_core.data.ferplus.FERPlus(root, split="train")
    assert train.classes == CLASSES and train.num_classes == 8
    assert _names(train) == ["happy", "disgust"]
    assert train.dropped == {"empty_name": 1, "no_majority": 1, "unknown_or_nf": 2}
    assert train.image_names == ["fer0000000.png", "fer0000002.png"]
    assert _names(fer_core.data.ferplus.FERPlus(root, split="val")) == ["contempt", "fear", "anger"]
    assert _names(fer_core.data.ferplus.FERPlus(root, split="test")) == ["surprise", "sad", "neutral"]
    item = train[0]
    assert np.array_equal(item["image"][0].numpy().ravel(), _pixels(0))
    dist = item["label_dist"]
    assert dist.dtype == torch.float32 and dist.shape == (8,)
    expected = np.zeros(8, np.float32)
    expected[[CLASSES.index("happy"), CLASSES.index("surprise"), CLASSES.index("contempt")]] = [0.8, 0.1, 0.1]
    assert np.allclose(dist.numpy(), expected) and np.allclose(train.label_dists[0], expected)
    assert train.label_dists.shape == (2, 8) and np.allclose(train.label_dists.sum(1), 1)


def test_ferplus_probability_and_errors(root):
    train = fer_core.data.ferplus.FERPlus(root, split="train", mode="probability")
    assert _names(train) == ["happy", "neutral", "disgust"]  # the tie keeps its first class
    assert train.dropped == {"empty_name": 1, "no_majority": 0, "unknown_or_nf": 2}
    assert np.allclose(train.label_dists[1][[CLASSES.index("neutral"), CLASSES.index("sad")]], [0.5, 0.5])
    with pytest.raises(ValueError, match="unknown mode"):
        fer_core.data.ferplus.FERPlus(root, mode="soft")
    (root / "fer2013new.csv").unlink()
    with pytest.raises(FileNotFoundError, match="fer2013new.csv"):
        fer_core.data.ferplus.FERPlus(root)


def test_ferplus_rows_must_align(tmp_path):
    root = _write(tmp_path / "fer", [_row(i) for i in range(11)])
    with pytest.raises(ValueError, match="row-aligned"):
        fer_core.data.ferplus.FERPlus(root)
    lines = (root / "fer2013new.csv").read_text().splitlines(keepends=True)
    _write(root)
    lines[7] = lines[7].replace("PublicTest", "Training")
    (root / "fer2013new.csv").write_text("".join(lines))
    with pytest.raises(ValueError, match="line 8: Usage 'Training'"):
        fer_core.data.ferplus.FERPlus(root)


def _csv_file(tmp_path, rows, newline="\n", name="fer2013.csv"):
    path = tmp_path / name
    with path.open("w", newline="") as fh:
        fh.write("emotion,pixels,Usage" + newline + "".join(r.replace("\n", newline) for r in rows))
    return path


def _many(n=70):  # more rows than one vectorised block (32), so blocks after the first are exercised
    return [_row(i % 12, pixels=" ".join(map(str, _pixels(i)))) for i in range(n)]


def test_fer2013_parse_accepts_other_spacing_as_before(tmp_path):
    rows = _many()
    expected = np.stack([_pixels(i).reshape(48, 48) for i in range(70)])
    odd = {40: ("  ".join(map(str, _pixels(40))), _pixels(40)),  # double spaces
           41: ("\t".join(map(str, _pixels(41))), _pixels(41)),  # tabs
           42: (" ".join(f"{v:04d}" for v in _pixels(42)), _pixels(42)),  # leading zeros, 4 digits
           43: (" ".join(["+5"] * 2304), np.full(2304, 5, np.uint8))}  # int() accepts a sign
    for i, (text, pixels) in odd.items():
        rows[i] = _row(i % 12, pixels=text)
        expected[i] = pixels.reshape(48, 48)
    pixels, emotion, usage = fer2013.parse_fer2013_csv(_csv_file(tmp_path, rows))
    assert pixels.dtype == np.uint8 and pixels.shape == (70, 48, 48) and np.array_equal(pixels, expected)
    assert emotion.tolist() == [EMOTION[i % 12] for i in range(70)]
    assert usage.tolist() == [fer2013.USAGES.index(USAGE[i % 12]) for i in range(70)]
    # CRLF line ends, a quoted file (the csv module reads it) and blank lines give the same arrays
    for path in (_csv_file(tmp_path, rows, "\r\n", "crlf.csv"),
                 _csv_file(tmp_path, rows[:30] + ['"0","' + rows[30].split(",")[1] + '","Training"\n'] + rows[31:],
                           name="quoted.csv"),
                 _csv_file(tmp_path, rows[:50] + ["\n"] + rows[50:] + ["\n"], name="blank.csv")):
        again = fer2013.parse_fer2013_csv(path)
        assert np.array_equal(again[0], expected), path.name
        assert len(again[1]) == 70


@pytest.mark.parametrize(("index", "text", "message"), [
    (45, "1.5 " + " ".join(["1"] * 2303), "integers 0-255"),
    (45, "a " + " ".join(["1"] * 2303), "integers 0-255"),
    (45, "1000 " + " ".join(["1"] * 2303), "integers 0-255"),
    (45, "256 " + " ".join(["1"] * 2303), "integers 0-255"),
    (45, "-1 " + " ".join(["1"] * 2303), "integers 0-255"),
    (45, "99999999999999999999999 " + " ".join(["1"] * 2303), "integers 0-255"),  # was a bare OverflowError
    (45, "", r"expected 2304 pixel values \(48x48\), got 0"),
    (45, " ".join(["1"] * 2303), r"expected 2304 pixel values \(48x48\), got 2303"),
    (0, " ".join(["1"] * 2305), r"expected 2304 pixel values \(48x48\), got 2305"),
    (69, " ".join(["1"] * 2303), "got 2303"),
])
def test_fer2013_bad_pixels_in_any_block_name_their_line(tmp_path, index, text, message):
    rows = _many()
    rows[index] = _row(index % 12, pixels=text)
    with pytest.raises(ValueError, match=message) as err:
        fer2013.parse_fer2013_csv(_csv_file(tmp_path, rows))
    assert f"fer2013.csv: line {index + 2}:" in str(err.value)


def test_fer2013_counts_checked_per_row_not_in_total(tmp_path):
    rows = _many()
    rows[50] = _row(2, pixels=" ".join(["1"] * 2303))
    rows[51] = _row(3, pixels=" ".join(["1"] * 2305))  # the file's total count is right
    with pytest.raises(ValueError, match="line 52: expected 2304 pixel values"):
        fer2013.parse_fer2013_csv(_csv_file(tmp_path, rows))


def test_fer2013_first_bad_line_is_reported_whatever_is_wrong(tmp_path):
    rows = _many()
    rows[10] = _row(3, pixels="1 2 3")  # line 12: pixels
    rows[40] = _row(3, usage="Validation")  # line 42: usage
    with pytest.raises(ValueError, match="line 12: expected 2304"):
        fer2013.parse_fer2013_csv(_csv_file(tmp_path, rows, name="a.csv"))
    rows[10], rows[5] = _many()[10], "1,2\n"  # line 7: field count, before the usage error
    with pytest.raises(ValueError, match=r"line 7: expected 3 fields \(emotion,pixels,Usage\), got 2"):
        fer2013.parse_fer2013_csv(_csv_file(tmp_path, rows, name="b.csv"))
    rows[5] = _many()[5]
    rows[60] = _row(3, pixels="x")  # after the usage error on line 42
    with pytest.raises(ValueError, match="line 42: unknown Usage 'Validation'"):
        fer2013.parse_fer2013_csv(_csv_file(tmp_path, rows, name="c.csv"))


def test_fer2013_header_and_empty_file(tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        fer2013.parse_fer2013_csv(_csv_file(tmp_path, ["\n"]))
    bad = tmp_path / "bad.csv"
    bad.write_text("label,pixels,Usage\n" + _row(0))
    with pytest.raises(ValueError, match="line 1: expected header 'emotion,pixels,Usage'"):
        fer2013.parse_fer2013_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="line 1: expected header"):
        fer2013.parse_fer2013_csv(empty)
