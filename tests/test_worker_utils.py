"""Small pieces of the engine's workers: optimizer-state offload, stop ids, DP dispatch, token-budget
micro-batches."""

from __future__ import annotations

import random

import pytest
import torch

from verl.protocol import DataProto
from verl.single_controller.decorator import merge_outputs, split_arguments
from verl.utils.micro_batching import budget_partition, micro_batch_cost, split_to_count
from verl.workers.fsdp_workers import move_optimizer_state


def _stepped_adamw() -> tuple[torch.nn.Linear, torch.optim.AdamW]:
    """A layer and its AdamW after two steps: every state entry (moments, step counter) non-trivial."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (model(torch.randn(2, 4)) ** 2).sum().backward()
        opt.step()
    return model, opt


def _state_clones(opt: torch.optim.Optimizer) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in s.items()} for s in opt.state.values()]


def test_move_optimizer_state_moves_every_tensor_and_keeps_values() -> None:
    _, opt = _stepped_adamw()
    before = _state_clones(opt)
    # exp_avg, exp_avg_sq and step for the weight and the bias.
    assert sorted(k for s in before for k in s) == sorted(["exp_avg", "exp_avg_sq", "step"] * 2)
    move_optimizer_state(opt, torch.device("meta"))
    for state, old in zip(opt.state.values(), before):
        assert state.keys() == old.keys()
        for key, value in state.items():
            assert (
                value.device.type == "meta"
                and value.shape == old[key].shape
                and value.dtype == old[key].dtype
            )

    # Values: to a device and back (CUDA when one is visible; else host to host, where fresh or zeroed
    # buffers would still fail) must hand back exactly the tensors taken before the move.
    model, opt = _stepped_adamw()
    before = _state_clones(opt)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    move_optimizer_state(opt, device)
    assert all(v.device.type == device.type for s in opt.state.values() for v in s.values())
    move_optimizer_state(opt, torch.device("cpu"))
    for state, old in zip(opt.state.values(), before):
        assert state.keys() == old.keys()
        for key, value in state.items():
            assert value.device.type == "cpu"
            torch.testing.assert_close(value, old[key], rtol=0, atol=0)
    # The moved state steps on exactly like state that never moved.
    reference, reference_opt = _stepped_adamw()
    for m, o in ((model, opt), (reference, reference_opt)):
        torch.manual_seed(1)
        o.zero_grad()
        (m(torch.randn(2, 4)) ** 2).sum().backward()
        o.step()
    for moved, kept in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(moved, kept, rtol=0, atol=0)


def test_rollout_stop_ids_of_a_base_model_include_the_chat_end_of_turn(tiny_model_dir: str) -> None:
    """What the worker hands the rollout (verl.utils.stop_tokens.model_stop_token_ids): the tiny model
    follows the Base-model convention, EOS <|endoftext|>, turns ended by <|im_end|> in the template."""
    from transformers import AutoTokenizer

    from verl.utils.stop_tokens import model_stop_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.eos_token == "<|endoftext|>"
    assert model_stop_token_ids(tiny_model_dir, tok) == sorted(
        {tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")}
    )


def test_dp_dispatch_pads_splits_and_merges_back() -> None:
    data = DataProto.from_dict({"x": torch.arange(5).unsqueeze(1)})
    split_args, split_kwargs, pad, padded = split_arguments((data, 7), {"d": data}, 2)
    assert pad == 1 and padded == 6
    assert [len(part) for part in split_args[0]] == [3, 3] and split_args[1] == [7, 7]
    assert [len(part) for part in split_kwargs["d"]] == [3, 3]
    # A method returning 2 rows per input row (rollout.n = 2): padding rows dropped twice over.
    outputs = [part.repeat(2) for part in split_args[0]]
    merged = merge_outputs(outputs, pad, padded)
    assert merged.batch["x"].squeeze(1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert merge_outputs(["a", "b"], 0, 0) == ["a", "b"]


def _lengths(n: int, seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return [rng.randint(1, 50) for _ in range(n)], [rng.randint(1, 200) for _ in range(n)]


@pytest.mark.parametrize("padded", [False, True])
def test_budget_partition_covers_every_row_once_within_budget(padded: bool) -> None:
    prompts, responses = _lengths(64, seed=1)
    groups = budget_partition(prompts, responses, 400, padded)
    assert sorted(r for g in groups for r in g) == list(range(64))
    assert all(micro_batch_cost(g, prompts, responses, padded) <= 400 for g in groups)
    # Few micro-batches: within one of the lower bound for packed rows (first-fit decreasing).
    if not padded:
        assert len(groups) <= -(-sum(p + r for p, r in zip(prompts, responses)) // 400) + 1
    # A row longer than the budget goes alone rather than being dropped.
    assert budget_partition([10, 500], [10, 10], 100, padded) == [[1], [0]]


def test_split_to_count_reaches_the_agreed_count_without_raising_cost() -> None:
    prompts, responses = _lengths(20, seed=2)
    groups = budget_partition(prompts, responses, 1000, padded=False)
    more = split_to_count(groups, len(groups) + 3, prompts, responses, padded=False)
    assert len(more) == len(groups) + 3
    assert sorted(r for g in more for r in g) == list(range(20))
    worst = max(micro_batch_cost(g, prompts, responses, False) for g in groups)
    assert all(micro_batch_cost(g, prompts, responses, False) <= worst for g in more)
    with pytest.raises(ValueError, match="at least 21 rows"):
        split_to_count(groups, 21, prompts, responses, padded=False)
