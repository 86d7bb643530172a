"""Accuracy scoring, MBXP, compliance checks, MLPerf's run rules."""
