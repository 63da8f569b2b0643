"""Reward manager: applies a user reward function (`file.py:fn` or `module:fn`) to a rollout batch.

The function receives decoded samples and returns a score per sample:
- reward_type "batch":      fn(items: list[dict], **reward_kwargs) -> list[dict | float]
- reward_type "sequential": fn(item: dict, **reward_kwargs) -> dict | float
Each item has `response` (decoded text), `response_length`, `prompt` (decoded prompt text),
`ground_truth` and every other per-sample field of the batch (e.g. `uid`). A dict result must hold
`overall` (the reward); every other numeric key is logged as `reward/<key>`. The score is placed on
the last response token. The trainer runs this in a Ray CPU actor, concurrently with the log-prob
passes. A key with a "/" is logged under that name (not under `reward/`). The manager adds
`timing_s/reward_decode` (detokenising the batch), `timing_s/reward_fn` (the reward function's call)
and `perf/reward_actor_peak_rss_mib` (the actor process's peak RSS) to the metrics.

When the batch's `meta_info["rollout_log"]` names a file (`trainer.log_rollouts`), the actor writes
there one json line per sample: its `uid`, `prompt`, `response`, `ground_truth` and everything the
reward function returned for it (non-numeric values too, e.g. the Challenger's parsed question and
the Solver's answers), without the timings. It is written atomically, in the actor's process, while
the log-prob passes run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from verl.protocol import DataProto
from verl.trainer.config import RewardConfig
from verl.utils.fs import atomic_write_jsonl
from verl.utils.import_utils import load_function
from verl.utils.process_memory import peak_rss_mib

# Per-sample fields not worth sending to a reward function.
_SKIP_FIELDS = {"raw_prompt_ids", "response_ids", "sample_seed"}


def absolute_function_spec(spec: str) -> str:
    """Make a `file.py:fn` spec absolute so that a Ray actor with another cwd finds the file."""
    target, sep, name = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}{sep}{name}"
    return spec


class RewardManager:
    def __init__(self, config: RewardConfig, tokenizer_path: str, trust_remote_code: bool = False) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.fn = load_function(config.reward_function)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=trust_remote_code)
        self._strip_ids = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id}

    def _decode(self, ids: list[int]) -> str:
        # Keep special tokens such as <think> (the format reward looks for them); drop EOS/pad only.
        while ids and ids[-1] in self._strip_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def items(self, data: DataProto) -> list[dict]:
        responses, mask = data.batch["responses"], data.batch["response_mask"]
        lengths = mask.sum(-1).tolist()
        prompts, prompt_mask = (
            data.batch["prompts"],
            data.batch["attention_mask"][:, : data.batch["prompts"].shape[1]],
        )
        out = []
        for i, length in enumerate(lengths):
            item = {
                "response": self._decode(responses[i, :length].tolist()),
                "response_length": int(length),
                "prompt": self.tokenizer.decode(
                    prompts[i][prompt_mask[i].bool()].tolist(), skip_special_tokens=False
                ),
                "ground_truth": "",
            }
            for key, values in data.non_tensor_batch.items():
                if key not in _SKIP_FIELDS:
                    value = values[i]
                    item[key] = value.item() if isinstance(value, np.generic) else value
            out.append(item)
        return out

    def compute_reward(self, data: DataProto) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """Token-level rewards (bs, R) with the score on each response's last token, and per-sample
        metrics {key: [value per sample]} (always including `overall`)."""
        t0 = time.perf_counter()
        items = self.items(data)
        kwargs = dict(self.config.reward_kwargs)
        t_decoded = time.perf_counter()
        if self.config.reward_type == "batch":
            results = list(self.fn(items, **kwargs))
        else:
            results = [self.fn(item, **kwargs) for item in items]
        t_scored = time.perf_counter()
        if len(results) != len(items):
            raise ValueError(
                f"reward function {self.config.reward_function} returned {len(results)} results "
                f"for {len(items)} samples"
            )
        reward = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        metrics: dict[str, list[float]] = defaultdict(list)
        for i, (item, result) in enumerate(zip(items, results)):
            result = {"overall": float(result)} if not isinstance(result, dict) else result
            if "overall" not in result:
                raise ValueError(
                    f"reward function {self.config.reward_function} returned a dict without 'overall': "
                    f"{sorted(result)}"
                )
            if item["response_length"] > 0:
                reward[i, item["response_length"] - 1] = float(result["overall"])
            for key, value in result.items():
                if isinstance(value, (int, float, bool, np.number)):
                    metrics[key].append(float(value))
        if log_path := data.meta_info.get("rollout_log"):
            write_rollout_log(log_path, items, results)
        metrics["timing_s/reward_decode"] = [t_decoded - t0]
        metrics["timing_s/reward_fn"] = [t_scored - t_decoded]
        metrics["perf/reward_actor_peak_rss_mib"] = [peak_rss_mib()["self"]]
        return reward, dict(metrics)


def write_rollout_log(path: str | Path, items: list[dict], results: list) -> None:
    """One json line per sample: what the policy wrote and the reward it got (see the module doc)."""
    rows = []
    for item, result in zip(items, results):
        result = result if isinstance(result, dict) else {"overall": float(result)}
        row = {key: item.get(key) for key in ("uid", "prompt", "response", "ground_truth")}
        row.update({k: v for k, v in result.items() if not k.startswith("timing_s/")})
        rows.append(row)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(path, rows)
