"""Scoring an accuracy run's ``mlperf_log_accuracy.json`` the MLPerf way.

llama2-70b (and its interactive variant, same model and dataset): the output token ids are
decoded with the run's tokenizer (special tokens skipped), stripped, and scored against the
dataset's reference text (the OpenOrca pickle's ``output`` column) with ROUGE-1/2/L
(``rouge_score``, Porter stemming, the mean of per-sample F-measures x 100, as MLPerf's
``language/llama2-70b/evaluate-accuracy.py``); tokens per sample is the mean output length.
Each is checked against MLPerf's targets: ROUGE at 99% and 99.9% of the reference scores,
tokens per sample within 90%-110% of the reference (MLPerf's submission checker).
MLPerf's script joins sentences with newlines first (nltk punkt) for ROUGE-Lsum; ROUGE-1/2/L
split on non-alphanumerics, so that step does not change them and is not needed here.

mixtral-8x7b: ROUGE on the OpenOrca samples (``gt_output``), GSM8K accuracy (the number
the answer ends on, as MLPerf's script finds it, against ``gt_output``) and MBXP (the
generated code run against its tests, ``llmlib.eval.mbxp``; where a language's toolchain is not
installed the MBXP score is missing and the verdict INCOMPLETE). llama3.1-405b: per-sample
``metric``: ROUGE-L for ``rouge``, exact match for ``qa_em`` and ``niah_em`` (MLPerf's
computations), averaged over those samples (ROUGE-L with stemming as in the other two
scripts; the version of the 405b script read for this did not show how its scorer is
built, so that one detail is unconfirmed).
Targets and tokens-per-sample windows are the submission checker's.

llama3.1-8b (and -interactive, -edge): CNN/DailyMail, as ``language/llama3.1-8b/
evaluation.py``: outputs decoded (special tokens skipped), stripped, split into sentences
joined by newlines (nltk's Punkt: its trained English model where nltk's ``punkt_tab`` data
is installed, as MLPerf's script downloads it; else Punkt untrained, noted, which can only
move ROUGE-Lsum), ROUGE-1/2/L/Lsum against ``output``, and GEN_LEN: the total characters of
the processed outputs, checked within 90%-110% of the reference total (scaled to the samples
scored when they are not the whole dataset, noted).

deepseek-r1 and gpt-oss-120b: per-row answer extraction and exact match by the row's
``dataset`` (``llmlib.eval.answers``; MATH-500 by ``llmlib.eval.math_grade``; LiveCodeBench
by running the code against its tests, ``llmlib.eval.livecodebench``, which needs the
published test cases: ``--lcb_tests_path``; without them the verdict is INCOMPLETE).
deepseek-r1's exact_match is the mean over all rows; gpt-oss-120b's weighs each dataset by
its repeats (aime25 x8, gpqa_diamond x5, livecodebench_v6 x3: ``sum(correct/repeats) /
sum(rows/repeats)``, ``eval_mlperf_accuracy.py``) and reads the answer from harmony's final
channel (outputs decoded with special tokens kept, as its script does).

Any other dataset with reference tokens (synthetic, JSONL, HumanEval, ShareGPT): the share
of outputs equal to the reference and tokens per sample, with no MLPerf target.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.eval import mbxp
from llmlib.eval.rouge import rouge_scores, sentence_splitter
from llmlib.eval.targets import DATASET_REPEATS, SCORING_COLUMNS, TARGETS, Targets


def read_accuracy_log(path: str | Path, dtype: Any = np.uint32) -> dict[int, np.ndarray]:
    """Output token ids per sample index (the first entry of each, as MLPerf's scripts)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: not found (was this an AccuracyOnly run?)")
    try:
        entries = json.loads(p.read_text() or "[]")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc})") from None
    out: dict[int, np.ndarray] = {}
    dt = np.dtype(dtype)
    for e in entries:
        i = int(e["qsl_idx"])
        if i not in out:
            out[i] = np.frombuffer(bytes.fromhex(e["data"]), dtype=dt)
    if not out:
        raise ConfigError(f"{p}: no samples logged")
    return out


@dataclass
class Check:
    metric: str
    value: float
    target: float | None = None
    low: float | None = None
    high: float | None = None
    tier: str = ""

    @property
    def passed(self) -> bool | None:
        if math.isnan(self.value):
            return False  # required but not scored (e.g. MBXP): never a PASS
        if self.low is None and self.high is None:
            return None
        return (self.low is None or self.value >= self.low) and (
            self.high is None or self.value <= self.high
        )


@dataclass
class AccuracyResult:
    benchmark: str
    samples: int
    scores: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> str:
        if any(math.isnan(c.value) for c in self.checks):
            return "INCOMPLETE"
        judged = [c.passed for c in self.checks if c.passed is not None]
        if not judged:
            return "UNSCORED"
        return "PASS" if all(judged) else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "samples": self.samples,
            "scores": self.scores,
            "checks": [
                {
                    "metric": c.metric,
                    "tier": c.tier,
                    "value": c.value,
                    "target": c.target,
                    "low": c.low,
                    "high": c.high,
                    "pass": c.passed,
                }
                for c in self.checks
            ],
            "verdict": self.verdict,
            "note": self.note,
        }

    def table(self) -> str:
        lines = [
            f"{self.benchmark}: {self.samples} samples, verdict {self.verdict}",
            "| metric | tier | score | needed | result |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            if c.low is not None and c.high is not None:
                need = f"{c.low:.2f} .. {c.high:.2f}"
            elif c.low is not None:
                need = f">= {c.low:.4f}"
            elif c.high is not None:
                need = f"<= {c.high:.2f}"
            else:
                need = "(no MLPerf target)"
            res = {True: "PASS", False: "FAIL", None: "-"}[c.passed]
            lines.append(f"| {c.metric} | {c.tier or '-'} | {c.value:.4f} | {need} | {res} |")
        if self.note:
            lines.append(f"\n{self.note}")
        return "\n".join(lines)


# --- GSM8K (mixtral-8x7b): the number the answer ends on, as MLPerf's evaluate-accuracy.py --
_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def gsm8k_answer(text: str, delimiter: str = "The answer is") -> float | None:
    """The first number after the last ``delimiter``, else the last number; commas dropped.
    Text after a following question ("\nQ:") is ignored."""
    text = text.split("\nQ:")[0]
    found: list[str] = []
    if delimiter in text:
        found = _NUMBER.findall(text.split(delimiter)[-1])[:1]
    if not found:
        found = _NUMBER.findall(text)[-1:]
    if not found:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


# --- llama3.1-405b per-sample metrics, as MLPerf's evaluate-accuracy.py computes them -------
_UUID = re.compile(r"[\w]{8}-[\w]{4}-[\w]{4}-[\w]{4}-[\w]{12}")


def qa_em(label: str, pred: str) -> float:
    """100 if the answer (after the last "Answer: ") is in the label, or, whitespace and case
    removed, contains one of the label's |-separated entries; else 0."""
    answer = pred[pred.rfind("Answer: ") + len("Answer: ") :] if "Answer: " in pred else pred
    if answer in label:
        return 100.0
    norm = re.sub(r"\s+", "", answer).lower()
    return 100.0 if any(re.sub(r"\s+", "", e).lower() in norm for e in label.split("|")) else 0.0


def niah_em(label: str, pred: str) -> float:
    """Needle-in-a-haystack: UUIDs of the prediction paired in order with the label's, each
    scored by the share of the label UUID's characters found in the predicted one (MLPerf's
    exact computation); 0 when the prediction has no UUID."""
    preds, refs = _UUID.findall(pred), _UUID.findall(label)
    if not preds:
        return 0.0
    total = sum(
        sum(1.0 for ch in ref if ch.lower() in p.lower()) / len(ref)
        for p, ref in zip(preds, refs, strict=False)
    )
    return round(total / len(preds) * 100, 2)


def score(
    benchmark: str,
    outputs: dict[int, np.ndarray],
    fields: list[dict[str, Any]] | None,
    reference_tokens: list[np.ndarray | None] | None,
    decode: Any = None,
    mbxp_workers: int | None = None,
    *,
    family: str = "",
    lcb_tests: dict[str, Any] | None = None,
    source: str = "",
    answer_tokens: dict[int, int] | None = None,
) -> AccuracyResult:
    """Score ``outputs`` (sample index -> token ids) of ``benchmark`` (of dataset ``family``,
    default the benchmark's name); ``fields`` are the dataset's per-sample fields (reference
    text and the like), ``decode`` turns token ids into text; ``mbxp_workers`` programs run
    at once for MBXP and LiveCodeBench (default: one per CPU); ``lcb_tests`` are
    LiveCodeBench's tests by question id; ``source`` names the dataset file in messages;
    ``answer_tokens`` (sample -> how many of its last tokens were the answer, from a
    server that streamed reasoning apart) lets gpt-oss-120b's final-channel extraction work
    when the server's parser dropped harmony's markers."""
    family = family or benchmark
    idx = sorted(outputs)
    res = AccuracyResult(benchmark, len(idx))
    tps = float(np.mean([len(outputs[i]) for i in idx]))
    res.scores["tokens_per_sample"] = round(tps, 1)
    targets = TARGETS.get(benchmark)
    if targets is None:
        return _informational(res, outputs, idx, tps, reference_tokens)
    cols = SCORING_COLUMNS.get(family, ("output",))
    if decode is None or not fields or not all(all(c in fields[i] for c in cols) for i in idx):
        have = sorted(fields[0]) if fields else []
        res.note = (
            f"{benchmark} is scored against the MLPerf dataset's reference columns "
            f"({', '.join(cols)}) with its tokenizer: give --dataset_path and --tokenizer_path"
            + (f" ({source} has: {', '.join(have) or 'none of them'})" if source else "")
        )
        return res
    text = {i: decode(outputs[i]) for i in idx}
    if family == "mixtral-8x7b":
        _score_mixtral(res, text, fields, mbxp_workers)
    elif family == "llama3.1-405b":
        _score_405b(res, text, fields)
    elif family == "llama3.1-8b":
        _score_cnndm(res, text, fields, targets)
    elif family in ("deepseek-r1", "gpt-oss-120b"):
        if family == "gpt-oss-120b" and answer_tokens:
            for i in idx:  # the answer as harmony's final channel, where the markers are gone
                k = answer_tokens.get(i, 0)
                if 0 < k <= len(outputs[i]) and "<|channel|>final" not in text[i]:
                    answer = decode(outputs[i][len(outputs[i]) - k :])
                    text[i] = f"{text[i]}<|channel|>final<|message|>{answer}<|return|>"
        _score_reasoning(res, text, fields, family, lcb_tests, mbxp_workers)
    else:
        res.scores.update(
            rouge_scores([text[i] for i in idx], [str(fields[i]["output"]) for i in idx])
        )
    for tier in targets.tiers:
        for m, ref in targets.scores.items():
            if m in res.scores:
                res.checks.append(Check(m, res.scores[m], ref, ref * tier, None, f"{tier:.1%}"))
    if targets.tokens_per_sample is not None:
        low, high = targets.tokens_per_sample
        res.checks.append(Check("tokens_per_sample", tps, None, low, high, "all"))
    return res


def _score_cnndm(
    res: AccuracyResult, text: dict[int, str], fields: list[dict[str, Any]], targets: Targets
) -> None:
    split, note = sentence_splitter()
    idx = sorted(text)
    preds = ["\n".join(split(text[i].strip())) for i in idx]
    refs = ["\n".join(split(str(fields[i]["output"]).strip())) for i in idx]
    res.scores.update(rouge_scores(preds, refs, lsum=True))
    gen_len = sum(len(p) for p in preds)
    res.scores["gen_len"] = gen_len
    res.scores["gen_num"] = len(preds)
    notes = [note] if note else []
    assert targets.gen_len is not None
    low, high = targets.gen_len
    if targets.full_samples and len(idx) != targets.full_samples:
        scale = len(idx) / targets.full_samples
        low, high = low * scale, high * scale
        notes.append(
            f"GEN_LEN window scaled to {len(idx)} of the dataset's {targets.full_samples} "
            "samples (the submission checker holds the whole dataset's total)"
        )
    res.checks.append(Check("gen_len", float(gen_len), None, low, high, "all"))
    res.note = "; ".join(notes)


def _score_reasoning(
    res: AccuracyResult,
    text: dict[int, str],
    fields: list[dict[str, Any]],
    style: str,
    lcb_tests: dict[str, Any] | None,
    workers: int | None,
) -> None:
    from llmlib.eval import livecodebench
    from llmlib.eval.answers import evaluator_for

    right: dict[int, bool] = {}
    code: list[tuple[int, str | None, str]] = []
    unknown: dict[str, int] = {}
    for i in sorted(text):
        name = str(fields[i]["dataset"]).lower()
        ev = evaluator_for(name, style)
        if ev is None:
            unknown[name] = unknown.get(name, 0) + 1
            continue
        got = ev.parse(text[i], style)
        truth = fields[i]["ground_truth"]
        if ev.key == "livecodebench":
            code.append((i, None if got is None else str(got), str(truth)))
        else:
            right[i] = truth is not None and got is not None and ev.right(got, str(truth))
    notes: list[str] = []
    if code and lcb_tests is None:
        notes.append(
            f"{len(code)} LiveCodeBench rows not scored: give --lcb_tests_path (LiveCodeBench's "
            "code_generation_lite test cases) to run their code"
        )
        res.checks.append(Check("livecodebench", float("nan")))
    elif code:
        assert lcb_tests is not None
        passed = livecodebench.evaluate([(c, q) for _, c, q in code], lcb_tests, workers)
        absent = sorted({q for _, _, q in code if q not in lcb_tests})
        if absent:
            notes.append(
                f"{len(absent)} LiveCodeBench question ids have no tests in --lcb_tests_path "
                f"(counted wrong): {', '.join(absent[:5])}"
            )
        right.update({i: ok for (i, _, _), ok in zip(code, passed, strict=True)})
    if unknown:
        names = ", ".join(f"{k} ({n})" for k, n in sorted(unknown.items()))
        notes.append(f"rows of datasets no evaluator knows, not scored: {names}")
        res.checks.append(Check("unknown datasets", float("nan")))
    by_ds: dict[str, list[bool]] = {}
    for i, ok in right.items():
        by_ds.setdefault(str(fields[i]["dataset"]).lower(), []).append(ok)
    for name, oks in sorted(by_ds.items()):
        res.scores[f"{name}_accuracy"] = round(100 * sum(oks) / len(oks), 4)
    if right and not any(math.isnan(c.value) for c in res.checks):
        if style == "gpt-oss-120b":
            got = sum(sum(oks) / DATASET_REPEATS.get(n, 1) for n, oks in by_ds.items())
            most = sum(len(oks) / DATASET_REPEATS.get(n, 1) for n, oks in by_ds.items())
            res.scores["exact_match"] = round(100 * got / most, 4)
        else:
            res.scores["exact_match"] = round(100 * sum(right.values()) / len(right), 4)
    res.note = "; ".join(notes)


def _score_mixtral(
    res: AccuracyResult,
    text: dict[int, str],
    fields: list[dict[str, Any]],
    mbxp_workers: int | None,
) -> None:
    orca = [i for i in text if fields[i]["dataset"] == "OpenOrca"]
    gsm = [i for i in text if fields[i]["dataset"] == "GSM8K"]
    code = [i for i in text if fields[i]["dataset"] not in ("OpenOrca", "GSM8K")]
    if orca:
        res.scores.update(
            rouge_scores([text[i] for i in orca], [str(fields[i]["gt_output"]) for i in orca])
        )
    if gsm:
        right = 0
        for i in gsm:
            got = gsm8k_answer(text[i])
            try:
                want = float(str(fields[i]["gt_output"]).replace(",", ""))
            except ValueError:
                want = None
            right += got is not None and got == want
        res.scores["gsm8k"] = round(100 * right / len(gsm), 4)
    if code:
        _score_mbxp(res, code, text, fields, mbxp_workers)


def _score_mbxp(
    res: AccuracyResult,
    idx: list[int],
    text: dict[int, str],
    fields: list[dict[str, Any]],
    workers: int | None,
) -> None:
    target = TARGETS["mixtral-8x7b"].scores["mbxp"]
    if not all("id" in fields[i] for i in idx):
        res.note = "MBXP samples need the dataset's 'id' column (<language>_<entry point>)"
        res.checks.append(Check("mbxp", float("nan"), target))
        return
    try:
        problems = [
            mbxp.Problem.from_sample(str(fields[i]["id"]), str(fields[i]["gt_output"]), text[i])
            for i in idx
        ]
    except ValueError as exc:
        raise ConfigError(f"mixtral-8x7b dataset: {exc}") from None
    found = mbxp.evaluate(problems, workers)
    res.note = found.note()
    for lang, (passed, n) in found.by_language().items():
        res.scores[f"mbxp_{lang}"] = round(100 * passed / n, 4)
    if found.complete and found.outcomes:
        res.scores["mbxp"] = round(found.score, 4)
    else:  # a scored language could not be run (or nothing to run): never a PASS
        res.checks.append(Check("mbxp", float("nan"), target))


def _score_405b(res: AccuracyResult, text: dict[int, str], fields: list[dict[str, Any]]) -> None:
    rouge = [i for i in text if fields[i]["metric"] == "rouge"]
    em = [i for i in text if fields[i]["metric"] in ("qa_em", "niah_em")]
    other = sorted({str(fields[i]["metric"]) for i in text} - {"rouge", "qa_em", "niah_em"})
    if rouge:
        res.scores["rougeL"] = rouge_scores(
            [text[i] for i in rouge], [str(fields[i]["gt_output"]) for i in rouge]
        )["rougeL"]
    if em:
        fn = {"qa_em": qa_em, "niah_em": niah_em}
        vals = [fn[fields[i]["metric"]](str(fields[i]["gt_output"]), text[i]) for i in em]
        res.scores["exact_match"] = round(float(np.mean(vals)), 4)
    if other:
        res.note = f"samples with unknown metrics not scored: {', '.join(other)}"
        res.checks.append(Check("unknown metrics", float("nan"), 0.0))


def _informational(
    res: AccuracyResult,
    outputs: dict[int, np.ndarray],
    idx: list[int],
    tps: float,
    reference_tokens: list[np.ndarray | None] | None,
) -> AccuracyResult:
    if reference_tokens is not None and all(r is not None for r in reference_tokens):
        same = [np.array_equal(outputs[i], reference_tokens[i]) for i in idx]  # type: ignore[arg-type]
        res.scores["reference_match_pct"] = round(100 * float(np.mean(same)), 4)
        res.checks.append(Check("reference_match_pct", res.scores["reference_match_pct"]))
    res.checks.append(Check("tokens_per_sample", tps))
    res.note = "no MLPerf accuracy target for this benchmark/dataset; scores are informational"
    return res
