"""Data-parallel actor: log-prob passes and the PPO/GRPO update of an FSDP2 module.

Batch layout (one rank's shard, bs = sequences, P = prompt length, R = response length); every
tensor is on the module's device (the worker moves the batch there on entry):
    input_ids       (bs, P + R)  left-padded prompt followed by the right-padded response
    attention_mask  (bs, P + R)
    position_ids    (bs, P + R)
    responses       (bs, R)
    response_mask   (bs, R)      1 on generated tokens up to and including EOS
    old_log_probs   (bs, R)      from `compute_log_prob` before the update
    ref_log_probs   (bs, R)      from the reference model (when the KL loss is on)
    advantages      (bs, R)

Micro-batches are cut by a token budget (`max_tokens_per_micro_batch_*`, verl/utils/micro_batching.py)
or, when the budget is 0 or the loss is "microbatch-token-mean" (whose value depends on how rows are
grouped), by a fixed number of rows.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.trainer import core_algos
from verl.trainer.config import ActorConfig, AlgorithmConfig
from verl.utils import fsdp_utils
from verl.utils import torch_functional as VF
from verl.utils.micro_batching import budget_partition, split_to_count
from verl.workers.actor import forward

_LOG_PROB_KEYS = ["input_ids", "attention_mask", "position_ids", "responses"]
# Packed sequences through SDPA (the CPU path: no flash-attn varlen) attend through a dense
# block-diagonal (L x L) mask over the whole packed micro-batch: time and memory grow with the square
# of the token budget. At the rehearsal's shapes (512 x 4 rollouts on one rank) the default budgets
# packed 32,768 tokens into one row: a 1 G-entry mask, 7 GB of RSS and minutes per pass on the
# 0.5 M-parameter tiny model. There, micro-batches hold at most this many tokens (a longer row alone).
# 512 rather than 2,048: one thread, forward + backward of the same rows (scripts/bench_packed_sdpa.py)
# takes 0.60 s instead of 1.23 s for 128 rows of the tiny model (6,209 tokens) and 35.0 s instead of
# 43.4 s for 16 rows of SmolLM2-135M (3,457 tokens); 256 gains little more. flash-attn keeps the
# configured budget.
PACKED_SDPA_MAX_TOKENS = 512


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """In place over the default group when there is one (even of one rank: the one-GPU device
    check then exercises the collective). The tensor stays on its device, so a NCCL group reduces
    a CUDA tensor and a gloo group a CPU one."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


class DataParallelPPOActor:
    """Computes log-probs in micro-batches and runs the clipped policy-gradient update."""

    def __init__(
        self,
        config: ActorConfig,
        algorithm: AlgorithmConfig,
        module: torch.nn.Module,
        rollout_n: int,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        padding_free: bool = False,
    ) -> None:
        self.config = config
        self.algorithm = algorithm
        self.module = forward.attach_response_log_probs(module)
        self.rollout_n = rollout_n
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.padding_free = padding_free
        self.dp_size = dist.get_world_size() if dist.is_initialized() else 1

    # ---- micro-batches --------------------------------------------------------------------------

    def micro_batches(self, data: DataProto, max_tokens: int, rows: int) -> tuple[list[DataProto], list[int]]:
        """Split `data` into micro-batches; returns them and the row order they cover.

        With a token budget (`max_tokens` > 0) rows are grouped by length and every rank uses the
        same number of micro-batches; otherwise consecutive runs of `rows` rows.
        """
        if max_tokens <= 0:
            return data.split(rows), list(range(len(data)))
        if self.padding_free and self._attention() == "sdpa":
            max_tokens = min(max_tokens, PACKED_SDPA_MAX_TOKENS)
        mask = data.batch["attention_mask"]
        resp_len = data.batch["responses"].shape[1]
        lengths = torch.stack([mask[:, :-resp_len].sum(-1), mask[:, -resp_len:].sum(-1)]).tolist()
        groups = budget_partition(lengths[0], lengths[1], max_tokens, padded=not self.padding_free)
        count = torch.tensor(len(groups), device=mask.device)
        count = int(_all_reduce(count, dist.ReduceOp.MAX).item())
        groups = split_to_count(groups, count, lengths[0], lengths[1], padded=not self.padding_free)
        return [data.index_select(g) for g in groups], [r for g in groups for r in g]

    def _attention(self) -> str:
        """The module's attention implementation (transformers' config: "sdpa", "flash_attention_2")."""
        config = getattr(self.module, "config", None)
        return str(getattr(config, "_attn_implementation", None) or "")

    def _log_probs(
        self, micro: DataProto, temperature: float, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs of the responses at `temperature`: (bs, R); entropy (bs, R) if asked."""
        b = micro.batch
        return forward.response_log_probs(
            self.module,
            b["input_ids"],
            b["attention_mask"],
            b["position_ids"],
            b["responses"],
            temperature,
            self.padding_free,
            with_entropy,
        )

    # ---- passes ---------------------------------------------------------------------------------

    @torch.no_grad()
    def compute_log_prob(
        self, data: DataProto, temperature: float, micro_batch_size: int, max_tokens: int = 0
    ) -> torch.Tensor:
        """Log-probs of `data`'s responses under the current module: (bs, R), in `data`'s row order."""
        self.module.eval()
        micros, order = self.micro_batches(data.select(_LOG_PROB_KEYS), max_tokens, micro_batch_size)
        resp_len = data.batch["responses"].shape[-1]
        out = torch.zeros(len(data), resp_len, device=data.batch["responses"].device)
        if micros:
            values = torch.cat([self._log_probs(micro, temperature)[0] for micro in micros], dim=0)
            out[torch.tensor(order, device=out.device)] = values.to(out.dtype)
        # FSDP2 keeps the root's parameters (embedding, head) unsharded after a forward, expecting
        # a backward; after a no-grad pass nothing reshards them, so the full embedding would stay.
        fsdp_utils.reshard_root(self.module)
        return out

    def update_policy(self, data: DataProto, temperature: float) -> dict[str, float]:
        """One pass (ppo_epochs times) over `data` in mini-batches of prompts_per_update*n/dp rows."""
        assert self.optimizer is not None
        cfg = self.config
        self.module.train()
        mini_rows = cfg.prompts_per_update * self.rollout_n // self.dp_size
        keys = [*_LOG_PROB_KEYS, "response_mask", "old_log_probs", "advantages"]
        if self.algorithm.use_kl_loss:
            keys.append("ref_log_probs")
        metrics: dict[str, list[float]] = defaultdict(list)
        for _ in range(cfg.ppo_epochs):
            for mini in data.select(keys).split(mini_rows):
                self._update_mini_batch(mini, temperature, metrics)
        return {key: float(sum(values) / len(values)) for key, values in metrics.items() if values}

    def _update_micro_batches(self, mini: DataProto) -> list[DataProto]:
        cfg = self.config
        # The authors' loss is each micro-batch's own token mean: the row grouping is part of the
        # method there, so it keeps fixed micro-batches of their size.
        budget = (
            0 if cfg.loss_agg_mode == "microbatch-token-mean" else cfg.max_tokens_per_micro_batch_for_update
        )
        return self.micro_batches(mini, budget, cfg.micro_batch_size_per_device_for_update)[0]

    def _update_mini_batch(
        self, mini: DataProto, temperature: float, metrics: dict[str, list[float]]
    ) -> None:
        cfg = self.config
        micro_batches = self._update_micro_batches(mini)
        # Normalisers over the whole mini-batch on all ranks, so that the micro-batch losses add up
        # to the mini-batch loss (see core_algos.agg_loss). Counted on the device: a NCCL group
        # cannot reduce a CPU tensor.
        counts = _all_reduce(torch.stack(core_algos.count_tokens_and_seqs(mini.batch["response_mask"])))
        agg = {
            "global_tokens": counts[0],
            "global_seqs": counts[1],
            "dp_size": self.dp_size,
            "grad_accum_steps": len(micro_batches),
        }
        loss_total = torch.zeros((), device=counts.device)
        for micro in micro_batches:
            resp_mask = micro.batch["response_mask"]
            log_probs, entropy = self._log_probs(micro, temperature, with_entropy=True)
            pg_loss, pg_metrics = core_algos.compute_policy_loss(
                micro.batch["old_log_probs"],
                log_probs,
                micro.batch["advantages"],
                resp_mask,
                cfg.clip_ratio_low,
                cfg.clip_ratio_high,
                cfg.clip_ratio_dual,
                cfg.loss_agg_mode,
                **agg,
            )
            loss = pg_loss
            if self.algorithm.use_kl_loss:
                ref = micro.batch["ref_log_probs"]
                kl_loss = core_algos.compute_kl_loss(
                    log_probs, ref, resp_mask, self.algorithm.kl_penalty, cfg.loss_agg_mode, **agg
                )
                loss = loss + self.algorithm.kl_coef * kl_loss
                kl = core_algos.compute_kl(log_probs.detach(), ref, self.algorithm.kl_penalty)
                metrics["actor/kl"].append(VF.masked_mean(kl, resp_mask).item())
            loss.backward()
            loss_total += loss.detach()
            metrics["actor/entropy"].append(VF.masked_mean(entropy, resp_mask).item())
            for key, value in pg_metrics.items():
                metrics[f"actor/{key}"].append(float(value))
        # Each rank's sum is its share x dp_size (agg_loss): the mean over ranks is the mini-batch loss.
        metrics["actor/loss"].append(_all_reduce(loss_total).item() / self.dp_size)
        grad_norm = fsdp_utils.clip_grad_norm(self.module.parameters(), cfg.max_grad_norm)
        metrics["actor/grad_norm"].append(grad_norm)
        if math.isfinite(grad_norm):
            self.optimizer.step()
            metrics["actor/skipped_updates"].append(0.0)
        else:  # a non-finite gradient would poison the weights: drop this update
            metrics["actor/skipped_updates"].append(1.0)
        self.optimizer.zero_grad(set_to_none=True)
        if self.lr_scheduler is not None:
            metrics["actor/lr"].append(self.lr_scheduler.get_last_lr()[0])
            self.lr_scheduler.step()
