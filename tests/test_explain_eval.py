"""Explanation quality against SynthFACS's ground truth: the metrics, and a model that can only see the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_core.data import build_dataset, materialize
from fer_core.explain.evaluation import deletion_insertion, evaluate_explanations, localisation, to_markdown
from fer_core.labels import CLASSES
from fer_core.models import ModelConfig, create_model
from fer_core.transforms import BatchTransform


def test_localisation_metrics_on_hand_made_maps():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[2:4, 2:7] = 1                                     # 10 pixels
    perfect = mask.astype(np.float32)
    assert localisation(perfect, mask) == (1.0, 1.0, 1.0)
    half = np.zeros((10, 10), np.float32)
    half[2, 2:7] = 1.0                                     # 5 pixels in the mask
    half[8, 0:5] = 1.0                                     # 5 outside, same relevance
    pointing, mass, rank = localisation(half, mask)
    assert mass == pytest.approx(0.5) and rank == pytest.approx(0.5) and pointing == 1.0  # argmax: first max
    signed = -perfect                                      # evidence against the class counts as nothing
    assert localisation(signed, mask) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="mask is empty"):
        localisation(perfect, np.zeros_like(mask))


class _LeftHalfDetector(torch.nn.Module):
    """Class 0's logit is a fixed +-1 pattern matched against the left half of a 16x16 grey image; class 1's is 0.
    Its evidence is exactly the left half, so deleting it first must hurt more than deleting the right half."""

    def __init__(self, pattern: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(16, 16))
        with torch.no_grad():
            self.weight[:, :8] = 2 * pattern[:, :8] - 1
        self.cfg = ModelConfig(name="left", input_size=(1, 16, 16), mean=(0.0,), std=(1.0,), num_classes=2,
                               class_names=("neutral", "happy"))

    def forward(self, x):
        evidence = 4 * (x[:, 0] * self.weight).sum((1, 2)) / 64
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def test_deleting_the_evidence_first_hurts_more_than_deleting_the_rest():
    pattern = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (16, 16))).float()
    model = _LeftHalfDetector(pattern).eval()
    image = (pattern.numpy() * 255).astype(np.uint8)
    evidence = np.zeros((16, 16), np.float32)
    evidence[:, :8] = 1 + np.random.default_rng(1).random((16, 8))  # the left half first, in any order
    d_good, i_good = deletion_insertion(model, image, evidence, target=0)
    d_bad, i_bad = deletion_insertion(model, image, 1 - evidence / 2, target=0)  # the right half first
    assert 0 <= d_good <= 1 and 0 <= i_good <= 1
    assert d_good < d_bad - 0.1 and i_good > i_bad + 0.1


def _masked(items: list[dict]) -> torch.Tensor:
    """Faces with everything outside the relevance mask blacked out: the only evidence left is in the mask."""
    return torch.stack([it["image"] * it["mask"].clamp(max=1).to(torch.uint8)[None] for it in items])


def test_gradcam_points_into_the_mask_of_a_model_that_can_only_see_it():
    """Happy vs surprise on faces blacked out outside their relevance mask: whatever the model uses is inside it,
    so Grad-CAM's peak must land there far more often than a random map's."""
    opts = {"image_size": 48, "train_size": 2000, "val_size": 8, "test_size": 300, "balance": "balanced"}
    train_ds, test_ds = (build_dataset("synthfaces", split=s, **opts) for s in ("train", "test"))
    materialize(train_ds), materialize(test_ds)
    pick = [CLASSES.index("happy"), CLASSES.index("surprise")]
    train_items = [train_ds[i] for i in range(len(train_ds)) if train_ds.labels[i] in pick]
    test_items = [test_ds[i] for i in range(len(test_ds)) if test_ds.labels[i] in pick][:40]
    x, y = _masked(train_items), torch.tensor([it["label"] for it in train_items])
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=7, input_size=48)
    tf = BatchTransform(model.cfg, hflip=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(10):
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = torch.nn.functional.cross_entropy(model(tf(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    faces = [dict(it, image=img) for it, img in zip(test_items, _masked(test_items), strict=True)]
    df = evaluate_explanations(model, faces, ["gradcam"], steps=8)
    rows = df[df["subset"] == "all"].set_index("method")
    assert rows.loc["gradcam", "pointing"] > rows.loc["random", "pointing"] + 0.3, rows
    assert rows.loc["gradcam", "mass"] > rows.loc["random", "mass"] + 0.05, rows  # coarse 6x6 map: spread out
    assert rows.loc["mask", "rank"] == pytest.approx(1.0) and rows.loc["mask", "pointing"] == 1.0
    table = to_markdown(df)
    assert "*random map (floor)*" in table and "*ground-truth mask (ceiling)*" in table and "| gradcam |" in table
