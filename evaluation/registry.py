"""The benchmark registry: where each benchmark lives, how its rows map to (question, gold), how it is scored.

Hub ids, configs and splits are the ones the R-Zero authors load (RZERO_SPEC.md section 5). Every
entry also reads the same data from a local file; `fields` lists, for each logical field, the
column names tried in order, so both the hub schema and the common offline copies (e.g. the
Qwen2.5-Math evaluation files) load without a field mapping. A `--fields` mapping on the command
line replaces the candidates with one column.

Metrics:
    math  - last balanced \\boxed{} of the response vs the gold answer, graded by math-verify.
    mc    - multiple choice: the option letter in \\boxed{} (or a final "answer is (X)" line); scored
            strictly and, beside it, with a seeded random letter for unparsed answers (the authors'
            scripts draw an unseeded one), see `evaluation.scoring`.
    bbeh  - BIG-Bench Extra Hard: its answer normalisation and fuzzy match.

Protocol by default (RZERO_SPEC.md section 5, the authors' evaluation scripts): every benchmark is
scored on its full set (MMLU-Pro test, SuperGPQA train, BBEH all included), greedily, with up to
`MATH_MAX_NEW_TOKENS` new tokens for math and `GENERAL_MAX_NEW_TOKENS` for the general benchmarks.
A seeded subset is an explicit option of the run (`--limit` / `--limit-for`), labelled in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MATH_BENCHMARKS: tuple[str, ...] = (
    "amc23",
    "minerva_math",
    "math500",
    "gsm8k",
    "olympiadbench",
    "aime2025",
    "aime2024",
)
"""The 7 math benchmarks averaged into MATH AVG, in the column order of the paper's table."""

GENERAL_BENCHMARKS: tuple[str, ...] = ("supergpqa", "mmlu_pro", "bbeh")
"""The general-domain benchmarks that enter Overall AVG (with MATH AVG), in the paper's order."""

EXTRA_BENCHMARKS: tuple[str, ...] = ("gpqa_diamond",)
"""Supported but outside the paper's averages."""

DEFAULT_BENCHMARKS: tuple[str, ...] = MATH_BENCHMARKS + GENERAL_BENCHMARKS

MATH_MAX_NEW_TOKENS = 4096
"""New-token budget of the math benchmarks (the authors' math evaluation)."""

GENERAL_MAX_NEW_TOKENS = 8192
"""New-token budget of the general benchmarks (the authors' EVAL_MAX_TOKENS default for MMLU-Pro,
SuperGPQA and BBEH)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: source, schema, gold extraction and metric.

    Attributes:
        name: canonical name (used for output folders and table columns).
        title: column title in the report (the paper's wording).
        hub_id, hub_config, split: what `datasets.load_dataset` is called with.
        fields: logical field -> candidate column names, tried in order. Logical fields:
            "question", "answer" (the gold source), "options" (a list, multiple choice only),
            "category" (optional, kept in per-item results).
        gold: how the gold answer is read from the "answer" column; one of loaders.GOLD_EXTRACTORS
            ("text", "after_hashes", "first", "last_boxed", "letter").
        metric: "math", "mc" or "bbeh".
        options_builder: "list" (options column holds the list) or "gpqa" (correct + 3 incorrect
            answers in separate columns, shuffled with the run's seed).
        default_limit: items used when the run asks for no subset; None (every entry) = the full
            set, which is what the authors score. A subset is always an explicit option of the run.
        max_new_tokens: the default new-token budget of a response (math 4096, general 8192).
        mean_at_k: the paper repeats these benchmarks (AMC, AIME) and reports mean@32; `--k` applies
            to them unless `--k-for` says otherwise.
        aliases: other names accepted on the command line and as local file stems.
        hub_url: a direct file the authors also used (MATH-500 simple-evals CSV), informational.
    """

    name: str
    title: str
    hub_id: str
    hub_config: str | None
    split: str
    fields: dict[str, tuple[str, ...]]
    gold: str
    metric: str
    options_builder: str = "list"
    default_limit: int | None = None
    max_new_tokens: int = MATH_MAX_NEW_TOKENS
    mean_at_k: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)
    hub_url: str | None = None


_GPQA_OPTION_COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")

REGISTRY: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            name="math500",
            title="MATH",
            hub_id="HuggingFaceH4/MATH-500",
            hub_config=None,
            split="test",
            # "Question"/"Answer": the OpenAI simple-evals CSV (math_500_test.csv) the authors read.
            fields={"question": ("problem", "Question"), "answer": ("answer", "Answer")},
            gold="text",
            metric="math",
            aliases=("math", "math_500", "math-500"),
            hub_url="https://openaipublic.blob.core.windows.net/simple-evals/math_500_test.csv",
        ),
        BenchmarkSpec(
            name="gsm8k",
            title="GSM8K",
            hub_id="openai/gsm8k",
            hub_config="main",
            split="test",
            fields={"question": ("question",), "answer": ("answer",)},
            gold="after_hashes",
            metric="math",
        ),
        BenchmarkSpec(
            name="amc23",
            title="AMC",
            hub_id="zwhe99/amc23",
            hub_config=None,
            split="test",
            fields={"question": ("question", "problem"), "answer": ("answer",)},
            gold="text",
            metric="math",
            mean_at_k=True,
            aliases=("amc",),
        ),
        BenchmarkSpec(
            name="minerva_math",
            title="Minerva",
            hub_id="zwhe99/simplerl-minerva-math",
            hub_config=None,
            split="test",
            # Hub copy has a clean `answer`; the Qwen2.5-Math copy only a `solution` with the
            # answer in its last \boxed{} ("last_boxed" passes an unboxed answer through).
            fields={"question": ("problem", "question"), "answer": ("answer", "solution")},
            gold="last_boxed",
            metric="math",
            aliases=("minerva", "minerva-math"),
        ),
        BenchmarkSpec(
            name="olympiadbench",
            title="Olympiad",
            hub_id="zwhe99/simplerl-OlympiadBench",
            hub_config=None,
            split="test",
            fields={"question": ("question", "problem"), "answer": ("final_answer", "answer")},
            gold="first",
            metric="math",
            aliases=("olympiad", "olympiad_bench"),
        ),
        BenchmarkSpec(
            name="aime2024",
            title="AIME24",
            hub_id="HuggingFaceH4/aime_2024",
            hub_config=None,
            split="train",
            fields={"question": ("problem", "question"), "answer": ("answer",)},
            gold="text",
            metric="math",
            mean_at_k=True,
            aliases=("aime24", "aime_2024"),
        ),
        BenchmarkSpec(
            name="aime2025",
            title="AIME25",
            hub_id="yentinglin/aime_2025",
            hub_config="default",
            split="train",
            fields={"question": ("problem", "question"), "answer": ("answer",)},
            gold="text",
            metric="math",
            mean_at_k=True,
            aliases=("aime25", "aime_2025"),
        ),
        BenchmarkSpec(
            name="mmlu_pro",
            title="MMLU-Pro",
            hub_id="TIGER-Lab/MMLU-Pro",
            hub_config=None,
            split="test",
            fields={
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer", "answer_index"),
                "category": ("category",),
            },
            gold="letter",
            metric="mc",
            max_new_tokens=GENERAL_MAX_NEW_TOKENS,
            aliases=("mmlupro", "mmlu-pro"),
        ),
        BenchmarkSpec(
            name="supergpqa",
            title="SuperGPQA",
            hub_id="m-a-p/SuperGPQA",
            hub_config=None,
            split="train",
            # `answer` holds the option text in SuperGPQA; the letter is `answer_letter`.
            fields={
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer_letter",),
                "category": ("discipline",),
            },
            gold="letter",
            metric="mc",
            max_new_tokens=GENERAL_MAX_NEW_TOKENS,
            aliases=("super_gpqa", "super-gpqa"),
        ),
        BenchmarkSpec(
            name="bbeh",
            title="BBEH",
            hub_id="MrLight/bbeh-eval",
            hub_config=None,
            split="train",
            fields={"question": ("question", "input"), "answer": ("answer", "target"), "category": ("task",)},
            gold="text",
            metric="bbeh",
            max_new_tokens=GENERAL_MAX_NEW_TOKENS,
            aliases=("bbeh_eval", "bbeh-eval"),
        ),
        BenchmarkSpec(
            name="gpqa_diamond",
            title="GPQA-Diamond",
            hub_id="Idavidrein/gpqa",
            hub_config="gpqa_diamond",
            split="train",
            fields={"question": ("Question",), "options": _GPQA_OPTION_COLUMNS},
            gold="letter",
            metric="mc",
            options_builder="gpqa",
            max_new_tokens=GENERAL_MAX_NEW_TOKENS,
            aliases=("gpqa", "gpqa-diamond"),
        ),
    ]
}


def resolve_name(name: str) -> str:
    """Canonical benchmark name for `name` or one of its aliases (case-insensitive).

    Raises:
        KeyError: unknown benchmark (the message lists the known names).
    """
    key = name.strip().lower()
    if key in REGISTRY:
        return key
    for spec in REGISTRY.values():
        if key in spec.aliases:
            return spec.name
    raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(REGISTRY)}")


def get_spec(name: str) -> BenchmarkSpec:
    """The registry entry for `name` (canonical or alias)."""
    return REGISTRY[resolve_name(name)]
