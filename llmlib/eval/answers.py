"""Answer extraction and exact match for the reasoning benchmarks, per dataset, as MLPerf's
scorers do it: ``language/deepseek-r1/eval_accuracy.py`` (deepseek-r1) and
``language/gpt-oss-120b/eval_accuracy.py`` (gpt-oss-120b, which first reads the answer from
the harmony ``final`` channel).

The evaluator is chosen by the row's ``dataset`` name, lower case, the first of these keys
it contains: ``gpqa`` (letters A-D), ``mmlu_pro`` (A-J), ``math500`` (the last ``\\boxed{}``,
graded by ``llmlib.eval.math_grade``), ``aime`` (an integer 0-999: the last
``\\boxed{n}``, else the last ``Answer: n``), ``livecodebench`` (the code block, run against
the problem's tests by ``llmlib.eval.livecodebench``); gpt-oss-120b also knows ``mmlu``.

Multiple choice, deepseek-r1: the last ``ANSWER``/``FINAL ANSWER`` followed by a letter (any
case, optional colon, equals sign or parentheses); MMLU-Pro falls back to the last
standalone letter A-J. gpt-oss-120b: in the final channel (``**bold**`` removed), a letter
at its start, else ``Answer: X``; then the ``ANSWER`` pattern on the whole text; MMLU falls
back to the last standalone letter of the final channel.

Code, deepseek-r1: the first ```` ```python ```` block. gpt-oss-120b: the last
```` ```python ```` block of the final channel, else its last plain block (a ``python``/``py``
tag line dropped), then the same two on the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from llmlib.eval.math_grade import grade_answer

STYLES = ("deepseek-r1", "gpt-oss-120b")


def _clean(text: str | None) -> str:
    return "" if text is None else str(text).strip()


def final_channel(text: str) -> str:
    """The harmony ``final`` channel's content (up to ``<|return|>`` or the end); the text
    itself when it has none. Markers corrupted between ``final`` and ``<|message|>`` are
    tolerated, as the reference's pattern does."""
    text = _clean(text)
    m = re.search(r"<\|channel\|>final[^<]*<\|message\|>(.*?)(?:<\|return\|>|$)", text, re.DOTALL)
    return m.group(1).strip() if m else text


def _answer_pattern(top: str) -> str:
    return rf"\b(?:ANSWER|FINAL\s*ANSWER)\b\s*[:=]?\s*(?:\(?\s*([A-{top}])\s*\)?)(?:\s*$|[^A-Za-z])"


def _unquote(text: str) -> str:
    if text.startswith(("['", '["')) and text.endswith(("']", '"]')):
        text = text[2:-2].strip()
    return text.replace(r"\n", "\n").replace(r"\'", "'")


def parse_choice(text: str, top: str, style: str) -> str | None:
    """The chosen letter (A..``top``), upper case, or None."""
    text = _clean(text)
    if not text:
        return None
    if style == "gpt-oss-120b":
        final = _unquote(re.sub(r"\*\*([^*]+)\*\*", r"\1", final_channel(text)))
        m = re.match(rf"^[^a-zA-Z]*([A-{top}])(?:[^a-zA-Z]|$)", final.strip(), re.IGNORECASE)
        if m:
            return m.group(1).upper()
        m = re.search(rf"\b(?:Answer|ANSWER)\s*[:.]?\s*([A-{top}])\b", final, re.IGNORECASE)
        if m:
            return m.group(1).upper()
        whole = text.replace(r"\n", "\n").replace(r"\'", "'")
        found = list(re.finditer(_answer_pattern(top), whole, re.IGNORECASE))
        if found:
            return found[-1].group(1).upper()
        if top == "J":
            letters = list(re.finditer(rf"\b([A-{top}])\b", final, re.IGNORECASE))
            return letters[-1].group(1).upper() if letters else None
        return None
    text = _unquote(text)
    found = list(re.finditer(_answer_pattern(top), text, re.IGNORECASE))
    if found:
        return found[-1].group(1).upper()
    if top == "J":
        letters = list(re.finditer(r"\b([A-J])\b", text, re.IGNORECASE))
        return letters[-1].group(1).upper() if letters else None
    return None


def parse_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    text = _clean(text)
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    depth, start = 0, i + 7
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[start:j].strip()
            depth -= 1
    return None


def parse_aime(text: str) -> int | None:
    text = _clean(text)
    boxed = re.findall(r"\\boxed{\s*(\d+)\s*}", text)
    if boxed:
        digits = boxed[-1]
    else:
        said = re.findall(r"Answer:\s*(\d+)(?!\.)\b", text, re.IGNORECASE | re.MULTILINE)
        if not said:
            return None
        digits = said[-1]
    n = int(digits)
    return n if 0 <= n <= 999 else None


def parse_code(text: str, style: str) -> str | None:
    text = _clean(text)
    if not text:
        return None
    if style != "gpt-oss-120b":
        m = re.search(r"```python(.*?)```", text, re.DOTALL)
        return m.group(1).strip() if m else None
    final = final_channel(text)
    places = [final, text] if final != text else [text]
    for where in places:
        blocks = re.findall(r"```python(.*?)```", where, re.DOTALL)
        if blocks:
            return str(blocks[-1]).strip()
        plain = re.findall(r"```(.*?)```", where, re.DOTALL)
        if plain:
            return re.sub(r"^(?:python|py)\s*\n", "", str(plain[-1]).strip(), flags=re.IGNORECASE)
    return None


@dataclass(frozen=True)
class Evaluator:
    key: str
    parse: Callable[[str, str], object]  # (text, style) -> extracted answer or None
    right: Callable[[object, str], bool]  # (extracted, ground truth) -> correct


def _choice_right(options: str) -> Callable[[object, str], bool]:
    def right(got: object, truth: str) -> bool:
        if not got or not truth:
            return False
        g = str(got).upper()
        return g in options and g == str(truth).upper()

    return right


def _aime_right(got: object, truth: str) -> bool:
    if got is None:
        return False
    try:
        return int(str(got)) == int(str(truth))
    except ValueError:
        return False


def _math_right(got: object, truth: str) -> bool:
    if not got or not truth:
        return False
    return grade_answer(str(got).strip(), str(truth))


EVALUATORS = (
    Evaluator("gpqa", lambda t, s: parse_choice(t, "D", s), _choice_right("ABCD")),
    Evaluator("mmlu_pro", lambda t, s: parse_choice(t, "J", s), _choice_right("ABCDEFGHIJ")),
    Evaluator("math500", lambda t, s: parse_boxed(t), _math_right),
    Evaluator("aime", lambda t, s: parse_aime(t), _aime_right),
    Evaluator("livecodebench", parse_code, lambda got, truth: False),  # run elsewhere
    Evaluator("mmlu", lambda t, s: parse_choice(t, "J", s), _choice_right("ABCDEFGHIJ")),
)


def evaluator_for(dataset: str, style: str) -> Evaluator | None:
    """The evaluator for a row's dataset name (None: no evaluator knows it). ``mmlu`` (not
    ``mmlu_pro``) is gpt-oss-120b's only."""
    name = str(dataset).lower()
    for ev in EVALUATORS:
        if ev.key == "mmlu" and style != "gpt-oss-120b":
            continue
        if ev.key in name:
            return ev
    return None
