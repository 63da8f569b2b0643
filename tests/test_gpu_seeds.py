"""On GPU the stage engines (generation, labelling, evaluation) take one seed per engine, as the
rollout does, not one per request: a seeded request sends vLLM V1 down its slow per-row sampling
path. On CPU every request keeps its own seed (exact resumes). The GPU branch cannot run here: the
engine is replaced by a recorder of what the shard hands it. `seed_mode` (EngineOptions, the pipeline
setting `engine_seed_mode`) picks either on any device: the rehearsal takes the GPU's per_engine."""

from __future__ import annotations

import pytest

import question_evaluate.solver_answers as solver_answers
import question_generate.generate as generate
from evaluation.generate import GenRequest, SamplingConfig, _sampling_params
from infra.vllm_engines import (
    ANSWER_SEED_STREAM,
    GENERATE_SEED_STREAM,
    EngineOptions,
    request_seed,
    request_seeds,
)


def test_request_seeds_per_device_and_mode() -> None:
    assert request_seeds(5, ANSWER_SEED_STREAM, 3, 6, per_request=True) == [
        request_seed(5, ANSWER_SEED_STREAM, i) for i in (3, 4, 5)
    ]
    assert request_seeds(5, ANSWER_SEED_STREAM, 3, 6, per_request=False) == [None, None, None]
    cpu, gpu = EngineOptions(devices=[]), EngineOptions(devices=["0"])
    assert cpu.per_request_seeds() and not gpu.per_request_seeds()  # auto
    assert not EngineOptions(devices=[], seed_mode="per_engine").per_request_seeds()
    assert EngineOptions(devices=["0"], seed_mode="per_request").per_request_seeds()
    # shard folders: a per-engine run's are named apart; a per-request run's keep their old names
    assert cpu.seeding_key() == {} and gpu.seeding_key() == {"seeds": "per_engine"}
    with pytest.raises(ValueError, match="seed_mode='sometimes'"):
        EngineOptions(devices=[], seed_mode="sometimes").per_request_seeds()


class _Recorded(Exception):
    pass


@pytest.mark.parametrize("per_request", [True, False])
def test_generation_and_labelling_shards_seed_requests_as_told(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: str, per_request: bool
) -> None:
    seen: list[list[int | None]] = []

    def recorder(llm, prompt_ids, seeds, *args, **kwargs):
        seen.append(list(seeds))
        raise _Recorded  # the shard's engine work stops here

    for module in (generate, solver_answers):
        monkeypatch.setattr(module, "make_llm", lambda settings, gpu: object())
        monkeypatch.setattr(module, "sample", recorder)
    engine = {"model": tiny_model_dir, "seed": 0}
    with pytest.raises(_Recorded):
        solver_answers._answer_shard(
            {"questions": ["1+1?", "2+2?"], "shard_files": ["unused"], "engine": engine, "seed": 7,
             "on_gpu": False, "per_request_seeds": per_request, "votes": 2, "temperature": 1.0, "top_p": 1.0, "top_k": 40, "max_tokens": 8},
            0,
        )  # fmt: skip
    with pytest.raises(_Recorded):
        generate._generate_shard(
            {"num_questions": 2, "shard_files": ["unused"], "engine": engine, "seed": 7, "on_gpu": False,
             "per_request_seeds": per_request, "variant": "default", "personas": None, "temperature": 1.0, "top_p": 0.95, "max_tokens": 8},
            0,
        )  # fmt: skip
    labelled, generated = seen
    if not per_request:
        assert labelled == [None, None] and generated == [None, None]
    else:
        assert labelled == [request_seed(7, ANSWER_SEED_STREAM, i) for i in (0, 1)]
        assert generated == [request_seed(7, GENERATE_SEED_STREAM, i) for i in (0, 1)]


def test_evaluation_requests_carry_their_seed_only_on_cpu() -> None:
    sampling = SamplingConfig(k=4, temperature=0.6, top_p=0.95, seed=7)
    request = GenRequest([1, 2, 3], sampling, sampling.request_seed(2), (0,), ())
    assert _sampling_params(request, on_gpu=False).seed == 7 + 2 * 4
    assert _sampling_params(request, on_gpu=True).seed is None


def test_the_stage_config_s_seed_mode_reaches_the_shard(
    monkeypatch: pytest.MonkeyPatch, tmp_path, tiny_model_dir
) -> None:
    """GenerateConfig.engine.seed_mode -> the stage's shard spec -> the seeds the engine gets (in this
    process: one CPU shard)."""
    seen: list[list[int | None]] = []

    def recorder(llm, prompt_ids, seeds, *args, **kwargs):
        seen.append(list(seeds))
        raise _Recorded

    monkeypatch.setattr(generate, "make_llm", lambda settings, gpu: object())
    monkeypatch.setattr(generate, "sample", recorder)
    for mode in ("per_engine", "auto"):
        config = generate.GenerateConfig(
            model=tiny_model_dir,
            out_dir=str(tmp_path / mode),
            num_questions=2,
            max_tokens=8,
            seed=7,
            engine=EngineOptions(devices=[], seed_mode=mode),
        )
        with pytest.raises((_Recorded, RuntimeError)):  # the recorder stops the shard
            generate.generate_questions(config)
    assert seen == [[None, None], [request_seed(7, GENERATE_SEED_STREAM, i) for i in (0, 1)]]
