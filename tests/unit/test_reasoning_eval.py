"""Scoring the v6.0 round's accuracy runs: CNN/DailyMail ROUGE and GEN_LEN (llama3.1-8b),
answer extraction and exact match per dataset (deepseek-r1, gpt-oss-120b), MATH-500's
grader, and LiveCodeBench's tests run in the sandboxed runner. Each on crafted outputs
(all right, all wrong, half right) against the figures they must give."""

import base64
import json
import pickle
import zlib

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.eval import livecodebench
from llmlib.eval.accuracy import score
from llmlib.eval.answers import evaluator_for, final_channel, parse_aime, parse_choice
from llmlib.eval.math_grade import grade_answer
from llmlib.eval.targets import TARGETS

# --- MATH-500 grading -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "truth", "right"),
    [
        ("\\frac12", "\\frac{1}{2}", True),  # MATH's own normalization
        ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
        ("0.5", "\\frac{1}{2}", True),  # sympy: equal values
        ("2/4", "\\frac{1}{2}", False),  # an unreduced fraction is wrong
        ("(1, 2)", "(1,2)", True),
        ("[1,2)", "(1,2)", False),  # interval brackets must match
        ("x = 5", "5", True),
        ("10\\%", "10", True),
        ("5.0", "5", True),
        ("1,000", "1000", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("\\text{Monday}", "monday", True),
        ("4", "3", False),
        ("3.5", "4", False),  # an integer only equals an integer
    ],
)
def test_math_grader(given, truth, right):
    assert grade_answer(given, truth) is right


# --- answer extraction ------------------------------------------------------------------------


def test_choice_extraction_deepseek_and_harmony():
    assert parse_choice("Thinking... so ANSWER: (c).", "D", "deepseek-r1") == "C"
    assert parse_choice("no letter here", "D", "deepseek-r1") is None
    assert parse_choice("... the pick is G here.", "J", "deepseek-r1") == "G"  # MMLU-Pro fallback
    harmony = (
        "<|channel|>analysis<|message|>Maybe ANSWER: A? No.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>**B**<|return|>"
    )
    assert final_channel(harmony) == "**B**"
    assert parse_choice(harmony, "D", "gpt-oss-120b") == "B"  # not the analysis draft
    assert parse_choice(harmony, "D", "deepseek-r1") == "A"  # deepseek's scorer reads it all


def test_aime_and_evaluator_choice():
    assert parse_aime("so \\boxed{ 42 } and Answer: 7") == 42
    assert parse_aime("Answer: 7") == 7 and parse_aime("\\boxed{1000}") is None
    assert evaluator_for("MMLU_Pro_law", "deepseek-r1").key == "mmlu_pro"
    assert evaluator_for("mmlu", "deepseek-r1") is None
    assert evaluator_for("mmlu", "gpt-oss-120b").key == "mmlu"
    assert evaluator_for("livecodebench_v6", "gpt-oss-120b").key == "livecodebench"


# --- LiveCodeBench ---------------------------------------------------------------------------


def lcb_row(qid, public, private=None, func=None, packed=False):
    priv = json.dumps(private or [])
    if packed:
        priv = base64.b64encode(zlib.compress(pickle.dumps(priv))).decode()
    return {
        "question_id": qid,
        "public_test_cases": json.dumps(public),
        "private_test_cases": priv,
        "metadata": json.dumps({"func_name": func} if func else {}),
    }


def write_lcb(tmp_path, rows):
    p = tmp_path / "test6.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


STDIN = [{"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"}]
STDIN_PRIVATE = [{"input": "2\n5 5\n", "output": "10", "testtype": "stdin"}]
FUNC = [{"input": "[1, 2]\n3", "output": "[0, 1]", "testtype": "functional"}]
SUM_STDIN = "n = int(input())\nprint(sum(map(int, input().split())))\n"
TWO_SUM = (
    "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
    "        seen = {}\n        for i, x in enumerate(nums):\n"
    "            if target - x in seen:\n                return (seen[target - x], i)\n"
    "            seen[x] = i\n"
)


def test_lcb_tests_run_stdin_and_functional(tmp_path):
    rows = [
        lcb_row("abc100_a", STDIN, STDIN_PRIVATE, packed=True),
        lcb_row("two-sum", FUNC, func="twoSum"),
    ]
    tests = livecodebench.load_tests(write_lcb(tmp_path, rows))
    assert len(tests["abc100_a"].inputs) == 2  # public + private (zlib'd pickle)
    got = livecodebench.evaluate(
        [
            (SUM_STDIN, "abc100_a"),
            ("print(6)", "abc100_a"),  # right on the public test only
            (TWO_SUM, "two-sum"),  # a tuple answer counts as the list
            (SUM_STDIN, "no-such-question"),
            (None, "two-sum"),
        ],
        tests,
        workers=2,
    )
    assert got == [True, False, True, False, False]


def test_lcb_numbers_compare_as_decimals_and_loops_time_out(tmp_path):
    rows = [lcb_row("half", [{"input": "", "output": "0.50\n", "testtype": "stdin"}])]
    tests = livecodebench.load_tests(write_lcb(tmp_path, rows))
    assert livecodebench.run_problem("print(0.5)", tests["half"])
    assert not livecodebench.run_problem("print('half')", tests["half"])
    assert not livecodebench.run_problem("while True:\n    pass\n", tests["half"], timeout_s=0.5)


def test_lcb_files_refuse_junk_and_pickled_objects(tmp_path):
    evil = base64.b64encode(zlib.compress(pickle.dumps(ConfigError("x")))).decode()
    row = lcb_row("q", STDIN) | {"private_test_cases": evil}
    with pytest.raises(ConfigError, match="private_test_cases not readable"):
        livecodebench.load_tests(write_lcb(tmp_path, [row]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1: not JSON"):
        livecodebench.load_tests(bad)
    with pytest.raises(ConfigError, match="no LiveCodeBench JSONL"):
        livecodebench.load_tests(tmp_path / "nowhere")


# --- whole runs, scored -----------------------------------------------------------------------


def crafted(texts, length=1):
    """Outputs whose first token names the text the decoder returns (length: token count)."""
    outs = {i: np.full(length, i, dtype=np.uint32) for i in range(len(texts))}
    return outs, (lambda ids: texts[int(ids[0])])


def test_llama31_8b_rouge_lsum_and_gen_len(tmp_path):
    base = "The council approved the budget on Monday. Schools get more money. "
    refs = [f"{base * 9}Story {k} ends here." for k in range(4)]
    fields = [{"output": r} for r in refs]
    right, dec = crafted(refs)
    res = score("llama3.1-8b", right, fields, None, dec)
    assert res.scores["rouge1"] == res.scores["rougeLsum"] == 100.0
    assert res.scores["gen_num"] == 4 and res.verdict == "PASS", res.table()
    assert "scaled to 4 of the dataset's 13368" in res.note
    wrong, dec = crafted(["zebra quartz"] * 4)
    res = score("llama3.1-8b", wrong, fields, None, dec)
    assert res.scores["rouge1"] == 0.0 and res.verdict == "FAIL"
    half, dec = crafted([refs[0], "zebra quartz", refs[2], "zebra quartz"])
    res = score("llama3.1-8b", half, fields, None, dec)
    assert res.scores["rouge1"] == 50.0 and res.scores["rougeL"] == 50.0
    gen = next(c for c in res.checks if c.metric == "gen_len")
    assert gen.passed is False  # half the characters of the reference total


REASONING_ROWS = [
    ("gpqa", "C", "After thought, ANSWER: C", "ANSWER: A"),
    ("mmlu_pro", "H", "FINAL ANSWER: (H)", "FINAL ANSWER: B"),
    ("math500", "\\frac{1}{2}", "so the answer is \\boxed{\\dfrac12}", "\\boxed{2/4}"),
    ("aime", "204", "\\boxed{204}", "Answer: 205"),
    ("livecodebench", "abc100_a", f"```python\n{SUM_STDIN}```", "```python\nprint(6)\n```"),
    ("math500", "(1,2)", "\\boxed{(1, 2)}", "\\boxed{[1,2]}"),
]


def test_deepseek_r1_exact_match_all_wrong_half(tmp_path):
    tests = livecodebench.load_tests(
        write_lcb(tmp_path, [lcb_row("abc100_a", STDIN, STDIN_PRIVATE)])
    )
    fields = [{"dataset": d, "ground_truth": g} for d, g, _, _ in REASONING_ROWS]
    n_tok = 3886  # the reference's tokens per sample, so only exact match decides
    good = [r for _, _, r, _ in REASONING_ROWS]
    bad = [w for _, _, _, w in REASONING_ROWS]
    for texts, want in ((good, 100.0), (bad, 0.0), ([*good[:3], *bad[3:]], 50.0)):
        outs, dec = crafted(texts, n_tok)
        res = score("deepseek-r1", outs, fields, None, dec, 2, family="deepseek-r1",
                    lcb_tests=tests)  # fmt: skip
        assert res.scores["exact_match"] == want, res.table()
        assert res.verdict == ("PASS" if want == 100.0 else "FAIL")
    assert res.scores["gpqa_accuracy"] == 100.0 and res.scores["aime_accuracy"] == 0.0
    outs, dec = crafted(good, 10)  # right answers, far too short
    res = score("deepseek-r1", outs, fields, None, dec, 2, family="deepseek-r1", lcb_tests=tests)
    assert res.verdict == "FAIL" and "tokens_per_sample" in res.table()


def test_deepseek_r1_without_lcb_tests_is_incomplete():
    fields = [{"dataset": d, "ground_truth": g} for d, g, _, _ in REASONING_ROWS]
    outs, dec = crafted([r for _, _, r, _ in REASONING_ROWS], 3886)
    res = score("deepseek-r1", outs, fields, None, dec, family="deepseek-r1")
    assert res.verdict == "INCOMPLETE" and "--lcb_tests_path" in res.note
    assert "exact_match" not in res.scores and res.scores["gpqa_accuracy"] == 100.0


def harmony(draft, final):
    return (
        f"<|channel|>analysis<|message|>{draft}<|end|><|start|>assistant"
        f"<|channel|>final<|message|>{final}<|return|>"
    )


def test_gpt_oss_weighs_datasets_by_their_repeats():
    # 8 repeats of one AIME problem (all right), 5 of one GPQA problem (all wrong): the
    # reference scores each dataset by correct/repeats, so 1 of 2 problems: 50%, not 8/13
    rows = [("aime25", "42", harmony("maybe 41", "\\boxed{42}"))] * 8
    rows += [("gpqa_diamond", "B", harmony("ANSWER: B", "A"))] * 5
    fields = [{"dataset": d, "ground_truth": g} for d, g, _ in rows]
    outs, dec = crafted([t for _, _, t in rows], 1278)
    res = score("gpt-oss-120b", outs, fields, None, dec, family="gpt-oss-120b")
    assert res.scores["exact_match"] == 50.0
    assert res.scores["aime25_accuracy"] == 100.0 and res.scores["gpqa_diamond_accuracy"] == 0.0
    assert res.verdict == "FAIL"
    assert TARGETS["gpt-oss-120b"].scores["exact_match"] == 83.13
    right = [("gpqa_diamond", "B", harmony("ANSWER: A", "**B**"))] * 5
    fields = [{"dataset": d, "ground_truth": g} for d, g, _ in right]
    outs, dec = crafted([t for _, _, t in right], 1278)
    res = score("gpt-oss-120b", outs, fields, None, dec, family="gpt-oss-120b")
    assert res.scores["exact_match"] == 100.0 and res.verdict == "PASS", res.table()


def test_reasoning_scoring_names_missing_columns_and_unknown_datasets():
    outs, dec = crafted(["\\boxed{1}"])
    res = score("deepseek-r1", outs, [{"dataset": "aime"}], None, dec, family="deepseek-r1",
                source="ds.pkl")  # fmt: skip
    assert res.verdict == "UNSCORED" and "ds.pkl has: dataset" in res.note
    res = score("deepseek-r1", outs, [{"dataset": "trivia", "ground_truth": "1"}], None, dec,
                family="deepseek-r1")  # fmt: skip
    assert res.verdict == "INCOMPLETE" and "trivia (1)" in res.note


def test_gpt_oss_answer_split_stands_in_for_lost_harmony_markers():
    # a server whose parser dropped harmony's markers streamed "I think A." as reasoning and
    # "B" as the answer: reasoning.csv's answer length lets the final-channel rule find B
    texts = ["I think A, maybe.B"] * 5
    outs = {i: np.array([ord(c) for c in t], dtype=np.uint32) for i, t in enumerate(texts)}
    dec = lambda ids: "".join(map(chr, ids))  # noqa: E731
    fields = [{"dataset": "gpqa_diamond", "ground_truth": "B"}] * 5
    lost = score("gpt-oss-120b", outs, fields, None, dec, family="gpt-oss-120b")
    assert lost.scores["exact_match"] == 0.0
    kept = score("gpt-oss-120b", outs, fields, None, dec, family="gpt-oss-120b",
                 answer_tokens=dict.fromkeys(range(5), 1))  # fmt: skip
    assert kept.scores["exact_match"] == 100.0


def test_gpt_oss_livecodebench_code_comes_from_the_final_channel(tmp_path):
    tests = livecodebench.load_tests(
        write_lcb(tmp_path, [lcb_row("abc100_a", STDIN, STDIN_PRIVATE)])
    )
    wrong_draft = "```python\nprint(6)\n```"  # right on the public test only
    good = harmony(wrong_draft, f"Here:\n```python\n{SUM_STDIN}```")
    bad = harmony(f"```python\n{SUM_STDIN}```", wrong_draft)  # the draft was right
    rows = [good, good, bad]  # 3 repeats of one problem: 2 of 3 right
    fields = [{"dataset": "livecodebench_v6", "ground_truth": "abc100_a"}] * 3
    outs, dec = crafted(rows, 1278)
    res = score("gpt-oss-120b", outs, fields, None, dec, 2, family="gpt-oss-120b",
                lcb_tests=tests)  # fmt: skip
    assert res.scores["livecodebench_v6_accuracy"] == pytest.approx(66.6667)
    assert res.scores["exact_match"] == pytest.approx(66.6667)  # (2/3) / (3/3)
