"""Reports of runs: summary and report.md, plots, comparisons, scorecards, accuracy."""
