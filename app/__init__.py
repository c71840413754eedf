"""FER Lab's Streamlit app: the entry point (``Home.py``) and UI helpers shared by the pages in ``pages/``."""
