"""Named points where a test can hold a process, so that a kill or an interrupt lands at a known
moment instead of racing the work (nothing here runs unless its environment variable is set).

    SKINSEG_FAULT_POINT=NAME[:N]  at the N-th arrival (default 1) at the point NAME, write the file
                                  SKINSEG_FAULT_MARKER (if set) and wait there until signalled
                                  (at most 120 s, then go on), so the test signals a process that is
                                  provably in the middle of its work.
    SKINSEG_CHECKPOINT_DELAY=S    sleep S seconds while a checkpoint's temporary is on disk.
"""

from __future__ import annotations

import os
import time

_arrivals: dict[str, int] = {}
HOLD_SECONDS = 120.0


def fault_point(name: str) -> None:
    wanted = os.environ.get("SKINSEG_FAULT_POINT")
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _arrivals[name] = _arrivals.get(name, 0) + 1
    if _arrivals[name] != int(count or 1):
        return
    marker = os.environ.get("SKINSEG_FAULT_MARKER")
    if marker:
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(f"{name} {os.getpid()}\n")
    end = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < end:  # short sleeps: a signal's handler runs between them
        time.sleep(0.05)


def checkpoint_delay() -> None:
    delay = float(os.environ.get("SKINSEG_CHECKPOINT_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
