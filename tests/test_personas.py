"""The `persona` Challenger prompt (RZERO_SPEC.md section 2, issue 17 item 9): a persona replaces the
role sentence, drawn per prompt and seeded from a persona list file (configs/personas.txt ships;
`--set challenger.persona_file=FILE` takes a user's), the same in the Challenger's GRPO and in
question generation; a missing or empty file is an error before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline.config import load_pipeline_config
from pipeline.launch import challenger_config, generate_config
from pipeline.planner import plan_devices
from question_generate.generate import (
    GenerateConfig,
    challenger_prompt_ids,
    generate_questions,
    prompt_settings,
)
from rzero.prompts import (
    MATH_ROLE_SENTENCE,
    MATH_TASK,
    PERSONA_FILE,
    challenger_prompt_records,
    load_personas,
)
from training.common import TrainStageConfig, build_engine_config
from verl.trainer.config import ConfigError
from verl.trainer.ray_trainer import build_dataset

USER_PERSONAS = [
    "a lighthouse keeper who counts ships",
    "",
    "  a baker obsessed with ratios  ",
    "a chess arbiter",
]


def _persona_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "personas.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _persona_of(record: dict) -> str:
    system = record["messages"][0]["content"]
    assert system.startswith("You are ") and f". {MATH_TASK} " in system
    return system[len("You are ") : system.index(f". {MATH_TASK}")]


def test_the_persona_replaces_the_role_sentence(tmp_path: Path) -> None:
    file = _persona_file(tmp_path, USER_PERSONAS)
    assert load_personas(file) == (
        "a lighthouse keeper who counts ships",
        "a baker obsessed with ratios",
        "a chess arbiter",
    )
    default = challenger_prompt_records(1)[0]["messages"][0]["content"]
    for record in challenger_prompt_records(6, "persona", persona_file=str(file)):
        system = record["messages"][0]["content"]
        assert MATH_ROLE_SENTENCE not in system and "expert setter" not in system
        assert _persona_of(record) in load_personas(file)
        # nothing else changes: the persona's sentence in place of the role sentence
        assert system == default.replace(MATH_ROLE_SENTENCE, f"You are {_persona_of(record)}.")
    shipped = {_persona_of(r) for r in challenger_prompt_records(40, "persona")}
    assert shipped <= set(load_personas(PERSONA_FILE)) and len(shipped) > 1


def test_the_draw_is_per_prompt_and_seeded(tmp_path: Path) -> None:
    file = str(_persona_file(tmp_path, [f"persona number {k}" for k in range(8)]))
    draws = [_persona_of(r) for r in challenger_prompt_records(64, "persona", persona_file=file, seed=3)]
    assert len(set(draws)) >= 6  # one draw per prompt, not one persona for the run
    assert draws != sorted(draws, key=lambda p: int(p.split()[-1]))  # not cycled in file order
    again = [_persona_of(r) for r in challenger_prompt_records(64, "persona", persona_file=file, seed=3)]
    other = [_persona_of(r) for r in challenger_prompt_records(64, "persona", persona_file=file, seed=4)]
    first = [_persona_of(r) for r in challenger_prompt_records(10, "persona", persona_file=file, seed=3)]
    assert again == draws and other != draws and first == draws[:10]  # prompt i's draw depends on (seed, i)


def test_a_users_file_reaches_training_and_generation(
    tmp_path: Path, tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    file = _persona_file(tmp_path, USER_PERSONAS)
    pipe = load_pipeline_config(sets=["prompt_variant=persona", f"challenger.persona_file={file}", "seed=5"])
    plan = plan_devices(None, None, pipe.cpu_ranks)
    # The Challenger's GRPO: the stage config the driver launches, the engine's own dataset builder.
    stage = challenger_config(pipe, plan, tiny_model_dir, tiny_model_dir, tmp_path / "c", pipe.seed)
    engine = build_engine_config(stage)
    engine.data.prompt_source_kwargs["num_prompts"] = 12
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    grpo = [list(row["raw_prompt_ids"]) for row in build_dataset(engine, tokenizer, "").rows]
    texts = [tokenizer.decode(ids) for ids in grpo]
    assert all(MATH_ROLE_SENTENCE not in t for t in texts)
    assert {p for p in load_personas(file) if any(f"You are {p}." in t for t in texts)} == set(
        load_personas(file)
    )
    # Question generation with the same seed: the same prompt for the same index.
    gen = generate_config(pipe, plan, tiny_model_dir, tmp_path / "g", pipe.seed)
    assert gen.persona_file == str(file) and gen.variant == "persona"
    assert challenger_prompt_ids(tokenizer, prompt_settings(gen), 0, 12) == grpo


@pytest.mark.parametrize("lines", [None, ["", "   "]], ids=["missing", "empty"])
def test_a_bad_persona_file_fails_before_any_model_loads(
    tmp_path: Path, tiny_model_dir: str, lines: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "personas.txt" if lines is None else _persona_file(tmp_path, lines)
    expected = "does not exist" if lines is None else "holds no persona"
    with pytest.raises(ConfigError, match=expected):
        load_pipeline_config(sets=["prompt_variant=persona", f"challenger.persona_file={file}"])
    with pytest.raises(ConfigError, match="only used by the 'persona' variant"):
        load_pipeline_config(sets=[f"challenger.persona_file={PERSONA_FILE}"])
    # The stages on their own: question generation and the Challenger's GRPO stage.
    with pytest.raises(ValueError, match=expected):
        generate_questions(GenerateConfig(tiny_model_dir, str(tmp_path / "g"), 4, "persona", str(file)))
    assert not (tmp_path / "g" / "shards").exists()  # no shard (no engine) started

    from training import challenger as challenger_stage

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Solver servers were started before the persona file was checked")

    monkeypatch.setattr(challenger_stage, "SolverService", no_model)
    kw = "data.prompt_source_kwargs"
    stage = TrainStageConfig(
        stage="challenger",
        model=tiny_model_dir,
        solver_model=tiny_model_dir,
        out_dir=str(tmp_path / "c"),
        engine_args=[f"{kw}.variant=persona", f"{kw}.persona_file={file}"],
    )
    with pytest.raises(ValueError, match=expected):
        challenger_stage.run_challenger_stage(stage)
