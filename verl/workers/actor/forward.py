"""The actor's forward: log-probs of the response tokens only, without materialising the logits.

Batch layout of one micro-batch (b rows, P prompt columns, R response columns):
    input_ids       (b, P + R)  left-padded prompt, then the right-padded response
    attention_mask  (b, P + R)  1 on real tokens
    position_ids    (b, P + R)  0.. along each row's real tokens
    responses       (b, R)

Two layouts for the transformer body, the same result:
- packed (padding-free): the real tokens of all rows in one (1, T) sequence whose position ids
  restart at 0 for each row; flash-attn (varlen) or transformers' packed-sequence mask for SDPA keeps
  the rows apart, and no compute is spent on padding.
- padded: the (b, P + R) rows, trimmed to the columns that hold any real token of this micro-batch
  (the token-budget micro-batcher groups rows of similar length, so little padding remains).

Either way only the final hidden states that predict a real response token go through the LM head,
fused with the log-softmax (`VF.linear_logprobs`): neither the prompt's logits nor the (N, V) logits
of the responses ever exist in full.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch

from verl.utils import torch_functional as VF

METHOD_NAME = "response_log_probs"


@dataclass
class PackedInputs:
    """What the model body needs for one micro-batch, and where its results go back to.

    input_ids, position_ids: (1, T) packed or (b, S) trimmed padded.
    attention_mask: None (packed) or (b, S).
    hidden_index: (N,) rows of the flattened (B*S, H) hidden states that predict a response token.
    labels: (N,) the response tokens they predict.
    response_index: (N,) positions in the flattened (b, R) response layout the N results fill.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    hidden_index: torch.Tensor
    labels: torch.Tensor
    response_index: torch.Tensor


def pack_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    responses: torch.Tensor,
    padding_free: bool,
) -> PackedInputs:
    """Build the body's inputs and the index maps for one micro-batch (shapes in PackedInputs)."""
    seqlen = input_ids.shape[1]
    resp_len = responses.shape[1]
    prompt_len = seqlen - resp_len
    valid = attention_mask.bool()
    resp_valid = valid[:, prompt_len:]  # (b, R)
    row_idx, col_idx = resp_valid.nonzero(as_tuple=True)  # row-major order of the real response tokens
    labels = responses[row_idx, col_idx]
    response_index = row_idx * resp_len + col_idx
    # The token at column c is predicted by the hidden state at column c - 1 of the same row.
    predictor_col = prompt_len + col_idx - 1
    if padding_free:
        flat_valid = valid.flatten()
        packed_pos = flat_valid.long().cumsum(0) - 1  # index of each real token in the packed sequence
        hidden_index = packed_pos[row_idx * seqlen + predictor_col]
        keep = flat_valid.nonzero(as_tuple=True)[0]
        return PackedInputs(
            input_ids.flatten()[keep].unsqueeze(0),
            position_ids.flatten()[keep].unsqueeze(0),
            None,
            hidden_index,
            labels,
            response_index,
        )
    cols = valid.any(dim=0).nonzero(as_tuple=True)[0]
    start, stop = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, seqlen)
    width = stop - start
    hidden_index = row_idx * width + (predictor_col - start)
    return PackedInputs(
        input_ids[:, start:stop],
        position_ids[:, start:stop],
        attention_mask[:, start:stop],
        hidden_index,
        labels,
        response_index,
    )


def _response_log_probs(
    self: torch.nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    hidden_index: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Runs as a forward method of the (FSDP-wrapped) causal LM: body, then the fused head.

    Returns (log_probs (N,), entropy (N,) or None) for the N hidden states named by hidden_index.
    """
    body = self.get_decoder()
    hidden = body(
        input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, hidden_index)  # (N, H)
    # Inside FSDP's forward hooks the head weight is the unsharded (all-gathered) parameter.
    weight = self.get_output_embeddings().weight
    return VF.linear_logprobs(hidden, weight.to(hidden.dtype), labels, temperature, with_entropy)


def attach_response_log_probs(module: torch.nn.Module) -> torch.nn.Module:
    """Give `module` a `response_log_probs` method that FSDP2 treats like `forward`.

    FSDP2 all-gathers a module's parameters only around `forward`; registering the method with
    `register_fsdp_forward_method` makes the root's pre/post-forward hooks (all-gather of the
    embedding and head, backward hooks on the outputs) run around it too.
    """
    from torch.distributed.fsdp import register_fsdp_forward_method

    setattr(module, METHOD_NAME, types.MethodType(_response_log_probs, module))
    register_fsdp_forward_method(module, METHOD_NAME)
    return module


def response_log_probs(
    module: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    responses: torch.Tensor,
    temperature: float,
    padding_free: bool,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of `responses` at `temperature`: (b, R), 0 on padding; entropy (b, R) if asked.

    `module` must have been through `attach_response_log_probs`.
    """
    packed = pack_inputs(input_ids, attention_mask, position_ids, responses, padding_free)
    log_probs, entropy = getattr(module, METHOD_NAME)(
        packed.input_ids,
        packed.position_ids,
        packed.attention_mask,
        packed.hidden_index,
        packed.labels,
        temperature,
        with_entropy,
    )
    rows, resp_len = responses.shape

    def scatter(values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(rows * resp_len)
        return out.index_copy(0, packed.response_index, values).view(rows, resp_len)

    return scatter(log_probs), (scatter(entropy) if entropy is not None else None)
