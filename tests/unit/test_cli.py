"""Bad input: exit status 2 and one line naming the bad value and the choices."""

import subprocess
import sys

import pytest

from harness.cli import COMMANDS, command, main, parse_flags
from llmlib.config.settings import REPO_ROOT


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--core_type=dumy"], ["'dumy'", "Did you mean 'dummy'", "Available: dummy"]),
        (
            ["--benchmarks=llama2-70c"],
            ["'llama2-70c'", "Did you mean 'llama2-70b'", "mixtral-8x7b"],
        ),
        (["--scenarios=offline,sever"], ["'sever'", "Did you mean 'server'", "singlestream"]),
        (["--benchmark=tiny"], ["Unknown flag '--benchmark'", "Did you mean '--benchmarks'"]),
        (
            ["--runtime_flags=max_batch_size"],
            ["malformed flag string for runtime_flags", "key1:value1,key2:value2"],
        ),
        (["--runtime_flags=max_bach_size:8"], ["'max_bach_size'", "Did you mean 'max_batch_size'"]),
        (["--user_conf=/nonexistent/user.conf"], ["file not found: /nonexistent/user.conf"]),
        (["--system_config=/nonexistent/sys.yaml"], ["config file not found", "sys.yaml"]),
        (["--traffic_distribution_policy=rr"], ["'rr'", "round_robin"]),
        (["--engine_profile=h100"], ["engine profile 'h100'", "cpu-tiny"]),
        (["--test_mode=Accuracy"], ["'Accuracy'", "AccuracyOnly"]),
        (["--min_duration=ten"], ["min_duration", "'ten' is not a valid int"]),
        (["tiny"], ["unexpected argument 'tiny'"]),
        (["--compliance_tests=TEST6"], ["compliance test 'TEST6'", "TEST06"]),
        (["--dataset_path=/nonexistent/d.jsonl"], ["--dataset_path: file not found"]),
        (["--accuracy_dataset_path=/nonexistent/a.pkl"], ["--accuracy_dataset_path: file not"]),
        (["--test07_dataset_path=/nonexistent/g.parquet"], ["--test07_dataset_path: file not"]),
        (["--lcb_tests_path=/nonexistent/lcb"], ["--lcb_tests_path: not found"]),
        (
            ["--benchmarks=gpt-oss-120b", "--test_mode=SubmissionRun"],
            ["TEST07 scores gpt-oss-120b's responses", "--test07_dataset_path"],
        ),
        (
            ["--benchmarks=llama2-70b", "--compliance_tests=TEST07"],
            ["TEST07: no audit.config for llama2-70b", "TEST07 is defined for: gpt-oss-120b"],
        ),
        (["--dataset_format=csv"], ["'csv'", "mlperf_pickle"]),
        (["--dataset_format=sharegpt"], ["sharegpt dataset is text", "make tiny-model"]),
        (["--tokenizer_path=/nonexistent/tok"], ["no tokenizer.json at /nonexistent/tok"]),
        (["--policy_flags=load_weigth:2"], ["'load_weigth'", "Did you mean 'load_weight'"]),
        (
            ["--traffic_distribution_policy=kv_aware", "--policy_flags=migration_gap:1"],
            ["kv_aware policy flag 'migration_gap'", "load_weight"],
        ),
        (["--pd_flags=prefill:2"], ["--pd_flags: give decode:N"]),
        (["--pd_flags=prefil:2"], ["'prefil'", "Did you mean 'prefill'"]),
        (
            ["--pd_flags=prefill:1,decode:1", "--core_type=openai"],
            ["disaggregated pools run on dummy cores", "trtllm_disagg"],
        ),
        (["--pd_flags=prefill:1,decode:1", "--engine_profile=zero"], ["zero profile"]),
        (["--pd_flags=prefill:1,decode:1", "--decode_policy=fast"], ["'fast'", "least_pending"]),
        (["--kv_transfer=base_ms:1"], ["'base_ms'", "base_us"]),
        (["--core_type=triton_grpc"], ["needs --triton_server_urls", "--launch_server=triton"]),
        (
            ["--core_type=triton_grpc", "--triton_server_urls=http://x"],
            ["'http://x' is not host:port"],
        ),
        (["--launch_server=triton"], ["--launch_server=triton runs with --core_type=triton_grpc"]),
        (["--server_target_qps=inf"], ["server_target_qps", "'inf' is not a finite number"]),
        (["--server_target_qps=nan"], ["server_target_qps", "'nan' is not a finite number"]),
        (["--offline_expected_qps=-inf"], ["'-inf' is not a finite number"]),
        (["--engine_flags=step_base_us:nan"], ["'step_base_us': 'nan' is not a finite number"]),
        (
            ["--scenarios=server", "--server_target_qps=1e9"],
            ["--server_target_qps=1e+09 over a 10 s minimum duration", "the most it may", "2e+07"],
        ),
        (["--min_query_count=1e12"], ["--min_query_count=1000000000000 schedules", "2e+07"]),
        (
            ["--scenarios=singlestream", "--single_stream_expected_latency_ms=1e-6"],
            ["single_stream_expected_latency_ms=1e-06", "schedules 1e+10"],
        ),
        (
            ["--core_type=openai", "--server_urls=http://127.0.0.1:80x"],
            ["'http://127.0.0.1:80x' has a port that is not a number"],
        ),
        (
            ["--core_type=openai", "--server_urls=http://:8000"],
            ["'http://:8000' is not an http(s) URL"],
        ),
        (
            ["--core_type=triton_grpc", "--triton_server_urls=127.0.0.1:99999"],
            ["'127.0.0.1:99999' is not host:port"],
        ),
    ],
)
def test_bad_input_is_one_clear_line(capsys, args, expect):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    for text in expect:
        assert text in err


def write(path, text):
    path.write_text(text)
    return path


def test_bad_files_and_places_are_one_line_before_any_run_directory(capsys, tmp_path):
    """Data and paths are checked in this process: nothing is started, nothing is made."""
    logs = tmp_path / "logs"
    cases = [
        (write(tmp_path / "broken.jsonl", '{"input_ids": [1, 2]}\n{"input_ids": [1,\n'),
         ["broken.jsonl:2: not JSON"]),
        (write(tmp_path / "empty.jsonl", ""), ["empty.jsonl: no samples"]),
        (write(tmp_path / "big.jsonl", '{"input_ids": [1, 99999]}\n'),
         ["token id 99999 is past --vocab_size=2048", "--tokenizer_path"]),
    ]  # fmt: skip
    for path, expect in cases:
        assert main([f"--log_dir={logs}", f"--dataset_path={path}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(t in err for t in expect), err
    a_file = write(tmp_path / "a_file", "")
    for log_dir, why in ((a_file, "Not a directory"), ("/proc/llmlib", "No such file")):
        assert main([f"--log_dir={log_dir}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--log_dir: cannot write results under {log_dir}" in err
        assert why in err
    bad_yaml = write(tmp_path / "route.yaml", "pools: [\n  bad: : yaml\n")
    tok = write(tmp_path / "tokenizer.json", "{}")
    assert main([f"--routing_config={bad_yaml}", "--core_type=routing",
                 f"--tokenizer_path={tok}"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "route.yaml: not valid YAML:" in err
    assert not logs.exists()


def test_bad_environment_overlay_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.setenv("TRTLLM_BUILD_FLAGS", "max_seq_len=4")
    assert main([]) == 2
    assert "malformed flag string for build_flags" in capsys.readouterr().err


def test_exit_status_from_a_real_process():
    p = subprocess.run(
        [sys.executable, "-m", "harness", "--core_type=nope"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "Unknown core type 'nope'" in p.stderr


def test_help_lists_every_field_with_default_and_env(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in (
        "--server_target_qps=<float>",
        "default: PerformanceOnly",
        "(env TRTLLM_RUNTIME_FLAGS)",
        "(env TRTLLM_CHECKPOINT_FLAGS)",
        "core types: dummy",
        "--show_steady_state_progress",
    ):
        assert text in out


def test_print_config_shows_values_and_sources(capsys, monkeypatch):
    monkeypatch.setenv("TRTLLM_RUNTIME_FLAGS", "max_batch_size:7")
    assert main(["--print_config", "--scenarios=server", "--num_cores=3"]) == 0
    out = capsys.readouterr().out
    assert "# tiny / server" in out
    assert "max_batch_size:7" in out and "[env TRTLLM_RUNTIME_FLAGS]" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("num_cores"))
    assert "3" in line and "[flag]" in line
    line = next(x for x in out.splitlines() if x.strip().startswith("server_target_qps"))
    assert "tiny.yaml:server" in line


def test_flag_forms():
    flags, actions = parse_flags(
        ["--num_cores", "2", "--progress", "--seed=4", "--enable-trace=false", "--print_config"]
    )
    assert flags == {"num_cores": "2", "progress": "true", "seed": "4", "enable_trace": "false"}
    assert actions == {"print_config"}


def test_fail_on_errors_counts_runs_with_failed_requests(capsys):
    from harness.run.driver import request_errors
    from llmlib.config.settings import resolve

    runs = [
        {"benchmark": "tiny", "scenario": s, "mode": "performance",
         "harness": {"failed": f, "issued": 10}}
        for s, f in (("offline", 0), ("server", 3))
    ]  # fmt: skip
    assert request_errors(resolve({}), runs) == 0  # auto, PerformanceOnly: reported only
    assert request_errors(resolve({"test_mode": "SubmissionRun"}), runs) == 1
    assert request_errors(resolve({"fail_on_errors": "true"}), runs) == 1
    assert request_errors(resolve({"test_mode": "SubmissionRun", "fail_on_errors": "false"}),
                          runs) == 0  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: tiny/server/performance: 3 of 10 requests failed (--fail_on_errors; "
                   "the reasons are in report.md)"] * 2  # fmt: skip


def test_every_command_resolves_and_shares_one_error_mapping(capsys):
    """Each entry of the COMMANDS table names a function that exists (a module moved without
    its entry fails here), and an LLMLibError from any command is one line and status 2."""
    for name in COMMANDS:
        assert callable(command(name)), name
    assert main(["triton-setup", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: triton-setup takes no arguments (got --bogus)"]


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


@pytest.mark.parametrize("name", ["bench", "soak", "tiny-model", "topology", "bench-endpoint"])
def test_commands_answer_help_through_the_table(name, capsys):
    try:
        status = main([name, "--help"])
    except SystemExit as exc:  # (argparse's --help exits)
        status = exc.code
    assert status == 0
    assert f"python -m harness {name}" in capsys.readouterr().out
