"""The lexicon fused late with the hashed router: a logistic regression on a prompt's mean
lexicon vector, its logits added to the hashed MLP's, all inside the one MLP the router
already runs.

Measured held out by source (BENCHMARKS.md), the regression on the lexicon's 384-dim mean
carries to new sources better than the MLP does when it learns from the same vectors
jointly with the hashed features (which fit the training sources' wording); the hashed
router, in turn, knows the shapes a word list has no vector for (code, symbols, numbers).
Adding the two (the regression's logits weighted ``weight`` times the calibrated hashed
router's) beats either alone.

It needs no new inference code. The regression's coefficients become the lexicon's rows of
the table (each word's vector times the coefficients: ``k`` columns, one per expert), so
the lexicon half of the MLP's input is the regression's logits less its intercept; two
hidden units per expert pass each logit through the ReLU (``relu(z) - relu(-z) = z``) to
the output, beside the hashed MLP's own hidden units, which read only the hashed half.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlib.errors import ConfigError
from llmlib.router.features import prepare
from llmlib.router.lexicon import Lexicon
from llmlib.router.weights import RouterModel


def lexicon_means(texts: list[str], lexicon: Lexicon) -> np.ndarray:
    """Each text's mean lexicon vector over the words the lexicon holds, repeats counted,
    as the router sees them (``prepare``: its first words, cut long); zeros for a text
    with none."""
    out = np.zeros((len(texts), lexicon.vectors.shape[1]), dtype=np.float32)
    for i, text in enumerate(texts):
        at = lexicon.index(prepare(text))
        at = at[at >= 0]
        if len(at):
            out[i] = lexicon.vectors[at].mean(axis=0)
    return out


def fit_regression(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    c: float = 1.0,
    max_iter: int = 1000,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Multinomial logistic regression with classes weighed equally and an L2 penalty on
    the coefficients (not the intercept): scikit-learn's ``LogisticRegression(C=c,
    class_weight="balanced")`` objective, ``0.5 |W|^2 + c * sum_i w_i CE_i``, minimized by
    torch's L-BFGS in float64 (torch trains the rest of the router; scikit-learn is not
    needed); ``sample_weight`` (``row_weights``) replaces the balanced class weights.
    Returns coefficients (d, k), intercept (k,) and how the fit went."""
    import torch

    if not (np.isfinite(c) and c > 0):
        raise ConfigError(f"the regression's C must be a positive number, not {c}")
    counts = np.bincount(y, minlength=k)
    weights = len(y) / (k * np.maximum(counts, 1))
    sw_np = weights[y] if sample_weight is None else np.asarray(sample_weight, np.float64)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    sw = torch.from_numpy(sw_np)
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    n = len(y)

    def objective() -> Any:  # divided by n: the same minimum, gradients of a sane size
        ce = torch.nn.functional.cross_entropy(xt @ w + b, yt, reduction="none")
        return (c * (sw * ce).sum() + 0.5 * (w * w).sum()) / n

    def closure() -> Any:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    opt.zero_grad()
    loss = objective()
    loss.backward()
    assert w.grad is not None and b.grad is not None
    grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    info = {"objective": float(loss.detach()), "max_gradient": grad, "c": c}
    return w.detach().numpy().copy(), b.detach().numpy().copy(), info


def compose(
    base: RouterModel,
    lexicon: Lexicon,
    coef: np.ndarray,
    intercept: np.ndarray,
    weight: float,
) -> RouterModel:
    """One model whose logits are ``base``'s plus ``weight`` times the regression's: the
    lexicon's rows are its vectors times ``coef`` (in the first ``k`` of ``base.dim``
    columns), read as the second half of the MLP's input; 2k hidden units added."""
    if base.lex_keys is not None or base.w1.shape[0] != base.dim:
        raise ConfigError("fusing a lexicon needs a hashed router without one")
    k, dim, hidden = len(base.experts), base.dim, base.w1.shape[1]
    if k > dim:
        raise ConfigError(f"fusing a lexicon needs --dim of at least the experts' count ({k})")
    rows = np.zeros((len(lexicon), dim), dtype=np.float32)
    rows[:, :k] = lexicon.vectors @ coef.astype(np.float32)
    # the lexicon's columns scaled to the hashed ones' range (the unscaling goes into w1),
    # so that the int8 table's shared per-column scales serve both
    reach = np.abs(base.emb[:, :k]).max(axis=0)
    mine = np.abs(rows[:, :k]).max(axis=0)
    s = np.where((reach > 0) & (mine > 0), reach / np.where(mine > 0, mine, 1.0), 1.0)
    rows[:, :k] *= s
    w1 = np.zeros((2 * dim, hidden + 2 * k), dtype=np.float32)
    w1[:dim, :hidden] = base.w1
    w2 = np.zeros((hidden + 2 * k, k), dtype=np.float32)
    w2[:hidden] = base.w2
    for j in range(k):
        w1[dim + j, hidden + j] = 1.0 / s[j]
        w1[dim + j, hidden + k + j] = -1.0 / s[j]
        w2[hidden + j, j] = weight
        w2[hidden + k + j, j] = -weight
    b1 = np.concatenate([base.b1, np.zeros(2 * k)]).astype(np.float32)
    b2 = (base.b2 + weight * intercept).astype(np.float32)
    table = np.concatenate([base.emb, rows]).astype(np.float32)
    meta = {**base.meta, "hidden": hidden + 2 * k}
    return RouterModel(
        base.experts, base.buckets, table, w1, b1, w2, b2, meta, lex_keys=lexicon.keys
    )


# the weights ``fusion_weight`` chooses from
FUSE_WEIGHTS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def fit_parts(
    rows: list[dict[str, Any]], lexicon: Lexicon, c: float = 1.0, log: Any = print,
    **train_args: Any,
) -> tuple[RouterModel, np.ndarray, np.ndarray, dict[str, Any]]:  # fmt: skip
    """The two parts ``train_fused`` composes: the hashed router trained without the
    lexicon (its temperature fitted on the validation tenth, so that the weight weighs
    calibrated logits) and the regression (coefficients, intercept, how the fit went),
    fitted on the same training rows. ``train_args`` as ``train`` takes them (its lexicon
    arguments left out)."""
    from llmlib.router.train import row_weights, split_rows, train

    hashed = {k: v for k, v in train_args.items() if k not in ("lexicon", "fuse", "hashed_dropout")}
    base = train(rows, log=log, calibrate=True, **hashed)
    experts, train_rows, _ = split_rows(rows)
    x = lexicon_means([r["text"] for r in train_rows], lexicon)
    y = np.array([experts.index(r["label"]) for r in train_rows])
    alpha = float(train_args.get("source_balance", 0.0))
    sw = row_weights(train_rows, experts, alpha) if alpha > 0 else None
    coef, intercept, info = fit_regression(x, y, len(experts), c, sample_weight=sw)
    log(f"regression on the lexicon's mean: objective {info['objective']:.4f}, "
        f"largest gradient {info['max_gradient']:.1e}")  # fmt: skip
    return base, coef, intercept, info


def fusion_weight(
    rows: list[dict[str, Any]], lexicon: Lexicon, k: int = 5, log: Any = print,
    **train_args: Any,
) -> float:  # fmt: skip
    """The weight (of ``FUSE_WEIGHTS``) that routes rows of sources the parts never saw
    best: the training rows' sources held out in ``k`` groups (``source_folds``), both parts
    fitted on the rest score each group, and the weight with the best mean recall over the
    experts, pooled over all groups, wins (ties: the smaller). Mean recall, not accuracy:
    both parts weigh experts equally, and on a corpus where one expert has most rows,
    accuracy would let that expert pick (BENCHMARKS.md). ``k`` extra trainings; measured,
    the weight so picked held up on sources held out of the whole choice."""
    from llmlib.router.evaluation import source_folds
    from llmlib.router.model import Router

    folds, _ = source_folds([r for r in rows if r["split"] == "train"], k)
    if len(folds) < 2:
        raise ConfigError("--fuse auto needs at least two sources to hold out; give a weight")
    quiet = lambda _: None  # noqa: E731
    names = sorted({r["label"] for _, _, test in folds for r in test})
    right = np.zeros((len(FUSE_WEIGHTS), len(names)))
    total = np.zeros(len(names))
    for name, train_rows, test_rows in folds:
        base, coef, intercept, _ = fit_parts(train_rows, lexicon, log=quiet, **train_args)
        held = [r for r in test_rows if r["label"] in base.experts]
        zb = Router(base, native=False).text_logits([r["text"] for r in held])
        zl = lexicon_means([r["text"] for r in held], lexicon) @ coef + intercept
        y = np.array([base.experts.index(r["label"]) for r in held], dtype=np.int64)
        g = np.array([names.index(r["label"]) for r in held], dtype=np.int64)
        total += np.bincount(g, minlength=len(names))
        for i, w in enumerate(FUSE_WEIGHTS):
            hit = (zb + w * zl).argmax(axis=1) == y
            right[i] += np.bincount(g[hit], minlength=len(names))
        log(f"fusion weight fold {name[:60]}: {len(held)} rows")
    best, score = best_weight(right, total)
    log("fusion weight on unseen sources (mean recall): " + ", ".join(
        f"{w:g} {r:.4f}" for w, r in zip(FUSE_WEIGHTS, score, strict=True)
    ) + f"; picked {best:g}")  # fmt: skip
    return best


def best_weight(right: np.ndarray, total: np.ndarray) -> tuple[float, np.ndarray]:
    """The weight of ``FUSE_WEIGHTS`` with the best mean recall (``right[w, expert]`` rows
    of each expert routed right, of ``total[expert]``; experts with no rows left out), the
    smaller on a tie, and every weight's mean recall."""
    seen = total > 0
    score = (right[:, seen] / total[seen]).mean(axis=1)
    return FUSE_WEIGHTS[int(np.argmax(score))], score


def train_fused(
    rows: list[dict[str, Any]],
    lexicon: Lexicon,
    weight: float,
    calibrate: bool | float = True,
    c: float = 1.0,
    log: Any = print,
    **train_args: Any,
) -> RouterModel:
    """``train`` with ``fuse``: the parts (``fit_parts``) composed, and the sum calibrated
    (``calibrate`` as in ``train``) on the validation tenth."""
    from llmlib.router.model import Router
    from llmlib.router.train import calibrated, split_rows

    if not (np.isfinite(weight) and weight > 0):
        raise ConfigError(f"--fuse must be a positive number, not {weight}")
    base, coef, intercept, info = fit_parts(rows, lexicon, c, log, **train_args)
    experts, _, val_rows = split_rows(rows)
    model = compose(base, lexicon, coef, intercept, weight)
    model.meta["fusion"] = {"weight": weight, "base_temperature": base.meta.get("temperature")}
    model.meta["fusion"].update(info)
    model.meta["lexicon"] = {**lexicon.meta, "rows": len(lexicon)}
    for key in ("temperature", "validation_ece", "validation_ece_at_t1"):
        model.meta.pop(key, None)
    if val_rows and calibrate is not False:
        z = Router(model, native=False).text_logits([r["text"] for r in val_rows])
        cal = calibrated(z, np.array([experts.index(r["label"]) for r in val_rows]), calibrate)
        model.w2 /= cal["temperature"]
        model.b2 /= cal["temperature"]
        model.meta.update(cal)
    return model
