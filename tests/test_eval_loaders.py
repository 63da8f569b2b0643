"""Benchmark registry and loaders: every entry's hub schema from local fixture files, gold extraction,
file formats, field mappings, seeded subsampling. All fixture rows are made up here (no benchmark data)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from evaluation.loaders import (
    find_local_file,
    gold_after_hashes,
    gold_first,
    gold_last_boxed,
    gold_letter,
    load_benchmark,
    parse_data_args,
    parse_field_args,
    subsample_indices,
)
from evaluation.registry import (
    DEFAULT_BENCHMARKS,
    MATH_BENCHMARKS,
    REGISTRY,
    get_spec,
    resolve_name,
)

# One or two rows per benchmark in the schema of the hub copy the authors load, with the gold
# answer each row must yield.
HUB_FIXTURES: dict[str, tuple[list[dict], list[str]]] = {
    "math500": (
        [
            {
                "problem": "Compute $1+1$.",
                "solution": "It is $\\boxed{2}$.",
                "answer": "2",
                "subject": "Algebra",
                "level": 1,
                "unique_id": "t/1.json",
            },
            {
                "problem": "Half of one?",
                "solution": "...",
                "answer": "\\frac{1}{2}",
                "subject": "Prealgebra",
                "level": 2,
                "unique_id": "t/2.json",
            },
        ],
        ["2", "\\frac{1}{2}"],
    ),
    "gsm8k": (
        [
            {"question": "Ann has 3 pens and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
            {"question": "A farm sells 1600 eggs.", "answer": "It sells 1,600 eggs.\n#### 1,600"},
        ],
        ["7", "1600"],
    ),
    "amc23": ([{"id": 0, "question": "What is 6 times 7?", "answer": 42.0, "url": "x"}], ["42.0"]),
    "minerva_math": (
        [
            {
                "problem": "Give the speed in m/s.",
                "solution": "So $v=\\boxed{3.0e8}$ m/s.",
                "answer": "3.0e8",
                "type": "Physics",
                "idx": 0,
            }
        ],
        ["3.0e8"],
    ),
    "olympiadbench": (
        [
            {
                "id": 1,
                "question": "Find n.",
                "solution": ["..."],
                "final_answer": ["$12$"],
                "is_multiple_answer": False,
                "unit": None,
            },
            {
                "id": 2,
                "question": "Find all pairs.",
                "solution": ["..."],
                "final_answer": ["(1,2)", "(2,1)"],
                "is_multiple_answer": True,
                "unit": None,
            },
        ],
        ["12", "(1,2)"],
    ),
    "aime2024": (
        [{"id": 60, "problem": "Made-up problem one.", "solution": "...", "answer": "204", "url": "u"}],
        ["204"],
    ),
    "aime2025": (
        [
            {
                "id": "0",
                "problem": "Made-up problem two.",
                "answer": "70",
                "solution": "...",
                "url": "u",
                "year": 2025,
            }
        ],
        ["70"],
    ),
    "mmlu_pro": (
        [
            {
                "question_id": 1,
                "question": "Which is a prime?",
                "options": ["4", "6", "7", "8"],
                "answer": "C",
                "answer_index": 2,
                "cot_content": "",
                "category": "math",
                "src": "x",
            },
        ],
        ["C"],
    ),
    "supergpqa": (
        [
            {
                "uuid": "u1",
                "question": "Which gas is inert?",
                "options": ["O2", "Ar", "H2"],
                "answer": "Ar",
                "answer_letter": "B",
                "discipline": "Science",
                "field": "Chemistry",
                "subfield": "x",
                "difficulty": "easy",
                "is_calculation": False,
            },
        ],
        ["B"],
    ),
    "bbeh": (
        [{"question": "Is the statement true?", "answer": "Yes", "task": "boolean_expressions", "mini": 0}],
        ["Yes"],
    ),
}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_has_every_benchmark_with_the_authors_hub_ids() -> None:
    expected = {
        "math500": ("HuggingFaceH4/MATH-500", None, "test"),
        "gsm8k": ("openai/gsm8k", "main", "test"),
        "amc23": ("zwhe99/amc23", None, "test"),
        "minerva_math": ("zwhe99/simplerl-minerva-math", None, "test"),
        "olympiadbench": ("zwhe99/simplerl-OlympiadBench", None, "test"),
        "aime2024": ("HuggingFaceH4/aime_2024", None, "train"),
        "aime2025": ("yentinglin/aime_2025", "default", "train"),
        "mmlu_pro": ("TIGER-Lab/MMLU-Pro", None, "test"),
        "supergpqa": ("m-a-p/SuperGPQA", None, "train"),
        "bbeh": ("MrLight/bbeh-eval", None, "train"),
        "gpqa_diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train"),
    }
    assert {n: (s.hub_id, s.hub_config, s.split) for n, s in REGISTRY.items()} == expected
    assert len(MATH_BENCHMARKS) == 7 and all(REGISTRY[n].metric == "math" for n in MATH_BENCHMARKS)
    assert [REGISTRY[n].metric for n in ("mmlu_pro", "supergpqa", "bbeh", "gpqa_diamond")] == [
        "mc",
        "mc",
        "bbeh",
        "mc",
    ]
    assert {n for n in REGISTRY if REGISTRY[n].mean_at_k} == {"amc23", "aime2024", "aime2025"}
    assert "gpqa_diamond" not in DEFAULT_BENCHMARKS and len(DEFAULT_BENCHMARKS) == 10


@pytest.mark.parametrize("name", sorted(HUB_FIXTURES))
def test_each_benchmark_loads_its_hub_schema_from_a_local_file(tmp_path: Path, name: str) -> None:
    rows, golds = HUB_FIXTURES[name]
    loaded = load_benchmark(name, _write_jsonl(tmp_path / f"{name}.jsonl", rows))
    assert [i.gold for i in loaded.items] == golds
    question_col = loaded.fields["question"][0]
    assert [i.question for i in loaded.items] == [r[question_col].strip() for r in rows]
    assert [i.id for i in loaded.items] == [f"{name}-{k}" for k in range(len(rows))]
    if get_spec(name).metric == "mc":
        assert loaded.items[0].options == tuple(rows[0]["options"])
    else:
        assert loaded.items[0].options is None


def test_gpqa_builds_shuffled_options_and_the_gold_letter_of_the_correct_answer(tmp_path: Path) -> None:
    rows = [
        {
            "Question": f"Q{i}?",
            "Correct Answer": f"right{i}",
            "Incorrect Answer 1": f"w1_{i}",
            "Incorrect Answer 2": f"w2_{i}",
            "Incorrect Answer 3": f"w3_{i}",
        }
        for i in range(12)
    ]
    path = _write_jsonl(tmp_path / "gpqa.jsonl", rows)
    items = load_benchmark("gpqa", path, seed=0).items
    for item, row in zip(items, rows):
        assert sorted(item.options) == sorted(
            row[c]
            for c in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
        )
        assert item.options["ABCD".index(item.gold)] == row["Correct Answer"]
    assert len({i.gold for i in items}) > 1, "the correct answer must not always sit at the same letter"
    again = load_benchmark("gpqa", path, seed=0).items
    assert [i.options for i in again] == [i.options for i in items]
    assert [i.options for i in load_benchmark("gpqa", path, seed=1).items] != [i.options for i in items]


def test_offline_copies_load_without_a_field_mapping(tmp_path: Path) -> None:
    """The Qwen2.5-Math evaluation copies: Minerva has only `solution`, OlympiadBench a stringified list."""
    minerva = [
        {"problem": "p", "solution": "First $\\boxed{1}$, then $x=\\boxed{\\frac{a^{2}}{2}}$.", "idx": "0"}
    ]
    olympiad = [{"question": "q", "final_answer": "['$\\\\sqrt{2}$']", "unit": "None"}]
    amc = [{"id": "0", "problem": "p", "question": "p", "answer": "27.0"}]
    assert (
        load_benchmark("minerva", _write_jsonl(tmp_path / "m.jsonl", minerva)).items[0].gold
        == "\\frac{a^{2}}{2}"
    )
    assert (
        load_benchmark("olympiad", _write_jsonl(tmp_path / "o.jsonl", olympiad)).items[0].gold == "\\sqrt{2}"
    )
    assert load_benchmark("amc", _write_jsonl(tmp_path / "a.jsonl", amc)).items[0].gold == "27.0"


@pytest.mark.parametrize("suffix", [".json", ".parquet", ".csv"])
def test_json_parquet_and_csv_give_the_same_items_as_jsonl(tmp_path: Path, suffix: str) -> None:
    for name in ("olympiadbench", "mmlu_pro", "gsm8k"):
        rows = HUB_FIXTURES[name][0]
        reference = load_benchmark(name, _write_jsonl(tmp_path / f"{name}.jsonl", rows)).items
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".json":
            path.write_text(json.dumps(rows), encoding="utf-8")
        elif suffix == ".parquet":
            pd.DataFrame(rows).to_parquet(path)
        else:
            pd.DataFrame(rows).to_csv(path, index=False)  # lists become their repr in csv
        assert load_benchmark(name, path).items == reference, (name, suffix)


def test_field_mapping_from_the_command_line(tmp_path: Path) -> None:
    rows = [{"prompt_text": "Q1", "target": "The result: \\boxed{5}", "extra": 1}]
    path = _write_jsonl(tmp_path / "custom.jsonl", rows)
    with pytest.raises(KeyError, match="--fields"):
        load_benchmark("math500", path)
    fields = parse_field_args(["math:question=prompt_text,answer=target,gold=last_boxed"])
    assert fields == {"math500": {"question": "prompt_text", "answer": "target", "gold": "last_boxed"}}
    item = load_benchmark("math500", path, fields["math500"]).items[0]
    assert (item.question, item.gold) == ("Q1", "5")


def test_parse_data_and_field_arguments() -> None:
    assert parse_data_args(["aime24=/d/a.jsonl", "minerva=/d/m.parquet,gsm8k=/d/g.csv"]) == {
        "aime2024": "/d/a.jsonl",
        "minerva_math": "/d/m.parquet",
        "gsm8k": "/d/g.csv",
    }
    assert parse_field_args(["gpqa:options=A+B+C+D"]) == {"gpqa_diamond": {"options": "A+B+C+D"}}
    with pytest.raises(ValueError):
        parse_data_args(["gsm8k"])
    with pytest.raises(ValueError):
        parse_field_args(["gsm8k:question"])
    with pytest.raises(ValueError):
        parse_field_args(["gsm8k:gold=no_such_rule"])
    with pytest.raises(KeyError):
        resolve_name("not-a-benchmark")


def test_find_local_file_accepts_aliases(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "aime24.jsonl", HUB_FIXTURES["aime2024"][0])
    pd.DataFrame(HUB_FIXTURES["gsm8k"][0]).to_parquet(tmp_path / "gsm8k.parquet")
    assert find_local_file("aime2024", tmp_path) == tmp_path / "aime24.jsonl"
    assert find_local_file("gsm8k", tmp_path) == tmp_path / "gsm8k.parquet"
    assert find_local_file("amc23", tmp_path) is None


def test_subsampling_is_seeded_and_sorted_and_the_default_is_the_full_set(tmp_path: Path) -> None:
    assert subsample_indices(10, None, 0, "x") == list(range(10))
    assert subsample_indices(10, 20, 0, "x") == list(range(10))
    a = subsample_indices(100, 10, 0, "bbeh")
    assert a == sorted(a) and len(set(a)) == 10
    assert subsample_indices(100, 10, 0, "bbeh") == a
    assert subsample_indices(100, 10, 1, "bbeh") != a
    assert subsample_indices(100, 10, 0, "mmlu_pro") != a  # each benchmark draws its own subset

    rows = [{"question": f"q{i}", "answer": "yes", "task": "t"} for i in range(1200)]
    path = _write_jsonl(tmp_path / "bbeh.jsonl", rows)
    # The authors score the full sets: no registry entry subsamples unless the run asks for it.
    for name in ("bbeh", "mmlu_pro", "supergpqa"):
        assert get_spec(name).default_limit is None
    default = load_benchmark("bbeh", path, seed=3)
    assert len(default.items) == 1200 and default.limit is None
    subset = load_benchmark("bbeh", path, limit=1000, seed=3)
    assert len(subset.items) == 1000 and (subset.limit, subset.seed) == (1000, 3)
    assert [i.index for i in subset.items] == subsample_indices(1200, 1000, 3, "bbeh")
    assert all(i.question == f"q{i.index}" for i in subset.items)
    assert len(load_benchmark("bbeh", path, limit=None).items) == 1200
    assert (
        len(
            load_benchmark(
                "gsm8k", _write_jsonl(tmp_path / "g.jsonl", HUB_FIXTURES["gsm8k"][0]), limit=-1
            ).items
        )
        == 2
    )


def test_registry_token_budgets_are_the_papers() -> None:
    """The authors: 4096 new tokens for math, 8192 (EVAL_MAX_TOKENS) for the general benchmarks: what
    the runner gives the engine when no budget is set (end to end: test_eval_e2e.py)."""
    from evaluation.generate import EngineConfig
    from evaluation.runner import RunConfig

    run = RunConfig(EngineConfig("m"), "out", [])
    for name in MATH_BENCHMARKS:
        assert run.sampling_for(name).max_tokens == 4096
    for name in ("mmlu_pro", "supergpqa", "bbeh", "gpqa_diamond"):
        assert run.sampling_for(name).max_tokens == 8192
    assert run.sampling_for("MMLU-Pro").max_tokens == 8192  # aliases resolve
    assert RunConfig(EngineConfig("m"), "out", [], max_tokens=100).sampling_for("mmlu_pro").max_tokens == 100
    assert all(spec.default_limit is None for spec in REGISTRY.values())


def test_gold_extractors() -> None:
    assert gold_after_hashes("work\n#### 1,234,567") == "1234567"
    assert gold_after_hashes("#### -3.5") == "-3.5"
    assert gold_first(["$x+1$", "y"]) == "x+1"
    assert gold_first('["a", "b"]') == "a"
    assert gold_last_boxed("\\boxed{1} and \\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert gold_last_boxed("no box here") == "no box here"
    assert (
        gold_letter(3) == "D"
        and gold_letter("b") == "B"
        and gold_letter("(C)") == "C"
        and gold_letter("9") == "J"
    )
    with pytest.raises(ValueError):
        gold_letter("maybe")


def test_mc_rows_must_have_options_and_a_gold_letter_in_range(tmp_path: Path) -> None:
    bad = [{"question": "q", "options": ["x", "y"], "answer": "D", "category": "c"}]
    with pytest.raises(ValueError, match="only 2 options"):
        load_benchmark("mmlu_pro", _write_jsonl(tmp_path / "bad.jsonl", bad))


def test_hub_code_path_with_datasets_on_a_local_dataset_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a local file the loader calls datasets.load_dataset(hub_id, config, split=...);
    a dataset folder stands in for the hub id here (no network in tests)."""
    import dataclasses

    import datasets

    folder = tmp_path / "amc23_hub"
    folder.mkdir()
    rows, golds = HUB_FIXTURES["amc23"]
    _write_jsonl(
        folder / "test.jsonl", [*rows, {"id": 1, "question": "What is 1 plus 1?", "answer": 2.0, "url": "y"}]
    )
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(REGISTRY, "amc23", dataclasses.replace(REGISTRY["amc23"], hub_id=str(folder)))
    loaded = load_benchmark("amc23", None)
    assert loaded.source == f"hub:{folder}[test]"
    assert [i.gold for i in loaded.items] == [*golds, "2.0"]
