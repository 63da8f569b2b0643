"""On GPU the stage engines (generation, labelling, evaluation) take one seed per engine, as the
rollout does, not one per request: a seeded request sends vLLM V1 down its slow per-row sampling
path. On CPU every request keeps its own seed (exact resumes). The GPU branch cannot run here: the
engine is replaced by a recorder of what the shard hands it."""

from __future__ import annotations

import pytest

import question_evaluate.solver_answers as solver_answers
import question_generate.generate as generate
from evaluation.generate import GenRequest, SamplingConfig, _sampling_params
from infra.vllm_engines import ANSWER_SEED_STREAM, GENERATE_SEED_STREAM, request_seed, request_seeds


def test_request_seeds_per_device() -> None:
    assert request_seeds(5, ANSWER_SEED_STREAM, 3, 6, on_gpu=False) == [
        request_seed(5, ANSWER_SEED_STREAM, i) for i in (3, 4, 5)
    ]
    assert request_seeds(5, ANSWER_SEED_STREAM, 3, 6, on_gpu=True) == [None, None, None]


class _Recorded(Exception):
    pass


@pytest.mark.parametrize("on_gpu", [False, True])
def test_generation_and_labelling_shards_seed_requests_only_on_cpu(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: str, on_gpu: bool
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
             "on_gpu": on_gpu, "votes": 2, "temperature": 1.0, "top_p": 1.0, "top_k": 40, "max_tokens": 8},
            0,
        )  # fmt: skip
    with pytest.raises(_Recorded):
        generate._generate_shard(
            {"num_questions": 2, "shard_files": ["unused"], "engine": engine, "seed": 7, "on_gpu": on_gpu,
             "variant": "default", "personas": None, "temperature": 1.0, "top_p": 0.95, "max_tokens": 8},
            0,
        )  # fmt: skip
    labelled, generated = seen
    if on_gpu:
        assert labelled == [None, None] and generated == [None, None]
    else:
        assert labelled == [request_seed(7, ANSWER_SEED_STREAM, i) for i in (0, 1)]
        assert generated == [request_seed(7, GENERATE_SEED_STREAM, i) for i in (0, 1)]


def test_evaluation_requests_carry_their_seed_only_on_cpu() -> None:
    sampling = SamplingConfig(k=4, temperature=0.6, top_p=0.95, seed=7)
    request = GenRequest([1, 2, 3], sampling, sampling.request_seed(2), (0,), ())
    assert _sampling_params(request, on_gpu=False).seed == 7 + 2 * 4
    assert _sampling_params(request, on_gpu=True).seed is None
