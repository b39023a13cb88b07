"""Tiny helpers shared across layers: warning attribution and order-keeping uniques."""
from __future__ import annotations

import os
import sys
from typing import Iterable

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first caller outside impactglm
    (call it from the function that calls ``warnings.warn``)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame = frame.f_back
        level += 1
    return level


def unique_in_order(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def stderr_is_terminal() -> bool:
    """Whether progress bars may be drawn (stderr is a terminal).  Call it as
    ``_util.stderr_is_terminal()``: the tests patch this one function to force the bars."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
