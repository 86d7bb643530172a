"""The router's lexicon: fixed word vectors mapped into the table, so words no training row
held still route by meaning; the C path agrees with the numpy one; bad files are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmlib.config.settings import REPO_ROOT
from llmlib.errors import ConfigError
from llmlib.router import features
from llmlib.router.features import prepare
from llmlib.router.lexicon import from_words, lex_key, load_lexicon, save_lexicon
from llmlib.router.model import Router
from llmlib.router.train import row_ids, train
from llmlib.router.weights import load_model
from tests.unit.test_router import TEXTS, TRICKY, corpus, native_router

# two meanings: words of each lie near one direction (with noise), as an encoder would put them
CODE_WORDS = ["function", "compile", "variable", "loop", "array", "debug", "syntax", "parser"]
MATH_WORDS = ["equation", "integer", "divisor", "fraction", "theorem", "sum", "product", "ratio"]
NEUTRAL = ["the", "a", "of", "what", "is", "please", "my", "this"]


def lexicon(seed=0):
    rng = np.random.default_rng(seed)
    axes = np.eye(8, dtype=np.float32)
    words, vecs = [], []
    for group, axis in ((CODE_WORDS, axes[0]), (MATH_WORDS, axes[1]), (NEUTRAL, axes[2])):
        for w in group:
            words.append(w)
            vecs.append(axis + 0.05 * rng.standard_normal(8).astype(np.float32))
    return from_words(words, np.stack(vecs), {"words": len(words), "test": True})


def lexicon_rows(n=40):
    """Code rows hold the first half of CODE_WORDS, reasoning rows the first half of
    MATH_WORDS; the other halves never appear in training."""
    rows = []
    for k in range(n):
        c, m = CODE_WORDS[k % 4], MATH_WORDS[k % 4]
        rows.append({"text": f"please {c} this {CODE_WORDS[(k + 1) % 4]}", "label": "code"})
        rows.append({"text": f"what is the {m} of {MATH_WORDS[(k + 1) % 4]}", "label": "reasoning"})
        rows.append({"text": f"tell me about cats number {k}", "label": "general"})
    return [dict(r, split="train") for r in rows]


def test_words_no_training_row_held_route_by_their_lexicon_vectors():
    rows = lexicon_rows()
    unseen = {"code": "parser syntax debug array", "reasoning": "theorem ratio product sum"}
    with_lex = Router(train(rows, buckets=1 << 10, dim=8, hidden=16, epochs=30,
                            lexicon=lexicon(), log=lambda _: None))  # fmt: skip
    assert {e: with_lex.decide(t).expert for e, t in unseen.items()} == {
        "code": "code", "reasoning": "reasoning"}  # fmt: skip
    # without it the unseen words are only hashed n-grams no training row held
    without = Router(train(rows, buckets=1 << 10, dim=8, hidden=16, epochs=30,
                           log=lambda _: None))  # fmt: skip
    assert [without.decide(t).expert for t in unseen.values()] != list(unseen)


def test_the_table_holds_the_lexicons_rows_and_the_artifact_keeps_them(tmp_path):
    lex = lexicon()
    model = train(lexicon_rows(10), buckets=1 << 9, dim=8, hidden=8, epochs=2,
                  lexicon=lex, log=lambda _: None)  # fmt: skip
    assert model.emb.shape == ((1 << 9) + len(lex), 8)
    assert model.meta["lexicon"]["rows"] == len(lex)
    model.save(tmp_path / "r.npz")
    for precision in ("int8", "float"):
        back, _ = load_model(tmp_path / "r.npz", precision)
        assert back.lex_keys is not None and (back.lex_keys == lex.keys).all()
        py = Router(back, native=False)
        for t in ["please parser this", "what is the theorem", "(syntax)!", "...", "cats"]:
            np.testing.assert_allclose(py.embed(prepare(t)), reference(back, t, lex),
                                       rtol=1e-4, atol=1e-6)  # fmt: skip
    assert (row_ids("parser", 512, lex) >= 512).sum() == 1  # the lexicon row
    assert (row_ids("...", 512, lex) >= 512).sum() == 0  # punctuation alone: none


def decide_alike(c, py, texts):
    """Router ``c`` decides each text as ``py`` does, twice (the second time from its word
    cache), and in a batch."""
    for _ in range(2):
        for t in texts:
            dc, dp = c.decide(t), py.decide(t)
            assert (dc.expert, dc.source) == (dp.expert, dp.source), t[:40]
            assert dc.confidence == pytest.approx(dp.confidence, rel=1e-4, abs=1e-6)
    assert c.decide_batch(texts) == py.decide_batch(texts)


def reference(model, text, lex):
    """The embedding by definition: the mean of the hashed rows, then the mean of the
    lexicon rows (zeros where no word is in the lexicon)."""
    ids = row_ids(text, model.buckets, lex)
    hashed, found = ids[ids < model.buckets], ids[ids >= model.buckets]
    lex_mean = model.emb[found].mean(axis=0) if len(found) else np.zeros(model.dim)
    return np.concatenate([model.emb[hashed].mean(axis=0), lex_mean])


# dim 8: the lexicon's live columns (all 8) held in a cache entry's head; 16: more than C
# keeps there (its row copied beside the sums)
@pytest.mark.parametrize("dim", [8, 16])
def test_the_c_path_finds_the_same_lexicon_rows(tmp_path, dim):
    model = train(lexicon_rows(10) + corpus(10), buckets=1 << 9, dim=dim, hidden=8, epochs=2,
                  lexicon=lexicon(), log=lambda _: None)  # fmt: skip
    assert (np.abs(model.emb[model.buckets :]).max(axis=0) > 0).sum() == dim
    model.save(tmp_path / "r.npz")
    for precision in ("int8", "float"):
        m, _ = load_model(tmp_path / "r.npz", precision)
        c, py = native_router(m), Router(m, native=False)
        texts = TEXTS + TRICKY + ["(parser), syntax; debug! array?", "'theorem'", "a.b.c ..."]
        texts += ['"the" [of] {what}', "PARSER Syntax", "sum" + "!" * 40, "x" * 31 + "sum"]
        decide_alike(c, py, texts)


def test_the_shipped_router_decides_in_c_as_in_numpy():
    """The shipped artifact has the widths C has loops of fixed length for (32 columns, a
    lexicon) and a hidden layer (70) that is not a multiple of C's 16-unit blocks."""
    m, _ = load_model(REPO_ROOT / "configs" / "routing" / "router.npz")
    assert m.dim == 32 and m.lex_keys is not None and m.w1.shape[1] % 16 != 0
    c, py = native_router(m), Router(m, native=False)
    texts = TEXTS + TRICKY + [r["text"] for r in corpus(30)] + ["(parser), syntax; debug!"]
    decide_alike(c, py, texts)
    cols, want = c.decide_columns(texts), py.decide_columns(texts)
    np.testing.assert_allclose(cols.confidence, want.confidence, rtol=1e-4, atol=1e-6)


def test_lexicon_keys_strip_ascii_punctuation_and_keep_the_commonest_of_a_collision():
    assert lex_key("data,") == lex_key("(data)") == lex_key("data") != lex_key("data-")
    lex = from_words(["data", "data.", "code"], np.eye(3, dtype=np.float32), {})
    assert len(lex) == 2  # "data" and "data." share a key: the first is kept
    at = lex.index(["data!", "code", "nothing", "!!"])
    assert at[2] == at[3] == -1 and lex.vectors[at[0]][0] == 1.0


def test_bad_lexicons_and_artifacts_are_refused(tmp_path):
    lex = lexicon()
    save_lexicon(lex, tmp_path / "lex.npz")
    assert (load_lexicon(tmp_path / "lex.npz").keys == lex.keys).all()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a router lexicon"):
        load_lexicon(tmp_path / "bad.npz")
    np.savez(tmp_path / "unsorted.npz", keys=lex.keys[::-1], vectors=lex.vectors,
             meta=np.frombuffer(b"{}", dtype=np.uint8))  # fmt: skip
    with pytest.raises(ConfigError, match="unsorted"):
        load_lexicon(tmp_path / "unsorted.npz")
    model = train(lexicon_rows(5), buckets=1 << 9, dim=8, hidden=8, epochs=1,
                  lexicon=lex, log=lambda _: None)  # fmt: skip
    model.lex_keys = lex.keys[:-1]  # one key fewer than the table's lexicon rows
    model.save(tmp_path / "r.npz")
    with pytest.raises(ConfigError, match="retrain"):
        load_model(tmp_path / "r.npz")
    if features._C is not None:
        q, s = model.quantized()
        f32 = [np.ascontiguousarray(a, dtype=np.float32) for a in (model.w1, model.b1)]
        f32 += [np.ascontiguousarray(a, dtype=np.float32) for a in (model.w2, model.b2)]
        with pytest.raises(ValueError, match="ascending"):
            features._C.make_model(q, s, *f32, lex.keys[::-1].copy())
        with pytest.raises(TypeError, match="uint32"):
            features._C.make_model(q, s, *f32, lex.keys.astype(np.int64))


def cli_files(tmp_path, rows):
    """For router CLI runs: lexicon() saved, a corpus file of ``rows``, and where the
    artifact goes."""
    lex_path, data = tmp_path / "lex.npz", tmp_path / "corpus.jsonl"
    save_lexicon(lexicon(), lex_path)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return lex_path, data, tmp_path / "r.npz"


def test_router_train_with_a_lexicon_and_its_flag_errors(tmp_path):
    from tests.unit.test_router import run_cli

    lex_path, data, out = cli_files(tmp_path, lexicon_rows(10))
    base = ["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--buckets", "512"]
    p = run_cli(*base, "--lexicon", str(lex_path), "--dim", "8", "--hashed_dropout", "0.5")
    assert p.returncode == 0, p.stderr
    model, header = load_model(out)
    assert header["lexicon"]["rows"] == len(lexicon()) and header["hashed_dropout"] == 0.5
    assert model.w1.shape[0] == 16  # the hashed mean and the lexicon's
    p = run_cli("route", "please parser this", "--router", str(out))
    assert p.returncode == 0 and json.loads(p.stdout)["source"] == "mlp", p.stderr
    for extra, says in (
        (["--hashed_dropout", "0.5"], "needs --lexicon"),
        (["--lexicon", str(lex_path), "--hashed_dropout", "1.5"], "must be in [0, 1]"),
        (["--lexicon", str(lex_path), "--hashed_dropout", "nan"], "must be in [0, 1]"),
        (["--lexicon", str(tmp_path / "none.npz")], "router lexicon"),
        (["--dim", "0"], "--dim must be"),
    ):
        p = run_cli(*base, *extra)
        assert p.returncode == 2 and says in p.stderr, (extra, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


def test_training_on_the_lexicon_alone_reads_no_hashed_feature():
    model = train(lexicon_rows(10), buckets=1 << 9, dim=8, hidden=8, epochs=2,
                  lexicon=lexicon(), hashed_dropout=1.0, log=lambda _: None)  # fmt: skip
    assert not model.w1[:8].any() and model.w1[8:].any()
    r = Router(model, native=False)
    # words outside the lexicon change nothing: only the lexicon's words are read
    assert r.word_probs(["parser", "zzqx"])[0] == pytest.approx(r.word_probs(["parser"])[0])


def test_building_a_lexicon_reuses_the_cached_one_and_says_what_is_missing(tmp_path, monkeypatch):
    from llmlib.router import lexicon as lexmod

    path = tmp_path / "lex.npz"
    cached = lexicon()
    cached.meta = {"words": 24, "wordfreq": lexmod.WORDFREQ_VERSION}
    save_lexicon(cached, path)
    monkeypatch.setitem(__import__("sys").modules, "wordfreq", None)  # not installed
    assert (lexmod.build_lexicon(24, path).keys == cached.keys).all()  # reused: no encoder
    with pytest.raises(ConfigError, match=r"pip install -e \.\[baseline\]"):
        lexmod.build_lexicon(25, path)  # another size: must be built, and cannot be here
    with pytest.raises(ConfigError, match="at least one word"):
        lexmod.build_lexicon(0, path)
    with pytest.raises(ConfigError, match="one vector each"):
        from_words(["a", "b"], np.zeros((1, 4), dtype=np.float32), {})
