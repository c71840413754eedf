"""Predict photos: upload several photos (or a zip of them), get every face's predicted expression as a table, the
number of faces per class and the table as a CSV file.

The page is ``python -m fer_core predict FOLDER --out predictions.csv`` in the browser: the files are read in memory
by :func:`fer_core.batch_predict.predict_files` (a zip member by member, with its size limits and unsafe names
refused), a bad file is a row with its reason and a message here, never the end of the others.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from app import charts, pickers, ui
from fer_core.batch_predict import ERROR, describe, predict_files, summarize

UPLOAD_KEY = "predict.upload"
WHOLE_KEY = "predict.whole_image"
SHOWN_ERRORS = 20  # unreadable files listed in the warning; all of them are in the table


RESULT_KEY = "predict.result"


def _predictions(key: str, predictor: Any, files: list[tuple[str, bytes]], whole_image: bool) -> pd.DataFrame:
    """The table of the uploaded files, computed with a progress bar once per (model, files, option) ``key`` and
    kept in the session (not st.cache_data: it would replay the progress bar)."""
    kept = st.session_state.get(RESULT_KEY)
    if kept is not None and kept[0] == key:
        return kept[1]
    bar = st.progress(0.0, text="Looking for faces…")

    def progress(done: int, total: int, name: str) -> None:
        bar.progress(done / total, text=f"{done} of {total} files" + (f" ({name})" if name else ""))

    try:
        table = predict_files(predictor, files, whole_image_if_none=whole_image, progress=progress)
    finally:
        bar.empty()
    st.session_state[RESULT_KEY] = (key, table)
    return table


st.title("Predict photos")
st.markdown(
    "Upload photos, or a zip of them: every face found in every photo gets the model's probabilities, in a table "
    "you can download. From a shell: `python -m fer_core predict FOLDER --out predictions.csv`.")
model = pickers.model_picker("predict")
if model is None:
    st.stop()
uploads = st.file_uploader("Photos or a zip of photos", type=[*pickers.IMAGE_TYPES, "zip"],
                           accept_multiple_files=True, key=UPLOAD_KEY,
                           help="JPEG, PNG, WebP, GIF (first frame), BMP or TIFF; a zip is read in memory (sub-folders "
                                "included). Unreadable files are listed with the reason; the others go on.")
whole_image = st.toggle("Use the whole image when no face is found", key=WHOLE_KEY,
                        help="For photos that are already face crops: their centre square is classified.")
if not uploads:
    st.info("Upload one or more photos, or a zip of them.", icon=":material/add_a_photo:")
    st.stop()

files = [(u.name, u.getvalue()) for u in uploads]
digest = hashlib.sha1()
for name, data in files:
    digest.update(name.encode() + b"\0" + hashlib.sha1(data).digest())
try:
    table = _predictions(f"{model.key}|{digest.hexdigest()}|{whole_image}", model.predictor, files, whole_image)
except Exception as err:  # noqa: BLE001 - bad files are rows; anything else is a message, never a traceback
    st.error(f"Could not predict the uploaded files: {type(err).__name__}: {err}", icon=":material/error:")
    st.stop()
summary = summarize(table)

cols = st.columns(4)
cols[0].metric("Files", summary["files"])
cols[1].metric("Faces", summary["faces"])
cols[2].metric("Without a face", summary["no_face"])
cols[3].metric("Unreadable", summary["errors"])
st.caption(describe(summary) + f" · model: {model.label}")
errors = list(summary["error_files"].items())
if errors:
    more = f"\n\n… and {len(errors) - SHOWN_ERRORS} more: see the status column." if len(errors) > SHOWN_ERRORS else ""
    st.warning("**Not read:**\n" + "\n".join(f"- **{name}**: {why}" for name, why in errors[:SHOWN_ERRORS]) + more,
               icon=":material/broken_image:")
if summary["faces"]:
    st.plotly_chart(charts.predicted_class_counts(summary["per_class"]), width="stretch", key="predict.counts")
elif not summary["files"]:
    st.info("There are no files in the upload (an empty zip, or only folders and hidden files).")
elif summary["no_face"]:
    st.info("No face was found in these photos. If they are face crops, turn on **Use the whole image**.")

st.subheader("Every face")
probs = [c for c in table.columns if c.startswith("prob_")]
st.dataframe(table, hide_index=True, width="stretch", key="predict.table", placeholder=ui.MISSING, column_config={
    "status": st.column_config.TextColumn("status", help=f"ok; no face; or {ERROR}: the reason the file was not "
                                                         "read"),
    "score": st.column_config.NumberColumn("score", format="%.3f", help="the top class's probability"),
    **{c: st.column_config.NumberColumn(c.removeprefix("prob_"), format="%.3f") for c in probs},
})
st.download_button("Download the table (CSV)", table.to_csv(index=False).encode("utf-8"),
                   file_name="predictions.csv", mime="text/csv", icon=":material/download:", key="predict.download")
