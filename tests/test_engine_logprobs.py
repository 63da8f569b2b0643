"""The actor's log-probs: fused chunked LM head, response-only forward (packed and padded), and the
token-budget micro-batches of the experience and update passes, against plain full-logits math."""

from __future__ import annotations

import pytest
import torch
from engine_batches import random_batch

from verl.trainer.config import ActorConfig, AlgorithmConfig
from verl.utils import torch_functional as VF
from verl.workers.actor.dp_actor import DataParallelPPOActor
from verl.workers.actor.forward import attach_response_log_probs, response_log_probs


def _reference(hidden, weight, labels, temperature):
    logits = (hidden @ weight.T).to(torch.promote_types(hidden.dtype, torch.float32)) / temperature
    log_p = torch.log_softmax(logits, -1)
    return log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


@pytest.mark.parametrize("chunk_elements", [1 << 26, 64])  # one chunk, and 7 rows per chunk
def test_linear_logprobs_matches_full_logits_and_their_gradients(
    monkeypatch: pytest.MonkeyPatch, chunk_elements: int
) -> None:
    monkeypatch.setattr(VF, "_CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 9, (23,), generator=gen)
    upstream = torch.randn(23, generator=gen, dtype=torch.float64)

    log_probs, entropy = VF.linear_logprobs(hidden, weight, labels, temperature=0.7, with_entropy=True)
    (log_probs * upstream).sum().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    ref_lp, ref_ent = _reference(hidden, weight, labels, 0.7)
    (ref_lp * upstream).sum().backward()
    torch.testing.assert_close(log_probs, ref_lp)
    torch.testing.assert_close(entropy, ref_ent)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weight.grad)
    assert not entropy.requires_grad


def test_linear_logprobs_bf16_head_gradient_does_not_degrade_with_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The head's weight gradient sums chunk products in fp32: 30 chunks are as accurate (against an
    fp32 reference) as one chunk, within bf16's rounding of the logits."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(300, 16, generator=gen).bfloat16()
    weight = torch.randn(50, 16, generator=gen).bfloat16()
    labels = torch.randint(0, 50, (300,), generator=gen)
    ref_w = weight.float().requires_grad_(True)
    _reference(hidden.float(), ref_w, labels, 1.0)[0].sum().backward()

    def head_grad(chunk_elements: int) -> torch.Tensor:
        monkeypatch.setattr(VF, "_CHUNK_ELEMENTS", chunk_elements)
        w = weight.clone().requires_grad_(True)
        log_probs, _ = VF.linear_logprobs(hidden, w, labels)
        assert log_probs.dtype == torch.float32
        log_probs.sum().backward()
        assert w.grad.dtype == torch.bfloat16
        return w.grad.float()

    def rel_err(grad: torch.Tensor) -> float:
        return float((grad - ref_w.grad).norm() / ref_w.grad.norm())

    one, many = rel_err(head_grad(1 << 26)), rel_err(head_grad(500))  # 500 elements: 10 rows a chunk
    assert one < 1e-2 and many < 1e-2
    assert many < 1.5 * one + 1e-3


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    return attach_response_log_probs(model)


@pytest.mark.parametrize("padding_free", [True, False])
def test_response_log_probs_equal_the_full_forward(tiny, padding_free: bool) -> None:
    """Packed (transformers' block mask from position ids) and trimmed padded layouts give the
    log-softmax of a plain padded forward at every real response token, 0 on padding, and the same
    parameter gradients."""
    batch = random_batch(tiny.config.vocab_size, bs=6, one_token_first=True).batch
    resp_mask = batch["response_mask"].bool()
    prompt = batch["input_ids"].shape[1] - batch["responses"].shape[1]
    args = (batch["input_ids"], batch["attention_mask"], batch["position_ids"], batch["responses"])

    tiny.zero_grad()
    log_probs, entropy = response_log_probs(tiny, *args, 0.7, padding_free, with_entropy=True)
    (log_probs * resp_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in tiny.named_parameters()}
    tiny.zero_grad()
    logits = tiny(input_ids=args[0], attention_mask=args[1], position_ids=args[2]).logits[:, prompt - 1 : -1]
    ref = torch.log_softmax(logits.float() / 0.7, -1)
    ref_lp = ref.gather(-1, batch["responses"].unsqueeze(-1)).squeeze(-1)
    (ref_lp * resp_mask).sum().backward()

    torch.testing.assert_close(log_probs[resp_mask], ref_lp[resp_mask], atol=2e-5, rtol=1e-5)
    assert (log_probs[~resp_mask] == 0).all() and (entropy[~resp_mask] == 0).all()
    torch.testing.assert_close(
        entropy[resp_mask], -(ref.exp() * ref).sum(-1)[resp_mask], atol=2e-5, rtol=1e-5
    )
    for name, param in tiny.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)
    tiny.zero_grad()


def _actor(module, budget_update: int, budget_exp: int, loss_agg_mode: str = "token-mean"):
    config = ActorConfig(
        prompts_per_update=3,
        micro_batch_size_per_device_for_update=2,
        max_tokens_per_micro_batch_for_update=budget_update,
        max_tokens_per_micro_batch_for_experience=budget_exp,
        loss_agg_mode=loss_agg_mode,
    )
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    return DataParallelPPOActor(
        config, AlgorithmConfig(use_kl_loss=False), module, 2, optimizer, padding_free=True
    )


def test_token_budget_passes_match_fixed_micro_batches(tiny_model_dir: str) -> None:
    """Experience: rows regrouped by length come back in their order. Update: token-mean over
    regrouped micro-batches moves the weights exactly as fixed micro-batches do."""
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa"
        )

    data = random_batch(2000, bs=6, one_token_first=True)
    budget_actor, fixed_actor = _actor(fresh(), 30, 30), _actor(fresh(), 0, 0)
    micros, order = budget_actor.micro_batches(data, 30, 2)
    assert len(micros) >= 2 and sorted(order) == list(range(6)) and order != list(range(6))
    old = fixed_actor.compute_log_prob(data, 1.0, micro_batch_size=2, max_tokens=0)
    torch.testing.assert_close(
        budget_actor.compute_log_prob(data, 1.0, micro_batch_size=2, max_tokens=30), old
    )

    data.batch["old_log_probs"] = old
    m_budget = budget_actor.update_policy(data, 1.0)
    m_fixed = fixed_actor.update_policy(data, 1.0)
    assert m_budget["actor/loss"] == pytest.approx(m_fixed["actor/loss"], rel=1e-5)
    assert m_budget["actor/grad_norm"] == pytest.approx(m_fixed["actor/grad_norm"], rel=1e-4)
    for (name, a), b in zip(budget_actor.module.named_parameters(), fixed_actor.module.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # The authors' per-micro-batch mean keeps fixed rows even with a budget set.
    assert len(_actor(fresh(), 30, 30, "microbatch-token-mean")._update_micro_batches(data[:3])) == 2
