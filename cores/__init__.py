"""Backends: one module per LLMCore subclass, imported only when chosen (see
``llmlib.serving.registry.CORE_TABLE``)."""
