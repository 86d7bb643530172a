"""Accuracy scoring: ROUGE against an independent computation, targets and verdicts."""

import json

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.eval.accuracy import gsm8k_answer, niah_em, qa_em, read_accuracy_log, score
from llmlib.eval.rouge import rouge_scores
from llmlib.eval.targets import LLAMA2_TARGETS


def _ngrams(words, n):
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _f(overlap, n_pred, n_ref):
    if not overlap:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def _lcs(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def independent_rouge(pred, ref):
    """ROUGE-1/2/L F on lower-case words (inputs chosen so stemming changes nothing)."""
    pw, rw = pred.lower().split(), ref.lower().split()
    out = {}
    for n, name in ((1, "rouge1"), (2, "rouge2")):
        pg, rg = _ngrams(pw, n), _ngrams(rw, n)
        overlap = sum(min(pg.count(g), rg.count(g)) for g in set(pg))
        out[name] = _f(overlap, len(pg), len(rg))
    out["rougeL"] = _f(_lcs(pw, rw), len(pw), len(rw))
    return out


PAIRS = [
    ("the cat sat on the mat", "the cat sat on a mat"),
    ("a big red dog ran home", "the red dog went home"),
    ("we can not go there now", "we will go there now"),
    ("one two three four five", "five four three two one"),
    ("blue sky", "green grass"),
]


def test_rouge_matches_an_independent_computation():
    got = rouge_scores([p for p, _ in PAIRS], [r for _, r in PAIRS])
    want = {k: 0.0 for k in ("rouge1", "rouge2", "rougeL")}
    for p, r in PAIRS:
        for k, v in independent_rouge(p, r).items():
            want[k] += v / len(PAIRS)
    for k in want:
        assert got[k] == pytest.approx(100 * want[k], abs=1e-3), k


def test_rouge_of_identical_text_is_100():
    assert rouge_scores(["Paris is the capital."], ["Paris is the capital."]) == {
        "rouge1": 100.0,
        "rouge2": 100.0,
        "rougeL": 100.0,
    }


def outputs(lengths):
    """Sample i's output starts with token 3 + i (decode_index reads it back)."""
    return {i: np.arange(3 + i, 3 + i + n, dtype=np.uint32) for i, n in enumerate(lengths)}


def orca(texts):
    return [{"output": t} for t in texts]


def test_llama2_passes_with_reference_text_and_length():
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta"]
    res = score(
        "llama2-70b", outputs([294, 295]), orca(texts), None, lambda ids: texts[decode_index(ids)]
    )
    assert res.verdict == "PASS" and res.scores["rouge1"] == 100.0
    tiers = {(c.metric, c.tier) for c in res.checks}
    assert ("rougeL", "99.0%") in tiers and ("rougeL", "99.9%") in tiers
    low = next(c for c in res.checks if c.metric == "rouge2" and c.tier == "99.9%").low
    assert low == pytest.approx(LLAMA2_TARGETS["rouge2"] * 0.999)
    tps = next(c for c in res.checks if c.metric == "tokens_per_sample")
    assert (tps.low, tps.high) == pytest.approx((294.45 * 0.9, 294.45 * 1.1))


def test_llama2_fails_on_poor_text_or_wrong_length():
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta"]
    bad = score("llama2-70b", outputs([294, 294]), orca(texts), None, lambda ids: "omega")
    assert bad.verdict == "FAIL" and bad.scores["rouge1"] == 0.0
    short = score("llama2-70b", outputs([100, 100]), orca(texts), None, lambda ids: texts[0])
    tps = next(c for c in short.checks if c.metric == "tokens_per_sample")
    assert tps.passed is False and short.verdict == "FAIL"


def test_llama2_without_reference_text_is_unscored_with_the_reason():
    res = score("llama2-70b", outputs([5]), None, None)
    assert res.verdict == "UNSCORED" and "--tokenizer_path" in res.note


def test_reference_match_for_datasets_without_targets():
    refs = [np.arange(3, 8, dtype=np.uint32), np.arange(3, 9, dtype=np.uint32)]
    res = score("tiny", {0: refs[0], 1: refs[0]}, None, refs)
    assert res.scores["reference_match_pct"] == 50.0 and res.verdict == "UNSCORED"


def test_read_accuracy_log(tmp_path):
    p = tmp_path / "mlperf_log_accuracy.json"
    a = np.array([5, 6], dtype=np.uint32).tobytes().hex()
    b = np.array([7], dtype=np.uint32).tobytes().hex()
    p.write_text(json.dumps([{"qsl_idx": 3, "data": a}, {"qsl_idx": 3, "data": b}]))
    got = read_accuracy_log(p)
    assert list(got) == [3] and got[3].tolist() == [5, 6]  # the first entry counts
    p.write_text("[]")
    with pytest.raises(ConfigError, match="no samples logged"):
        read_accuracy_log(p)
    with pytest.raises(ConfigError, match="was this an AccuracyOnly run"):
        read_accuracy_log(tmp_path / "none.json")


@pytest.mark.parametrize(
    "text,want",
    [
        ("She has 3 apples, then 5. The answer is 8.", 8.0),
        ("The answer is 1,250 dollars, not 3", 1250.0),
        ("First 2, then 7 and finally -4.5", -4.5),
        ("So 12.\nQ: next question has 99", 12.0),
        ("no numbers here", None),
    ],
)
def test_gsm8k_answer_extraction(text, want):
    assert gsm8k_answer(text) == want


def test_qa_em_and_niah_em():
    assert qa_em("Paris|paris, France", "Let me think. Answer: Paris") == 100.0
    assert qa_em("New York", "Answer: new  york city") == 100.0  # whitespace/case removed
    assert qa_em("Rome", "Answer: Paris") == 0.0
    u = "12345678-abcd-ef01-2345-6789abcdef01"
    assert niah_em(f"the key is {u}", f"I found {u}") == 100.0
    assert niah_em(f"the key is {u}", "no uuid") == 0.0


def mixtral_fields():
    return [
        {"dataset": "OpenOrca", "gt_output": "the cat sat on the mat"},
        {"dataset": "GSM8K", "gt_output": "42"},
        {"dataset": "GSM8K", "gt_output": "7"},
    ]


def test_mixtral_openorca_rouge_and_gsm8k():
    answers = {0: "the cat sat on the mat", 1: "The answer is 42", 2: "The answer is 6"}
    res = score(
        "mixtral-8x7b",
        outputs([145, 145, 145]),
        mixtral_fields(),
        None,
        lambda ids: answers[decode_index(ids)],
    )
    assert res.scores["rouge1"] == 100.0 and res.scores["gsm8k"] == pytest.approx(50.0)
    gsm = next(c for c in res.checks if c.metric == "gsm8k")
    assert gsm.low == pytest.approx(73.66 * 0.99) and gsm.passed is False
    assert res.verdict == "FAIL"


MBXP_TEST = "def check(candidate):\n    assert candidate(2) == 4\n"


def mixtral_with_mbxp(*langs):
    fields = [*mixtral_fields()]
    fields += [{"dataset": "MBXP", "gt_output": MBXP_TEST, "id": f"{lang}_sq"} for lang in langs]
    return fields


def score_mixtral(fields, answers):
    return score(
        "mixtral-8x7b",
        outputs([145] * len(fields)),
        fields,
        None,
        lambda ids: answers[decode_index(ids)],
        mbxp_workers=2,
    )


ORCA_GSM = {0: "the cat sat on the mat", 1: "The answer is 42", 2: "The answer is 7"}


def test_mixtral_mbxp_runs_the_code_and_scores_the_pass_rate():
    answers = {
        **ORCA_GSM,
        3: "def sq(x):\n    return x * x\n```\nThis squares x.",
        4: "def sq(x):\n    return x + x\n",  # sq(2) == 4 too: passes the (weak) test
        5: "def sq(x):\n    return x ** 3\n",
        6: "def sq(x):\n    return x\\_2\n",  # NameError after unescaping
    }
    res = score_mixtral(mixtral_with_mbxp("python", "python", "python", "python"), answers)
    assert res.scores["mbxp"] == 50.0 and res.scores["mbxp_python"] == 50.0
    mb = next(c for c in res.checks if c.metric == "mbxp")
    assert mb.low == pytest.approx(60.16 * 0.99) and mb.passed is False
    assert "python 2/4" in res.note and res.verdict == "FAIL"
    answers[4] = answers[3]
    answers[5] = answers[3]
    assert score_mixtral(mixtral_with_mbxp(*["python"] * 4), answers).scores["mbxp"] == 75.0


def test_mixtral_with_mbxp_in_a_language_without_toolchain_is_incomplete(monkeypatch):
    from llmlib.eval import mbxp

    monkeypatch.setattr(mbxp.shutil, "which", lambda exe: None)
    answers = {**ORCA_GSM, 3: "def sq(x):\n    return x * x\n", 4: "<?php function sq($x) {}"}
    res = score_mixtral(mixtral_with_mbxp("python", "php"), answers)
    assert res.verdict == "INCOMPLETE" and "mbxp" not in res.scores
    assert res.scores["mbxp_python"] == 100.0  # what could run, informational
    assert "no toolchain on PATH for php (1 samples; needs php)" in res.note


def test_mixtral_mbxp_without_ids_is_incomplete_with_the_reason():
    fields = [*mixtral_fields(), {"dataset": "MBXP", "gt_output": MBXP_TEST}]
    res = score_mixtral(fields, {**ORCA_GSM, 3: "x"})
    assert res.verdict == "INCOMPLETE" and "'id' column" in res.note


def test_llama31_405b_per_metric():
    fields = [
        {"metric": "rouge", "gt_output": "the quick brown fox"},
        {"metric": "qa_em", "gt_output": "Paris"},
        {"metric": "qa_em", "gt_output": "Rome"},
    ]
    answers = {0: "the quick brown fox", 1: "Answer: Paris", 2: "Answer: Paris"}
    res = score(
        "llama3.1-405b",
        outputs([684, 684, 684]),
        fields,
        None,
        lambda ids: answers[decode_index(ids)],
    )
    assert res.scores["rougeL"] == 100.0 and res.scores["exact_match"] == 50.0
    assert res.verdict == "FAIL"  # exact match below 90.1335 x 0.99


def decode_index(ids):
    """The test outputs are arange(3, 3 + n); tell samples apart by a marker set below."""
    return int(ids[0]) - 3
