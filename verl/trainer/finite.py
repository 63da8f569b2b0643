"""Stop a run at the first non-finite log-prob, loss or gradient norm, and say where to resume.

A NaN that reaches the weights is saved in every later checkpoint and silently ruins the rest of a
run that may last days. The actor already skips an optimizer step whose gradient norm is not
finite; the trainer then stops at that step, before the weight sync and the checkpoint, so the last
checkpoint on disk is the last good state. (On CUDA the padded SDPA fallback is one known source:
fully masked left-padding rows.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from verl.protocol import DataProto
from verl.utils import checkpoint as ckpt

# Per-step metrics of the update that must be finite (those the actor reports).
UPDATE_METRICS = ("actor/loss", "actor/grad_norm", "actor/kl", "actor/pg_loss")
LOG_PROB_KEYS = ("old_log_probs", "ref_log_probs")


class NonFiniteError(RuntimeError):
    """A training step produced NaN or inf; the message names the step, the metric and the resume point."""


def _resume_point(output_dir: str | Path) -> str:
    step = ckpt.latest_step(output_dir)
    if step is None:
        return "no checkpoint was written yet: a rerun starts from step 1"
    return (
        f"the last checkpoint is {ckpt.step_dir(output_dir, step)} (step {step}), which a rerun resumes from"
    )


def _stop(step: int, what: str, output_dir: str | Path, hint: str = "") -> NonFiniteError:
    return NonFiniteError(
        f"training stopped at step {step}: {what}; nothing of this step was applied or saved; "
        f"{_resume_point(output_dir)}{hint}"
    )


def check_log_probs(step: int, batch: DataProto, output_dir: str | Path) -> None:
    """Raise NonFiniteError if a log-prob of a response token (response_mask) is NaN or inf.

    batch.batch: `response_mask` (B, R) and any of `old_log_probs`, `ref_log_probs` (B, R).
    """
    mask = batch.batch["response_mask"].bool()
    for key in LOG_PROB_KEYS:
        if key not in batch.batch:
            continue
        values = batch.batch[key][mask]
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            raise _stop(
                step,
                f"{key} has {int(bad.sum())} non-finite value(s) of {values.numel()} response tokens",
                output_dir,
            )


def check_update(
    step: int, metrics: Mapping[str, float], output_dir: str | Path, scores: torch.Tensor | None = None
) -> None:
    """Raise NonFiniteError if an update metric (loss, grad norm, KL) is NaN or inf.

    `scores` (B, R), the step's token-level rewards, only adds the likely cause to the message.
    """
    for key in UPDATE_METRICS:
        value = metrics.get(key)
        if value is not None and not math.isfinite(float(value)):
            hint = ""
            if scores is not None and not bool(torch.isfinite(scores).all()):
                hint = "; the reward function returned non-finite scores at this step (check it)"
            raise _stop(step, f"{key} = {value}", output_dir, hint)
