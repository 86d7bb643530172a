"""Backends: one module per LLMCore subclass, imported only when chosen (see
``llmlib.registry.CORE_TABLE``)."""
