"""Exceptions and warnings raised by impactglm.

Every error a user can trigger with bad input is an :class:`ImpactGLMError`
subclass whose message names the offending column, level, row or formula
position.  Warnings are :class:`ImpactGLMWarning` subclasses so that they can be
filtered as a group (``warnings.simplefilter("ignore", ig.errors.ImpactGLMWarning)``).
"""
from __future__ import annotations

import difflib
import os
from typing import Iterable


class ImpactGLMError(Exception):
    """Base class of every error impactglm raises on purpose."""


class FormulaError(ImpactGLMError, ValueError):
    """The formula cannot be parsed or names something impossible.

    When ``position`` is given the message shows the formula with a caret
    under the offending character.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.formula = formula
        self.position = position
        self.reason = message
        if formula is not None and position is not None:
            message = f"{message}\n    {formula}\n    {' ' * max(position, 0)}^"
        elif formula is not None:
            message = f"{message}\n    {formula}"
        super().__init__(message)


class DataError(ImpactGLMError, ValueError):
    """The data do not fit the model: missing column, bad value, wrong type."""


class ModelFileError(DataError):
    """A saved model file (JSON or its arrays file) is damaged, of an unknown version, does
    not belong to its JSON, or holds something that is not allowed (e.g. code)."""


class ColumnNotFoundError(DataError, KeyError):
    """A column named in the formula or an argument is not in the data."""

    def __init__(self, name: str, available: Iterable[str] = ()):
        self.name = name
        available = [str(a) for a in available]
        close = difflib.get_close_matches(str(name), available, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(f"column {name!r} is not in the data{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ModelError(ImpactGLMError, ValueError):
    """The model cannot be fitted as specified (family/link, prior, rank, sizes)."""


class ImpactGLMWarning(UserWarning):
    """Base class of impactglm's warnings."""


class ConvergenceWarning(ImpactGLMWarning):
    """The iterations stopped before the convergence criterion was met."""


class SeparationWarning(ImpactGLMWarning):
    """Fitted probabilities of 0 or 1 occurred: (quasi-)complete separation."""


class DataWarning(ImpactGLMWarning):
    """The data are valid but probably not what was meant (a number column read as text,
    a float column used as a factor)."""


class UnseenLevelWarning(ImpactGLMWarning):
    """New data hold levels of a high-cardinality factor that the fit never saw."""


class SingularFitWarning(ImpactGLMWarning):
    """A variance component is estimated on the boundary (zero) of its space."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest spelling of ``name`` among ``choices`` (or None)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return close[0] if close else None


# --------------------------------------------------------------------------- errors


class DataFileNotFoundError(ImpactGLMError, FileNotFoundError):
    """The input file does not exist (or is not a regular file)."""

    def __str__(self) -> str:
        return self.args[0]


class MalformedRowError(DataError):
    """A row of a text file cannot be parsed; ``line`` is its 1-based line number."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(message)


class EmptyFileError(DataError):
    """The file holds no data rows."""


class FileFormatError(DataError):
    """The file cannot be read as the format its name announces."""


class OutputExistsError(ImpactGLMError, FileExistsError):
    """An output file exists and ``force`` was not given.

    ``path`` is the file; the message ends with "without force=True" (the command
    line rewrites that as "(use --force to replace it)")."""

    def __str__(self) -> str:
        return self.args[0]
