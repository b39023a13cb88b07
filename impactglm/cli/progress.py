"""Progress on stderr for the command line: stage timers, per-iteration bars, an elapsed-time
ticker.  Bars are drawn only when stderr is a terminal and ``--quiet`` is not given."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any

from .. import _util



class Timer:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now
        return self.laps[name]

    def format(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.laps.items())


@contextmanager
def iteration_progress(desc: str, quiet: bool, iterations: bool):
    """A per-iteration bar (when the fit takes a callback) or an elapsed-time ticker.

    Yields the callback to pass to ``fit`` (None when there is nothing to report to).
    The callback receives the solver's iteration-log row (a dict with ``iteration``
    and, when known, ``max_grad``).
    """
    if quiet or not _util.stderr_is_terminal() or not iterations:
        with ticker(desc, quiet):
            yield None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=None, desc=desc, unit=" it", file=sys.stderr, leave=False,
               mininterval=0)  # iterations are rare: draw every one

    def callback(row: Any) -> None:
        info = row if isinstance(row, dict) else {}
        grad = info.get("max_grad")
        if grad is not None:
            bar.set_postfix_str(f"max|grad| {float(grad):.2e}", refresh=False)
        bar.update(1)

    try:
        yield callback
    finally:
        bar.close()


@contextmanager
def ticker(desc: str, quiet: bool):
    """An elapsed-time bar on stderr while a long step runs (terminal only, not --quiet)."""
    if quiet or not _util.stderr_is_terminal():
        yield
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed}", file=sys.stderr,
               leave=False)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


