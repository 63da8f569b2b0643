"""Merge a sharded actor checkpoint into a plain HF model folder (for checkpoints saved without export).

    python scripts/model_merger.py --checkpoint OUT/checkpoints/global_step_5 --out merged_model \
        [--base-model PATH_OR_HUB_ID] [--dtype bf16|fp32|auto]

The shards are torch.distributed.checkpoint files (any world size); the architecture config and
tokenizer come from `--base-model`, or from the `worker.actor.model.model_path` recorded in the
run's config.yaml next to the checkpoints folder. Runs on CPU without a process group.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def _base_model_from_run(checkpoint: Path) -> str:
    from omegaconf import OmegaConf

    config_path = checkpoint.parent.parent / "config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"no --base-model given and {config_path} not found: pass --base-model")
    cfg = OmegaConf.load(config_path)
    return str(cfg.worker.actor.model.tokenizer_path or cfg.worker.actor.model.model_path)


def load_sharded_model_state(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Full model state dict from the DCP shards in `<checkpoint>/actor` (optimizer state ignored)."""
    from verl.utils.checkpoint_safe import load_full_checkpoint

    actor_dir = Path(checkpoint) / "actor"
    if not (actor_dir / ".metadata").is_file():
        raise SystemExit(f"{actor_dir} holds no torch.distributed.checkpoint shards (.metadata missing)")
    # No code is unpickled from the checkpoint: metadata by allow-list, other items weights_only.
    state = load_full_checkpoint(actor_dir)
    model_state = state["model"]
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in model_state.items()}


def merge(
    checkpoint: str, out: str, base_model: str | None = None, dtype: str = "auto", overwrite: bool = False
) -> Path:
    """Write the checkpoint's model as a plain HF folder at `out`. An existing `out` is replaced only
    if the project wrote it (or it is empty, or `overwrite`): see `verl.utils.fs.check_replaceable`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from verl.utils.fs import atomic_dir, check_replaceable

    check_replaceable(out, overwrite)  # refuse a user's folder before the shards load
    ckpt = Path(checkpoint)
    base = base_model or _base_model_from_run(ckpt)
    config = AutoConfig.from_pretrained(base)
    torch_dtype = (
        {"bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype)
        or getattr(config, "dtype", None)
        or torch.float32
    )
    if isinstance(torch_dtype, str):
        torch_dtype = getattr(torch, torch_dtype)
    state = load_sharded_model_state(ckpt)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(
        {k: v.to(torch_dtype) for k, v in state.items()}, assign=True, strict=False
    )
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(
            f"checkpoint does not match {base}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    target = Path(out)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(base).save_pretrained(str(tmp))
    return target


def main() -> None:
    from verl.utils.fs import UnsafeTargetError, add_overwrite_argument

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a global_step_<k> folder")
    parser.add_argument("--out", required=True, help="output HF folder")
    parser.add_argument("--base-model", default=None, help="model the run started from (config + tokenizer)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"])
    add_overwrite_argument(parser)
    args = parser.parse_args()
    try:
        merged = merge(args.checkpoint, args.out, args.base_model, args.dtype, overwrite=args.overwrite)
    except UnsafeTargetError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"merged model written to {merged}")


if __name__ == "__main__":
    main()
