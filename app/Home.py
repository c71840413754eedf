"""FER Lab Streamlit entry point: ``streamlit run app/Home.py``.

Streamlit only discovers ``app/pages/`` by itself, so the top-level ``pages/`` folder is wired here with
``st.navigation``. The repository root goes on ``sys.path`` so pages can ``from app import ui`` however the app
was started (``streamlit run``, ``python -m streamlit``, ``AppTest``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="FER Lab", page_icon=":material/mood:", layout="wide")

PAGES = ROOT / "pages"
st.navigation(
    {
        "FER Lab": [
            st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
            st.Page(PAGES / "datasets.py", title="Data sets", icon=":material/photo_library:", url_path="datasets"),
        ],
        "Train and compare": [
            st.Page(PAGES / "train.py", title="Train", icon=":material/play_circle:", url_path="train"),
            st.Page(PAGES / "run.py", title="Run", icon=":material/monitoring:", url_path="run"),
            st.Page(PAGES / "compare.py", title="Compare runs", icon=":material/compare:", url_path="compare"),
            st.Page(PAGES / "confusion.py", title="Confusion browser", icon=":material/grid_on:",
                    url_path="confusion"),
        ],
        "Look inside": [
            st.Page(PAGES / "explain.py", title="Explain a face", icon=":material/center_focus_strong:",
                    url_path="explain"),
            st.Page(PAGES / "predict.py", title="Predict photos", icon=":material/photo_library:",
                    url_path="predict"),
            st.Page(PAGES / "video.py", title="Explain a video", icon=":material/movie:", url_path="video"),
            st.Page(PAGES / "filters.py", title="Filters and activations", icon=":material/filter:",
                    url_path="filters"),
            st.Page(PAGES / "scn.py", title="SCN attention", icon=":material/balance:", url_path="scn"),
        ],
    }
).run()
