"""llmlib's own OpenAI-compatible serving front."""
