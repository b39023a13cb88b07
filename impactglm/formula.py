"""Formula parsing: split ``y ~ terms`` into what Patsy handles and what it cannot.

Patsy understands ordinary terms (``C(x)``, ``np.log(x)``, ``a*b``, ``- 1``...).
It does not understand two kinds of term that impactglm adds, so they are taken
out before Patsy sees the formula:

* ``^g``          a high-cardinality factor: one effect per level of column g,
                  with a Gaussian prior N(0, tau_g^2);
* ``(expr | g)``  an lme4 random-effects term: correlated random effects of the
                  Patsy expression ``expr`` for each level of g; ``(expr || g)``
                  makes them uncorrelated; ``g`` may be ``a:b`` (the interaction
                  of two columns) or ``a/b`` (nesting: ``a`` and ``a:b``).

The parser works on the text at parenthesis depth 0 only, so ``I(x^2)`` or
``C(k)`` reach Patsy untouched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FormulaError

_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_QUOTED = re.compile(r"""Q\(\s*(['"])(.*?)\1\s*\)|`([^`]+)`""")


@dataclass(frozen=True)
class RandomTerm:
    """One lme4-style random-effects term ``(expr | group)``.

    ``expr`` is a Patsy right-hand side ("1", "Days", "0 + x"); ``group_vars``
    are the columns whose combination defines the grouping factor.
    """

    expr: str
    group_vars: tuple[str, ...]
    correlated: bool = True

    @property
    def group(self) -> str:
        """The grouping factor's display name, ``a`` or ``a:b``."""
        return ":".join(self.group_vars)

    def __str__(self) -> str:
        bar = "|" if self.correlated else "||"
        return f"({self.expr} {bar} {self.group})"


@dataclass(frozen=True)
class ParsedFormula:
    """A formula taken apart.

    ``fixed`` is the Patsy right-hand side of the ordinary terms (``"1"`` when
    nothing but special terms was given; ``"0"``/``"-1"`` kept as written).
    """

    text: str
    response: str
    fixed: str
    high_cardinality: tuple[str, ...] = ()
    random: tuple[RandomTerm, ...] = ()

    @property
    def patsy_formula(self) -> str:
        """``response ~ fixed`` for Patsy (the response may be empty)."""
        return f"{self.response} ~ {self.fixed}" if self.response else f"~ {self.fixed}"

    @property
    def has_intercept(self) -> bool:
        """Whether the fixed part keeps an intercept (Patsy's rules for 0 / -1)."""
        intercept = True
        for term in _split_top(self.fixed, self.fixed, 0):
            term = term.replace(" ", "")
            if term in ("-1", "0", "+0"):
                intercept = False
            elif term in ("1", "+1", "-0"):
                intercept = True
        return intercept

    def random_as_high_cardinality(self) -> "ParsedFormula":
        """Treat every ``^g`` as the random intercept ``(1|g)`` (for the LMM fitter)."""
        extra = tuple(RandomTerm("1", (g,)) for g in self.high_cardinality)
        return ParsedFormula(self.text, self.response, self.fixed, (), self.random + extra)


def parse_formula(text: str, require_response: bool = True) -> ParsedFormula:
    """Parse ``text`` into a :class:`ParsedFormula`; raise :class:`FormulaError` with a caret."""
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, not {type(text).__name__}")
    _check_parentheses(text)
    tildes = [i for i, c in _top_level_chars(text) if c == "~"]
    if len(tildes) > 1:
        raise FormulaError("a formula has at most one '~'", text, tildes[1])
    if not tildes:
        if require_response:
            raise FormulaError("the formula needs a response: 'y ~ terms'", text, len(text))
        lhs, rhs, rhs_start = "", text, 0
    else:
        lhs, rhs, rhs_start = text[: tildes[0]].strip(), text[tildes[0] + 1:], tildes[0] + 1
        if require_response and not lhs:
            raise FormulaError("the response (left of '~') is missing", text, 0)
    if not rhs.strip():
        raise FormulaError("the right-hand side of '~' is empty", text, len(text))

    fixed, hc, random = [], [], []
    for term, start in _split_terms(text, rhs, rhs_start):
        body = term.lstrip("+-").strip()
        sign = term.strip()[0] if term.strip()[0] in "+-" else "+"
        if body.startswith("^"):
            if sign == "-":
                raise FormulaError("a '^' factor cannot be removed with '-'", text, start)
            hc.append(_hc_name(body, text, start + term.index("^")))
        elif body.startswith("(") and _matching_paren(body) == len(body) - 1 and _has_bar(body[1:-1]):
            if sign == "-":
                raise FormulaError("a random-effects term cannot be removed with '-'", text, start)
            random.extend(_random_terms(body[1:-1], text, start + term.index("(") + 1))
        else:
            if "^" in "".join(c for _, c in _top_level_chars(body)):
                pos = start + term.index("^")
                raise FormulaError("'^' marks a high-cardinality factor and must start a term "
                                   "(write '^g', not 'x:^g'); use I() for powers", text, pos)
            bar = _misplaced_bar(body)
            if bar >= 0:
                raise FormulaError("a random-effects term '(x | g)' must stand alone, in its "
                                   "own parentheses, added with '+'", text,
                                   start + term.index(body) + bar)
            fixed.append(term.strip())
    dup = [g for i, g in enumerate(hc) if g in hc[:i]]
    if dup:
        raise FormulaError(f"the factor ^{dup[0]} appears twice", text, text.rindex("^"))
    fixed_text = " ".join(fixed).strip()
    if fixed_text.startswith("+"):
        fixed_text = fixed_text[1:].strip()
    if not fixed_text:
        fixed_text = "1"
    return ParsedFormula(text, lhs, fixed_text, tuple(hc), tuple(random))


# --------------------------------------------------------------------------- helpers


def _scan(s: str):
    """Yield (index, char, depth) for characters outside quotes; depth counts the
    parentheses open before the character (a ')' is reported at the inner depth).
    Ends with (len(s), None, depth) or (quote position, quote char, -1) if a quote is open."""
    depth, quote = 0, None
    for i, c in enumerate(s):
        if quote is not None:
            if c == s[quote]:
                quote = None
            continue
        if c in "'\"`":
            quote = i
            continue
        if c == ")":
            depth -= 1
        yield i, c, depth
        if c == "(":
            depth += 1
    yield (quote, s[quote], -1) if quote is not None else (len(s), None, depth)


def _top_level_chars(s: str):
    """Yield (index, char) for characters outside parentheses and quotes."""
    for i, c, depth in _scan(s):
        if depth == 0 and c not in (None, "(", ")"):
            yield i, c


def _check_parentheses(text: str) -> None:
    opened = []
    for i, c, depth in _scan(text):
        if depth == -1 and c is not None and c in "'\"`":
            raise FormulaError("unclosed quote", text, i)
        if c == "(":
            opened.append(i)
        elif c == ")":
            if not opened:
                raise FormulaError("unmatched ')'", text, i)
            opened.pop()
    if opened:
        raise FormulaError("unmatched '('", text, opened[-1])


def _matching_paren(s: str) -> int:
    depth = 0
    for i, c in enumerate(s):
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            return i
    return -1


def _has_bar(s: str) -> bool:
    return any(c == "|" for _, c in _top_level_chars(s))


def _misplaced_bar(body: str) -> int:
    """Index of a '|' outside any function call's parentheses in a fixed term, or -1.

    ``x | g``, ``(1|g)*x`` and ``((1|g))`` are misplaced random-effects terms;
    ``I(a | b)`` is Python inside a call and left to Patsy.
    """
    depth_call, stack, quote = 0, [], None
    for i, c in enumerate(body):
        if quote:
            quote = None if c == quote else quote
            continue
        if c in "'\"`":
            quote = c
        elif c == "(":
            is_call = bool(re.search(r"[\w.]\s*$", body[:i]))
            stack.append(is_call)
            depth_call += is_call
        elif c == ")" and stack:
            depth_call -= stack.pop()
        elif c == "|" and depth_call == 0:
            return i
    return -1


def _split_top(full: str, s: str, offset: int) -> list[str]:
    return [t for t, _ in _split_terms(full, s, offset)]


def _split_terms(full: str, s: str, offset: int) -> list[tuple[str, int]]:
    """Split a right-hand side at top-level '+' and '-' (the sign stays on its term)."""
    cuts = [i for i, c in _top_level_chars(s) if c in "+-" and not _is_exponent_sign(s, i)]
    pieces, start = [], 0
    for cut in cuts + [len(s)]:
        piece = s[start:cut]
        if piece.strip() and piece.strip() not in "+-":
            pieces.append((piece, offset + start))
        elif cut < len(s) and piece.strip() in "+-" and piece.strip():
            raise FormulaError("a term is missing between two operators", full, offset + cut)
        start = cut
    if s.strip() and s.rstrip()[-1] in "+-":
        raise FormulaError("the formula ends with an operator; a term is missing", full,
                           offset + len(s.rstrip()) - 1)
    return pieces


def _is_exponent_sign(s: str, i: int) -> bool:
    """True for the '-' of a number like 1e-3."""
    if not (i >= 2 and s[i - 1] in "eE" and s[i - 2].isdigit()):
        return False
    j = i - 2                      # walk back over the mantissa: a name like x2e is no number
    while j >= 0 and (s[j].isdigit() or s[j] == "."):
        j -= 1
    return j < 0 or not (s[j].isalnum() or s[j] == "_")


def _hc_name(body: str, text: str, pos: int) -> str:
    name = body[1:].strip()
    quoted = _QUOTED.fullmatch(name)
    if quoted:
        return quoted.group(2) if quoted.group(2) is not None else quoted.group(3)
    if not _NAME.fullmatch(name):
        raise FormulaError("'^' must be followed by a column name (use ^Q('odd name') or "
                           "^`odd name` for names with spaces)", text, pos)
    return name


def _random_terms(inner: str, text: str, pos: int) -> list[RandomTerm]:
    bars = [i for i, c in _top_level_chars(inner) if c == "|"]
    double = len(bars) == 2 and bars[1] == bars[0] + 1
    if len(bars) > 2 or (len(bars) == 2 and not double):
        raise FormulaError("a random-effects term has one '|' (or '||')", text, pos + bars[-1])
    expr = inner[: bars[0]].strip()
    group = inner[bars[-1] + 1:].strip()
    if not expr:
        raise FormulaError("the random-effects term has nothing left of '|'", text, pos)
    if not group:
        raise FormulaError("the random-effects term has no grouping factor right of '|'",
                           text, pos + bars[-1] + 1)
    nested = [p.strip() for p in group.split("/")]
    for part in nested:
        for name in part.split(":"):
            if not _NAME.fullmatch(name.strip()):
                raise FormulaError(f"bad grouping factor {part!r}: use column names joined by "
                                   "':' or '/'", text, pos + bars[-1] + 1)
    groups = [tuple(n.strip() for n in ":".join(nested[: k + 1]).split(":"))
              for k in range(len(nested))]
    return [RandomTerm(expr, g, correlated=not double) for g in groups]


# --------------------------------------------------------------------------- formula helpers


def special_spans(text: str) -> tuple[int, list[tuple[int, int]]]:
    """Position of '~' (-1 if none) and the spans of ``^g`` and ``(x|g)`` terms (with sign)."""
    tildes = [i for i, c in _top_level_chars(text) if c == "~"]
    tilde = tildes[0] if tildes else -1
    rhs_start = tilde + 1
    spans = []
    for term, start in _split_terms(text, text[rhs_start:], rhs_start):
        body = term.lstrip("+-").strip()
        special = body.startswith("^") or (
            body.startswith("(") and _matching_paren(body) == len(body) - 1
            and _has_bar(body[1:-1]))
        if special:
            spans.append((start, start + len(term)))
    return tilde, spans


def patsy_rhs_text(text: str) -> str:
    """The user's formula with the response and the special terms blanked out.

    Every other character keeps its position, so a Patsy error position is a
    position in the user's formula.
    """
    tilde, spans = special_spans(text)
    chars = list(text)
    for i in range(tilde):
        chars[i] = " "
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " "
    out = "".join(chars)
    if tilde < 0:
        out = "~" + out   # positions shift by one (the caller passes shift=-1)
    if not out[out.index("~") + 1:].strip():
        out = out.rstrip() + " 1"
    return out
