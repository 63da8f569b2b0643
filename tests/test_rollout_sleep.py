"""The rollout's vLLM sleep/wake order and its stop tokens, through the real worker call sequence.

vLLM's sleep and wake are no-ops on CPU, so the engine is wrapped in a stand-in that enforces what
vLLM 0.32 does on GPU (read in vllm/v1/engine/core.py, v1/executor/abstract.py and
v1/core/sched/scheduler.py):
- `sleep(level>=1)` pauses the scheduler and puts "weights" and "kv_cache" to sleep (a no-op on the
  executor when the weights already sleep, the pause still applies);
- `wake_up(tags)` wakes nothing when the executor is awake or when a named tag is not asleep; the
  scheduler resumes only once no tag sleeps ("Partial wakes intentionally keep the remaining
  allocations asleep");
- while paused the scheduler schedules nothing, so `generate` would wait forever: the stand-in
  raises instead; `reload_weights` needs the weights' memory mapped.
The real worker (local mode, one rank, actor + vLLM rollout on CPU) then runs init -> sync ->
generate -> sync -> generate -> score. Before the fix (sync ended with sleep, generate woke only the
KV cache) the first generate hung.

The model is a copy of the tiny model whose tokenizer and generation config end with <|endoftext|>
(a Base model's convention) while its chat template ends turns with <|im_end|>, edited so that
<|im_end|> is every position's most likely token: a rollout that stops only at EOS would repeat it
up to max_tokens.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from verl.trainer.config import CONFIG_DIR, load_config

pytestmark = pytest.mark.slow

MAX_TOKENS = 6


class EngineWouldHang(RuntimeError):
    pass


class SleepRulesEngine:
    """vLLM 0.32's sleep/wake rules around a real (CPU) LLM; records every call."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self.sleeping_tags: set[str] = set()
        self.paused = False
        self.calls: list[tuple] = []

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        self.calls.append(("sleep", level))
        self.paused = True  # EngineCore.sleep pauses the scheduler first, at every level
        if level >= 1 and "weights" not in self.sleeping_tags:  # Executor.sleep: else "already sleeping"
            self.sleeping_tags = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.calls.append(("wake_up", tuple(tags or ())))
        named = set(tags) if tags else set(self.sleeping_tags)
        if self.sleeping_tags and named <= self.sleeping_tags:  # Executor.wake_up's two early returns
            self.sleeping_tags -= named
        if not self.sleeping_tags:  # EngineCore.wake_up: resume only once fully awake
            self.paused = False
        return not self.sleeping_tags

    def generate(self, *args, **kwargs):
        self.calls.append(("generate",))
        if self.paused:
            raise EngineWouldHang(
                f"scheduler paused, asleep: {sorted(self.sleeping_tags)}: generate never returns"
            )
        return self.llm.generate(*args, **kwargs)

    def collective_rpc(self, method: str, *args, **kwargs):
        self.calls.append(("collective_rpc", method))
        if method == "reload_weights" and "weights" in self.sleeping_tags:
            raise RuntimeError("reload_weights into unmapped (sleeping) weight memory")
        return self.llm.collective_rpc(method, *args, **kwargs)

    def reset_prefix_cache(self, *args, **kwargs):
        self.calls.append(("reset_prefix_cache",))
        return self.llm.reset_prefix_cache(*args, **kwargs)


def _im_end_model(src: str, dst: Path) -> int:
    """Copy of the tiny model whose head makes <|im_end|> the argmax everywhere; returns its id.

    Hidden dimension 0 is made a positive constant (embeddings set to 10 there, every layer's
    output projections write 0 to it), and an untied head reads only that dimension for <|im_end|>.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|endoftext|>" and "<|im_end|>" in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32)
    with torch.no_grad():
        head = model.model.embed_tokens.weight.detach().clone()
        model.model.embed_tokens.weight[:, 0] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        head[:, 0] = 0.0
        head[im_end, 0] = 1000.0
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(head.shape[1], head.shape[0], bias=False)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(dst)
    config = json.loads((dst / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    return im_end


def _run_sequence(config, prompts_raw: list[list[int]]) -> dict:
    """In a spawned rank: the worker's call sequence with the stand-in engine (sleep mode forced on)."""
    from verl.utils.dataset import collate
    from verl.workers.fsdp_workers import FSDPWorker
    from verl.workers.local import LocalWorkerGroup

    class RuleCheckedWorker(FSDPWorker):
        def _rollout_overrides(self) -> dict:
            return {"wrap_engine": SleepRulesEngine, "sleep_mode": True}

    group = LocalWorkerGroup(RuleCheckedWorker(config, role="actor_rollout"))
    group.init_model()
    engine = group.worker.rollout.llm
    rows = [{"raw_prompt_ids": ids} for ids in prompts_raw]
    batch = collate(rows, pad_token_id=0)
    marks = {"init": len(engine.calls)}
    responses = []
    for step in (1, 2):
        group.sync_rollout_weights()
        marks[f"sync{step}"] = len(engine.calls)
        out = group.generate_sequences(batch)
        responses.append([list(r) for r in out.non_tensor_batch["response_ids"]])
        marks[f"generate{step}"] = len(engine.calls)
        assert engine.sleeping_tags == {"weights", "kv_cache"}, "vLLM must sleep during the actor's passes"
    seq = prompts_raw[0] + responses[-1][0]
    scores = group.score_with_rollout([seq], [len(prompts_raw[0])])[0]
    vllm_config = engine.llm.llm_engine.vllm_config  # what vLLM resolved from the rollout settings
    return {
        "runner_env": os.environ.get("VLLM_USE_V2_MODEL_RUNNER"),
        "use_v2_model_runner": vllm_config.use_v2_model_runner,
        "max_num_seqs": vllm_config.scheduler_config.max_num_seqs,
        "calls": engine.calls,
        "marks": marks,
        "responses": responses,
        "scores": scores,
        "stop_ids": group.worker.rollout.stop_token_ids,
        "asleep": sorted(engine.sleeping_tags),
    }


@pytest.fixture(scope="module")
def sequence(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from transformers import AutoTokenizer

    from verl.workers.local import run_local

    model = tmp_path_factory.mktemp("im_end") / "model"
    im_end = _im_end_model(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for text in ("what is two plus two", "name a prime", "hello there")
    ]
    config = load_config(
        [
            f"config={CONFIG_DIR / 'toy.yaml'}",
            f"worker.actor.model.model_path={model}",
            "trainer.device=cpu",
            "trainer.n_devices_per_node=1",
            f"data.max_response_length={MAX_TOKENS}",
            "worker.rollout.n=2",
            "worker.rollout.max_num_seqs=24",
        ]
    )
    result = run_local(_run_sequence, 1, config, prompts)[0]
    result["im_end"], result["eos"] = im_end, tok.eos_token_id
    return result


def test_stand_in_enforces_vllm_rules_on_the_old_order() -> None:
    """The order before the fix: sleep after the sync, then wake only the KV cache and generate."""
    engine = SleepRulesEngine(llm=None)
    engine.sleep(level=1)  # end of sync_rollout_weights
    assert engine.wake_up(tags=["kv_cache"]) is False  # generate_sequences woke only the KV cache
    with pytest.raises(EngineWouldHang):
        engine.generate([])
    with pytest.raises(RuntimeError, match="unmapped"):
        engine.collective_rpc("reload_weights")
    assert engine.wake_up(tags=["kv_cache"]) is False  # a tag that is not asleep: nothing wakes
    assert engine.wake_up(tags=["weights"]) is True and not engine.paused


def test_worker_sequence_follows_the_sleep_rules(sequence: dict) -> None:
    calls, marks = sequence["calls"], sequence["marks"]
    assert calls[: marks["init"]] == [("sleep", 1)]  # the engine sleeps until it is needed
    for step in (1, 2):
        start = marks["init"] if step == 1 else marks["generate1"]
        sync = calls[start : marks[f"sync{step}"]]
        # Weights wake for the reload; the KV cache stays asleep through the sync.
        assert sync == [
            ("wake_up", ("weights",)),
            ("collective_rpc", "reload_weights"),
            ("reset_prefix_cache",),
        ]
        gen = calls[marks[f"sync{step}"] : marks[f"generate{step}"]]
        assert gen == [("wake_up", ("kv_cache",)), ("generate",), ("sleep", 1)]
    score = calls[marks["generate2"] :]
    assert score == [("wake_up", ("weights", "kv_cache")), ("generate",), ("sleep", 1)]
    assert sequence["asleep"] == ["kv_cache", "weights"]
    assert len(sequence["scores"]) == len(sequence["responses"][-1][0])


def test_rollout_engine_gets_the_runner_and_batch_settings(sequence: dict) -> None:
    """worker.rollout.model_runner (v1 by default) and max_num_seqs reach the engine vLLM builds."""
    assert sequence["runner_env"] == "0" and sequence["use_v2_model_runner"] is False
    assert sequence["max_num_seqs"] == 24


def test_rollout_stops_at_the_chat_templates_end_of_turn(sequence: dict) -> None:
    im_end, eos = sequence["im_end"], sequence["eos"]
    assert im_end != eos and set(sequence["stop_ids"]) == {im_end, eos}
    # 3 prompts x n=2 responses, each exactly <|im_end|>; stopping only at EOS would give
    # MAX_TOKENS copies of it (the edited head makes it every position's likeliest token).
    for responses in sequence["responses"]:
        assert responses == [[im_end]] * 6
