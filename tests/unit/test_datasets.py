"""Dataset loaders: MLPerf pickles and JSONL of token ids, and the errors bad files get."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from llmlib.data.benchmarks import RequestBuilder
from llmlib.data.loaders import detect_format, load_dataset
from llmlib.data.token_dataset import TokenDataset
from llmlib.errors import ConfigError, UnknownNameError


def jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


def test_jsonl_token_ids_with_references_and_extra_fields(tmp_path):
    p = jsonl(
        tmp_path,
        [
            {"input_ids": [5, 6, 7], "output_ids": [9, 10], "id": "a"},
            {"input_ids": [8], "output_ids": list(range(3, 103)), "id": "b"},
        ],
    )
    ds = load_dataset(p, "auto", "tiny", max_new_tokens=64)
    assert len(ds) == 2 and ds.name == "jsonl"
    assert ds.input_tokens(0).tolist() == [5, 6, 7] and ds.input_tokens(1).tolist() == [8]
    assert ds.reference_tokens(1).tolist() == list(range(3, 103))
    assert [ds.output_len(0), ds.output_len(1)] == [2, 64]  # capped at max_new_tokens
    assert ds.fields == [{"id": "a"}, {"id": "b"}]
    req = RequestBuilder(ds, stream=True).one(77, 0, 0)
    assert req.reference_tokens.tolist() == [9, 10] and req.output_len == 2


def test_jsonl_without_references_has_no_output_lengths(tmp_path):
    ds = load_dataset(
        jsonl(tmp_path, [{"input_ids": [5]}, "", {"input_ids": [6, 7]}]), "jsonl", "x", 8
    )
    assert len(ds) == 2 and ds.output_len(0) is None and ds.reference_tokens(1) is None


@pytest.mark.parametrize(
    "rows,expect",
    [
        (['{"input_ids": [1, 2]}', "{not json"], r"d.jsonl:2: not JSON"),
        ([{"text": "hello"}], r"d.jsonl:1: text prompts need a tokenizer: give --tokenizer_path"),
        ([{"prompt_ids": [1]}], r"d.jsonl:1: no input_ids, text or prompt"),
        ([[1, 2, 3]], r"d.jsonl:1: expected a JSON object"),
        ([{"input_ids": [1], "output_ids": [2]}, {"input_ids": [3]}], "on 1 of 2 lines"),
        ([{"input_ids": []}], "sample 0 has an empty prompt"),
        ([{"input_ids": [1, -4]}], "sample 0: input token id out of range"),
        ([{"input_ids": [1.5, 2]}], "flat list of integer token ids"),
        ([{"input_ids": [[1], [2]]}], "flat list of integer token ids"),
        ([], "no samples"),
    ],
)
def test_bad_jsonl_names_file_line_and_problem(tmp_path, rows, expect):
    with pytest.raises(ConfigError, match=expect):
        load_dataset(jsonl(tmp_path, rows), "auto", "tiny", 8)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="file not found: .*nope.jsonl"):
        load_dataset(tmp_path / "nope.jsonl", "auto", "tiny", 8)
    p = tmp_path / "data.csv"
    p.write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot tell the dataset format.*--dataset_format"):
        detect_format(p)
    with pytest.raises(UnknownNameError, match="csv"):
        load_dataset(p, "csv", "tiny", 8)


def pickled(tmp_path, obj, name="ds.pkl"):
    p = tmp_path / name
    if isinstance(obj, pd.DataFrame):
        obj.to_pickle(p)
    else:
        p.write_bytes(pickle.dumps(obj))
    return p


def test_llama2_openorca_pickle(tmp_path):
    df = pd.DataFrame(
        {
            "system_prompt": ["s", "s"],
            "tok_input": [[1, 5, 6], [1, 7]],
            "tok_output": [[9, 9, 2], [8, 2]],
            "output": ["x y", "z"],
        }
    )
    ds = load_dataset(pickled(tmp_path, df), "auto", "llama2-70b", 1024)
    assert ds.name == "mlperf:llama2-70b" and len(ds) == 2
    assert ds.input_tokens(1).tolist() == [1, 7]
    assert ds.reference_tokens(0).tolist() == [9, 9, 2] and ds.output_len(1) == 2
    assert ds.fields[0] == {"output": "x y"}


def test_mixtral_pickle_keeps_dataset_and_ground_truth(tmp_path):
    df = pd.DataFrame(
        {
            "dataset": ["GSM8K", "MBXP"],
            "id": ["g1", "m1"],
            "tok_input": [np.array([1, 4]), np.array([1, 5, 6])],
            "tok_ref_output": [np.array([7, 2]), np.array([8, 8, 2])],
            "gt_output": ["42", "def f(): pass"],
        }
    )
    ds = load_dataset(pickled(tmp_path, df), "mlperf_pickle", "mixtral-8x7b", 1024)
    assert ds.fields[1] == {"dataset": "MBXP", "gt_output": "def f(): pass", "id": "m1"}
    assert ds.reference_tokens(1).tolist() == [8, 8, 2]


def test_llama31_pickle_without_reference_tokens(tmp_path):
    df = pd.DataFrame({"tok_input": [[1, 2, 3]], "gt_output": ["Paris"], "metric": ["exact_match"]})
    ds = load_dataset(pickled(tmp_path, df), "auto", "llama3.1-405b", 2000)
    assert ds.reference_tokens(0) is None and ds.output_len(0) is None
    assert ds.fields == [{"gt_output": "Paris", "metric": "exact_match"}]


def test_pickle_errors_name_the_file_and_the_columns(tmp_path):
    df = pd.DataFrame({"input": ["hi"], "tok_output": [[2]]})
    with pytest.raises(ConfigError, match=r"ds.pkl: missing column\(s\) tok_input .*found: input"):
        load_dataset(pickled(tmp_path, df), "auto", "llama2-70b", 8)
    with pytest.raises(ConfigError, match="expected a pandas DataFrame, found dict"):
        load_dataset(pickled(tmp_path, {"tok_input": [[1]]}, "d.pkl"), "auto", "llama2-70b", 8)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle")
    with pytest.raises(ConfigError, match="junk.pkl: not a readable pickle"):
        load_dataset(junk, "auto", "llama2-70b", 8)
    with pytest.raises(UnknownNameError, match="tiny"):
        load_dataset(pickled(tmp_path, df), "auto", "tiny", 8)


def test_token_dataset_reference_count_must_match():
    with pytest.raises(ConfigError, match="1 references, 2 inputs"):
        TokenDataset([[1], [2]], 8, references=[[3]])


# --- the v6.0 round's files, in the formats MLCommons publishes -----------------------------


def test_llama31_8b_cnn_eval_json_array(tmp_path):
    """cnn_eval.json: a JSON array of records (pandas.read_json in the reference)."""
    rows = [
        {"instruction": "Summarize", "input": "A long article.", "tok_input": [128000, 5, 6],
         "output": "A summary."},
        {"instruction": "Summarize", "input": "Another.", "tok_input": [128000, 7],
         "output": "Short."},
    ]  # fmt: skip
    p = tmp_path / "cnn_eval.json"
    p.write_text(json.dumps(rows, indent=1))
    assert detect_format(p) == "mlperf_json"
    ds = load_dataset(p, "auto", "llama3.1-8b", 128)
    assert ds.name == "mlperf:llama3.1-8b" and len(ds) == 2
    assert ds.input_tokens(0).tolist() == [128000, 5, 6]
    assert ds.fields[1] == {"output": "Short."} and ds.reference_tokens(0) is None
    lines = tmp_path / "lines.json"
    lines.write_text('{"input_ids": [1, 2]}\n')
    assert detect_format(lines) == "jsonl"  # a .json of JSON lines stays JSONL


def test_deepseek_pickle_with_token_ids_and_gt_output_alias(tmp_path):
    df = pd.DataFrame(
        {
            "text_input": ["What is 1+1?", "Pick one."],
            "tok_input": [[0, 5, 6], [0, 7]],
            "gt_output": ["2", "B"],
            "dataset": ["math500", "gpqa"],
            "question": ["What is 1+1?", "Pick one."],
        }
    )
    ds = load_dataset(pickled(tmp_path, df), "auto", "deepseek-r1", 20000)
    assert ds.fields[0] == {"dataset": "math500", "ground_truth": "2", "question": "What is 1+1?"}
    assert ds.input_tokens(1).tolist() == [0, 7] and not ds.notes


def test_deepseek_text_prompts_need_a_tokenizer(tmp_path, tiny_tokenizer):
    df = pd.DataFrame(
        {"text_input": ["def add(a, b):"], "ground_truth": ["x"], "dataset": ["livecodebench"]}
    )
    path = pickled(tmp_path, df)
    with pytest.raises(ConfigError, match=r"\(text_input\) with no token ids.*--tokenizer_path"):
        load_dataset(path, "auto", "deepseek-r1", 20000)
    from llmlib.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer)
    ds = load_dataset(path, "auto", "deepseek-r1", 20000, tokenizer=tok)
    assert ds.input_tokens(0).tolist() == tok.encode("def add(a, b):")
    assert any("chat template" in n for n in ds.notes)


def test_gpt_oss_parquet_with_input_tokens(tmp_path):
    df = pd.DataFrame(
        {
            "input_tokens": [np.array([199998, 3, 4]), np.array([199998, 9])],
            "dataset": ["aime25", "gpqa_diamond"],
            "ground_truth": ["42", "C"],
        }
    )
    p = tmp_path / "acc_eval_inputs.parquet"
    df.to_parquet(p)
    ds = load_dataset(p, "auto", "gpt-oss-120b", 10240)
    assert ds.input_tokens(0).tolist() == [199998, 3, 4]
    assert ds.fields[1] == {"dataset": "gpqa_diamond", "ground_truth": "C"}
    no_truth = tmp_path / "perf_eval_ref.parquet"
    df.drop(columns=["ground_truth"]).to_parquet(no_truth)
    ds = load_dataset(no_truth, "auto", "gpt-oss-120b", 10240)  # runs; cannot be scored
    assert any("no ground_truth column" in n for n in ds.notes)


def test_v6_table_errors_name_the_file_and_its_columns(tmp_path):
    p = tmp_path / "perf.parquet"
    pd.DataFrame({"prompt": ["hi"], "dataset": ["aime25"]}).to_parquet(p)
    with pytest.raises(
        ConfigError,
        match=r"perf.parquet: missing column\(s\) tok_input or input_tokens for gpt-oss-120b "
        r"\(found: prompt, dataset",
    ):
        load_dataset(p, "auto", "gpt-oss-120b", 10)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match="junk.parquet: not a readable parquet table"):
        load_dataset(junk, "auto", "gpt-oss-120b", 10)
    bad = tmp_path / "cnn_eval.json"
    bad.write_text('[{"tok_input": [1, 2]}, ')
    with pytest.raises(ConfigError, match="cnn_eval.json: not a readable json table"):
        load_dataset(bad, "auto", "llama3.1-8b", 10)
