"""What the test process writes and where it connects, recorded with a Python audit hook (PEP 578).

``with recording() as rec: ...`` collects, from every thread of this process while the block runs, each file opened
for writing (``rec.writes``: ``(path, mode)``; ``builtins.open`` and ``os.open``, so ``tempfile`` too) or only for
reading (``rec.reads``), each
rename (``rec.renames``: ``(src, dst)``; ``os.rename`` and ``os.replace``), each folder made (``rec.mkdirs``) and
each reach for the network (``rec.network``: audit events such as ``socket.connect``, ``socket.getaddrinfo``,
``urllib.Request``). An audit hook cannot be removed, so one hook is installed on first use and does nothing
outside ``recording()`` blocks. Used by tests/test_security.py and tests/test_reliability_runs.py; plain helpers,
not tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Reaching out: connecting, binding, resolving names, sending, HTTP. (Creating a socket alone is left out: the
# asyncio event loop under Streamlit makes a local socket pair for itself.)
_NETWORK = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
            "socket.sendto", "socket.sendmsg", "http.client.connect", "urllib.Request"}
_active: list[Recorder] = []
_lock = threading.Lock()
_installed = False


@dataclass
class Recorder:
    writes: list[tuple[str, str]] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)
    mkdirs: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)

    def read_paths(self) -> list[Path]:
        """Every path opened for reading only, resolved."""
        return [Path(p).resolve() for p in self.reads if not p.isdigit()]

    def written_paths(self) -> list[Path]:
        """Every path opened for writing (file descriptors given as numbers are left out: their path was
        recorded when they were opened), resolved."""
        return [Path(p).resolve() for p, _ in self.writes if not p.isdigit()]


def _hook(event: str, args: tuple) -> None:
    if not _active:
        return
    try:
        if event == "open":
            path, mode, flags = args
            name = os.fsdecode(path) if not isinstance(path, int) else str(path)
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
                for rec in list(_active):
                    rec.writes.append((name, str(mode)))
            else:
                for rec in list(_active):
                    rec.reads.append(name)
        elif event in ("os.rename", "os.replace"):
            for rec in list(_active):
                rec.renames.append((os.fsdecode(args[0]), os.fsdecode(args[1])))
        elif event == "os.mkdir":
            for rec in list(_active):
                rec.mkdirs.append(os.fsdecode(args[0]))
        elif event in _NETWORK:
            for rec in list(_active):
                rec.network.append(event)
    except Exception:  # noqa: BLE001 - an audit hook must never break the code it watches
        pass


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Record writes, renames, new folders and network calls of this process while the block runs."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
    rec = Recorder()
    _active.append(rec)
    try:
        yield rec
    finally:
        _active.remove(rec)


def outside(paths: list[Path], *allowed: Path) -> list[Path]:
    """The paths that lie under none of ``allowed`` (folders), e.g. writes outside the runs folder."""
    roots = [Path(a).resolve() for a in allowed]
    return [p for p in paths if not any(p == r or r in p.parents for r in roots)]
