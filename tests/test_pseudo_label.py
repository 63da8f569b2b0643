"""Pseudo-labelling: voting + filter on crafted Solver answers (both profiles), the real vLLM path on
the demo's format-taught tiny model, the dataset readable by `datasets` and by the engine's loader, skip and hub checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from infra.vllm_engines import EngineOptions
from question_evaluate.filtering import REASONS
from question_evaluate.hub import HubConfigError, resolve_hub_credentials
from question_evaluate.pseudo_label import LabelConfig, resolve_questions_path
from question_evaluate.pseudo_label import pseudo_label as run_labelling
from verl.utils.dataset import read_records

ROOT = Path(__file__).resolve().parents[1]


def pseudo_label(solver, questions, out, answer_fn=None, max_model_len=None, **settings) -> dict:
    """The stage through its config object, as the driver launches it."""
    config = LabelConfig(
        solver=str(solver),
        questions=str(questions),
        out_dir=str(out),
        engine=EngineOptions(max_model_len=max_model_len),
        **settings,
    )
    return run_labelling(config, answer_fn=answer_fn)


# question -> 8 crafted Solver answers (None: a response without \boxed{}), and what each profile
# must make of them. paper: p = group / 8, band [0.25, 0.75]; rzero_code: p = group / answers left
# after empty boxes ("None" counts), band [0.3, 0.8], plus the 证明 / box / text drops.
CASES = {
    "edge_low": ("What is 1 + 0?", ["1", "1", "2", "3", "4", "5", "6", "7"]),
    "below": ("What is 2 - 1?", ["1", "2", "3", "4", "5", "6", "7", "8"]),
    "edge_high": ("What is 2 + 3?", ["5"] * 6 + ["6", "7"]),
    "above": ("What is 3 + 2?", ["5"] * 7 + ["6"]),
    # \frac{1}{2}, 0.5, 1/2 agree without the grader; \dfrac12 needs math-verify in a worker.
    "equiv": ("What is 1/4 + 1/4?", ["\\frac{1}{2}", "0.5", "1/2", "\\dfrac12", "2", "3", "4", None]),
    "no_answer": ("What is 0 * 9?", [None] * 8),
    "label_none": ("Which prime divides 1?", ["None"] * 5 + ["1", "2", "3"]),
    "box": ("In how many ways can 3 balls go into 2 boxes?", ["8"] * 4 + ["6", "9", None, None]),
    "proof": ("Prove that 1+3+5+7 is a square, and give its root.", ["4"] * 4 + ["1", "2", "3", "16"]),
    "text": ("Is 7 prime? Answer yes or no.", ["\\text{yes}"] * 4 + ["no", "no", None, None]),
    "sparse": ("What is 1 + 2?", ["3", "3", "3", None, None, None, None, None]),
}
# (label, p_hat, reason) per case and profile; reason None = kept.
EXPECTED = {
    "paper": {
        "edge_low": ("1", 2 / 8, None),
        "below": ("1", 1 / 8, "p_below_band"),
        "edge_high": ("5", 6 / 8, None),
        "above": ("5", 7 / 8, "p_above_band"),
        "equiv": ("\\frac{1}{2}", 4 / 8, None),
        "no_answer": (None, 0.0, "no_answer"),
        "label_none": ("None", 5 / 8, "label_none"),
        "box": ("8", 4 / 8, None),
        "proof": ("4", 4 / 8, None),
        "text": ("\\text{yes}", 4 / 8, None),
        "sparse": ("3", 3 / 8, None),
    },
    # rzero_code (mathruler semantics): a response without a box is the vote "None" and counts in m;
    # only the authors' three drops (证明, "box" in the question, "text" in the label).
    "rzero_code": {
        "edge_low": ("1", 2 / 8, "p_below_band"),
        "below": ("1", 1 / 8, "p_below_band"),
        "edge_high": ("5", 6 / 8, None),
        "above": ("5", 7 / 8, "p_above_band"),
        "equiv": ("\\frac{1}{2}", 4 / 8, None),
        "no_answer": ("None", 1.0, "label_none"),
        "label_none": ("None", 5 / 8, "label_none"),
        "box": ("8", 4 / 8, "mentions_box"),
        "proof": ("4", 4 / 8, None),
        "text": ("\\text{yes}", 4 / 8, "label_has_text"),
        "sparse": ("None", 5 / 8, "label_none"),
    },
}


def write_questions(path: Path) -> Path:
    """A generation-stage questions.jsonl: the CASES (valid) plus one unparseable sample."""
    rows = [
        {"id": name, "raw": "...", "question": q, "answer": "x", "valid": True, "shard": 0}
        for name, (q, _) in CASES.items()
    ]
    rows.insert(
        3, {"id": "broken", "raw": "no tags", "question": "", "answer": "", "valid": False, "shard": 0}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def crafted_answers(questions: list[str], m: int) -> list[list[str | None]]:
    by_question = {q: answers for q, answers in CASES.values()}
    assert m == 8
    return [list(by_question[q]) for q in questions]


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("profile", ["paper", "rzero_code"])
def test_labels_shares_and_drop_reasons_from_crafted_answers(tmp_path: Path, profile: str) -> None:
    import datasets

    questions = write_questions(tmp_path / "gen" / "questions.jsonl")
    seen: list[str] = []

    def answer_fn(qs: list[str], m: int) -> list[list[str | None]]:
        seen.extend(qs)
        return crafted_answers(qs, m)

    out = tmp_path / "label"
    manifest = pseudo_label(
        "unused-solver", questions, out, profile=profile, votes=8, grader_workers=1, answer_fn=answer_fn
    )

    # Only valid questions are answered, in file order.
    assert seen == [q for q, _ in CASES.values()]
    labelled = {r["id"]: r for r in read_jsonl(out / "labelled.jsonl")}
    assert set(labelled) == set(CASES)
    for name, (label, p_hat, reason) in EXPECTED[profile].items():
        row = labelled[name]
        assert (row["label"], row["reason"], row["kept"]) == (label, reason, reason is None), name
        assert row["p_hat"] == pytest.approx(p_hat), name
        assert row["answers"] == CASES[name][1]
        assert row["n_answers"] == 8

    kept = [name for name, (_, _, reason) in EXPECTED[profile].items() if reason is None]
    stats = json.loads((out / "filter_stats.json").read_text())
    expected_drops = {r: sum(1 for *_, why in EXPECTED[profile].values() if why == r) for r in REASONS}
    assert stats["dropped_by_reason"] == expected_drops
    assert (
        stats["kept"] == len(kept) and stats["valid"] == len(CASES) and stats["questions"] == len(CASES) + 1
    )
    assert stats["kept"] + stats["dropped"] == stats["valid"]
    assert stats["grader"]["verify_calls"] >= 1  # \dfrac12 went to a math-verify worker
    assert stats["grader_timeouts"] == 0

    # The dataset: kept rows only, answer = label, readable by the engine's loader and by `datasets`.
    records = read_records(str(out / "train.parquet"))
    assert [r["id"] for r in records] == kept
    ds = datasets.load_dataset(
        "parquet", data_files=str(out / "train.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds["id"] == kept and ds["answer"] == [r["answer"] for r in records]
    assert {"question", "answer", "p_hat"} <= set(ds.column_names)
    for r in records:
        label, p_hat, _ = EXPECTED[profile][r["id"]]
        assert r["question"] == CASES[r["id"]][0] and r["answer"] == label
        assert r["p_hat"] == pytest.approx(p_hat)

    assert manifest["stage"] == "question_evaluate" and manifest["status"] == "done"
    assert manifest["counts"]["kept"] == len(kept)
    assert manifest["counts"]["valid"] == len(CASES)
    assert sum(manifest["counts"][f"dropped_{r}"] for r in REASONS) == len(CASES) - len(kept)
    assert manifest["config"]["answer_source"] == "answer_fn"
    for key in ("dataset", "labelled", "histogram", "filter_stats"):
        assert Path(manifest["outputs"][key]).is_file()
    assert (out / "p_hat_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_dataset_trains_with_the_engines_prompt_dataset(tmp_path: Path, tiny_model_dir: str) -> None:
    """train.parquet through read_records + PromptDataset (the solver config's prompt/answer keys)."""
    from transformers import AutoTokenizer

    from verl.utils.dataset import PromptDataset

    questions = write_questions(tmp_path / "gen" / "questions.jsonl")
    pseudo_label(
        "unused", questions, tmp_path / "label", votes=8, grader_workers=1, answer_fn=crafted_answers
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = PromptDataset(
        read_records(str(tmp_path / "label" / "train.parquet")),
        tokenizer,
        prompt_key="question",
        answer_key="answer",
        system_prompt="Please reason step by step.",
    )
    kept = [name for name, (*_, reason) in EXPECTED["paper"].items() if reason is None]
    assert len(dataset) == len(kept)
    assert [row["ground_truth"] for row in dataset.rows] == [EXPECTED["paper"][k][0] for k in kept]
    prompt = tokenizer.decode(dataset[0]["raw_prompt_ids"])
    assert CASES[kept[0]][0] in prompt


def test_solver_on_vllm_writes_every_output(tmp_path: Path, demo_model_dir: str) -> None:
    """The real path: the demo's Solver (taught to box an answer) on vLLM, m=4, the demo's 40 tokens;
    the labels and shares are recomputed here from the answers it gave."""
    questions = write_questions(tmp_path / "gen" / "questions.jsonl")
    out = tmp_path / "label"
    manifest = pseudo_label(
        demo_model_dir, questions, out, votes=4, max_tokens=40, max_model_len=512, grader_workers=1
    )
    labelled = read_jsonl(out / "labelled.jsonl")
    assert [r["id"] for r in labelled] == list(CASES)
    assert all(len(r["answers"]) == 4 for r in labelled)
    stats = json.loads((out / "filter_stats.json").read_text())
    assert stats["solver_sampling"]["responses"] == 4 * len(CASES)
    assert stats["answers"]["total"] == 4 * len(CASES)
    assert stats["kept"] + stats["dropped"] == stats["valid"] == len(CASES)
    assert stats["kept"] == sum(r["kept"] for r in labelled)
    assert manifest["config"]["answer_source"] == "vllm" and manifest["config"]["votes"] == 4
    # Real votes: the taught Solver boxes answers, and where they are plain integers (equal exactly
    # when their values are equal) the label is the most frequent one and p_hat its share of the m.
    assert sum(a is not None for r in labelled for a in r["answers"]) >= len(CASES)
    checked = 0
    for row in labelled:
        given = [a for a in row["answers"] if a is not None]
        if not given or not all(re.fullmatch(r"-?[1-9]\d*|0", a) for a in given):
            continue
        counts = Counter(given)
        top = max(counts.values())
        # a tie: which of the tied answers wins is the voting rule's; it is one of them, with their share
        assert row["label"] in {a for a, c in counts.items() if c == top}, row
        assert row["p_hat"] == top / 4, row
        checked += 1
    assert checked >= 3, labelled

    # The file has the typed columns the loader needs, whatever was kept.
    # (`datasets.load_dataset` refuses any split with no rows; see the crafted-answers test for it.)
    import pyarrow.parquet as pq

    schema = pq.read_schema(out / "train.parquet")
    assert [(f.name, str(f.type)) for f in schema] == [
        ("question", "string"),
        ("answer", "string"),
        ("p_hat", "double"),
        ("id", "string"),
    ]
    assert len(read_records(str(out / "train.parquet"))) == stats["kept"]
    png = out / "p_hat_hist.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"

    # A second call skips: same manifest, no new work.
    before = (out / "manifest.json").read_text()
    again = pseudo_label(demo_model_dir, questions, out, votes=4, max_tokens=40, max_model_len=512)
    assert again == manifest and (out / "manifest.json").read_text() == before

    # The CLI on the finished folder skips too (the driver's re-run path).
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/question_evaluate.sh"), demo_model_dir, str(questions), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stderr


def test_questions_path_resolution(tmp_path: Path) -> None:
    from infra.stage_kit import write_manifest

    gen = tmp_path / "gen"
    questions = write_questions(gen / "questions.jsonl")
    assert resolve_questions_path(questions) == questions
    assert resolve_questions_path(gen) == questions  # a folder with questions.jsonl
    moved = write_questions(tmp_path / "elsewhere" / "q.jsonl")
    write_manifest(gen, "question_generate", outputs={"questions": str(moved)})
    assert resolve_questions_path(gen) == moved  # a generation stage folder: its manifest decides
    with pytest.raises(FileNotFoundError):
        resolve_questions_path(tmp_path / "missing.jsonl")


def test_two_argument_cli_form_refuses_a_generation_stage_folder(tmp_path: Path) -> None:
    from infra.stage_kit import write_manifest

    gen = tmp_path / "gen"
    questions = write_questions(gen / "questions.jsonl")
    write_manifest(gen, "question_generate", outputs={"questions": str(questions)})
    result = subprocess.run(
        [sys.executable, "-m", "question_evaluate", "some-solver", str(gen)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "stage folder" in result.stderr and "OUT_DIR" in result.stderr
    assert json.loads((gen / "manifest.json").read_text())["stage"] == "question_generate"


def test_an_empty_question_set_still_finishes(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "a", "raw": "", "question": "", "answer": "", "valid": False}) + "\n"
    )

    def never_called(qs: list[str], m: int) -> list[list[str | None]]:
        raise AssertionError("no valid question: nothing to answer")

    manifest = pseudo_label("unused", questions, tmp_path / "out", answer_fn=never_called)
    assert manifest["counts"]["valid"] == 0 and manifest["counts"]["kept"] == 0
    assert read_records(str(tmp_path / "out" / "train.parquet")) == []
    assert any("no valid question" in note for note in manifest["notes"])


def test_hub_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUGGINGFACENAME", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    tokens = tmp_path / "tokens.json"
    with pytest.raises(HubConfigError, match=r"HUGGINGFACENAME.*HF_TOKEN"):
        resolve_hub_credentials(tokens)  # no file at all
    tokens.write_text(json.dumps({"huggingface": "", "huggingface_name": "", "wandb": ""}))
    with pytest.raises(HubConfigError, match="HUGGINGFACENAME"):
        resolve_hub_credentials(tokens)  # empty entries count as missing
    tokens.write_text(json.dumps({"huggingface": "hf_file", "huggingface_name": "file-user"}))
    assert resolve_hub_credentials(tokens) == ("file-user", "hf_file")
    monkeypatch.setenv("HUGGINGFACENAME", "env-user")
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert resolve_hub_credentials(tokens) == ("env-user", "hf_env")  # the environment wins


def test_push_to_hub_without_credentials_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import question_evaluate.hub as hub

    monkeypatch.delenv("HUGGINGFACENAME", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "DEFAULT_TOKENS_PATH", tmp_path / "absent-tokens.json")
    questions = write_questions(tmp_path / "gen" / "questions.jsonl")

    def never_called(qs: list[str], m: int) -> list[list[str | None]]:
        raise AssertionError("the credentials check must come first")

    with pytest.raises(HubConfigError, match="--push-to-hub"):
        pseudo_label("unused", questions, tmp_path / "out", answer_fn=never_called, push_to_hub=True)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_stage_is_refused(tmp_path: Path) -> None:
    from infra.stage_kit import write_manifest

    questions = write_questions(tmp_path / "gen" / "questions.jsonl")
    write_manifest(tmp_path / "other", "solver_train", outputs={})
    with pytest.raises(ValueError, match="solver_train"):
        pseudo_label("unused", questions, tmp_path / "other", votes=8, answer_fn=crafted_answers)
    assert os.listdir(tmp_path / "other") == ["manifest.json"]


def test_rzero_code_labelling_rules_through_the_stage(tmp_path: Path) -> None:
    # The labelling side of RZERO_SPEC section 2 through the stage (reward time differs on both):
    # 5 empty boxes + 5 "7" -> p̂ = 5 / 5 non-empty answers; a grader timeout in the first direction
    # grade_answer(answer, rep) moves on without the reverse call.
    questions = tmp_path / "q.jsonl"
    rows = [
        {"id": "empty", "raw": "...", "question": "What is 3 + 4?", "answer": "7", "valid": True},
        {"id": "hang", "raw": "...", "question": "What is 1/3 of 1?", "answer": "1/3", "valid": True},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = {"What is 3 + 4?": [""] * 5 + ["7"] * 5, "What is 1/3 of 1?": ["1/3", "9**9**9"]}
    manifest = pseudo_label(
        "unused-solver",
        questions,
        tmp_path / "out",
        profile="rzero_code",
        votes=10,
        grader_workers=1,
        grader_timeout_s=1.5,
        answer_fn=lambda qs, m: [answers[q] for q in qs],
    )
    labelled = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "labelled.jsonl")}
    assert (labelled["empty"]["label"], labelled["empty"]["p_hat"], labelled["empty"]["n_counted"]) == (
        "7",
        1.0,
        5,
    )
    assert labelled["hang"]["group_sizes"] == [1, 1]
    stats = json.loads((tmp_path / "out" / "filter_stats.json").read_text())
    # One grade_answer call, timed out; the reverse grade_answer("1/3", "9**9**9") never ran.
    assert stats["grader"]["verify_calls"] == 1 and stats["grader_timeouts"] == 1
    assert manifest["counts"]["grader_timeouts"] == 1
    assert manifest["config"]["grader_timeout_s"] == 1.5


@pytest.mark.parametrize(("profile", "seconds"), [("paper", 5.0), ("rzero_code", 10.0)])
def test_the_cli_and_the_driver_give_the_same_grader_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str, seconds: float
) -> None:
    # The stage script (`python -m question_evaluate`, no option) and the driver label with the same
    # per-call limit: the profile's grader's (mathruler 10 s, the authors' limit per grade_answer).
    from pipeline.config import load_pipeline_config
    from pipeline.launch import label_config
    from pipeline.planner import plan_devices
    from question_evaluate.__main__ import _config_from_args, build_parser

    parser = build_parser()
    args = parser.parse_args(["solver", "q.jsonl", str(tmp_path / "out"), "--profile", profile])
    cli = _config_from_args(parser, args)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    pipe = load_pipeline_config(None, [f"profile={profile}"])
    driver = label_config(pipe, plan_devices(None, None, pipe.cpu_ranks), "solver", "q.jsonl", tmp_path, 0)
    assert cli.grader_timeout_s == driver.grader_timeout_s
    assert cli.grader_timeout() == driver.grader_timeout() == seconds
    args = parser.parse_args(["solver", "q.jsonl", str(tmp_path), "--grader-timeout-s", "2.5"])
    assert _config_from_args(parser, args).grader_timeout() == 2.5
