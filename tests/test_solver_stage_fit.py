"""The Solver stage fits its rollout batch to what labelling kept, down to a single question (the demo
run of issue 12's fault suite kept 1 of 48 questions and the stage crashed with StopIteration), and
counts the questions too long for its prompt (a Challenger may write them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from question_evaluate.outputs import write_dataset
from training.solver import fit_batch_to_data, repeat_to_batch
from verl.trainer.config import CONFIG_DIR, load_config
from verl.utils.dataset import PromptDataset, StatefulDataLoader, read_records


def _solver_config(model: str = "org/model"):
    return load_config(
        [
            f"config={CONFIG_DIR / 'solver.yaml'}",
            f"config={CONFIG_DIR / 'tiny_cpu.yaml'}",
            f"worker.actor.model.model_path={model}",
        ]
    )


@pytest.mark.parametrize(("questions", "batch", "micro"), [(1, 2, 1), (2, 2, 1), (3, 2, 1), (5, 4, 2)])
def test_a_batch_that_splits_over_the_ranks(questions: int, batch: int, micro: int) -> None:
    cfg = _solver_config()
    assert (cfg.worker.rollout.n, cfg.worker.actor.micro_batch_size_per_device_for_update) == (5, 2)
    note = fit_batch_to_data(cfg, questions, world=2)
    assert cfg.data.rollout_batch_size == batch == cfg.worker.actor.prompts_per_update
    assert cfg.worker.actor.micro_batch_size_per_device_for_update == micro
    assert ("repeated to fill the batch" in note) == (batch > questions)
    cfg.validate(check_paths=False)


def test_one_question_is_repeated_to_fill_the_batch(tmp_path: Path, tiny_model_dir: str) -> None:
    from transformers import AutoTokenizer

    cfg = _solver_config(tiny_model_dir)
    dataset = write_dataset(
        tmp_path / "train.parquet",
        [{"question": "What is 6 times 7?", "label": "42", "p_hat": 0.5, "id": "q0"}],
    )
    fit_batch_to_data(cfg, 1, world=2)
    filled = repeat_to_batch(str(dataset), 1, cfg.data.rollout_batch_size, tmp_path)
    assert filled == str(tmp_path / "train_repeated.parquet")
    rows = read_records(filled)
    assert [r["question"] for r in rows] == ["What is 6 times 7?"] * 2 and rows[1]["answer"] == "42"
    # What the trainer does with it: one full batch per step.
    prompts = PromptDataset(rows, AutoTokenizer.from_pretrained(tiny_model_dir), "question", "answer")
    loader = StatefulDataLoader(prompts, cfg.data.rollout_batch_size, True, 0, 0)
    assert len(loader.next_batch()) == 2 and len(loader.next_batch()) == 2
    # Enough questions: the dataset is used as it is.
    assert repeat_to_batch(str(dataset), 4, 4, tmp_path / "other") == str(dataset)


def _labelling_output(folder: Path, valid: int, dropped: dict[str, int]) -> Path:
    """An empty train.parquet and the filter_stats.json the labelling stage writes beside it."""
    from verl.utils.fs import atomic_write_json

    folder.mkdir(parents=True)
    atomic_write_json(
        folder / "filter_stats.json",
        {"questions": 48, "valid": valid, "kept": 0, "dropped_by_reason": dropped},
    )
    return write_dataset(folder / "train.parquet", [])


@pytest.mark.parametrize(
    ("valid", "dropped", "says"),
    [
        # SmolLM2-135M-Instruct's real iteration: no Challenger output parsed.
        (0, {"p_below_band": 0}, "does not write the Challenger's <question>"),
        (5, {"p_below_band": 5}, "dropped {'p_below_band': 5}. Every valid question was dropped"),
    ],
)
def test_an_empty_dataset_stops_the_stage_saying_why(
    tmp_path: Path, valid: int, dropped: dict[str, int], says: str
) -> None:
    """Through the stage entry point, before any model or tokenizer is loaded (the model is fake)."""
    import json

    from training.__main__ import main

    dataset = _labelling_output(tmp_path / "question_evaluate", valid, dropped)
    stage = {
        "stage": "solver",
        "model": "/no/model",
        "out_dir": str(tmp_path / "solver"),
        "dataset": str(dataset),
    }
    (tmp_path / "stage_config.json").write_text(json.dumps(stage))
    with pytest.raises(RuntimeError) as failure:
        main(["--config", str(tmp_path / "stage_config.json")])
    message = str(failure.value)
    assert f"48 questions, {valid} valid, 0 kept" in message and says in message
    assert not (tmp_path / "solver" / "manifest.json").exists()
