"""``load(path)``: a saved model back as its results class (the inverse of ``save``)."""
from __future__ import annotations

import os

from .files import read_saved
from .glm import GLMResults
from .multinomial import MultinomialResults

RESULTS_CLASSES = {"glm": GLMResults, "multinomial": MultinomialResults}


def load(path: str | os.PathLike):
    """Read a model written by :func:`impactglm.results.files.save` (never unpickles
    anything): GLMResults or MultinomialResults, whose ``predict`` gives the numbers of
    the saved fit bit for bit."""
    meta, arrays = read_saved(path)
    return RESULTS_CLASSES[meta["kind"]].from_dict(meta, arrays)
