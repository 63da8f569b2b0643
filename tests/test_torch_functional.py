"""Masked reductions against hand-computed values (verl/utils/torch_functional.py; the fused log-probs: test_engine_logprobs.py)."""

from __future__ import annotations

import math

import pytest
import torch

from verl.utils import torch_functional as VF

# Valid entries: 1, 2, 4 (sum 7, mean 7/3). Masked entries hold inf / NaN to prove they never leak.
X = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), -float("inf")]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_masked_sum_ignores_masked_inf_and_nan() -> None:
    assert VF.masked_sum(X, MASK).item() == pytest.approx(7.0)
    torch.testing.assert_close(VF.masked_sum(X, MASK, dim=-1), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(VF.masked_sum(X, MASK, dim=0), torch.tensor([5.0, 2.0, 0.0]))


def test_masked_sum_accepts_bool_mask() -> None:
    assert VF.masked_sum(X, MASK.bool()).item() == pytest.approx(7.0)


def test_masked_mean_full_rows_and_empty_row() -> None:
    assert VF.masked_mean(X, MASK).item() == pytest.approx(7.0 / 3.0)
    torch.testing.assert_close(VF.masked_mean(X, MASK, dim=-1), torch.tensor([1.5, 4.0]))
    # Column 2 has no valid entry: its mean is 0, not NaN.
    torch.testing.assert_close(VF.masked_mean(X, MASK, dim=0), torch.tensor([2.5, 2.0, 0.0]))
    assert VF.masked_mean(X, torch.zeros_like(MASK)).item() == 0.0


def test_masked_var_unbiased_and_biased() -> None:
    # Deviations from 7/3: -4/3, -1/3, 5/3; squares sum to 42/9 = 14/3.
    assert VF.masked_var(X, MASK, unbiased=True).item() == pytest.approx(14.0 / 3.0 / 2.0)
    assert VF.masked_var(X, MASK, unbiased=False).item() == pytest.approx(14.0 / 3.0 / 3.0)


def test_masked_var_rejects_too_few_elements() -> None:
    one = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="at least 2"):
        VF.masked_var(X, one, unbiased=True)
    assert VF.masked_var(X, one, unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        VF.masked_var(X, torch.zeros_like(MASK), unbiased=False)


def test_masked_whiten_uses_valid_stats_only() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [4.0, -50.0, 9.0]])
    std = math.sqrt(7.0 / 3.0 + 1e-8)
    white = VF.masked_whiten(x, MASK)
    expected = (x - 7.0 / 3.0) / std
    torch.testing.assert_close(white, expected)
    # Whitened valid values have mean 0 and unbiased variance 1.
    assert VF.masked_mean(white, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert VF.masked_var(white, MASK).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(VF.masked_whiten(x, MASK, shift_mean=False), expected + 7.0 / 3.0)
