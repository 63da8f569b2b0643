"""Prompt datasets and a resumable data loader that yields DataProto batches.

A record is a dict with either `messages` (a chat: list of {"role", "content"}) or a text prompt
under `prompt_key` (wrapped as one user message, after `system_prompt` when given), plus an optional
answer under `answer_key` (passed to the reward function as `ground_truth`). Every other scalar
field travels with the sample to the reward function.

Batch produced by the loader (bs = rollout_batch_size, P = longest prompt in the batch):
    input_ids (bs, P) left-padded, attention_mask (bs, P), position_ids (bs, P)
    non-tensors: raw_prompt_ids (token lists), ground_truth, index (row in the dataset), extra fields
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verl.protocol import DataProto
from verl.utils.chat import encode_chat

logger = logging.getLogger(__name__)


def read_records(path: str) -> list[dict]:
    """Rows of a parquet / jsonl / json / csv file as dicts."""
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix == ".jsonl":
        frame = pd.read_json(path, lines=True)
    elif suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        frame = pd.DataFrame(data if isinstance(data, list) else data.get("data", data))
    elif suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"cannot read '{path}': use a .parquet, .jsonl, .json or .csv file")
    return frame.to_dict(orient="records")


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class PromptDataset:
    """Tokenised prompts; overlong prompts are dropped (and counted) or rejected."""

    def __init__(
        self,
        records: list[dict],
        tokenizer,
        prompt_key: str = "prompt",
        answer_key: str = "answer",
        system_prompt: str = "",
        max_prompt_length: int = 2048,
        filter_overlong_prompts: bool = True,
        source: str = "records",
    ) -> None:
        self.tokenizer = tokenizer
        self.rows: list[dict] = []
        self.dropped_overlong = 0
        for i, raw in enumerate(records):
            record = {k: _plain(v) for k, v in raw.items()}
            messages = record.pop("messages", None)
            if messages is None:
                if prompt_key not in record:
                    raise KeyError(
                        f"{source}: row {i} has no '{prompt_key}' field (data.prompt_key) and no 'messages'; "
                        f"fields: {sorted(record)}"
                    )
                messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
                messages.append({"role": "user", "content": str(record.pop(prompt_key))})
            ids = self._encode(messages)
            if len(ids) > max_prompt_length:
                if not filter_overlong_prompts:
                    raise ValueError(
                        f"{source}: row {i} has {len(ids)} prompt tokens > data.max_prompt_length="
                        f"{max_prompt_length}; raise the limit or set data.filter_overlong_prompts=true"
                    )
                self.dropped_overlong += 1
                continue
            answer = record.pop(answer_key, "")
            extra = {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool)) or v is None}
            self.rows.append(
                {
                    "raw_prompt_ids": ids,
                    "ground_truth": "" if answer is None else str(answer),
                    "index": i,
                    **extra,
                }
            )
        if self.dropped_overlong:
            logger.warning(
                "%s: dropped %d prompts longer than %d tokens",
                source,
                self.dropped_overlong,
                max_prompt_length,
            )

    def _encode(self, messages: list[dict]) -> list[int]:
        # The project's one rendering (chat template, or the "system: ...\nuser: ..." fallback).
        return encode_chat(self.tokenizer, messages)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(rows: list[dict], pad_token_id: int) -> DataProto:
    """Left-pad a list of dataset rows into a prompt batch (see the module docstring)."""
    length = max(len(r["raw_prompt_ids"]) for r in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids = row["raw_prompt_ids"]
        input_ids[i, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, length - len(ids) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    keys = [k for k in rows[0] if k != "raw_prompt_ids"]
    non_tensors: dict[str, np.ndarray] = {}
    ids_array = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        ids_array[i] = row["raw_prompt_ids"]
    non_tensors["raw_prompt_ids"] = ids_array
    for key in keys:
        column = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            column[i] = row.get(key)
        non_tensors[key] = column
    return DataProto.from_dict(
        {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}, non_tensors
    )


class StatefulDataLoader:
    """Batches of `batch_size` rows in a seeded order per epoch; `state_dict()` makes it resumable.

    Epoch e uses the permutation of numpy's RandomState(seed + e), so a resumed run sees exactly the
    batches an uninterrupted run would. An incomplete last batch is dropped (GRPO batch sizes must
    divide over the ranks); a dataset smaller than one batch is an error the caller must resolve.
    """

    def __init__(
        self, dataset: PromptDataset, batch_size: int, shuffle: bool, seed: int, pad_token_id: int
    ) -> None:
        if len(dataset) < batch_size:
            raise ValueError(
                f"the dataset has {len(dataset)} prompts, fewer than one rollout batch "
                f"(data.rollout_batch_size={batch_size}); lower data.rollout_batch_size"
            )
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.pad_token_id = pad_token_id
        self.epoch, self.position = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.dataset))
        return np.random.RandomState(self.seed + epoch).permutation(len(self.dataset))

    def next_batch(self) -> DataProto:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        order = self._order(self.epoch)
        idx = order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        self.position += 1
        batch = collate([self.dataset[int(i)] for i in idx], self.pad_token_id)
        batch.meta_info["epoch"] = self.epoch
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
