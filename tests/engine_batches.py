"""Random engine batches for the actor's passes (log-probs, update), shared by the engine tests."""

from __future__ import annotations

import torch

from verl.protocol import DataProto


def random_batch(
    vocab: int,
    bs: int = 8,
    prompt: int = 12,
    response: int = 10,
    seed: int = 0,
    one_token_first: bool = False,
) -> DataProto:
    """Left-padded prompts and right-padded responses of random lengths, with advantages (bs, response).

    one_token_first: the first row's response is a single token (the shortest case of the masks)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (bs, prompt + response), generator=gen)
    mask = torch.zeros(bs, prompt + response, dtype=torch.long)
    for i in range(bs):
        p = int(torch.randint(2, prompt + 1, (1,), generator=gen))
        r = 1 if one_token_first and i == 0 else int(torch.randint(1, response + 1, (1,), generator=gen))
        mask[i, prompt - p : prompt + r] = 1
    return DataProto.from_dict(
        {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
            "responses": ids[:, prompt:],
            "response_mask": mask[:, prompt:],
            "advantages": torch.randn(bs, 1, generator=gen).expand(bs, response).contiguous(),
        }
    )
