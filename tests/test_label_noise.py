"""Label noise for the SCN experiments: the uniform protocol (test_methods.py) and image-dependent noise, where the
most ambiguous faces get their second most likely class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core import io
from fer_core.config import load_config
from fer_core.data import build_dataset
from fer_core.losses import inject_ambiguous_label_noise
from fer_core.train import train

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


def test_the_most_ambiguous_faces_get_their_second_choice():
    labels = torch.tensor([0, 1, 2, 0, 1])
    dists = torch.tensor([[0.90, 0.05, 0.05],    # clear
                          [0.40, 0.55, 0.05],    # second choice 0 at 0.40 / 0.55 = 0.73
                          [0.10, 0.45, 0.45],    # a tie: second choice 1 at 1.0, the most ambiguous
                          [0.50, 0.20, 0.30],    # second choice 2 at 0.6
                          [0.05, 0.60, 0.35]])   # second choice 2 at 0.58
    noisy = inject_ambiguous_label_noise(labels, dists, 0.4)
    assert noisy.tolist() == [0, 0, 1, 0, 1]  # the two most ambiguous (rows 2 and 1) take their second choice
    assert labels.tolist() == [0, 1, 2, 0, 1]  # not modified
    assert torch.equal(inject_ambiguous_label_noise(labels, dists, 0.0), labels)
    assert (inject_ambiguous_label_noise(labels, dists, 0.99) != labels).sum() == 5  # every face, to another class


def test_synthfaces_ambiguous_noise_falls_on_faces_that_look_like_the_other_class():
    ds = build_dataset("synthfaces", split="train", image_size=32, train_size=2000)
    labels, dists = torch.as_tensor(ds.labels), torch.as_tensor(ds.label_dists)
    noisy = inject_ambiguous_label_noise(labels, dists, 0.2)
    changed = noisy != labels
    assert int(changed.sum()) == 400
    rows = torch.arange(len(labels))
    top_given = dists[rows, labels]
    # the noisy faces are the ambiguous ones: their given label is far less certain than the rest's
    assert float(top_given[changed].mean()) < float(top_given[~changed].mean()) - 0.2
    # and their new label is a class the face shows: on average nearly as likely as the given one
    assert float((dists[rows, noisy][changed] / top_given[changed]).mean()) > 0.6


@pytest.mark.slow
def test_a_run_with_ambiguous_noise_records_it_and_a_data_set_without_distributions_fails_clearly(tmp_path):
    result = train(load_config(SMOKE, ["train.epochs=1", "eval.subsets=[all]", "data.label_noise=0.25",
                                       "data.label_noise_mode=ambiguous"]), tmp_path / "run")
    assert result["state"] == "done"
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "label noise 0.25 (ambiguous) injected: 24 of 96 training labels changed" in log
    root = tmp_path / "faces"
    for split, names in (("train", ["happy", "sad"]), ("test", ["happy", "sad"])):
        for name in names:
            for i in range(3):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(path)
    cfg = load_config(SMOKE, ["data.name=imagefolder", f"data.root={root}", "data.options={val_fraction: 0.34}",
                              "data.label_noise=0.2", "data.label_noise_mode=ambiguous", "train.epochs=1"])
    with pytest.raises(ValueError, match="label_noise_mode: ambiguous needs label distributions"):
        train(cfg, tmp_path / "folder-run")
    assert io.read_status(tmp_path / "folder-run")["state"] == "failed"
