"""GRPO math: advantage estimators, KL estimators, the clipped policy loss and loss aggregation.

Shapes: `bs` = responses in the (micro-)batch, `L` = padded response length, `V` = vocabulary size.
`response_mask` is (bs, L) with 1 on response tokens and 0 on padding.

Two registries let the config name a variant by string (the config validation imports them):
    ADV_ESTIMATORS  name -> fn(token_level_rewards, response_mask, index, **kwargs) -> (advantages, returns)
    KL_ESTIMATORS   name -> fn(log_prob, ref_log_prob) -> per-token KL (bs, L)
Estimators accept and ignore keyword arguments they do not use, so the trainer can hand every
estimator the same kwargs (eps, gamma, norm_adv_by_std) whichever the config selects.

Formulas follow EasyR1 / verl; differences are noted where
they exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from verl.utils import torch_functional as VF

AdvEstimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]
KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "microbatch-token-mean")

ADV_ESTIMATORS: dict[str, AdvEstimator] = {}
KL_ESTIMATORS: dict[str, KLEstimator] = {}


# ----------------------------------------------------------------------------- advantage estimators


def register_adv_estimator(name: str) -> Callable[[AdvEstimator], AdvEstimator]:
    """Decorator that registers an advantage estimator under `name` in ADV_ESTIMATORS.

    The function must have the signature
    `fn(token_level_rewards (bs, L), response_mask (bs, L), index (bs,) np.ndarray, **kwargs)
    -> (advantages (bs, L), returns (bs, L))`. Registering a name twice raises ValueError.
    """

    def decorator(fn: AdvEstimator) -> AdvEstimator:
        if name in ADV_ESTIMATORS:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        ADV_ESTIMATORS[name] = fn
        return fn

    return decorator


def get_adv_estimator(name: str) -> AdvEstimator:
    """The advantage estimator registered as `name`; KeyError listing the known names otherwise."""
    if name not in ADV_ESTIMATORS:
        raise KeyError(f"unknown advantage estimator '{name}': known are {', '.join(sorted(ADV_ESTIMATORS))}")
    return ADV_ESTIMATORS[name]


def _group_ids(index: np.ndarray | list | torch.Tensor, batch_size: int) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids (uuid strings, ints) to 0..G-1.

    Returns:
        (ids (bs,) int64 on CPU, G).
    """
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    index = np.asarray(index)
    if index.shape != (batch_size,):
        raise ValueError(
            f"index has shape {index.shape}, expected ({batch_size},): one group id per response"
        )
    _, inverse = np.unique(index, return_inverse=True)
    ids = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
    return ids, int(ids.max()) + 1 if batch_size else 0


def _group_stats(scores: torch.Tensor, ids: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, ...]:
    """Per-group size, sum, mean and unbiased std of `scores`.

    Args:
        scores: (bs,) float64 on CPU.
        ids: (bs,) int64 group index in 0..G-1.

    Returns:
        (count, total, mean, std), each (G,) float64. Groups of size 1 get mean 0 and std 1, as in
        EasyR1/verl: a lone response is compared with nothing, so its raw score passes through.
    """
    count = torch.bincount(ids, minlength=num_groups).to(scores.dtype)
    total = torch.zeros(num_groups, dtype=scores.dtype).index_add_(0, ids, scores)
    mean = total / count
    sq_dev = torch.zeros(num_groups, dtype=scores.dtype).index_add_(0, ids, (scores - mean[ids]) ** 2)
    single = count < 2
    std = torch.sqrt(sq_dev / (count - 1).clamp_min(1))
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return count, total, mean, std


def _outcome_scores(token_level_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """One score per response: the sum of its token rewards over valid tokens, (bs, L) -> (bs,) float64 CPU.

    Group statistics run in float64 on the CPU: the batch is at most a few thousand numbers, and
    this keeps them deterministic (no atomic adds) and exact to well below the tests' tolerances.
    """
    return VF.masked_sum(token_level_rewards, response_mask, dim=-1).detach().double().cpu()


def _broadcast_to_tokens(
    per_response: torch.Tensor, response_mask: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """(bs,) float64 CPU -> (bs, L) on `like`'s device and dtype, zero on masked tokens."""
    values = per_response.to(device=like.device, dtype=like.dtype).unsqueeze(-1)
    return values * response_mask.to(like.dtype)


@register_adv_estimator("grpo")
@torch.no_grad()
def compute_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    norm_adv_by_std: bool = True,
    eps: float = 1e-6,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage: each response's score against the other responses to its prompt.

    score_i = sum of the token rewards of response i (valid tokens only);
    A_i = (score_i - mean_g) / (std_g + eps) with the unbiased std of group g = index[i], or
    A_i = score_i - mean_g when norm_adv_by_std is False (Dr.GRPO). A_i is put on every valid token.

    Edge cases: all-equal scores in a group give A = 0 (0 / eps); a group of size 1 uses mean 0 and
    std 1 as EasyR1/verl do, so its advantage is its raw score (score / (1 + eps) with std norm).

    Args:
        token_level_rewards: (bs, L) rewards, usually zero except at the last valid token.
        response_mask: (bs, L) 1 on response tokens.
        index: (bs,) group id of each response (the prompt's uid); any hashable, sortable values.
        norm_adv_by_std: divide by the group std (GRPO) or not (Dr.GRPO).
        eps: added to the std.
        **kwargs: ignored (see module docstring).

    Returns:
        (advantages, returns), both (bs, L) and equal, zero on masked tokens.
    """
    scores = _outcome_scores(token_level_rewards, response_mask)
    ids, num_groups = _group_ids(index, scores.shape[0])
    _, _, mean, std = _group_stats(scores, ids, num_groups)
    advantage = scores - mean[ids]
    if norm_adv_by_std:
        advantage = advantage / (std[ids] + eps)
    advantages = _broadcast_to_tokens(advantage, response_mask, token_level_rewards)
    return advantages, advantages


@register_adv_estimator("dr_grpo")
@torch.no_grad()
def compute_dr_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr.GRPO advantage: score_i - mean of its group, no division by the std.

    The same as "grpo" with norm_adv_by_std=False (which this name always uses, whatever
    `norm_adv_by_std` the caller passes). Shapes and edge cases as in compute_grpo_outcome_advantage:
    (bs, L), (bs, L), (bs,) -> ((bs, L), (bs, L)); a group of size 1 keeps its raw score.
    """
    kwargs.pop("norm_adv_by_std", None)
    return compute_grpo_outcome_advantage(
        token_level_rewards, response_mask, index, norm_adv_by_std=False, **kwargs
    )


@register_adv_estimator("rloo")
@torch.no_grad()
def compute_rloo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO (leave-one-out) advantage: A_i = score_i - mean of the other responses of its group.

    Equivalently (n * score_i - sum_g) / (n - 1) for a group of n > 1. A group of size 1 has no
    other member; as in verl its baseline is 0 and it keeps its raw score. All-equal scores give 0.

    Args:
        token_level_rewards: (bs, L).
        response_mask: (bs, L).
        index: (bs,) group id of each response.
        **kwargs: ignored.

    Returns:
        (advantages, returns), both (bs, L) and equal, zero on masked tokens.
    """
    scores = _outcome_scores(token_level_rewards, response_mask)
    ids, num_groups = _group_ids(index, scores.shape[0])
    count, total, _, _ = _group_stats(scores, ids, num_groups)
    n = count[ids]
    # For n = 1 the numerator is 0, so the baseline is 0 and the raw score passes through.
    others_mean = (total[ids] - scores) / (n - 1).clamp_min(1)
    advantage = scores - others_mean
    advantages = _broadcast_to_tokens(advantage, response_mask, token_level_rewards)
    return advantages, advantages


@register_adv_estimator("reinforce_plus_plus")
@torch.no_grad()
def compute_reinforce_plus_plus_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    gamma: float = 1.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ advantage: discounted returns per token, whitened over the whole batch.

    G_t = r_t + gamma * G_{t+1}, where the running return is reset to 0 at every masked position
    (so padding after the response never leaks into it); advantages = masked_whiten(G, mask) * mask.
    Groups play no role (`index` is accepted for the uniform signature). Needs at least two valid
    tokens in the batch (an unbiased variance).

    Args:
        token_level_rewards: (bs, L).
        response_mask: (bs, L).
        index: (bs,) unused.
        gamma: discount factor.
        **kwargs: ignored.

    Returns:
        (advantages (bs, L) zero on masked tokens, returns (bs, L) the discounted returns G).
    """
    mask = response_mask.to(token_level_rewards.dtype)
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * mask[:, t]
    advantages = VF.masked_whiten(returns, mask) * mask
    return advantages, returns


# ----------------------------------------------------------------------------- KL estimators


def register_kl_estimator(name: str) -> Callable[[KLEstimator], KLEstimator]:
    """Decorator that registers `fn(log_prob, ref_log_prob) -> (bs, L)` in KL_ESTIMATORS."""

    def decorator(fn: KLEstimator) -> KLEstimator:
        if name in KL_ESTIMATORS:
            raise ValueError(f"KL estimator '{name}' is already registered")
        KL_ESTIMATORS[name] = fn
        return fn

    return decorator


@register_kl_estimator("kl")
def _kl_k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k1: logp - ref_logp. (bs, L), (bs, L) -> (bs, L). Unbiased for KL(actor || ref), can be negative."""
    return log_prob - ref_log_prob


@register_kl_estimator("abs")
def _kl_abs(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """|logp - ref_logp|. (bs, L), (bs, L) -> (bs, L)."""
    return (log_prob - ref_log_prob).abs()


@register_kl_estimator("mse")
def _kl_k2(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k2: 0.5 * (logp - ref_logp)^2. (bs, L), (bs, L) -> (bs, L)."""
    return 0.5 * (log_prob - ref_log_prob).square()


@register_kl_estimator("low_var_kl")
def _kl_k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k3 (Schulman): with d = ref_logp - logp, exp(d) - d - 1 >= 0, clamped to [-10, 10].

    d is first clamped to [-20, 20] (as EasyR1/verl do): this changes no result, since |d| >= 20
    already gives k3 > 10, but keeps exp(d) finite so that d = +inf cannot give inf - inf = NaN.
    (bs, L), (bs, L) -> (bs, L).
    """
    d = (ref_log_prob - log_prob).clamp(-20.0, 20.0)
    return (d.exp() - d - 1).clamp(-10.0, 10.0)


@register_kl_estimator("full")
def _kl_full(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Exact KL(p_actor || p_ref) per token from full log-distributions.

    (bs, L, V), (bs, L, V) log-probabilities -> (bs, L): sum_v p(v) * (logp(v) - ref_logp(v)).
    """
    return F.kl_div(ref_log_prob, log_prob, log_target=True, reduction="none").sum(-1)


def compute_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    """Per-token KL estimate between the actor and the reference policy, in float32.

    Args:
        log_prob: (bs, L) actor log-probs of the sampled tokens ((bs, L, V) for "full").
        ref_log_prob: same shape, reference log-probs.
        kl_penalty: a KL_ESTIMATORS name: "kl", "abs", "mse", "low_var_kl", "full".

    Returns:
        (bs, L) float32 (unmasked: aggregate it with a mask).

    Raises:
        KeyError: unknown `kl_penalty` (the message lists the known names).
    """
    if kl_penalty not in KL_ESTIMATORS:
        raise KeyError(f"unknown kl_penalty '{kl_penalty}': known are {', '.join(sorted(KL_ESTIMATORS))}")
    return KL_ESTIMATORS[kl_penalty](log_prob.float(), ref_log_prob.float())


# ----------------------------------------------------------------------------- loss aggregation


def count_tokens_and_seqs(loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisers agg_loss wants, counted on one micro-batch.

    Sum them over the micro-batches of a mini-batch and all-reduce (sum) over data-parallel ranks to
    get `global_tokens` and `global_seqs`.

    Args:
        loss_mask: (bs, L).

    Returns:
        (valid tokens, rows with at least one valid token), both float scalar tensors.
    """
    row_tokens = loss_mask.float().sum(-1)
    return row_tokens.sum(), (row_tokens > 0).float().sum()


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    dp_size: int = 1,
    grad_accum_steps: int = 1,
) -> torch.Tensor:
    """This micro-batch's share of the mini-batch loss.

    Summing the returned values over all micro-batches of a mini-batch on each rank, then averaging
    the gradients over `dp_size` ranks (what FSDP's gradient all-reduce does), gives the intended
    mini-batch loss; hence the `* dp_size` below.

    Modes:
        "token-mean":           sum(loss * mask) / global_tokens * dp_size
        "seq-mean-token-mean":  sum over rows of (row's token mean) / global_seqs * dp_size
        "seq-mean-token-sum":   sum over rows of (row's token sum) / global_seqs * dp_size
        "microbatch-token-mean": masked_mean(loss, mask) / grad_accum_steps. An older EasyR1
            version's aggregation: each micro-batch's own token mean, so a token of a short
            micro-batch weighs more than one of a long micro-batch.
    `global_tokens` = valid tokens of the whole mini-batch over all ranks (default: this micro-batch's,
    which with dp_size 1 gives the plain token mean); `global_seqs` = rows with at least one valid
    token, counted the same way (see count_tokens_and_seqs). Rows without valid tokens contribute 0.

    Args:
        loss_mat: (bs, L) per-token loss.
        loss_mask: (bs, L) 1 on tokens that count.
        loss_agg_mode: one of LOSS_AGG_MODES.
        global_tokens: token normaliser for "token-mean".
        global_seqs: sequence normaliser for the "seq-mean-*" modes.
        dp_size: number of data-parallel ranks whose gradients are averaged.
        grad_accum_steps: micro-batches per optimizer step, used only by "microbatch-token-mean".

    Returns:
        scalar tensor.

    Raises:
        ValueError: unknown mode, dp_size/grad_accum_steps < 1, or dp_size > 1 without the global
            normaliser the mode needs (a per-rank default would be silently wrong by a factor).
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode '{loss_agg_mode}': use one of {', '.join(LOSS_AGG_MODES)}")
    if dp_size < 1 or grad_accum_steps < 1:
        raise ValueError(f"dp_size ({dp_size}) and grad_accum_steps ({grad_accum_steps}) must be >= 1")
    if loss_agg_mode == "microbatch-token-mean":
        return VF.masked_mean(loss_mat, loss_mask) / grad_accum_steps

    def normaliser(given: float | torch.Tensor | None, local: torch.Tensor, name: str) -> torch.Tensor:
        if given is None:
            if dp_size > 1:
                raise ValueError(f"loss_agg_mode '{loss_agg_mode}' with dp_size {dp_size} needs {name}")
            given = local
        # Clamped so that a mini-batch without valid tokens gives 0, not NaN.
        return torch.as_tensor(given, dtype=loss_mat.dtype, device=loss_mat.device).clamp_min(1e-8)

    local_tokens, local_seqs = count_tokens_and_seqs(loss_mask)
    if loss_agg_mode == "token-mean":
        return (
            VF.masked_sum(loss_mat, loss_mask)
            / normaliser(global_tokens, local_tokens, "global_tokens")
            * dp_size
        )
    row_loss = VF.masked_sum(loss_mat, loss_mask, dim=-1)  # (bs,)
    if loss_agg_mode == "seq-mean-token-mean":
        row_loss = row_loss / loss_mask.to(loss_mat.dtype).sum(-1).clamp_min(1e-8)
    return row_loss.sum() / normaliser(global_seqs, local_seqs, "global_seqs") * dp_size


# ----------------------------------------------------------------------------- losses


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.3,
    clip_ratio_dual: float = 3.0,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with asymmetric clip and dual-clip, as in EasyR1.

    With log-ratio x = clamp(logp - old_logp, -20, 20) and r = exp(x):
        l1 = -A * r
        l2 = -A * exp(clamp(x, log(1 - low), log(1 + high)))   # clip in log space: no inf in the grad
        l3 = -A * clip_ratio_dual
        higher = max(l1, l2); lower = min(higher, l3)
        loss = lower where A < 0 else higher
    The dual clip bounds the loss of a negative-advantage token whose ratio has run far above 1.

    Args:
        old_log_prob: (bs, L) log-probs under the policy that sampled the batch.
        log_prob: (bs, L) log-probs under the current policy (carries the gradient).
        advantages: (bs, L).
        response_mask: (bs, L).
        clip_ratio_low, clip_ratio_high: ratio clip range [1 - low, 1 + high].
        clip_ratio_dual: lower bound constant of the dual clip (> 1).
        loss_agg_mode, **agg_kwargs: passed to agg_loss (global_tokens, global_seqs, dp_size,
            grad_accum_steps).

    Returns:
        (pg_loss scalar tensor, metrics) with float metrics, masked means over this micro-batch:
        pg_clipfrac_higher (share of tokens where l1 < l2, the clip raised the loss),
        pg_clipfrac_lower (share where the dual clip engaged: A < 0 and higher > l3),
        ppo_kl (mean of old_logp - logp, clamped as above).
    """
    if not 0.0 <= clip_ratio_low < 1.0 or clip_ratio_high < 0.0:
        raise ValueError(
            f"need 0 <= clip_ratio_low < 1 and clip_ratio_high >= 0, got {clip_ratio_low}, {clip_ratio_high}"
        )
    if clip_ratio_dual <= 1.0:
        raise ValueError(f"clip_ratio_dual must be > 1, got {clip_ratio_dual}")
    neg_kl = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)
    ratio = torch.exp(neg_kl)
    clipped_ratio = torch.exp(
        torch.clamp(neg_kl, math.log(1.0 - clip_ratio_low), math.log(1.0 + clip_ratio_high))
    )
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * clipped_ratio
    pg_loss3 = -advantages * clip_ratio_dual
    higher = torch.max(pg_loss1, pg_loss2)
    lower = torch.min(higher, pg_loss3)
    negative = advantages < 0
    per_token = torch.where(negative, lower, higher)
    pg_loss = agg_loss(per_token, response_mask, loss_agg_mode, **agg_kwargs)
    with torch.no_grad():
        metrics = {
            "pg_clipfrac_higher": VF.masked_mean((pg_loss1 < pg_loss2).float(), response_mask).item(),
            "pg_clipfrac_lower": VF.masked_mean(
                ((higher > pg_loss3) & negative).float(), response_mask
            ).item(),
            "ppo_kl": VF.masked_mean(-neg_kl, response_mask).item(),
        }
    return pg_loss, metrics


def compute_kl_loss(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kl_penalty: str,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: Any,
) -> torch.Tensor:
    """KL-to-reference loss term: agg_loss(compute_kl(log_prob, ref_log_prob, kl_penalty), mask).

    The result is this micro-batch's share (see agg_loss); multiply by the KL coefficient and add it
    to the policy loss. For logging the KL itself, use VF.masked_mean of compute_kl instead.

    Args:
        log_prob: (bs, L) actor log-probs ((bs, L, V) for "full").
        ref_log_prob: same shape, reference log-probs.
        response_mask: (bs, L).
        kl_penalty: a KL_ESTIMATORS name.
        loss_agg_mode, **agg_kwargs: passed to agg_loss.

    Returns:
        scalar tensor.
    """
    kl = compute_kl(log_prob, ref_log_prob, kl_penalty)
    return agg_loss(kl, response_mask, loss_agg_mode, **agg_kwargs)
