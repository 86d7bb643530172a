"""MBXP: solutions cut and composed as MLPerf's evaluate_mbxp.py, built and run for real."""

import math
import shutil

import pytest

from llmlib.eval import mbxp
from llmlib.eval.mbxp import Problem, evaluate

PY_TEST = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
)
CPP_TEST = (
    "\nint main() {\n    if (add(2, 3) != 5) return 1;\n    if (add(-1, 1) != 0) return 1;\n"
    "    return 0;\n}\n"
)


def needs(*exes):
    gone = [e for e in exes if shutil.which(e) is None]
    return pytest.mark.skipif(bool(gone), reason=f"not installed: {gone} (make mbxp-toolchains)")


JS_TEST = (
    "\nconst assert = require('assert');\nassert.deepEqual(add(2, 3), 5);\n"
    "assert.deepEqual(add(-1, 1), 0);\n"
)


def py(response, test=PY_TEST, name="add"):
    return Problem.from_sample(f"python_{name}", test, response)


def test_solution_is_cut_at_the_fence_unescaped_and_composed_as_mlperf():
    p = py("  def add(a, b):\n    return a\\_b + 0\n```\nExplanation: ```more```")
    assert p.solution() == "def add(a, b):\n    return a_b + 0\n"
    assert p.program() == p.solution() + "\n" + PY_TEST + "\ncheck(add)"
    c = Problem.from_sample("cpp_add", CPP_TEST, "  int add(int a, int b) { return a + b; }")
    assert c.program() == "  int add(int a, int b) { return a + b; }" + CPP_TEST  # no strip
    assert (c.lang, c.entry_point, c.key) == ("cpp", "add", "cpp_add")
    go = Problem.from_sample(
        "go_f", "", 'package main\nimport "fmt"\nfunc f() int { return 1 }\nfunc main() {\n}\n'
    )
    assert "package main" not in go.solution() and "func main" not in go.solution()
    assert "func f() int" in go.solution()


def test_an_id_without_language_is_refused():
    with pytest.raises(ValueError, match="not '<language>_<entry point>'"):
        Problem.from_sample("add", "", "")


def test_python_pass_fail_exit_and_timeout_are_told_apart():
    res = evaluate(
        [
            py("def add(a, b):\n    return a + b\n```"),
            py("def add(a, b):\n    return a - b\n"),
            py("import sys\ndef add(a, b):\n    sys.exit(0)\n"),  # SystemExit fails (mxeval)
            py("def add(a, b):\n    while True:\n        pass\n"),
            py("def add(a, b)\n    return a + b\n"),  # syntax error
        ],
        workers=2,
        timeout_s=1.0,
    )
    got = [(o.passed, o.detail) for o in res.outcomes]
    assert got[0] == (True, "passed")
    assert got[1][0] is False and got[1][1].startswith("failed")
    assert got[2][0] is False and got[3] == (False, "timed out") and got[4][0] is False
    assert res.complete and res.score == pytest.approx(20.0)
    assert res.by_language() == {"python": (1, 5)}


def test_runaway_output_is_stopped_by_the_file_size_limit():
    spew = "import sys\ndef add(a, b):\n    while True:\n        sys.stderr.write('x' * 65536)\n"
    (o,) = evaluate([py(spew)], timeout_s=10.0).outcomes
    assert o.passed is False and o.detail.startswith("failed")  # not the timeout


def test_programs_run_in_their_own_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = "def add(a, b):\n    open('left_behind.txt', 'w').write('x')\n    return a + b\n"
    assert evaluate([py(writer)]).outcomes[0].passed
    assert not (tmp_path / "left_behind.txt").exists()


@needs("g++")
def test_cpp_is_built_with_gpp_and_run():
    good = Problem.from_sample("cpp_add", CPP_TEST, "int add(int a, int b) { return a + b; }\n")
    wrong = Problem.from_sample("cpp_add", CPP_TEST, "int add(int a, int b) { return a * b; }\n")
    broken = Problem.from_sample("cpp_add", CPP_TEST, "int add(int a, int b) { return a + }\n")
    res = evaluate([good, wrong, broken], workers=2)
    assert [o.passed for o in res.outcomes] == [True, False, False]
    assert res.outcomes[2].detail.startswith("build failed")
    assert res.score == pytest.approx(100 / 3)


@needs("node")
def test_javascript_runs_on_node():
    good = Problem.from_sample("javascript_add", JS_TEST, "function add(a, b) { return a + b; }")
    wrong = Problem.from_sample("javascript_add", JS_TEST, "function add(a, b) { return a; }")
    res = evaluate([good, wrong])
    assert [o.passed for o in res.outcomes] == [True, False]


def test_unscored_languages_are_left_out_and_missing_toolchains_make_it_incomplete():
    problems = [
        py("def add(a, b):\n    return a + b\n"),
        Problem.from_sample("java_add", "", "class Main {}"),
        Problem.from_sample("php_add", "", "<?php echo 1;"),
        Problem.from_sample("ruby_add", "", "puts 1"),
    ]
    res = evaluate(problems, which=lambda exe: None if exe in ("php", "ruby") else "/bin/" + exe)
    assert res.skipped == {"java": 1}  # MLPerf scores cpp, python, php, js, ruby, ts only
    assert res.missing == {"php": 1, "ruby": 1}
    assert not res.complete and math.isnan(res.score)
    assert len(res.outcomes) == 1 and res.outcomes[0].passed
    note = res.note()
    assert "php (1 samples; needs php)" in note and "ruby (1 samples; needs ruby)" in note
    assert "java 1" in note and "python 1/1" in note


def test_missing_toolchain_lookup_names_every_executable_needed():
    langs = ["typescript", "python", "cpp"]
    assert mbxp.missing_toolchains(langs, lambda exe: None if exe == "tsc" else "/x") == {
        "typescript"
    }
    assert mbxp.missing_toolchains(langs, lambda exe: "/x") == set()


@needs("tsc", "node")
def test_typescript_is_compiled_by_tsc_then_run_even_with_type_errors():
    test = "\ndeclare var require: any;\nconst assert = require('assert');\n"
    test += "assert.deepEqual(add(2, 3), 5);\n"
    sig = "function add(a: number, b: number): number "
    good = Problem.from_sample("typescript_add", test, sig + "{ return a + b; }")
    # console is not declared under --lib es2016: a type error, yet tsc writes the .js
    logged = Problem.from_sample("typescript_add", test, sig + "{ console.log(a); return a + b; }")
    wrong = Problem.from_sample("typescript_add", test, sig + "{ return a * b; }")
    broken = Problem.from_sample("typescript_add", test, sig + "{ return a + ; }")
    res = evaluate([good, logged, wrong, broken], workers=2)
    assert [o.passed for o in res.outcomes] == [True, True, False, False]


@needs("php")
def test_php_runs_and_an_uncaught_exception_fails():
    test = "\nif (add(2, 3) !== 5) { throw new Exception('Test failed!'); }\n"
    good = Problem.from_sample("php_add", test, "<?php\nfunction add($a, $b) { return $a + $b; }")
    wrong = Problem.from_sample("php_add", test, "<?php\nfunction add($a, $b) { return $a; }")
    assert [o.passed for o in evaluate([good, wrong]).outcomes] == [True, False]


@needs("ruby")
def test_ruby_runs_and_a_raise_fails():
    test = "\nraise 'Test failed!' unless add(2, 3) == 5\n"
    good = Problem.from_sample("ruby_add", test, "def add(a, b)\n  a + b\nend")
    wrong = Problem.from_sample("ruby_add", test, "def add(a, b)\n  a - b\nend")
    assert [o.passed for o in evaluate([good, wrong]).outcomes] == [True, False]
