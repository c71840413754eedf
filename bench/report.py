"""What every benchmark does with its table: write it to its results file (``bench/results/<name>.md``) and print it."""

from __future__ import annotations

from pathlib import Path


def write_report(lines: list[str], out: Path) -> str:
    """Join the markdown lines, write them to ``out`` (its folder made if needed), print them; returns the text."""
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return text
