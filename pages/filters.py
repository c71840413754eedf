"""Filters and activations: what a model's channels respond to, layer by layer.

Two views of the same layers (by default the model's stages, e.g. ``layer1``-``layer4`` of a ResNet):

* **Filter visualisations**: for the first channels of each layer, an image made by gradient ascent to excite that
  channel, the channels of one layer optimised together as one batch (``fer_core.explain.visualize_filters``), as
  the founding report showed for ResNet stages;
* **Activation maps**: for one face (a photo or a SynthFACS test face, chosen as on the Explain page), the most
  active channels of each layer (``fer_core.explain.activation_grid``).

Both are cached per (model, layer, channels or face, settings), so only new combinations cost time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app import pickers
from fer_core.explain import activation_grid, visualize_filters
from fer_core.explain.render import enlarge

LAYERS_KEY = "filters.layers"
LAYERS_MODEL_KEY = "filters.layers_model"  # the model the layer choice was made for
CHANNELS_KEY = "filters.channels"
FIRST_KEY = "filters.first"
STEPS_KEY = "filters.steps"
SIZE_KEY = "filters.size"
TOPK_KEY = "filters.top_k"
TILE = 96  # display size of a filter image, pixels
LAYERS_PER_ROW = 3
SIZES = (32, 48, 64, 96, 128, 224)

st.session_state.setdefault(CHANNELS_KEY, 9)
st.session_state.setdefault(FIRST_KEY, 0)
st.session_state.setdefault(STEPS_KEY, 32)
st.session_state.setdefault(TOPK_KEY, 16)


# --------------------------------------------------------------------------------------------- cached work
@st.cache_data(show_spinner=False, max_entries=16)
def _layers(model_key: str, _predictor: Any) -> tuple[list, list]:
    """(every layer with channel maps, the stages) of the model (``fer_core.predict``)."""
    return _predictor.layers(), _predictor.stage_layers()


@st.cache_data(show_spinner=False, max_entries=512)
def _filters(model_key: str, layer: str, channels: tuple[int, ...], steps: int, size: int,
             _predictor: Any) -> list[np.ndarray]:
    """The gradient-ascent images of channels of one layer, optimised as one batch."""
    return visualize_filters(_predictor.model, layer, channels, size=size, steps=steps)


@st.cache_data(show_spinner=False, max_entries=256)
def _activations(model_key: str, face_key: str, layer: str, k: int, _predictor: Any, _crop: np.ndarray) -> np.ndarray:
    """The grid of the ``k`` most active channels of a layer for the face."""
    return activation_grid(_predictor.model, _crop, layer, k=k, tile=64)


# --------------------------------------------------------------------------------------------- model and layers
st.title("Filters and activations")
st.markdown(
    "What do a model's channels respond to? **Filter visualisations** show, for each chosen layer, images made to "
    "excite one channel as much as possible (gradient ascent from noise); early layers answer to edges and colours, "
    "later ones to parts of faces. **Activation maps** show which channels a given face lights up, layer by layer."
)
model = pickers.model_picker("filters")
if model is None:
    st.stop()
predictor = model.predictor
try:
    layers, stages = _layers(model.key, predictor)
except Exception as err:  # noqa: BLE001 - a model whose forward fails on a blank input: say so, do not crash
    st.error(f"Could not list the layers of {model.label}: {err}", icon=":material/error:")
    st.stop()
by_name = {layer.name: layer for layer in layers}
wanted = st.session_state.get(LAYERS_KEY)
if wanted is None or st.session_state.get(LAYERS_MODEL_KEY, model.key) != model.key or any(
        n not in by_name for n in wanted):  # first visit or another model: the model's own stages
    st.session_state[LAYERS_KEY] = [layer.name for layer in stages]
st.session_state[LAYERS_MODEL_KEY] = model.key
chosen = st.multiselect("Layers", list(by_name), key=LAYERS_KEY, format_func=lambda n: by_name[n].label,
                        help="By default the model's stages; any layer whose output is a stack of channel maps works.")
if not chosen:
    st.info("Choose one or more layers above (the model's stages are a good start).")
    st.stop()

filters_tab, activations_tab = st.tabs(["Filter visualisations", "Activation maps of a face"])

# --------------------------------------------------------------------------------------------- filters
with filters_tab:
    _c, in_h, _w = predictor.cfg.input_size
    st.session_state.setdefault(SIZE_KEY, max([s for s in SIZES if s <= min(in_h, 128)], default=SIZES[0]))
    a, b, c, d = st.columns(4)
    count = int(a.number_input("Channels per layer", 1, 32, key=CHANNELS_KEY,
                               help="How many channels to show for each layer, starting at the first channel."))
    first = int(b.number_input("First channel", 0, 4095, key=FIRST_KEY))
    steps = int(c.select_slider("Gradient-ascent steps", [2, 4, 8, 16, 32, 64, 128, 256], key=STEPS_KEY,
                                help="More steps give clearer patterns and take proportionally longer."))
    size = int(d.select_slider("Image size (pixels)", list(SIZES), key=SIZE_KEY,
                               help=f"The model's input is {in_h} pixels; smaller images are faster."))
    jobs = {name: tuple(range(first, min(first + count, by_name[name].channels))) for name in chosen}
    todo = sum(len(channels) for channels in jobs.values())
    bar = st.progress(0.0, text="Visualising filters…")
    done = 0
    columns = st.columns(LAYERS_PER_ROW)
    for i, name in enumerate(chosen):  # layer by layer, so each grid shows as soon as it is ready
        if i and i % LAYERS_PER_ROW == 0:
            columns = st.columns(LAYERS_PER_ROW)
        column, layer, channels = columns[i % LAYERS_PER_ROW], by_name[name], jobs[name]
        column.markdown(f"**{layer.label}**")
        if not channels:
            column.caption(f"No channel in range: {name} has channels 0 to {layer.channels - 1}.")
            continue
        bar.progress(done / todo, text=f"Gradient ascent: {name}, channels {channels[0]} to {channels[-1]} "
                     f"({done + len(channels)} of {todo})")
        done += len(channels)
        try:
            images = _filters(model.key, name, channels, steps, size, predictor)
        except Exception as err:  # noqa: BLE001 - e.g. a layer the forward pass skips: one message per layer
            column.error(f"{name}: {err}", icon=":material/error:")
            continue
        column.image([enlarge(img, TILE) for img in images], caption=[f"channel {ch}" for ch in channels], width=TILE)
    bar.empty()
    st.caption(f"Each image was optimised for {steps} steps from noise (Fourier-parametrised, with random jitter, "
               "scale and rotation) to maximise the channel's mean activation, the channels of a layer together "
               "in one batch; grey models give grey images.")

# --------------------------------------------------------------------------------------------- activations
with activations_tab:
    face = pickers.face_picker("filters", model.synth_options)
    if face is not None:
        if face.label is not None:  # a data-set face (a photo's crop is already shown by the picker)
            st.image(enlarge(face.crop, 128), caption=f"{face.name} · {face.label}")
        k = int(st.slider("Channels shown per layer (the most active)", 4, 64, key=TOPK_KEY, step=4))
        cols = st.columns(min(3, len(chosen)))
        for i, name in enumerate(chosen):
            layer = by_name[name]
            try:
                grid = _activations(model.key, face.key, name, k, predictor, face.crop)
            except Exception as err:  # noqa: BLE001 - one layer failing must not hide the others
                cols[i % len(cols)].error(f"{name}: {err}", icon=":material/error:")
                continue
            cols[i % len(cols)].image(grid, width="stretch", caption=f"{layer.label}: the {min(k, layer.channels)} "
                                      "most active channels, strongest first")
        st.caption("Each channel's map is scaled to its own range (viridis: yellow is the strongest activation) and "
                   "enlarged without smoothing, so a 4×4 map looks 4×4.")
