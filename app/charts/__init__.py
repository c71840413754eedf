"""Plotly figures and image tiles for the pages: learning curves, confusion matrices, comparisons, probabilities, data
set counts and faces, SCN's importance weights. Pure functions of plain data (no Streamlit).

Pages and tests use ``from app import charts`` and then ``charts.<name>``: every public name is re-exported here.
Layout: one module per family of figures: :mod:`~app.charts.curves` (learning curves, one run or several
overlaid), :mod:`~app.charts.confusion` (confusion matrices, their difference, per-class recall and per-class
deltas), :mod:`~app.charts.compare` (sweeps, arms, paired differences, hyperparameter searches),
:mod:`~app.charts.evaluation` (reliability diagrams, accuracy per SynthFACS factor, probes),
:mod:`~app.charts.predictions` (one face's probabilities, a batch's top classes), :mod:`~app.charts.data` (data set
counts and face tiles), :mod:`~app.charts.scn` (SCN's importance weights), :mod:`~app.charts.video` (a face's
probabilities over time); the colours and layout helpers they share are in :mod:`~app.charts.common`, which the
others import (never this package).
"""

from __future__ import annotations

from app.charts.common import (
    GAIN_COLOR,
    LOSS_COLOR,
    MANY_CLASSES,
    REFERENCE_COLOR,
    RUN_PALETTE,
    TRAIN_COLOR,
    VAL_COLOR,
    epoch_dtick,
    run_colors,
)
from app.charts.compare import (
    SEARCH_STATE_COLORS,
    SUBSET_COLORS,
    arm_bars,
    paired_differences,
    param_importance,
    search_trials,
    sweep_lines,
    sweep_lines_ci,
)
from app.charts.confusion import (
    class_deltas,
    confusion_difference,
    confusion_matrix,
    per_class_recall,
    pickable_confusion_matrix,
)
from app.charts.curves import learning_curves, overlaid_curves
from app.charts.data import SPLIT_COLORS, class_counts, face_tiles
from app.charts.evaluation import GAP_COLOR, factor_accuracy, probe_curve, reliability_diagram
from app.charts.predictions import predicted_class_counts, probabilities
from app.charts.scn import (
    NOISE_COLORS,
    RELABEL_COLORS,
    SCN_GROUP_COLORS,
    scn_relabel_bars,
    scn_weight_curves,
    scn_weight_histograms,
)
from app.charts.video import CLASS_COLORS, TIME_MARKER_COLOR, class_colors, video_timeline

__all__ = ["CLASS_COLORS", "GAIN_COLOR", "GAP_COLOR", "LOSS_COLOR", "MANY_CLASSES", "NOISE_COLORS", "REFERENCE_COLOR",
           "RELABEL_COLORS", "RUN_PALETTE", "SCN_GROUP_COLORS", "SEARCH_STATE_COLORS", "SPLIT_COLORS", "SUBSET_COLORS",
           "TIME_MARKER_COLOR", "TRAIN_COLOR", "VAL_COLOR", "arm_bars", "class_colors", "class_counts", "class_deltas",
           "confusion_difference", "confusion_matrix", "epoch_dtick", "face_tiles", "factor_accuracy",
           "learning_curves", "overlaid_curves", "paired_differences", "param_importance", "per_class_recall",
           "pickable_confusion_matrix", "predicted_class_counts", "probabilities", "probe_curve", "reliability_diagram",
           "run_colors", "scn_relabel_bars", "scn_weight_curves", "scn_weight_histograms", "search_trials",
           "sweep_lines", "sweep_lines_ci", "video_timeline"]
