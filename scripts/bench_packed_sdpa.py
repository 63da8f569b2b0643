"""Benchmark: the token cap of packed micro-batches through SDPA (the CPU training path).

Without flash-attn, packed rows attend through a dense block-diagonal L x L mask over the whole
micro-batch, so the attention of every token costs O(L); smaller micro-batches cost more passes.
This times one forward + backward of the actor's log-prob pass (`DataParallelPPOActor._log_probs`,
entropy included, as in the update) over the same rows for several caps, one thread, and prints
the seconds per cap. `PACKED_SDPA_MAX_TOKENS` in verl/workers/actor/dp_actor.py is the chosen cap.

    python scripts/bench_packed_sdpa.py --model DIR [--rows 128 --prompt 60 --response 32]
        [--caps 2048 1024 512 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from verl.protocol import DataProto
from verl.trainer.config import ActorConfig, AlgorithmConfig
from verl.workers.actor import dp_actor


def packed_rows(vocab: int, rows: int, prompt: int, response: int, seed: int = 0) -> DataProto:
    """`rows` left-padded prompts and right-padded responses of random lengths (up to the maxima)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (rows, prompt + response), generator=gen)
    prompt_lens = torch.randint(2, prompt + 1, (rows,), generator=gen)
    response_lens = torch.randint(1, response + 1, (rows,), generator=gen)
    cols = torch.arange(prompt + response)
    mask = ((cols >= prompt - prompt_lens[:, None]) & (cols < prompt + response_lens[:, None])).long()
    return DataProto.from_dict(
        {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
            "responses": ids[:, prompt:],
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an HF model folder (e.g. the tiny model)")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=60, help="longest prompt, tokens")
    parser.add_argument("--response", type=int, default=32, help="longest response, tokens")
    parser.add_argument("--caps", type=int, nargs="+", default=[2048, 1024, 512, 256])
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # as a training rank on CPU (Ray gives each one core)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")
    data = packed_rows(model.config.vocab_size, args.rows, args.prompt, args.response)
    tokens = int(data.batch["attention_mask"].sum())
    print(f"{args.rows} rows, {tokens} tokens, model {args.model}")
    chosen = dp_actor.PACKED_SDPA_MAX_TOKENS
    try:
        for cap in args.caps:
            dp_actor.PACKED_SDPA_MAX_TOKENS = cap  # the cap micro_batches() applies on the SDPA path
            actor = dp_actor.DataParallelPPOActor(
                ActorConfig(), AlgorithmConfig(), model, 1, padding_free=True
            )
            micros, _ = actor.micro_batches(data, 32768, 1)
            start = time.perf_counter()
            for micro in micros:
                log_probs, entropy = actor._log_probs(micro, 1.0, with_entropy=True)
                (log_probs.sum() + entropy.sum()).backward()
            seconds = time.perf_counter() - start
            print(f"cap {cap:5d}: {len(micros):3d} micro-batches, forward + backward {seconds:.2f} s")
            model.zero_grad(set_to_none=True)
    finally:
        dp_actor.PACKED_SDPA_MAX_TOKENS = chosen
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
