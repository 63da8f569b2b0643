"""Small tensor helpers used by the GRPO math and the actor: masked reductions and the fused LM-head log-probs.

Conventions: `mask` has the shape of `x` (or broadcasts to it) and holds 1 for a valid token and 0
for padding. Masked positions never reach a result, even when they hold inf or NaN (log-probs of
padding can be -inf), because they are replaced by 0 before any sum.
"""

from __future__ import annotations

import torch

# Rows of (N, V) logits are processed in chunks of about this many elements (64 Mi, 256 MiB in fp32):
# with a 150k vocabulary and thousands of tokens per micro-batch, a full fp32 copy of the logits
# would cost gigabytes on top of the bf16 logits themselves.
_CHUNK_ELEMENTS = 1 << 26


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum of `x * mask`, ignoring whatever `x` holds where `mask == 0`.

    Args:
        x: values, any shape (e.g. (bs, L)).
        mask: same shape as `x` (or broadcastable), 1 = valid, 0 = ignore; fractional weights allowed.
        dim: dimension(s) to reduce; None reduces everything to a scalar.

    Returns:
        `x` summed over `dim`: a scalar for dim=None, else `x`'s shape without `dim` (e.g. (bs,) for dim=-1).
    """
    weighted = torch.where(mask != 0, x * mask, torch.zeros((), dtype=x.dtype, device=x.device))
    return weighted.sum() if dim is None else weighted.sum(dim=dim)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is set; 0 (not NaN) where nothing is valid.

    Args:
        x: values, any shape (e.g. (bs, L)).
        mask: same shape as `x` (or broadcastable), 1 = valid, 0 = ignore.
        dim: dimension(s) to reduce; None gives the mean over all valid elements (a scalar).
        eps: the valid count is clamped to at least `eps`, so an all-masked reduction gives 0 / eps = 0.

    Returns:
        scalar for dim=None, else `x`'s shape without `dim` (e.g. (bs,) for dim=-1).
    """
    count = mask.expand_as(x).sum() if dim is None else mask.expand_as(x).sum(dim=dim)
    return masked_sum(x, mask, dim) / count.to(x.dtype).clamp_min(eps)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the valid elements of `x` (all dimensions pooled).

    Args:
        x: values, any shape (e.g. (bs, L)).
        mask: same shape as `x`, 1 = valid, 0 = ignore.
        unbiased: apply Bessel's correction n / (n - 1), n = number of valid elements.

    Returns:
        scalar tensor.

    Raises:
        ValueError: no valid element, or (unbiased) a single one: the variance is undefined.
    """
    count = mask.expand_as(x).sum()
    if count == 0 or (unbiased and count == 1):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} valid elements, got {int(count)}")
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Whiten `x` with the mean and (unbiased) variance of its valid elements.

    Computes (x - mean) / sqrt(var + 1e-8); with shift_mean=False the mean is added back, so only
    the scale changes. Masked positions get values too (the caller multiplies by the mask if needed).

    Args:
        x: values, any shape (e.g. (bs, L)).
        mask: same shape as `x`, 1 = valid, 0 = ignore.
        shift_mean: subtract the mean (True) or keep it (False).

    Returns:
        tensor of `x`'s shape.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 logits, float64 for float64 ones."""
    return torch.promote_types(logits.dtype, torch.float32)


def _rows_per_chunk(vocab_size: int) -> int:
    """Rows of (N, V) logits per chunk, so that a chunk holds about _CHUNK_ELEMENTS elements."""
    return max(1, _CHUNK_ELEMENTS // max(vocab_size, 1))


class _LinearLogProbs(torch.autograd.Function):
    """log softmax(hidden @ weight.T / temperature)[label], a chunk of rows at a time.

    The (N, V) logits never exist at once: each chunk's logits are computed, used and freed in the
    forward, and recomputed in the backward (one extra head matmul, ~3% of a 4B model's step), so
    the head costs chunk-sized memory instead of N x V x (2 bytes bf16 + 2 bytes for its gradient).
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, with_entropy):  # (N, H), (V, H), (N,)
        num_rows, vocab = hidden.shape[0], weight.shape[0]
        dtype = _compute_dtype(hidden)
        log_probs = torch.empty(num_rows, dtype=dtype, device=hidden.device)
        lse = torch.empty(num_rows, dtype=dtype, device=hidden.device)
        entropy = torch.empty(num_rows, dtype=dtype, device=hidden.device) if with_entropy else None
        step = _rows_per_chunk(vocab)
        for start in range(0, num_rows, step):
            sl = slice(start, start + step)
            logits = (hidden[sl] @ weight.T).to(dtype)  # (n, V) in fp32, from a bf16 (or fp32) matmul
            logits.div_(temperature)  # in place: no second (n, V) copy
            lse[sl] = torch.logsumexp(logits, dim=-1)
            log_probs[sl] = logits.gather(-1, labels[sl].unsqueeze(-1)).squeeze(-1) - lse[sl]
            if entropy is not None:  # H = lse - sum(p * z); p * z is 0 where p underflows to 0
                probs = torch.exp(logits - lse[sl].unsqueeze(-1))
                entropy[sl] = lse[sl] - torch.where(probs > 0, probs * logits, 0.0).sum(-1)
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.temperature = temperature
        if entropy is not None:
            ctx.mark_non_differentiable(entropy)
        return log_probs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_log_probs, _grad_entropy):
        hidden, weight, labels, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        # fp32 accumulator: summing bf16 chunk products would round once per chunk.
        grad_weight = (
            torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if need_weight else None
        )
        step = _rows_per_chunk(weight.shape[0])
        for start in range(0, hidden.shape[0], step):
            sl = slice(start, start + step)
            logits = (hidden[sl] @ weight.T).to(lse.dtype).div_(ctx.temperature)
            g = grad_log_probs[sl].to(lse.dtype).unsqueeze(-1)  # (n, 1)
            # d logp[label] / d z = onehot(label) - softmax(z); z = logits / T adds the 1/T.
            grad_z = logits.sub_(lse[sl].unsqueeze(-1)).exp_().mul_(-g)
            grad_z.scatter_add_(-1, labels[sl].unsqueeze(-1), g)
            grad_z = grad_z.div_(ctx.temperature).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[sl] = grad_z @ weight
            if grad_weight is not None:  # the chunk's product in the input dtype, summed in fp32
                grad_weight += grad_z.T @ hidden[sl]
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropy) of `labels` under softmax(hidden @ weight.T / temperature), fused.

    The LM head and the log-softmax in one chunked pass: memory is one chunk of (rows, V) logits in
    fp32, never the whole (N, V) matrix, in the forward and in the backward.

    Args:
        hidden: (N, H) final hidden states of the positions that predict `labels` (bf16 or fp32).
        weight: (V, H) the LM head (output embedding) weight, same dtype as `hidden`.
        labels: (N,) int64 token ids in [0, V).
        temperature: the sampling temperature the log-probs refer to (> 0).
        with_entropy: also return the entropy of each row's distribution (no gradient).

    Returns:
        (log_probs (N,), entropy (N,) or None), float32 (float64 for float64 inputs); log_probs is
        differentiable with respect to `hidden` and `weight`.
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}: want (N, H), (V, H)"
        )
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must be ({hidden.shape[0]},)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _LinearLogProbs.apply(hidden, weight, labels.long(), float(temperature), with_entropy)
