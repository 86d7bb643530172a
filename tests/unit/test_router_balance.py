"""Source balancing (``--source_balance``): each training row weighed by its source's size
within its expert, so that a small source teaches as much as a large one; the experts stay
weighed equally, 0 changes nothing, and the flag is checked before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.router.fusion import fit_regression
from llmlib.router.model import Router
from llmlib.router.train import row_weights, train
from llmlib.router.weights import load_model

EXPERTS = ["general", "code"]


def skewed():
    """general: 100 rows of "apple" (source g1), 5 of "kiwi" (g2); code: 100 of "pear"
    (c1), 20 of "kiwi" (c2), each with one of five numbers. Rows alike, "kiwi" is code's by
    about 4 to 1; sources alike, it is each expert's as much."""
    rows = []
    sources = (("general", "g1", "apple", 100), ("general", "g2", "kiwi", 5),
               ("code", "c1", "pear", 100), ("code", "c2", "kiwi", 20))  # fmt: skip
    for label, src, word, n in sources:
        rows += [
            {"text": f"{word} {word} {k % 5}", "label": label, "source": src, "split": "train"}
            for k in range(n)
        ]  # (the same 5 texts in both experts)
    return rows


def test_row_weights_weigh_experts_equally_and_sources_by_alpha():
    rows = skewed()
    y = np.array([EXPERTS.index(r["label"]) for r in rows])
    for alpha in (0.0, 0.5, 1.0):
        w = row_weights(rows, EXPERTS, alpha)
        assert w.sum() == pytest.approx(len(rows))
        for j in range(2):  # every expert weighs half, whatever its row count
            assert w[y == j].sum() == pytest.approx(len(rows) / 2)
    # 0: the balanced class weights, every row of an expert alike
    w0 = row_weights(rows, EXPERTS, 0.0)
    assert np.allclose(w0[y == 0], len(rows) / (2 * 105))
    assert np.allclose(w0[y == 1], len(rows) / (2 * 120))
    # 1: each source of an expert weighs the same in all
    w1 = row_weights(rows, EXPERTS, 1.0)
    src = np.array([r["source"] for r in rows])
    for a, b in (("g1", "g2"), ("c1", "c2")):
        assert w1[src == a].sum() == pytest.approx(w1[src == b].sum())
    # 0.5 in between: the small source weighs more per row than the large one
    w5 = row_weights(rows, EXPERTS, 0.5)
    assert w5[src == "g2"][0] == pytest.approx(w5[src == "g1"][0] * np.sqrt(100 / 5))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="source_balance"):
            row_weights(rows, EXPERTS, bad)


def kiwi_share(model) -> float:
    z = Router(model, native=False).text_logits(["kiwi kiwi 3"])[0]
    p = np.exp(z - z.max())
    return float(p[model.experts.index("general")] / p.sum())


def test_a_small_source_counts_once_its_source_is_weighed():
    args = {"buckets": 1 << 9, "dim": 8, "hidden": 8, "epochs": 60, "patience": 60,
            "calibrate": False, "log": lambda _: None}  # fmt: skip
    rows = skewed()
    alike = kiwi_share(train(rows, **args))
    balanced = kiwi_share(train(rows, source_balance=1.0, **args))
    assert alike < 0.3 and 0.35 < balanced < 0.65, (alike, balanced)  # about 0.2, 0.5
    # the regression the fused router uses takes the same weights
    x = np.array([[1.0, 0.0] if "kiwi" in r["text"] else [0.0, 1.0] for r in rows])
    y = np.array([EXPERTS.index(r["label"]) for r in rows])
    probs = []
    for sw in (None, row_weights(rows, EXPERTS, 1.0)):
        w, b, _ = fit_regression(x, y, 2, c=100.0, sample_weight=sw)
        z = np.array([1.0, 0.0]) @ w + b
        probs.append(float(np.exp(z[0]) / np.exp(z).sum()))
    assert probs[0] < 0.3 and probs[1] == pytest.approx(0.5, abs=0.05), probs


def test_router_train_and_eval_take_source_balance_and_check_it(tmp_path):
    from tests.unit.test_router import run_cli

    data, out = tmp_path / "corpus.jsonl", tmp_path / "r.npz"
    rows = [dict(r, split="train" if k % 7 else "test") for k, r in enumerate(skewed())]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--buckets", "512"]
    p = run_cli(*base, "--source_balance", "0.5")
    assert p.returncode == 0, p.stderr
    assert load_model(out)[1]["source_balance"] == 0.5
    for bad in ("nan", "-1", "2", "inf", "x"):
        for cmd in (base, ["eval", "--data", str(data), "--split", "source"]):
            p = run_cli(*cmd, "--source_balance", bad)
            assert p.returncode == 2 and "--source_balance" in p.stderr, (cmd[0], bad, p.stderr)
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr
