"""SynthFACS, the built-in procedural face-expression data set."""

from .clip import ClipInfo, clip_frames, read_labels, write_clip
from .dataset import SUBSETS, VERSION, SynthConfig, SynthFaces, sample_meta, subset_rule
from .render import OCCLUDERS, FaceSpec, Identity, Nuisance, render

__all__ = ["SUBSETS", "VERSION", "OCCLUDERS", "SynthConfig", "SynthFaces", "FaceSpec", "Identity", "Nuisance",
           "render", "sample_meta", "subset_rule", "ClipInfo", "clip_frames", "read_labels", "write_clip"]
