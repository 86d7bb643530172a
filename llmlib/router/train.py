"""Training the router (torch): the embedding table and MLP of ``llmlib.router.model`` fitted
on a corpus (``llmlib.router.corpus``), classes weighed equally, the epoch kept by its
validation accuracy."""

from __future__ import annotations

from typing import Any, cast

from llmlib.errors import ConfigError
from llmlib.router.corpus import EXPERTS, validation
from llmlib.router.features import feature_ids
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
) -> RouterModel:
    """Train the bag-of-features MLP with torch (mean EmbeddingBag, one hidden layer).

    A tenth of the training rows (by a crc32 of the text, never the held-out split) is
    kept aside for validation: after each epoch the model is scored on it, the best epoch's
    weights are kept (ties: the lower validation loss), and training stops ``patience``
    epochs after the last improvement; ``epochs`` is the most it runs."""
    try:
        import torch
    except ImportError:
        raise ConfigError("router training needs torch: pip install -e .[model]") from None
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
    torch.manual_seed(seed)
    feats = [feature_ids(r["text"], buckets) or [0] for r in train_rows]
    labels = torch.tensor([experts.index(r["label"]) for r in train_rows])
    val_feats = [feature_ids(r["text"], buckets) or [0] for r in val_rows]
    val_labels = torch.tensor([experts.index(r["label"]) for r in val_rows], dtype=torch.long)
    counts = torch.bincount(labels, minlength=len(experts)).float()
    weight = counts.sum() / (len(experts) * counts.clamp(min=1))  # classes weighed equally
    emb = torch.nn.EmbeddingBag(buckets, dim, mode="mean")
    torch.nn.init.normal_(emb.weight, std=0.1)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, len(experts))
    )
    params = list(emb.parameters()) + list(mlp.parameters())
    opt = torch.optim.Adam(params, lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    n = len(feats)

    def bag(fs: list[list[int]], idx: list[int]) -> Any:
        flat = torch.tensor([f for i in idx for f in fs[i]])
        offsets = torch.tensor([0] + [len(fs[i]) for i in idx[:-1]]).cumsum(0)
        return mlp(emb(flat, offsets))

    best: tuple[float, float] | None = None  # (validation accuracy, -loss) of the kept epoch
    kept: list[Any] = []
    best_epoch = ran = 0
    for ep in range(epochs):
        perm = torch.randperm(n).tolist()
        total = 0.0
        for lo in range(0, n, 128):
            idx = perm[lo : lo + 128]
            loss = loss_fn(bag(feats, idx), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        ran = ep + 1
        if not val_rows:
            log(f"epoch {ran}/{epochs}: loss {total / n:.4f}")
            continue
        with torch.no_grad():
            vl = bag(val_feats, list(range(len(val_rows))))
            score = (
                float((vl.argmax(1) == val_labels).float().mean()),
                -float(loss_fn(vl, val_labels)),
            )
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
    meta: dict[str, Any] = {"dim": dim, "hidden": hidden, "epochs": best_epoch or ran}
    meta.update({"epochs_run": ran, "train_rows": n, "validation_rows": len(val_rows)})
    if best is not None:
        meta["validation_accuracy"] = best[0]
    return RouterModel(
        experts,
        buckets,
        emb.weight.detach().numpy().copy(),
        lin1.weight.detach().numpy().T.copy(),
        lin1.bias.detach().numpy().copy(),
        lin2.weight.detach().numpy().T.copy(),
        lin2.bias.detach().numpy().copy(),
        {**meta, "seed": seed},
    )


# --- evaluation -------------------------------------------------------------------------------
