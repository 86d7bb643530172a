from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llmlib.config.fields import Section, setting
from llmlib.config.flags import RUNTIME_FLAGS, format_flag_string, parse_flag_string
from llmlib.config.settings import FIELDS, resolve
from llmlib.errors import ConfigError, UnknownNameError


def test_flag_string_values_are_typed():
    got = parse_flag_string(
        "max_batch_size:64, kvcache_free_gpu_mem_frac:0.9,enable_chunked_context:true,"
        "batch_scheduler_policy:max_util",
        RUNTIME_FLAGS,
        "runtime_flags",
    )
    assert got == {
        "max_batch_size": 64,
        "kvcache_free_gpu_mem_frac": 0.9,
        "enable_chunked_context": True,
        "batch_scheduler_policy": "max_util",
    }
    assert parse_flag_string("", RUNTIME_FLAGS, "runtime_flags") == {}
    assert parse_flag_string(format_flag_string(got), RUNTIME_FLAGS, "x") == got


@pytest.mark.parametrize(
    "text", ["max_batch_size", "max_batch_size:", ":3", "max_batch_size:1,,streaming:true"]
)
def test_malformed_flag_string_says_the_expected_shape(text):
    with pytest.raises(ConfigError, match="expected key1:value1,key2:value2"):
        parse_flag_string(text, RUNTIME_FLAGS, "runtime_flags")


def test_unknown_key_in_flag_string_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'max_batch_size'"):
        parse_flag_string("max_bach_size:3", RUNTIME_FLAGS, "runtime_flags")


@pytest.mark.parametrize("text", ["max_batch_size:1.5", "max_batch_size:x", "streaming:maybe"])
def test_badly_typed_flag_value(text):
    with pytest.raises(ConfigError, match="is not a"):
        parse_flag_string(text, RUNTIME_FLAGS, "runtime_flags")


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "systems").mkdir()
    (tmp_path / "benchmarks" / "b.yaml").write_text(
        "benchmark: {mlperf_model: llama2-70b, max_new_tokens: 8, synthetic: {samples: 4,"
        " input_len: {mean: 4}, output_len: {mean: 4}}}\n"
        "settings: {num_cores: 3, seed: 7, runtime_flags: {max_batch_size: 16,"
        " max_num_tokens: 100}}\n"
        "scenarios: {server: {server_target_qps: 5}}\n"
    )
    (tmp_path / "systems" / "s.yaml").write_text(
        "settings: {num_cores: 4}\nbenchmarks: {b: {scenarios: {server: {policy_seed: 9}}}}\n"
    )
    return tmp_path


def _resolve(confdir, flags=None, env=None, explicit=None):
    flags = {"config_dir": str(confdir), "system_name": "s", **(flags or {})}
    return resolve(flags, benchmark="b", scenario="server", env=env or {}, explicit=explicit)


def test_precedence_explicit_over_flag_over_env_over_yaml_over_default(confdir):
    cfg = _resolve(confdir)
    assert cfg.num_cores == 4 and "systems/s.yaml" in cfg.sources["num_cores"]
    assert cfg.seed == 7 and cfg.sources["seed"].startswith("yaml")
    assert cfg.policy_seed == 9
    assert cfg.server_target_qps == 5.0
    assert cfg.min_duration == 0 and cfg.sources["min_duration"] == "default"

    env = {"TRTLLM_RUNTIME_FLAGS": "max_batch_size:32"}
    cfg = _resolve(confdir, env=env)
    # the env overlay changes one key and keeps the YAML's others
    assert cfg.runtime_flags == {"max_batch_size": 32, "max_num_tokens": 100}
    assert cfg.sources["runtime_flags"].startswith("env TRTLLM_RUNTIME_FLAGS over yaml")

    cfg = _resolve(confdir, flags={"runtime_flags": "max_batch_size:64", "num_cores": "5"}, env=env)
    assert cfg.runtime_flags["max_batch_size"] == 64 and cfg.num_cores == 5
    assert cfg.sources["num_cores"] == "flag"

    cfg = _resolve(confdir, flags={"num_cores": "5"}, explicit={"num_cores": 6})
    assert cfg.num_cores == 6 and cfg.sources["num_cores"] == "explicit"


@pytest.mark.parametrize(
    "var,field",
    [
        ("TRTLLM_CHECKPOINT_FLAGS", "checkpoint_flags"),
        ("TRTLLM_BUILD_FLAGS", "build_flags"),
        ("TRTLLM_RUNTIME_FLAGS", "runtime_flags"),
    ],
)
def test_all_three_trtllm_environment_overlays_apply(confdir, var, field):
    key = {
        "checkpoint_flags": "tp_size",
        "build_flags": "max_seq_len",
        "runtime_flags": "max_num_tokens",
    }[field]
    cfg = _resolve(confdir, env={var: f"{key}:2"})
    assert cfg.values[field][key] == 2
    with pytest.raises(UnknownNameError, match=f"key in {field}"):
        _resolve(confdir, env={var: "nonsense_key:1"})


def test_unknown_key_in_yaml_names_the_file_and_suggests(confdir):
    (confdir / "systems" / "s.yaml").write_text("settings: {num_core: 2}\n")
    with pytest.raises(UnknownNameError) as exc:
        _resolve(confdir)
    assert "s.yaml" in str(exc.value) and "Did you mean 'num_cores'" in str(exc.value)


def test_selection_fields_cannot_come_from_yaml(confdir):
    (confdir / "systems" / "s.yaml").write_text("settings: {benchmarks: [b]}\n")
    with pytest.raises(ConfigError, match="cannot be set from YAML"):
        _resolve(confdir)


def test_missing_system_config_is_an_error(confdir):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        _resolve(confdir, flags={"system_config": str(confdir / "nope.yaml")})


def test_unknown_setting_and_range_checks(confdir):
    with pytest.raises(UnknownNameError, match="Did you mean 'num_cores'"):
        _resolve(confdir, flags={"num_core": "1"})
    with pytest.raises(ConfigError, match="below the minimum"):
        _resolve(confdir, flags={"num_cores": "0"})
    with pytest.raises(UnknownNameError, match="Did you mean 'offline'"):
        resolve({"scenarios": "ofline"}, env={})
    with pytest.raises(UnknownNameError, match="test_mode"):
        _resolve(confdir, flags={"test_mode": "Performance"})


def test_describe_shows_every_field_with_its_source(confdir):
    text = _resolve(confdir, env={"TRTLLM_BUILD_FLAGS": "max_seq_len:9"}).describe()
    for name in FIELDS:
        assert name in text
    assert "max_seq_len:9" in text and "[env TRTLLM_BUILD_FLAGS]" in text


def test_config_round_trips_through_json(confdir):
    from llmlib.config.settings import Config

    cfg = _resolve(confdir, env={"TRTLLM_BUILD_FLAGS": "max_seq_len:9"})
    back = Config.from_json(cfg.to_json())
    assert back.values == cfg.values and back.sources == cfg.sources
    assert back.benchmark == "b" and back.scenario == "server"


def test_relative_paths_are_made_absolute_where_they_are_given(confdir, monkeypatch):
    monkeypatch.chdir(confdir)
    (confdir / "u.conf").write_text("")
    cfg = _resolve(confdir, flags={"user_conf": "u.conf", "log_dir": "out"})
    assert cfg.user_conf == str(confdir / "u.conf")
    assert cfg.log_dir == str(confdir / "out")
    assert _resolve(confdir).user_conf == ""
    # a backend's section declares its own paths: a file, and a flag string's keys
    (confdir / "r.yaml").write_text("")
    (confdir / "m").mkdir()
    cfg = _resolve(confdir, flags={"routing_config": "r.yaml",
                                   "vllm_engine_flags": "model:m,tokenizer:org/name"})  # fmt: skip
    assert cfg.routing_config == str(confdir / "r.yaml")
    assert cfg.vllm_engine_flags == {"model": str(confdir / "m"), "tokenizer": "org/name"}


def test_former_names_still_work_from_flags_yaml_code_and_the_command_line(confdir, capsys):
    """trtllm_endpoint became openai and --trtllm_server_urls --server_urls: old RUN_ARGS,
    YAML and code keep working and resolve to the current names."""
    from harness.cli import main, parse_flags

    url = "http://127.0.0.1:8000"
    old = _resolve(confdir, {"core_type": "trtllm_endpoint", "trtllm_server_urls": url})
    new = _resolve(confdir, {"core_type": "openai", "server_urls": url})
    assert old.values == new.values and old.core_type == "openai"
    assert old.server_urls == [url] and "trtllm_server_urls" not in old.values
    assert old.replace(trtllm_server_urls="http://h:1").server_urls == ["http://h:1"]
    (confdir / "systems" / "s.yaml").write_text(f"settings: {{trtllm_server_urls: '{url}'}}\n")
    assert _resolve(confdir).server_urls == [url]
    flags, _ = parse_flags(["--trtllm_server_urls", url, "--core_type=trtllm_endpoint"])
    assert flags == {"server_urls": url, "core_type": "trtllm_endpoint"}
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--server_urls=<list>" in out and "(formerly --trtllm_server_urls)" in out
    from llmlib.serving.registry import get_core_class

    assert get_core_class("trtllm_endpoint") is get_core_class("openai")


def test_a_routing_config_may_use_the_former_names(tmp_path):
    from llmlib.config.settings import REPO_ROOT
    from llmlib.router.config import load_routing_config

    pool = '{core_type: trtllm_endpoint, flags: {trtllm_server_urls: "http://127.0.0.1:1"}}'
    path = tmp_path / "r.yaml"
    path.write_text(
        f"router: {REPO_ROOT / 'configs' / 'routing' / 'router.npz'}\n"
        f"pools:\n  general: {pool}\n  code: {pool}\n  reasoning: {pool}\n"
    )
    rc = load_routing_config(path)
    assert {p.core_type for p in rc.pools.values()} == {"openai"}
    assert rc.pools["code"].flags == {"server_urls": "http://127.0.0.1:1"}


# --- sections: each backend's own settings -------------------------------------------------
def test_every_section_s_fields_are_settings_and_read_back_typed():
    """Each shipped section's fields are in the table under its group, once, and ``of``
    gives them back with the types its annotations say."""
    import dataclasses
    import importlib

    from llmlib.config.settings import SECTIONS
    from tests.conftest import make_cfg

    cfg = make_cfg()
    seen: set[str] = set()
    for target in SECTIONS:
        module, _, name = target.partition(":")
        section = getattr(importlib.import_module(module), name)
        values = section.of(cfg)
        for f in dataclasses.fields(section):
            assert FIELDS[f.name].group == section.group, f.name
            assert f.name not in seen
            seen.add(f.name)
            v = getattr(values, f.name)
            want = {"str": str, "int": int, "float": float, "bool": bool}.get(str(f.type))
            if want is not None:
                assert type(v) is want, (f.name, v)
            else:
                assert isinstance(v, list if str(f.type).startswith("list") else dict), f.name
    assert {"triton_server_urls", "server_urls", "engine_profile", "vllm_engine_flags"} <= seen


@dataclass(frozen=True)
class _ExtraSettings(Section):
    group: ClassVar[str] = "extra"
    extra_depth: int = setting(3, "an out-of-tree backend's setting", minimum=1)
    extra_flags: dict[str, Any] = setting({}, "its flags", env="EXTRA_FLAGS",
                                          schema={"speed": float})  # fmt: skip


def test_an_out_of_tree_section_becomes_flags_yaml_and_env(confdir, monkeypatch):
    from llmlib.config import settings

    table = settings.FieldTable(list(settings.SHARED_FIELDS), list(settings.SECTIONS))
    monkeypatch.setattr(settings, "FIELDS", table)
    table.add_section("tests.unit.test_config:_ExtraSettings")
    cfg = _resolve(confdir, {"extra_depth": "7"}, env={"EXTRA_FLAGS": "speed:2.5"})
    got = _ExtraSettings.of(cfg)
    assert got.extra_depth == 7 and got.extra_flags == {"speed": 2.5}
    assert cfg.sources["extra_flags"] == "env EXTRA_FLAGS"
    with pytest.raises(ConfigError, match="below the minimum"):
        _resolve(confdir, {"extra_depth": "0"})
    table.add_section("tests.unit.test_config:_ExtraSettings")  # (the same one: no-op)
    twice = settings.FieldTable(list(settings.SHARED_FIELDS),
                                [*settings.SECTIONS, "cores.vllm:VLLMSettings"])  # fmt: skip
    with pytest.raises(ConfigError, match="vllm_engine_flags is declared twice"):
        len(twice)
