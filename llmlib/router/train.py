"""Training the router (torch): the embedding table and MLP of ``llmlib.router.model`` fitted
on a corpus (``llmlib.router.corpus``), classes weighed equally, the epoch kept by its
validation accuracy."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from llmlib.errors import ConfigError
from llmlib.router.corpus import EXPERTS, validation
from llmlib.router.features import feature_ids, prepare
from llmlib.router.lexicon import Lexicon
from llmlib.router.weights import RouterModel


def train(
    rows: list[dict[str, Any]],
    buckets: int = 1 << 14,
    dim: int = 32,
    hidden: int = 64,
    epochs: int = 12,
    seed: int = 0,
    log: Any = print,
    patience: int = 3,
    calibrate: bool | float = True,
    word_dropout: float = 0.0,
    lexicon: Lexicon | None = None,
    hashed_dropout: float = 0.0,
    fuse: float = 0.0,
    source_balance: float = 0.0,
) -> RouterModel:
    """Train the bag-of-features MLP with torch (mean EmbeddingBag, one hidden layer).

    A tenth of the training rows (by a crc32 of the text, never the held-out split) is
    kept aside for validation: after each epoch the model is scored on it, the best epoch's
    weights are kept (ties: the lower validation loss), and training stops ``patience``
    epochs after the last improvement; ``epochs`` is the most it runs. With ``calibrate``
    the last layer is then divided by the temperature that fits the validation rows best
    (``temperature``), or by ``calibrate`` itself where it is a number (one fitted on
    unseen sources: ``source_temperature``): the same decisions, confidences that mean what
    they say. ``word_dropout`` leaves that share of each row's features out, afresh each
    epoch (a regularizer). With a ``lexicon`` (``llmlib.router.lexicon``), each word it
    holds adds one more feature: its fixed vector through a linear map learned here (so a
    word no training row held still lands where its meaning puts it), exported as rows after
    the table's own. ``hashed_dropout`` (with a lexicon) leaves out the hashed features'
    mean of that share of the rows in each batch, so the MLP learns to route from the
    lexicon alone too (measured: it otherwise leans on the hashed features, which fit the
    training sources' wording and carry less to new ones); 1 reads the lexicon alone.
    ``fuse`` (with a lexicon, instead of learning it jointly): a logistic regression on the
    lexicon's mean vector, its logits added ``fuse`` times to those of the hashed router
    trained without the lexicon (``llmlib.router.fusion``), then calibrated as above.
    ``source_balance`` weighs each training row by its source's row count to the power
    ``-source_balance`` within its expert (``row_weights``; 0: every row alike, 1: every
    source alike), so that a few large sources do not teach an expert alone."""
    try:
        import torch
    except ImportError:
        raise ConfigError("router training needs torch: pip install -e .[model]") from None
    if lexicon is not None and fuse > 0:
        from llmlib.router.fusion import train_fused

        args = {"buckets": buckets, "dim": dim, "hidden": hidden, "epochs": epochs,
                "seed": seed, "patience": patience, "word_dropout": word_dropout,
                "source_balance": source_balance}  # fmt: skip
        return train_fused(rows, lexicon, fuse, calibrate, log=log, **args)
    experts, train_rows, val_rows = split_rows(rows)
    torch.manual_seed(seed)
    feats = [row_ids(r["text"], buckets, lexicon) for r in train_rows]
    labels = torch.tensor([experts.index(r["label"]) for r in train_rows])
    val_feats = [row_ids(r["text"], buckets, lexicon) for r in val_rows]
    val_labels = torch.tensor([experts.index(r["label"]) for r in val_rows], dtype=torch.long)
    counts = torch.bincount(labels, minlength=len(experts)).float()
    weight = counts.sum() / (len(experts) * counts.clamp(min=1))  # classes weighed equally
    emb = torch.nn.Embedding(buckets, dim)
    torch.nn.init.normal_(emb.weight, std=0.1)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(dim * (1 if lexicon is None else 2), hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, len(experts)),
    )
    params = list(emb.parameters()) + list(mlp.parameters())
    if lexicon is not None:  # the lexicon's vectors stay fixed; their map to the table learns
        lex_vecs = torch.from_numpy(lexicon.vectors)
        lex_map = torch.nn.Linear(lexicon.vectors.shape[1], dim, bias=False)
        torch.nn.init.normal_(lex_map.weight, std=0.1 / lexicon.vectors.shape[1] ** 0.5)
        params += list(lex_map.parameters())
    opt = torch.optim.Adam(params, lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    if source_balance > 0:  # each row its own weight (experts still weighed equally)
        row_w = torch.from_numpy(row_weights(train_rows, experts, source_balance)).float()
        val_w = torch.from_numpy(row_weights(val_rows, experts, source_balance)).float()
        per_row = torch.nn.CrossEntropyLoss(reduction="none")

        def train_loss(logits: Any, idx: list[int]) -> Any:
            w = row_w[idx]
            return (per_row(logits, labels[idx]) * w).sum() / w.sum()

        def val_score(logits: Any) -> tuple[float, float]:  # weighed as training weighs
            hit = (logits.argmax(1) == val_labels).float()
            loss = (per_row(logits, val_labels) * val_w).sum() / val_w.sum()
            return float((hit * val_w).sum() / val_w.sum()), -float(loss)
    else:

        def train_loss(logits: Any, idx: list[int]) -> Any:
            return loss_fn(logits, labels[idx])

        def val_score(logits: Any) -> tuple[float, float]:
            acc = (logits.argmax(1) == val_labels).float().mean()
            return float(acc), -float(loss_fn(logits, val_labels))

    n = len(feats)
    drop_rng = np.random.default_rng(seed)
    flat_all = np.concatenate(feats)
    starts = np.concatenate(([0], np.cumsum([len(f) for f in feats])[:-1]))

    def dropped(fs: list[Any]) -> list[Any]:
        """Each row's features with ``word_dropout`` of them left out (at least one kept),
        drawn afresh each epoch: no single word or n-gram can carry a source."""
        if word_dropout <= 0:
            return fs
        keep = drop_rng.random(len(flat_all)) >= word_dropout
        left = np.add.reduceat(keep.astype(np.int64), starts)
        keep[starts[left == 0]] = True  # a row never loses every feature
        return np.split(flat_all[keep], np.cumsum(np.add.reduceat(keep, starts))[:-1])

    def bag(fs: list[Any], idx: list[int]) -> Any:
        """The MLP's logits for rows ``idx``: the mean of each row's feature rows (hashed
        ids below ``buckets``, lexicon words at ``buckets`` + their index)."""
        parts = [fs[i] for i in idx]
        lens = np.array([len(p) for p in parts])
        flat = torch.from_numpy(np.concatenate(parts))
        seg = torch.from_numpy(np.repeat(np.arange(len(parts)), lens))
        hashed = flat < buckets
        x = torch.zeros(len(parts), dim).index_add(0, seg[hashed], emb(flat[hashed]))
        n_lex = np.zeros(len(parts), dtype=np.int64)
        if lexicon is not None:
            n_lex = np.add.reduceat(
                (flat >= buckets).numpy().astype(np.int64), lens.cumsum() - lens
            )
        x = x / torch.from_numpy(np.maximum(lens - n_lex, 1)).float().unsqueeze(1)
        if lexicon is None:
            return mlp(x)
        lex = ~hashed
        v = torch.zeros(len(parts), lex_vecs.shape[1])
        v.index_add_(0, seg[lex], lex_vecs[flat[lex] - buckets])
        lx = lex_map(v) / torch.from_numpy(np.maximum(n_lex, 1)).float().unsqueeze(1)
        if hashed_dropout >= 1 or (hashed_dropout > 0 and torch.is_grad_enabled()):
            x = x * (torch.rand(len(parts), 1) >= hashed_dropout).float()
        return mlp(torch.cat([x, lx], dim=1))

    best: tuple[float, float] | None = None  # (validation accuracy, -loss) of the kept epoch
    kept: list[Any] = []
    best_epoch = ran = 0
    for ep in range(epochs):
        perm = torch.randperm(n).tolist()
        total = 0.0
        ep_feats = dropped(feats)
        for lo in range(0, n, 128):
            idx = perm[lo : lo + 128]
            loss = train_loss(bag(ep_feats, idx), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        ran = ep + 1
        if not val_rows:
            log(f"epoch {ran}/{epochs}: loss {total / n:.4f}")
            continue
        with torch.no_grad():
            score = val_score(bag(val_feats, list(range(len(val_rows)))))
        log(f"epoch {ran}/{epochs}: loss {total / n:.4f}, validation accuracy {score[0]:.4f}")
        if best is None or score > best:
            best, best_epoch = score, ran
            kept = [p.detach().clone() for p in params]
        elif ran - best_epoch >= patience:
            break
    if kept:
        with torch.no_grad():
            for p, k in zip(params, kept, strict=True):
                p.copy_(k)
    lin1, lin2 = cast(torch.nn.Linear, mlp[0]), cast(torch.nn.Linear, mlp[2])
    if lexicon is not None and hashed_dropout >= 1:  # the hashed mean was never read
        with torch.no_grad():
            lin1.weight[:, :dim] = 0.0
    meta: dict[str, Any] = {"dim": dim, "hidden": hidden, "epochs": best_epoch or ran}
    if val_rows and calibrate is not False:  # temperature scaling, folded into the last layer
        with torch.no_grad():
            vl = bag(val_feats, list(range(len(val_rows))))
            cal = calibrated(vl.numpy(), val_labels.numpy(), calibrate)
            lin2.weight.mul_(1.0 / cal["temperature"])
            lin2.bias.mul_(1.0 / cal["temperature"])
        meta.update(cal)
    meta.update({"epochs_run": ran, "train_rows": n, "validation_rows": len(val_rows)})
    if best is not None:
        meta["validation_accuracy"] = best[0]
    table = emb.weight.detach().numpy().copy()
    if lexicon is not None:
        with torch.no_grad():
            rows = lex_map(lex_vecs).numpy()
        table = np.concatenate([table, rows]).astype(np.float32)
        meta["lexicon"] = {**lexicon.meta, "rows": len(lexicon)}
    return RouterModel(
        experts,
        buckets,
        table,
        lin1.weight.detach().numpy().T.copy(),
        lin1.bias.detach().numpy().copy(),
        lin2.weight.detach().numpy().T.copy(),
        lin2.bias.detach().numpy().copy(),
        {**meta, "seed": seed},
        lex_keys=None if lexicon is None else lexicon.keys,
    )


def split_rows(
    rows: list[dict[str, Any]],
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """The experts (``EXPERTS``' order, then others sorted), the rows trained on and the
    validation tenth (by a crc32 of the text; none where that would leave no training
    rows)."""
    seen = {r["label"] for r in rows}
    experts = [e for e in EXPERTS if e in seen] + sorted(seen - set(EXPERTS))
    train_rows = [r for r in rows if r["split"] == "train"]
    if not train_rows:
        raise ConfigError("corpus has no training rows")
    val_rows = [r for r in train_rows if validation(r["text"])]
    if len(val_rows) < len(train_rows):
        train_rows = [r for r in train_rows if not validation(r["text"])]
    else:  # a corpus too small to spare any: no validation, every epoch runs
        val_rows = []
    return experts, train_rows, val_rows


def row_weights(rows: list[dict[str, Any]], experts: list[str], alpha: float) -> np.ndarray:
    """Each row's weight in the loss: each row ``n_source ** -alpha`` (``n_source``: the
    rows of its expert from its source), then scaled so that every expert's rows weigh
    ``len(rows) / len(experts)`` in all. ``alpha`` 0: the classes weighed equally, rows
    alike within one; 1: every source of an expert weighs the same."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"--source_balance must be in [0, 1], got {alpha}")
    labels = np.array([experts.index(r["label"]) for r in rows], dtype=np.int64)
    keys = [(int(y), str(r.get("source", ""))) for y, r in zip(labels, rows, strict=True)]
    count: dict[tuple[int, str], int] = {}
    for key in keys:
        count[key] = count.get(key, 0) + 1
    w = np.array([count[key] ** -alpha for key in keys], dtype=np.float64)
    for j in range(len(experts)):
        mine = labels == j
        if mine.any():
            w[mine] *= len(rows) / len(experts) / w[mine].sum()
    return w


def row_ids(text: str, buckets: int, lexicon: Lexicon | None = None) -> np.ndarray:
    """A text's feature rows: its hashed features, then, with a lexicon, ``buckets`` plus
    the lexicon row of each word it holds (never empty: row 0 for a text of no words)."""
    ids = feature_ids(text, buckets) or [0]
    if lexicon is not None:
        at = lexicon.index(prepare(text))
        ids += (at[at >= 0] + buckets).tolist()
    return np.array(ids, dtype=np.int64)


CALIBRATIONS = ("validation", "source", "none")


def calibration(how: str, rows: list[dict[str, Any]], **train_args: Any) -> bool | float:
    """``train``'s ``calibrate`` for a calibration name (``CALIBRATIONS``): True (the
    validation tenth), False (none), or the temperature fitted on the rows' sources held out
    (``source_temperature``, with ``train_args``)."""
    if how == "source":
        return source_temperature(rows, **train_args)
    return how == "validation"


def source_temperature(
    rows: list[dict[str, Any]], k: int = 5, log: Any = print, **train_args: Any
) -> float:
    """The temperature that fits rows of sources a model never saw (``source_calibration``'s
    first half)."""
    return source_calibration(rows, k, log, **train_args)[0]


def source_calibration(
    rows: list[dict[str, Any]], k: int = 5, log: Any = print, **train_args: Any
) -> tuple[float, dict[str, float]]:
    """How confident a model should be on rows of sources it never saw: the training rows'
    sources held out in ``k`` groups (``evaluation.source_folds``), a model trained on the
    rest scores each group (``k`` extra trainings), and from all those scores together

    * one temperature (confidence then means, on new kinds of prompts, what it says; a
      temperature fitted on the validation tenth, rows like the training rows, does not:
      measured in BENCHMARKS.md), and
    * for each expert as the routing's default, the confidence threshold under which
      sending a prompt to that default routes unseen sources best, every expert's recall
      weighing the same (``balanced_threshold``)."""
    from llmlib.router.evaluation import source_folds
    from llmlib.router.model import Router

    folds, _ = source_folds([r for r in rows if r["split"] == "train"], k)
    if len(folds) < 2:
        raise ConfigError("calibrating on unseen sources needs at least two sources to hold out")
    zs, ys, experts = [], [], None
    for name, train_rows, test_rows in folds:
        model = train(train_rows, log=lambda _: None, calibrate=False, **train_args)
        experts = experts or model.experts
        held = [r for r in test_rows if r["label"] in experts]
        zs.append(Router(model, native=False).text_logits([r["text"] for r in held]))
        ys += [experts.index(r["label"]) for r in held]
        log(f"calibration fold {name[:60]}: {len(test_rows)} rows")
    z, y = np.concatenate(zs), np.array(ys)
    t, before, after = temperature(z, y)
    log(f"temperature {t:.3f} on unseen sources: ECE {before:.3f} at T=1, {after:.3f} at T")
    assert experts is not None
    ths = {e: balanced_threshold(z / t, y, d) for d, e in enumerate(experts)}
    log("balanced thresholds on unseen sources: " + ", ".join(f"{e} {v}" for e, v in ths.items()))
    return t, ths


def balanced_threshold(logits: Any, labels: Any, default: int) -> float:
    """The confidence threshold (0 to 0.8 in steps of 0.01; 0: never the default) under
    which a prompt goes to expert ``default`` that gives the best mean recall over the
    experts on these rows (the highest such threshold where several tie)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    conf, arg = p.max(axis=1), p.argmax(axis=1)
    present = [c for c in range(z.shape[1]) if (y == c).any()]
    best, score = 0.0, -1.0
    for thr in np.round(np.arange(0.0, 0.8001, 0.01), 2):
        got = np.where(conf >= thr, arg, default)
        s = float(np.mean([np.mean(got[y == c] == c) for c in present]))
        if s >= score - 1e-12:
            best, score = float(thr), max(s, score)
    return best


def calibrated(logits: Any, labels: Any, calibrate: bool | float) -> dict[str, float]:
    """The temperature for ``train``'s ``calibrate`` (True: fitted on these rows; a number:
    that one) and the expected calibration error on the rows before and after it."""
    t, before, after = temperature(logits, labels)
    if not isinstance(calibrate, bool):
        t, after = float(calibrate), ece(logits, labels, calibrate)
    return {"temperature": t, "validation_ece": after, "validation_ece_at_t1": before}


def temperature(logits: Any, labels: Any) -> tuple[float, float, float]:
    """The temperature T (of 61 from 1/4 to 8, log-spaced) that minimizes the negative log
    likelihood of softmax(logits / T) on the labels, and the expected calibration error at
    T = 1 and at T: so that a confidence of p means right p of the time on rows like
    these."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)

    def nll(t: float) -> float:
        s = z / t
        s = s - s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    t = float(min(grid, key=nll))
    return t, ece(z, y, 1.0), ece(z, y, t)


def ece(logits: Any, labels: Any, t: float = 1.0, bins: int = 10) -> float:
    """Expected calibration error of softmax(logits / t): the confidence-weighted gap between
    confidence and accuracy over ``bins`` equal-width bins."""
    s = np.asarray(logits, dtype=np.float64) / t
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return calibration_error(p.max(axis=1), p.argmax(axis=1) == np.asarray(labels), bins)


def calibration_error(confidence: Any, right: Any, bins: int = 10) -> float:
    """ECE from each decision's confidence and whether it was right."""
    conf, ok = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=np.float64)
    if not len(conf):
        return 0.0
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(ok[m].mean() - conf[m].mean())
    return float(total / len(conf))


# --- evaluation -------------------------------------------------------------------------------
