"""The llmlib harness: ``python -m harness`` runs MLPerf-style LoadGen tests over llmlib cores."""
