"""The engine's RewardManager (verl/workers/reward/manager.py) on a batch laid out as the rollout
returns it: what the reward function receives (EOS and padding stripped from the response,
<think> kept for the format reward, the prompt, the dataset's answer as ground_truth and the other
dataset fields) and where the score lands (the last response token, nowhere else)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from verl.trainer.config import RewardConfig
from verl.utils.dataset import PromptDataset, collate
from verl.workers.reward.manager import RewardManager

R = 8  # response width
REWARD_FN = '''
SEEN = []


def reward(items, scale=1.0):
    """Records what it was given; scores each sample by its position (known to the test)."""
    SEEN.extend(items)
    return [{"overall": scale * (i + 1), "length": float(len(item["response"]))} for i, item in enumerate(items)]
'''


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: str):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _rollout_batch(tokenizer, responses: list[list[int]]):
    """Two dataset prompts, each repeated twice (interleaved), with `responses` as the rollout lays
    them out: right-padded to R, `response_mask` over the generated tokens (EOS included)."""
    records = [
        {"prompt": "Write digits: 3 1 4", "answer": "3 1 4", "topic": "digits"},
        {"prompt": "Write digits: 9", "answer": 9, "topic": "single"},
    ]
    prompts = collate(list(PromptDataset(records, tokenizer).rows), tokenizer.pad_token_id).repeat(
        2, interleave=True
    )
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r[:R] + [pad] * (R - len(r[:R])) for r in responses])
    mask = torch.tensor([[1] * min(len(r), R) + [0] * (R - min(len(r), R)) for r in responses])
    prompts.batch = {
        **prompts.batch,
        "prompts": prompts.batch["input_ids"],
        "responses": ids,
        "response_mask": mask,
        "attention_mask": torch.cat([prompts.batch["attention_mask"], mask], dim=-1),
    }
    return prompts


def test_reward_function_inputs_and_score_placement(tokenizer, tmp_path: Path) -> None:
    fn_file = tmp_path / "reward_fn.py"
    fn_file.write_text(REWARD_FN)
    manager = RewardManager(
        RewardConfig(reward_function=f"{fn_file}:reward", reward_kwargs={"scale": 0.5}),
        str(Path(tokenizer.name_or_path)),
    )
    eos = tokenizer.eos_token_id
    assert eos == tokenizer.pad_token_id == 0  # the tiny model pads with its EOS, as Qwen3-Base does

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    think = encode("<think>x</think> 3 1")
    assert think[0] == tokenizer.convert_tokens_to_ids("<think>")
    responses = [
        [*think, eos],  # stopped by EOS: EOS stripped, <think> kept
        [*encode("9"), eos],
        encode("1 2 3 4 5 6 7 8 9"),  # truncated at R tokens: no EOS, nothing stripped
        [],  # an empty response: no score placed
    ]
    batch = _rollout_batch(tokenizer, responses)
    scores, metrics = manager.compute_reward(batch)

    seen = manager.fn.__globals__["SEEN"]
    assert [item["response"] for item in seen] == [
        "<think>x</think> 3 1",
        "9",
        tokenizer.decode(responses[2][:R]),
        "",
    ]
    assert [item["response_length"] for item in seen] == [len(think) + 1, 2, R, 0]
    # The dataset's answer travels as ground_truth (a number as text), with the prompt it belongs to
    # and the dataset's other fields.
    assert [item["ground_truth"] for item in seen] == ["3 1 4", "3 1 4", "9", "9"]
    assert all("Write digits: 3 1 4" in item["prompt"] for item in seen[:2])
    assert all("Write digits: 9" in item["prompt"] and "3 1 4" not in item["prompt"] for item in seen[2:])
    assert [item["topic"] for item in seen] == ["digits", "digits", "single", "single"]
    assert [item["index"] for item in seen] == [0, 0, 1, 1]
    assert not any("raw_prompt_ids" in item for item in seen)
    # The score (scale 0.5 x position) on each response's last token (its EOS when it stopped), 0 elsewhere.
    expected = torch.zeros(4, R)
    for row, length in enumerate([len(think) + 1, 2, R]):
        expected[row, length - 1] = 0.5 * (row + 1)
    torch.testing.assert_close(scores, expected)
    assert metrics["overall"] == [0.5, 1.0, 1.5, 2.0]
    assert metrics["length"] == [float(len(item["response"])) for item in seen]


def test_a_result_without_overall_or_of_the_wrong_count_is_refused(tokenizer, tmp_path: Path) -> None:
    fn_file = tmp_path / "bad.py"
    fn_file.write_text(
        "def no_overall(items):\n    return [{'x': 1.0} for _ in items]\n\ndef short(items):\n    return []\n"
    )
    batch = _rollout_batch(tokenizer, [[5], [6], [7], [8]])
    for name, message in (("no_overall", "without 'overall'"), ("short", "returned 0 results for 4 samples")):
        manager = RewardManager(RewardConfig(reward_function=f"{fn_file}:{name}"), tokenizer.name_or_path)
        with pytest.raises(ValueError, match=message):
            manager.compute_reward(batch)


def test_rollout_log_records_each_sample_with_its_reward(tokenizer, tmp_path: Path) -> None:
    """`trainer.log_rollouts`: the batch names a file; the manager writes one line per sample with what
    the function returned for it, non-numeric values included (not metrics), timings left out."""
    import json

    fn_file = tmp_path / "fn.py"
    fn_file.write_text(
        "def reward(items):\n"
        "    return [{'overall': float(i), 'question': f'q{i}', 'answers': ['1', None], 'timing_s/x': 9.0}\n"
        "            for i, _ in enumerate(items)]\n"
    )
    manager = RewardManager(RewardConfig(reward_function=f"{fn_file}:reward"), tokenizer.name_or_path)
    batch = _rollout_batch(tokenizer, [tokenizer("7", add_special_tokens=False)["input_ids"]] * 4)
    batch.non_tensor_batch["uid"] = batch.non_tensor_batch["index"].astype(str)
    _, metrics = manager.compute_reward(batch)
    assert "question" not in metrics and "answers" not in metrics
    assert not (tmp_path / "rollouts").exists()  # no file named: nothing written
    batch.meta_info["rollout_log"] = str(tmp_path / "rollouts" / "step_3.jsonl")
    manager.compute_reward(batch)
    rows = [json.loads(line) for line in (tmp_path / "rollouts" / "step_3.jsonl").read_text().splitlines()]
    assert [r["overall"] for r in rows] == [0.0, 1.0, 2.0, 3.0]
    assert [r["question"] for r in rows] == ["q0", "q1", "q2", "q3"] and rows[0]["answers"] == ["1", None]
    assert [r["uid"] for r in rows] == ["0", "0", "1", "1"] and {r["response"] for r in rows} == {"7"}
    assert [r["ground_truth"] for r in rows] == ["3 1 4", "3 1 4", "9", "9"]
    assert all("Write digits" in r["prompt"] and "timing_s/x" not in r for r in rows)
