"""ROUGE as MLPerf's scripts compute it (``rouge_score``, stemmed, mean per-sample F x 100)
and the sentence split ROUGE-Lsum needs (nltk's Punkt)."""

from __future__ import annotations

from typing import Any

from llmlib.errors import MissingDependencyError


def rouge_scores(
    predictions: list[str], references: list[str], lsum: bool = False
) -> dict[str, float]:
    """Mean per-sample ROUGE-1/2/L (and with ``lsum`` ROUGE-Lsum, whose texts must already
    have a sentence per line) F-measure x 100 (stemmed), rounded to 4 places."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise MissingDependencyError(
            "ROUGE scoring needs 'rouge-score': pip install -e .[accuracy]"
        ) from None
    kinds = ["rouge1", "rouge2", "rougeL"] + (["rougeLsum"] if lsum else [])
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    sums = dict.fromkeys(kinds, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        s = scorer.score(ref.strip(), pred.strip())
        for k in sums:
            sums[k] += s[k].fmeasure
    n = max(len(predictions), 1)
    return {k: round(100 * v / n, 4) for k, v in sums.items()}


def sentence_splitter() -> tuple[Any, str]:
    """nltk's English Punkt model where its data is installed (what MLPerf's script
    downloads), else Punkt untrained; and a note saying which, when not the trained one."""
    try:
        import nltk
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError:
        raise MissingDependencyError(
            "ROUGE-Lsum needs nltk's sentence splitter: pip install -e .[accuracy]"
        ) from None
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return nltk.sent_tokenize, ""
    except LookupError:
        untrained = PunktSentenceTokenizer()
        return untrained.tokenize, (
            "ROUGE-Lsum split sentences with nltk's Punkt untrained: its English model "
            "(punkt_tab) is not installed; `python -m nltk.downloader punkt_tab` gives "
            "MLPerf's exact split (ROUGE-1/2/L do not depend on it)"
        )
