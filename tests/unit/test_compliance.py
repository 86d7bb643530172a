"""TEST06's three checks on hand-made accuracy logs, each failing the way it should."""

import json

import numpy as np
import pytest

from llmlib.errors import ConfigError
from llmlib.eval.compliance import (
    audit_thresholds,
    check_test06,
    check_test07,
    check_test09,
    trailing_eos,
)

EOS = 2


def hexs(tokens, dtype=np.uint32):
    return np.asarray(tokens, dtype=dtype).tobytes().hex().upper()


def entry(seq, data, first=None, count=None, dtype=np.uint32):
    e = {"seq_id": seq, "qsl_idx": seq % 5, "data": hexs(data, dtype)}
    if first is not None:
        e["token_data"] = hexs(first, dtype)
    e["token_count"] = len(data) if count is None else count
    return e


def write(tmp_path, entries):
    p = tmp_path / "mlperf_log_accuracy.json"
    p.write_text(json.dumps(entries))
    return p


GOOD = [entry(0, [5, 6, 7, EOS], [5]), entry(1, [9, 8], [9]), entry(2, [], [])]


def test_a_consistent_log_passes_in_server(tmp_path):
    r = check_test06(write(tmp_path, GOOD), "server", EOS)
    assert r.passed and (r.first_token, r.eos, r.length) == (True, True, True)
    assert r.samples == 3 and r.failures == []
    assert "TEST06 verification complete" in r.verify_text()


def test_first_token_not_a_prefix_of_the_final_data_fails(tmp_path):
    log = [*GOOD, entry(7, [5, 6, 7], [6])]
    r = check_test06(write(tmp_path, log), "server", EOS)
    assert not r.passed and r.first_token is False and r.eos and r.length
    assert r.failures[0]["check"] == "first_token" and r.failures[0]["seq_id"] == 7


def test_first_token_longer_than_the_output_fails(tmp_path):
    r = check_test06(write(tmp_path, [entry(1, [5], [5, 6])]), "server", EOS)
    assert r.first_token is False


def test_first_token_is_skipped_for_offline(tmp_path):
    r = check_test06(write(tmp_path, [entry(1, [5, 6])]), "offline", EOS)
    assert r.passed and r.first_token is None
    assert "First token check pass: Skipped" in r.verify_text()


def test_missing_first_token_data_in_server_fails(tmp_path):
    r = check_test06(write(tmp_path, [entry(1, [5, 6])]), "server", EOS)
    assert r.first_token is False and "no token_data" in r.failures[0]["why"]


@pytest.mark.parametrize("tail,ok", [([EOS], True), ([EOS, EOS], False), ([EOS, 4], True)])
def test_at_most_one_trailing_eos(tmp_path, tail, ok):
    r = check_test06(write(tmp_path, [entry(1, [5, *tail], [5])]), "server", EOS)
    assert r.eos is ok and r.passed is ok


def test_token_count_must_equal_the_data_length(tmp_path):
    r = check_test06(write(tmp_path, [entry(1, [5, 6, 7], [5], count=4)]), "server", EOS)
    assert r.length is False and not r.passed
    assert "token_count 4 but 3 tokens" in r.failures[0]["why"]


def test_int32_tokens(tmp_path):
    log = [entry(1, [5, EOS, EOS], [5], dtype=np.int32)]
    r = check_test06(write(tmp_path, log), "server", EOS, np.int32)
    assert r.eos is False and r.length


def test_no_log_or_an_empty_one_is_a_fail_with_the_reason(tmp_path):
    r = check_test06(tmp_path / "nope.json", "server")
    assert not r.passed and "not found" in r.problem
    r = check_test06(write(tmp_path, []), "server")
    assert not r.passed and "no logged samples" in r.problem
    assert "TEST06 verification failed" in r.verify_text()


def test_malformed_entry_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="mlperf_log_accuracy.json: malformed entry"):
        check_test06(write(tmp_path, [{"seq_id": 1, "data": "XYZ"}]), "server")


def test_failures_listed_are_capped(tmp_path):
    log = [entry(i, [5, EOS, EOS], [5]) for i in range(50)]
    r = check_test06(write(tmp_path, log), "server", EOS)
    assert len(r.failures) == 10


def test_trailing_eos_counts():
    assert trailing_eos(np.array([EOS, EOS]), EOS) == 2
    assert trailing_eos(np.array([1, EOS, 3]), EOS) == 0
    assert trailing_eos(np.array([], dtype=np.uint32), EOS) == 0


# --- TEST07 and TEST09 (gpt-oss-120b) --------------------------------------------------------


def test_audit_thresholds_are_read_from_the_shipped_configs(tmp_path):
    from llmlib.config.settings import REPO_ROOT

    t07 = audit_thresholds(REPO_ROOT / "configs/compliance/TEST07/gpt-oss-120b/audit.config")
    t09 = audit_thresholds(REPO_ROOT / "configs/compliance/TEST09/gpt-oss-120b/audit.config")
    assert t07 == {"test07_accuracy_threshold": 60.698}
    assert t09 == {"test09_min_output_tokens": 1150.38, "test09_max_output_tokens": 1406.02}
    p = tmp_path / "audit.config"
    p.write_text("*.*.mode = 2\n*.*.test09_min_output_tokens = 5 # inline\n")
    assert audit_thresholds(p) == {"test09_min_output_tokens": 5.0}
    p.write_text("*.*.test07_accuracy_threshold = nan\n")
    with pytest.raises(ConfigError, match="audit.config:1: test07_accuracy_threshold must be"):
        audit_thresholds(p)


def test_test07_passes_at_the_threshold_and_fails_below(tmp_path):
    log = write(tmp_path, [entry(0, [5, 6])])
    at = check_test07(log, 60.0, lambda p: (60.0, 1, "scorer table"))
    assert at.passed and at.verify_text().rstrip().endswith("TEST PASS")
    assert "scorer table\n'exact_match': 60.000" in at.verify_text()
    below = check_test07(log, 60.0, lambda p: (59.99, 1, ""))
    assert not below.passed and "Accuracy check pass: False\nTEST FAIL" in below.verify_text()
    unscored = check_test07(log, 60.0, lambda p: (None, 1, ""))
    assert not unscored.passed and "Could not parse accuracy score" in unscored.verify_text()
    missing = check_test07(tmp_path / "nope.json", 60.0, lambda p: (99.0, 1, ""))
    assert not missing.passed and "not found" in missing.problem


def test_test09_mean_output_length_within_the_window(tmp_path):
    log = write(tmp_path, [entry(0, [1] * 10), entry(1, [1] * 30)])  # mean 20
    ok = check_test09(log, 18.0, 22.0)
    assert ok.passed and (ok.samples, ok.mean, ok.shortest, ok.longest) == (2, 20.0, 10, 30)
    text = ok.verify_text()
    assert "Mean output tokens: 20.00" in text and text.rstrip().endswith("TEST PASS")
    short = check_test09(log, 21.0, 30.0)
    assert not short.passed and "Min check pass: False" in short.verify_text()
    long = check_test09(log, 1.0, 19.5)
    assert not long.passed and "Max check pass: False" in long.verify_text()
    wide = write(tmp_path, [entry(0, [1] * 4, dtype=np.int64)])
    assert check_test09(wide, 4, 4, np.int64).mean == 4.0  # counted in the run's token type
    empty = check_test09(write(tmp_path, []), 1.0, 2.0)
    assert not empty.passed and "TEST FAIL" in empty.verify_text()
