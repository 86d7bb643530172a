"""``python -m harness serve``'s settings: flags over $LLMLIB_SERVE_* over --config YAML,
each bad value one ConfigError; API keys from a file and the environment."""

import pytest

from harness.serve.guard import load_keys
from harness.serve.options import parse
from llmlib.errors import ConfigError


def test_flags_win_over_the_environment_which_wins_over_yaml(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("port: 7000\nrate_limit: 5\nmax_batch: 8\nno_token_ids: true\n")
    env = {"LLMLIB_SERVE_RATE_LIMIT": "9.5", "LLMLIB_SERVE_MAX_BATCH": "16", "HOME": "/x"}
    a = parse("", [f"--config={cfg}", "--max_batch=32"], env)
    assert (a.port, a.rate_limit, a.max_batch, a.no_token_ids) == (7000, 9.5, 32, True)
    b = parse("", [f"--config={cfg}"], {})
    assert (b.port, b.rate_limit, b.max_batch) == (7000, 5.0, 8)
    c = parse("", [], {})
    assert (c.port, c.rate_limit, c.max_in_flight) == (8000, 0.0, 1024)


@pytest.mark.parametrize(
    ("yaml_text", "env", "argv", "says"),
    [
        ("bogus: 1\n", {}, [], "no setting 'bogus'"),
        ("- a list\n", {}, [], "mapping"),
        ("port: [1, 2]\n", {}, [], "single value"),
        ("port: {\n", {}, [], "not YAML"),
        ("rate_limit: .inf\n", {}, [], "finite"),
        ("", {"LLMLIB_SERVE_NOPE": "1"}, [], "no setting 'nope'"),
        ("", {"LLMLIB_SERVE_MAX_BATCH": "many"}, [], "not a int"),
        ("", {"LLMLIB_SERVE_NO_TOKEN_IDS": "perhaps"}, [], "true or false"),
        ("", {}, ["--request_timeout_s=0"], "(0, inf]"),
        ("", {}, ["--rate_limit=-1"], "rate_limit"),
        ("", {}, ["--drain_s=inf"], "finite"),
    ],
)
def test_bad_settings_are_one_config_error(tmp_path, yaml_text, env, argv, says):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        parse("", [f"--config={cfg}", *argv], env)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_api_keys_from_a_file_and_the_environment(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# comment\nalpha\n  beta # note\n\n")
    assert load_keys(str(f), {"LLMLIB_API_KEYS": "gamma, delta,"}) == {
        "alpha",
        "beta",
        "gamma",
        "delta",
    }
    assert load_keys("", {}) == frozenset()
    (tmp_path / "empty").write_text("# nothing\n\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_keys(str(tmp_path / "empty"), {})
    with pytest.raises(ConfigError, match="no such file"):
        load_keys(str(tmp_path / "missing"), {})
    with pytest.raises(ConfigError, match="whitespace"):
        load_keys("", {"LLMLIB_API_KEYS": "a\tb"})


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["route", "--concurrency=1,x"], "comma list"),
        (["speed"], "unknown measurement"),
        (["route", "--seconds=nan"], "--seconds"),
        (["route", "--clients=0"], ">= 1"),
        (["route", "--prompts=/nonexistent.jsonl"], "no prompts"),
    ],
)
def test_bench_front_refuses_bad_arguments_before_starting_anything(tmp_path, argv, says):
    from harness.bench.front import main

    with pytest.raises(ConfigError, match=None) as err:
        main([*argv, f"--out={tmp_path}"])
    assert says in str(err.value)
