"""Per-step metrics from a finished batch: rewards, advantages, lengths, timings, throughput."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from verl.protocol import DataProto


@contextmanager
def timer(name: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _stats(prefix: str, values: torch.Tensor | np.ndarray) -> dict[str, float]:
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.numel() == 0:
        return {}
    return {
        f"{prefix}/mean": values.mean().item(),
        f"{prefix}/max": values.max().item(),
        f"{prefix}/min": values.min().item(),
    }


def data_metrics(
    batch: DataProto, reward_metrics: dict[str, list[float]], max_response_length: int
) -> dict[str, float]:
    """Reward (and every extra reward key), advantage, response/prompt length statistics."""
    metrics: dict[str, float] = {}
    response_mask = batch.batch["response_mask"].bool()
    response_length = response_mask.sum(-1).float()
    prompt_length = (batch.batch["attention_mask"].sum(-1) - response_mask.sum(-1)).float()
    advantages = batch.batch["advantages"][response_mask]
    metrics.update(_stats("reward", batch.batch["token_level_scores"].sum(-1)))
    for key, values in reward_metrics.items():
        if key != "overall" and values:
            # "group/name" keys name their own group (the reward's `timing_s/...`, `perf/...`: wall
            # time and memory, which a resumed run does not reproduce); others are `reward/<key>`.
            metrics[key if "/" in key else f"reward/{key}"] = float(np.mean(values))
    metrics.update(_stats("critic/advantages", advantages))
    metrics.update(_stats("response_length", response_length))
    metrics["response_length/clip_ratio"] = (response_length >= max_response_length).float().mean().item()
    metrics.update(_stats("prompt_length", prompt_length))
    return metrics


def throughput_metrics(
    batch: DataProto,
    timings: dict[str, float],
    n_devices: int,
    model_config=None,
    peak_tflops: float | None = None,
) -> dict[str, float]:
    """Tokens/s per device over the whole step; MFU of the actor update where the device peak is known."""
    from verl.utils.flops_counter import estimate_flops, mfu

    seqlens = batch.batch["attention_mask"].sum(-1).tolist()
    tokens = int(sum(seqlens))
    step_s = timings.get("step", 0.0)
    metrics = {"perf/total_tokens": float(tokens)}
    if step_s > 0:
        metrics["perf/tokens_per_s_per_device"] = tokens / step_s / n_devices
    update_s = timings.get("update_actor", 0.0)
    if model_config is not None and peak_tflops and update_s > 0:
        achieved, _ = estimate_flops(model_config, seqlens, update_s)
        value = mfu(achieved, n_devices, peak_tflops)
        if value is not None:
            metrics["perf/mfu_update_actor"] = value
    return metrics
