"""What every command module of :mod:`fer_core.cli` shares: the usage error, table formatting, argument types and
the ``--runs-dir`` option."""

from __future__ import annotations

import argparse
from typing import Any


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit code 2."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {text!r})")
    return value


def runs_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default=None, help="runs folder (default $FER_RUNS_DIR or ./runs)")
