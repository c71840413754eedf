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

st.navigation(
    [
        st.Page(ROOT / "pages" / "home.py", title="Home", icon=":material/home:", default=True),
        st.Page(ROOT / "pages" / "run.py", title="Run", icon=":material/monitoring:", url_path="run"),
    ]
).run()
