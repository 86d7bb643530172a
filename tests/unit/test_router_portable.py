"""The router's C path as processors without SSE2 or AVX2 build it
(``-DLLMLIB_ROUTER_PORTABLE``: the byte-by-byte split, no AVX2 clones), compiled here and
compared with Python's split, with the numpy path and with the usual build. Nothing else
runs that code on an x86-64 machine."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Any

import numpy as np
import pytest

from llmlib.config.settings import REPO_ROOT
from llmlib.router import features
from llmlib.router.features import MAX_WORDS, prepare
from llmlib.router.model import Router
from llmlib.router.weights import load_model
from tests.unit.test_router import TEXTS, TRICKY, corpus
from tests.unit.test_router_lexicon import decide_alike


def _unbuilt(why: str) -> None:
    if os.environ.get("LLMLIB_REQUIRE_NATIVE"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def portable(tmp_path_factory) -> Any:
    if not sys.platform.startswith("linux"):
        pytest.skip("built here with the Linux compiler line")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        _unbuilt(f"no C compiler ({cc}) to build the portable router")
    out = tmp_path_factory.mktemp("portable") / f"_routerc{sysconfig.get_config_var('EXT_SUFFIX')}"
    src = REPO_ROOT / "llmlib" / "router" / "_routerc.c"
    cmd = [cc, "-O2", "-fPIC", "-shared", "-Wall", "-DLLMLIB_ROUTER_PORTABLE",
           f"-I{sysconfig.get_paths()['include']}", str(src), "-o", str(out), "-lm"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    spec = importlib.util.spec_from_file_location("portable._routerc", out)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def texts() -> list[str]:
    return TRICKY + TEXTS[:-1] + [r["text"] for r in corpus(30)]


def test_the_portable_split_is_python_s(portable):
    for text in texts():
        for n in (MAX_WORDS, 3, 0):
            assert portable.words(text, n) == prepare(text)[:n], (text[:40], n)


def test_the_portable_build_decides_as_numpy_and_as_the_usual_build(portable, monkeypatch):
    model, _ = load_model(REPO_ROOT / "configs" / "routing" / "router.npz")
    py = Router(model, native=False)
    monkeypatch.setattr(features, "_C", portable)
    router = Router(model)
    assert router.native
    batch = texts()
    decide_alike(router, py, batch)
    monkeypatch.undo()
    usual = Router(model)
    if not usual.native:
        _unbuilt("llmlib.router._routerc was not built")
    # the same sums in the same order, whatever the vector width: the same floats
    np.testing.assert_array_equal(
        router.decide_columns(batch).confidence, usual.decide_columns(batch).confidence
    )
