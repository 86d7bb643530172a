"""MLPerf's accuracy targets per benchmark: reference scores, tiers and tokens-per-sample or
GEN_LEN windows, as the submission checker has them, and what each family's scorer reads."""

from __future__ import annotations

from dataclasses import dataclass

# MLPerf reference scores, tiers and tokens-per-sample windows (the submission checker's
# "accuracy-target" / "accuracy-upper-limit", tools/submission/submission_checker/constants.py)
LLAMA2_TARGETS = {"rouge1": 44.4312, "rouge2": 22.0352, "rougeL": 28.6162}


@dataclass(frozen=True)
class Targets:
    scores: dict[str, float]
    tiers: tuple[float, ...]
    tokens_per_sample: tuple[float | None, float | None] | None  # accepted [low, high]
    gen_len: tuple[float, float] | None = None  # total characters, accepted [low, high]
    full_samples: int = 0  # the dataset's size, that gen_len is the total over


TARGETS = {
    name: Targets(LLAMA2_TARGETS, (0.99, 0.999), (294.45 * 0.9, 294.45 * 1.1))
    for name in ("llama2-70b", "llama2-70b-interactive")
}
TARGETS["mixtral-8x7b"] = Targets(
    {
        "rouge1": 45.5989,
        "rouge2": 23.3526,
        "rougeL": 30.4608,
        "gsm8k": 73.66,
        "mbxp": 60.16,
    },
    (0.99,),
    (144.84 * 0.9, 145.9 * 1.1),
)
TARGETS["llama3.1-405b"] = Targets(
    {"rougeL": 21.6666, "exact_match": 90.1335}, (0.99,), (684.68 * 0.9, 684.68 * 1.1)
)
TARGETS["llama3.1-405b-interactive"] = TARGETS["llama3.1-405b"]
# v6.0 (the submission checker's "v6.0" entries, tools/submission/submission_checker/
# constants.py): llama3.1-8b's interactive variant is a scenario of the same model there
TARGETS["llama3.1-8b"] = TARGETS["llama3.1-8b-interactive"] = Targets(
    {"rouge1": 38.7792, "rouge2": 15.9075, "rougeL": 24.4957, "rougeLsum": 35.793},
    (0.99,),
    None,
    (8167644 * 0.9, 8167644 * 1.1),
    13368,
)
TARGETS["llama3.1-8b-edge"] = Targets(
    {"rouge1": 39.06, "rouge2": 16.1147, "rougeL": 24.6375, "rougeLsum": 36.124},
    (0.99,),
    None,
    (3051113 * 0.9, 3051113 * 1.1),
    5000,
)
TARGETS["deepseek-r1"] = TARGETS["deepseek-r1-interactive"] = Targets(
    {"exact_match": 81.3582}, (0.99,), (3886.2274 * 0.9, 3886.2274 * 1.1)
)
# the checker's gpt-oss-120b upper limit (1.1 x 9999 tokens per sample) is marked a placeholder
TARGETS["gpt-oss-120b"] = TARGETS["gpt-oss-120b-interactive"] = Targets(
    {"exact_match": 83.13}, (0.99,), (None, 9999 * 1.1)
)
# gpt-oss-120b's exact_match weighs each dataset by how often its rows repeat
DATASET_REPEATS = {"aime25": 8, "gpqa_diamond": 5, "livecodebench_v6": 3}
# what each family's scorer reads per sample
SCORING_COLUMNS = {
    "llama2-70b": ("output",),
    "llama2-70b-interactive": ("output",),
    "mixtral-8x7b": ("dataset", "gt_output"),
    "llama3.1-405b": ("gt_output", "metric"),
    "llama3.1-8b": ("output",),
    "deepseek-r1": ("dataset", "ground_truth"),
    "gpt-oss-120b": ("dataset", "ground_truth"),
}
