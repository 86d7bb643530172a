"""llmlib: an MLPerf-style benchmark harness library for LLM inference (see docs/architecture.md
for the map of its packages)."""
