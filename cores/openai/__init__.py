"""The OpenAI-compatible HTTP core (trtllm-serve, vLLM, llama.cpp, our front) and its disaggregated
variant."""
