"""A backend module whose import needs tensorrt_llm (never installed here): the registry
must turn that into a message naming the pip extra."""

import tensorrt_llm  # noqa: F401
