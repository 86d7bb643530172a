"""The lexicon fused late: a regression on the mean lexicon vector whose logits the one MLP
adds to the hashed router's; the regression is at its optimum, the composed model computes
exactly the sum (numpy and C alike), and its flags are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.router.features import prepare
from llmlib.router.fusion import (
    FUSE_WEIGHTS,
    best_weight,
    compose,
    fit_regression,
    fusion_weight,
    lexicon_means,
)
from llmlib.router.model import Router
from llmlib.router.train import train
from llmlib.router.weights import load_model
from tests.unit.test_router import TEXTS, TRICKY, corpus, native_router
from tests.unit.test_router_lexicon import (
    CODE_WORDS,
    MATH_WORDS,
    cli_files,
    lexicon,
    lexicon_rows,
)

quiet = {"log": lambda _: None}


def blobs(n=300, d=6, k=3, seed=0):
    """k Gaussian blobs, unequal in size (so the class weights matter)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=[0.6, 0.3, 0.1][:k] if k == 3 else None)
    x = rng.standard_normal((n, d)) + 1.5 * np.eye(k, d)[y]
    return x.astype(np.float32), y


def objective(x, y, w, b, k, c=1.0):
    z = x.astype(np.float64) @ w + b
    z = z - z.max(axis=1, keepdims=True)
    ce = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1)))
    weights = len(y) / (k * np.bincount(y, minlength=k))
    return (c * (weights[y] * ce).sum() + 0.5 * (w * w).sum()) / len(y)


def test_the_regression_reaches_its_objectives_minimum():
    x, y = blobs()
    w, b, info = fit_regression(x, y, 3)
    assert info["max_gradient"] < 1e-5
    best = objective(x, y, w, b, 3)
    assert best == pytest.approx(info["objective"], rel=1e-9)
    rng = np.random.default_rng(1)
    for _ in range(20):  # no nearby point is lower
        assert objective(x, y, w + 1e-3 * rng.standard_normal(w.shape), b, 3) > best
        assert objective(x, y, w, b + 1e-3 * rng.standard_normal(3), 3) > best
    # classes weighed equally: the rare class is found about as often as the common one
    hits = [((x @ w + b).argmax(1) == y)[y == j].mean() for j in range(3)]
    assert min(hits) > 0.6
    # a smaller C shrinks the coefficients
    assert np.abs(fit_regression(x, y, 3, c=0.01)[0]).sum() < np.abs(w).sum()
    with pytest.raises(ConfigError, match="positive"):
        fit_regression(x, y, 3, c=float("nan"))


def test_the_regression_matches_scikit_learns():
    sk = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(seed=2)
    w, b, _ = fit_regression(x, y, 3)
    clf = sk.LogisticRegression(class_weight="balanced", tol=1e-10, max_iter=5000).fit(x, y)
    # the same logits up to a per-row constant (softmax's): compare centred
    mine = x @ w + b
    theirs = clf.decision_function(x)
    centred = [z - z.mean(axis=1, keepdims=True) for z in (mine, theirs)]
    np.testing.assert_allclose(centred[0], centred[1], atol=2e-3)


def test_the_composed_model_adds_the_regressions_logits_to_the_hashed_routers():
    lex = lexicon()
    rows = lexicon_rows(10) + corpus(10)
    base = train(rows, buckets=1 << 9, dim=8, hidden=8, epochs=2, **quiet)
    rng = np.random.default_rng(0)
    coef = rng.standard_normal((lex.vectors.shape[1], 3)).astype(np.float32)
    intercept = np.array([0.5, -0.2, 0.1], dtype=np.float32)
    fused = compose(base, lex, coef, intercept, 2.0)
    assert fused.w1.shape == (16, 8 + 6) and (fused.lex_keys == lex.keys).all()
    b, f = Router(base, native=False), Router(fused, native=False)
    texts = ["please parser this", "what is the theorem of", "cats and dogs", "...", "Sum!"]
    texts += TEXTS[:5]
    x = lexicon_means(texts, lex)
    for t, xi in zip(texts, x, strict=True):
        words = prepare(t) or [""]
        want = b.logits(b.embed(words)) + 2.0 * (xi @ coef + intercept)
        np.testing.assert_allclose(f.logits(f.embed(words)), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="without one"):
        compose(fused, lex, coef, intercept, 2.0)
    small = train(rows, buckets=1 << 9, dim=2, hidden=8, epochs=1, **quiet)
    with pytest.raises(ConfigError, match="at least the experts"):
        compose(small, lex, coef, intercept, 2.0)


def test_a_fused_router_trains_saves_and_decides_alike_in_c_and_numpy(tmp_path):
    lex = lexicon()
    rows = lexicon_rows(20) + corpus(10)
    model = train(rows, buckets=1 << 9, dim=8, hidden=8, epochs=3, lexicon=lex, fuse=2.0, **quiet)
    assert model.meta["fusion"]["weight"] == 2.0 and model.meta["lexicon"]["rows"] == len(lex)
    assert model.meta["fusion"]["max_gradient"] < 1e-4 and "temperature" in model.meta
    # words no training row held route by the regression on their vectors
    r = Router(model)
    unseen = {"code": "parser syntax debug array", "reasoning": "theorem ratio product sum"}
    assert {e: r.decide(t).expert for e, t in unseen.items()} == {
        "code": "code", "reasoning": "reasoning"}  # fmt: skip
    model.save(tmp_path / "r.npz")
    texts = TEXTS + TRICKY + ["(parser), syntax; debug! array?", "'theorem'", "ratio" * 9]
    for precision in ("int8", "float"):
        m, _ = load_model(tmp_path / "r.npz", precision)
        c, py = native_router(m), Router(m, native=False)
        for t in texts:
            dc, dp = c.decide(t), py.decide(t)
            assert (dc.expert, dc.source) == (dp.expert, dp.source), t[:40]
            assert dc.confidence == pytest.approx(dp.confidence, rel=1e-4, abs=1e-6)
    # the int8 table keeps the fused decisions (the lexicon's columns scaled to the hashed
    # ones' range before quantizing)
    f, q = Router(model, native=False), Router(model.dequantized(), native=False)
    assert [f.decide(t).expert for t in texts] == [q.decide(t).expert for t in texts]
    with pytest.raises(ConfigError, match="--fuse must be"):
        train(rows, dim=8, epochs=1, lexicon=lex, fuse=float("inf"), **quiet)


def test_router_train_and_eval_flags_for_a_fused_lexicon(tmp_path):
    from tests.unit.test_router import run_cli

    lex_path, data, out = cli_files(tmp_path, lexicon_rows(10))
    base = ["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--buckets", "512"]
    p = run_cli(*base, "--lexicon", str(lex_path), "--dim", "8", "--fuse", "2")
    assert p.returncode == 0, p.stderr
    _, header = load_model(out)
    assert header["fuse"] == 2.0 and header["fusion"]["weight"] == 2.0
    # by source: two sources per label, each held out once; the recipe is in the report
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps(dict(r, source=f"{r['label']}{k % 2}")) + "\n"
                           for k, r in enumerate(lexicon_rows(10))))  # fmt: skip
    p = run_cli("eval", "--data", str(two), "--split", "source", "--lexicon", str(lex_path),
                "--dim", "8", "--fuse", "2")  # fmt: skip
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout[: p.stdout.index("\n}\n") + 3])["router"]
    assert report["recipe"]["fuse"] == 2.0 and report["held_out"] > 0
    lexflag = ["--lexicon", str(lex_path)]
    for extra, says in (
        (["--fuse", "2"], "--fuse needs --lexicon"),
        ([*lexflag, "--fuse", "nan"], "--fuse must be"),
        ([*lexflag, "--fuse", "-1"], "--fuse must be"),
        ([*lexflag, "--fuse", "inf"], "--fuse must be"),
        ([*lexflag, "--fuse", "2", "--hashed_dropout", "0.5"], "exclude each other"),
    ):
        for cmd in (base, ["eval", "--data", str(data), "--split", "source"]):
            p = run_cli(*cmd, *extra)
            assert p.returncode == 2 and says in p.stderr, (cmd[0], extra, p.stderr)
            assert len(p.stderr.strip().splitlines()) == 1


def rows_where(trust):
    """Two sources per label. ``trust`` "lexicon": the words' meanings hold across sources
    and a marker word swaps labels; "hashed": the marker holds and the meanings swap."""
    rows = []
    for k in range(40):
        h = k % 2
        for label, words, mark in (("code", CODE_WORDS, "zebra"), ("reasoning", MATH_WORDS, "yak")):
            if trust == "lexicon" and h:
                mark = {"zebra": "yak", "yak": "zebra"}[mark]
            if trust == "hashed" and h:
                words = MATH_WORDS if words is CODE_WORDS else CODE_WORDS
            text = f"{words[k % 8]} {words[(k + 3) % 8]} {mark} {mark}"
            rows.append({"text": text, "label": label, "source": f"{label}{h}"})
        rows.append(
            {"text": f"tell me about cats {k}", "label": "general", "source": f"general{h}"}
        )
    return [dict(r, split="train") for r in rows]


def test_the_fusion_weight_is_the_one_that_routes_unseen_sources_best():
    lex = lexicon()
    lex.vectors = lex.vectors * 0.03  # weak vectors: the regression's logits stay small
    size = {"buckets": 512, "dim": 8, "hidden": 8, "epochs": 5}
    said = []
    trusted = fusion_weight(rows_where("lexicon"), lex, log=said.append, **size)
    assert trusted >= 3 and trusted in FUSE_WEIGHTS
    assert said[-1].startswith("fusion weight on unseen sources (mean recall): 0.5 0.3333")
    # where the words mislead on new sources and the hashed marker does not: the least
    assert fusion_weight(rows_where("hashed"), lex, **size, **quiet) == FUSE_WEIGHTS[0]
    one = [dict(r, source=r["label"]) for r in rows_where("lexicon")]
    with pytest.raises(ConfigError, match="at least two sources"):
        fusion_weight(one, lex, **size, **quiet)


def test_router_train_and_eval_with_fuse_auto(tmp_path):
    from tests.unit.test_router import run_cli

    lex_path, data, out = cli_files(tmp_path, rows_where("lexicon"))
    recipe = ["--lexicon", str(lex_path), "--dim", "8", "--fuse", "auto"]
    p = run_cli("train", "--data", str(data), "--out", str(out), "--epochs", "2", *recipe)
    assert p.returncode == 0, p.stderr
    assert "fusion weight on unseen sources" in p.stdout
    _, header = load_model(out)
    assert header["fuse"] in FUSE_WEIGHTS and header["fuse_flag"] == "auto"
    assert header["fusion"]["weight"] == header["fuse"]
    p = run_cli("eval", "--data", str(data), "--split", "source", *recipe)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout[: p.stdout.index("\n}\n") + 3])["router"]
    assert report["recipe"]["fuse"] == "auto" and report["held_out"] > 0
    p = run_cli("train", "--data", str(data), "--out", str(out), *recipe[:-1], "often")
    assert p.returncode == 2 and "--fuse must be a number >= 0 or auto, got often" in p.stderr


def test_the_weight_is_picked_by_mean_recall_not_by_the_biggest_experts_accuracy():
    """900 general rows and 100 reasoning rows: the first weight gets 890 + 20 right
    (accuracy 0.91, mean recall 0.54), the second 800 + 90 (accuracy 0.89, mean recall
    0.89); the second wins. An expert no held-out row had does not count; ties go to the
    smaller weight."""
    right = np.zeros((len(FUSE_WEIGHTS), 3))
    right[0], right[1] = [890, 20, 0], [800, 90, 0]
    w, score = best_weight(right, np.array([900.0, 100.0, 0.0]))
    assert w == FUSE_WEIGHTS[1] and score[1] == pytest.approx((800 / 900 + 0.9) / 2)
    right[2] = right[1]
    assert best_weight(right, np.array([900.0, 100.0, 0.0]))[0] == FUSE_WEIGHTS[1]
