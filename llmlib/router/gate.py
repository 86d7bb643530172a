"""The router's keyword gate.

It decides before the features and the MLP: keyword rules (a word, as it is or with brackets,
quotes and sentence punctuation stripped from its ends, in a set; the earliest rule in the
config wins), and regex rules that run only when one of their trigger words is present, so
the gate's cost is a set lookup per word, never a long alternation over the whole prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmlib.errors import ConfigError
from llmlib.router import features
from llmlib.router.features import _GATE_PUNCT


@dataclass(frozen=True)
class GateRule:
    expert: str
    keywords: tuple[str, ...] = ()
    regex: str | None = None  # with ``keywords`` as its triggers


class Gate:
    """Keyword and triggered-regex rules, in order (the first rule that matches wins)."""

    def __init__(self, rules: Sequence[GateRule]) -> None:
        self.rules = list(rules)
        self.keyword_rule: dict[str, int] = {}  # word -> the earliest rule it fires or triggers
        self._regex: dict[int, re.Pattern[str]] = {}
        for k, r in enumerate(self.rules):
            if not r.keywords:
                raise ConfigError(
                    f"gate rule {k} ({r.expert}): needs keywords (a regex rule's keywords "
                    "are its triggers, so the gate never scans every prompt with it)"
                )
            if r.regex is not None:
                try:
                    self._regex[k] = re.compile(r.regex)
                except re.error as exc:
                    raise ConfigError(f"gate rule {k} ({r.expert}): bad regex: {exc}") from None
            for kw in r.keywords:
                self.keyword_rule.setdefault(kw.lower(), k)
        self._keywords = frozenset(self.keyword_rule)

    @classmethod
    def from_config(cls, rules: Iterable[Mapping[str, Any]]) -> Gate:
        out = []
        for k, r in enumerate(rules):
            if not isinstance(r, Mapping) or "expert" not in r:
                raise ConfigError(f"gate rule {k}: expected a mapping with 'expert'")
            unknown = set(r) - {"expert", "keywords", "regex"}
            if unknown:
                raise ConfigError(f"gate rule {k}: unknown keys {sorted(unknown)}")
            kws = r.get("keywords") or []
            if isinstance(kws, str) or not all(isinstance(x, str) for x in kws):
                raise ConfigError(f"gate rule {k}: keywords must be a list of strings")
            out.append(GateRule(str(r["expert"]), tuple(kws), r.get("regex")))
        return cls(out)

    def hits(self, words: list[str]) -> list[str] | None:
        """Keywords among ``words``, each word taken as it is or with the gate's
        punctuation stripped from its ends (in C where built: no per-word Python)."""
        if features._C is not None:
            return features._C.gate_hits(words, self._keywords)  # type: ignore[no-any-return]
        kw, out = self._keywords, []
        for w in words:
            if w in kw:
                out.append(w)
            elif (cut := w.strip(_GATE_PUNCT)) in kw:
                out.append(cut)
        return out or None

    @property
    def regex_rules(self) -> list[int]:
        return sorted(self._regex)

    def resolve(self, mask: int, text: str) -> str | None:
        """The expert of the first rule among ``mask``'s bits (rule k: bit k) whose regex,
        if it has one, matches ``text``."""
        while mask:
            k = (mask & -mask).bit_length() - 1
            pat = self._regex.get(k)
            if pat is None or pat.search(text):
                return self.rules[k].expert
            mask &= mask - 1
        return None

    def match(self, words: list[str], text: str) -> str | None:
        """The expert of the first rule (in config order) one of whose keywords is among
        ``words`` and whose regex, if it has one, matches ``text``; None when no rule
        fires. The regex runs only when a trigger word is there."""
        hits = self.hits(words)
        if not hits:
            return None
        for k in sorted({self.keyword_rule[h] for h in hits}):
            pat = self._regex.get(k)
            if pat is None or pat.search(text):
                return self.rules[k].expert
        return None


# --- the model --------------------------------------------------------------------------------
