import pytest

from cores.dummy import DummyCore
from llmlib.errors import ConfigError, MissingDependencyError, UnknownNameError
from llmlib.serving.core import LLMCore
from llmlib.serving.registry import CORE_TABLE, core_names, get_core_class, register_core


def test_dummy_is_in_the_lazy_table_and_loads():
    assert CORE_TABLE["dummy"] == "cores.dummy:DummyCore"
    assert get_core_class("dummy") is DummyCore
    assert "dummy" in core_names()


def test_unknown_core_type_suggests_the_close_name_and_lists_choices():
    with pytest.raises(UnknownNameError) as exc:
        get_core_class("dumy")
    msg = str(exc.value)
    assert "Unknown core type 'dumy'" in msg
    assert "Did you mean 'dummy'?" in msg
    assert "Available: " in msg and "dummy" in msg.split("Available: ")[1]


def test_far_name_gets_no_suggestion():
    with pytest.raises(UnknownNameError) as exc:
        get_core_class("zzzzzz")
    assert "Did you mean" not in str(exc.value)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(CORE_TABLE, "needs_trt", "tests.unit.needs_trtllm:Core")
    with pytest.raises(MissingDependencyError, match=r"pip install -e \.\[trtllm\]"):
        get_core_class("needs_trt")


def test_target_that_is_not_a_core_is_a_config_error(monkeypatch):
    monkeypatch.setitem(CORE_TABLE, "notacore", "llmlib.errors:unknown_message")
    with pytest.raises(ConfigError, match="not an LLMCore subclass"):
        get_core_class("notacore")


def test_register_core_decorator_records_the_class(monkeypatch):
    monkeypatch.setattr("llmlib.serving.registry._loaded", {})
    monkeypatch.setattr("llmlib.serving.registry.CORE_TABLE", dict(CORE_TABLE))

    @register_core("plugin_x")
    class PluginCore(LLMCore):
        def _enqueue_impl(self, requests):
            pass

    assert get_core_class("plugin_x") is PluginCore
    assert PluginCore.name == "plugin_x"
    assert "plugin_x" in core_names()


def test_every_shipped_core_registers_itself_under_its_table_name():
    """One way to register: each shipped core's class carries the decorator, so its name is
    the table's (a class without it would keep LLMCore's default name)."""
    import importlib
    import inspect

    for name, target in sorted(CORE_TABLE.items()):
        module, _, cls_name = target.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:  # (an optional backend's package is not installed)
            continue
        cls = getattr(mod, cls_name)
        assert cls.name == name, (name, target)
        assert f'@register_core("{name}")' in inspect.getsource(mod), name


@pytest.mark.parametrize(
    ("core_type", "field", "urls"),
    [
        ("openai", "server_urls", ["http://127.0.0.1:1", "http://127.0.0.1:2"]),
        ("triton_grpc", "triton_server_urls", ["127.0.0.1:1", "127.0.0.1:2"]),
    ],
)
def test_a_core_s_config_names_its_own_server(core_type, field, urls):
    """A routing core numbers its pools' cores globally, so a core's id is no index into its
    pool's URLs: config_for_core hands each core its own."""
    if core_type == "triton_grpc":
        pytest.importorskip("tritonclient.grpc")
    from tests.conftest import make_cfg

    cls = get_core_class(core_type)
    cfg = make_cfg(core_type=core_type, **{field: urls})
    assert [getattr(cls.config_for_core(i, cfg), field) for i in range(2)] == [[u] for u in urls]
    one = make_cfg(core_type=core_type, **{field: urls[:1]})
    assert getattr(cls.config_for_core(0, one), field) == urls[:1]
