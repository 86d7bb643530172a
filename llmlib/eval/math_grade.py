"""Grading a MATH-500 answer against its ground truth, by the rules of the PRM800K grader
that MLPerf's deepseek-r1 and gpt-oss-120b scorers call (``grade_answer`` in
openai/prm800k's ``grading/grader.py``, with ``grading/math_normalize.py``).

An answer is right when
1. both normalize to the same string under MATH's own normalization (``mathd``: no spaces,
   ``\\left``/``\\right``, degrees, dollars, units after ``\\text{ ``, percent; ``\\dfrac``
   and ``\\tfrac`` as ``\\frac``, ``\\frac12`` as ``\\frac{1}{2}``, ``a/b`` of integers as a
   fraction, ``\\sqrt3`` as ``\\sqrt{3}``, a leading ``x =`` of at most two characters
   dropped, a bare leading ``.`` given its ``0``), or
2. both normalize to the same string under the grader's own normalization (units, words
   such as "million", ``\\text{}``, LaTeX turned to text, spaces and braces dropped, lower
   case, integers written plainly), or
3. element by element (tuples and intervals split, their brackets matching), each pair is
   equal: fractions as written (an unreduced fraction is wrong), an integer only to an
   integer, anything else when sympy simplifies their difference to 0. Expressions that
   could make sympy hang (``^{``, ``^(``, long powers, more than two unknown letters) are
   not evaluated.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache

# --- MATH's normalization (math_normalize.normalize_answer) ---------------------------------


def normalize_mathd(answer: str | None) -> str | None:
    if answer is None:
        return None
    answer = answer.strip()
    m = re.search(r"^\\text\{(?P<text>.+?)\}$", answer)
    if m is not None:
        answer = m.group("text").strip()
    try:
        return _strip_string(answer)
    except ValueError:
        return answer


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if not sub or sub[0] == "{":
            out += sub
            continue
        if len(sub) < 2:
            raise ValueError("\\frac with one character after it")
        a, b, rest = sub[0], sub[1], sub[2:]
        out += "{" + a + "}{" + b + "}" + rest if b != "{" else "{" + a + "}" + b + rest
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _remove_right_units(s: str) -> str:
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("more than one unit")
        return parts[0]
    return s


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\sqrt{" + sub[0] + "}" + sub[1:] if sub and sub[0] != "{" else "\\sqrt" + sub
    return out


def _strip_string(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    return _fix_a_slash_b(s)


# --- the grader's own normalization (grader._normalize) --------------------------------------

_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day",
          "week", "month", "year", "foot", "feet", "inch", "yard")  # fmt: skip
_BAD_SUBSTRINGS = ("^{", "^(")
_BAD_REGEXES = (r"\^[0-9]+\^", r"\^[0-9][0-9]+")
_TUPLE_CHARS = "()[]"


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _is_int_value(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def _strip_commas(expr: str) -> str:
    """1,234 -> 1234 where the commas are digit-group separators (not tuple commas)."""
    p = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
    while True:
        nxt = p.sub(r"\1\3\4", expr)
        if nxt == expr:
            return nxt
        expr = nxt


def _str_is_int(s: str) -> bool:
    try:
        return _is_int_value(float(_strip_commas(s)))
    except ValueError:
        return False


def _latex_to_text(expr: str) -> str:
    from pylatexenc import latex2text

    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
    expr = expr.replace("\\frac", " \\frac")  # mixed numbers
    expr = latex2text.LatexNodes2Text().latex_to_text(expr)
    for a, b in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        expr = expr.replace(a, b)
    return expr.strip()


def normalize_grader(expr: str | None) -> str | None:
    if expr is None:
        return None
    m = re.search(r"^\\text\{(?P<text>.+?)\}$", expr)
    if m is not None:
        expr = m.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9")
    expr = expr.replace("trillion", "*10^12")
    for unit in _UNITS:
        expr = re.sub(f"{unit}(es)?(s)? *(\\^[0-9]+)?", "", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = re.sub(r",\\! *", "", expr)
    if _is_float(expr) and _is_int_value(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        with contextlib.suppress(Exception):  # the grader keeps the text LaTeX parsing fails on
            expr = _latex_to_text(expr)
    expr = re.sub("- *", "-", expr)
    expr = re.sub("([0-9]) +([0-9])", r"\1+\2", expr)  # 7 3/4 -> 7+3/4
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def _allow_eval(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2:
        return False
    if any(b in expr for b in _BAD_SUBSTRINGS):
        return False
    return not any(re.search(r, expr) for r in _BAD_REGEXES)


@lru_cache(maxsize=4096)
def equal_under_sympy(truth: str, given: str) -> bool:
    expr = f"({truth})-({given})"
    if not _allow_eval(expr):
        return False
    try:
        import sympy
        from sympy.parsing import sympy_parser

        tf = sympy_parser.standard_transformations + (
            sympy_parser.implicit_multiplication_application,
        )
        diff = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=tf)
        return bool(sympy.simplify(diff) == 0)
    except Exception:  # noqa: BLE001 - anything sympy cannot read is simply not equal
        return False


def _split_tuple(expr: str) -> list[str]:
    expr = _strip_commas(expr)
    if not expr:
        return []
    if (
        len(expr) > 2
        and expr[0] in _TUPLE_CHARS
        and expr[-1] in _TUPLE_CHARS
        and all(c not in expr[1:-1] for c in _TUPLE_CHARS)
    ):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def _is_frac(expr: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", expr))


def grade_answer(given: str | None, truth: str) -> bool:
    """Whether ``given`` (the extracted answer) matches ``truth`` (see the module doc)."""
    if given is None:
        return False
    if normalize_mathd(truth) == normalize_mathd(given):
        return True
    t, g = normalize_grader(truth), normalize_grader(given)
    if t is None or g is None:
        return False
    if t == g:
        return True
    if not g:
        return False
    t_elems, g_elems = _split_tuple(t), _split_tuple(g)
    if len(t_elems) > 1 and (t[0] != g[0] or t[-1] != g[-1]):
        return False
    if len(t_elems) != len(g_elems):
        return False
    for te, ge in zip(t_elems, g_elems, strict=True):
        if _is_frac(te) and _is_frac(ge):
            ok = te == ge
        elif _str_is_int(te) != _str_is_int(ge):
            ok = False
        else:
            ok = equal_under_sympy(te, ge)
        if not ok:
            return False
    return True
