"""The device check: memory, speed and MFU of the actor's passes on one GPU, against the memory plan.

    python scripts/gpu_check.py [--models 1.7b,4b] [--prompt-len 2048] [--response-len 4096] [--rows 16]
                                [--out FILE.json]
    python scripts/gpu_check.py --cpu-smoke      # a tiny model on CPU: the same code path, in seconds

For each random-weight Qwen3-shaped model (built from a config, nothing downloaded), in the local
worker mode (verl/workers/local.py: the FSDP actor + reference worker without Ray or vLLM, world
size 1, NCCL on GPU): one warm-up experience pass and update, then measured: the experience pass
(old + reference log-probs) and one update (gradient checkpointing, bf16, every row P + R tokens
long). Prints one table: peak GPU memory measured vs the memory plan's estimate
(verl/utils/memory_plan.py; must agree within 15%), tokens/s, and MFU against the GPU's bf16 peak.
Needs torch and transformers (and omegaconf); no vLLM, no Ray, no flash-attn unless importable.

The check survives its own failures: each model's row count is the largest (up to --rows) whose
passes the memory plan says fit the device (the 4B update at P=2048, R=4096 does not fit 16 rows on
one 80 GB GPU), an out-of-memory error (or any other) in one model becomes that model's row with the
error and the next model runs, and the JSON is rewritten after every model, so it is always there.
Exit status 1 when a measured peak is off the plan by more than 15% or a model failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a bare checkout (no pip install -e .)
    sys.path.insert(0, str(ROOT))

from verl.protocol import DataProto  # noqa: E402
from verl.workers.fsdp_workers import FSDPWorker  # noqa: E402

TOLERANCE = 0.15
SHAPES = {
    "1.7b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=6144, vocab_size=151936),
    "4b": dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
               head_dim=128, intermediate_size=9728, vocab_size=151936),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=32, intermediate_size=256, vocab_size=1024),
}  # fmt: skip


class RandomWeightWorker(FSDPWorker):
    """The FSDP worker with seeded random weights built from config.json (on the GPU: fast)."""

    def _load_module(self, path: str, dtype: torch.dtype) -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path)
        torch.manual_seed(0)
        with torch.device(self.compute_device):
            return AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation=self.attn_implementation
            )


def write_model(folder: Path, shape: dict) -> Path:
    """config.json of a Qwen3 model of `shape` and a one-word tokenizer (ids are random anyway)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "tie_word_embeddings": True,
              "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
              "torch_dtype": "bfloat16", **shape}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    vocab = {"<|endoftext|>": 0, "a": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    ).save_pretrained(folder)
    return folder


def make_config(model: Path, device: str, prompt_len: int, response_len: int, rows: int):
    from verl.trainer.config import load_config

    row = prompt_len + response_len
    return load_config(
        [
            f"worker.actor.model.model_path={model}",
            f"trainer.device={device}",
            "trainer.n_devices_per_node=1",
            f"data.max_prompt_length={prompt_len}",
            f"data.max_response_length={response_len}",
            "data.rollout_batch_size=1",
            "worker.actor.prompts_per_update=1",
            f"worker.rollout.n={rows}",  # one optimizer step over all rows
            "worker.actor.model.enable_gradient_checkpointing=true",
            # Budgets that hold whole rows, so that the plan's micro-batch is the measured one.
            f"worker.actor.max_tokens_per_micro_batch_for_update={3 * row}",
            f"worker.actor.max_tokens_per_micro_batch_for_experience={7 * row}",
            f"worker.ref.max_tokens_per_micro_batch_for_experience={7 * row}",
        ]
    )


def make_batch(vocab: int, rows: int, prompt_len: int, response_len: int) -> DataProto:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (rows, prompt_len + response_len), generator=gen)
    mask = torch.ones_like(ids)
    return DataProto.from_dict(
        {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": torch.arange(prompt_len + response_len).expand(rows, -1).clone(),
            "responses": ids[:, prompt_len:],
            "response_mask": mask[:, prompt_len:],
            "advantages": torch.randn(rows, 1, generator=gen).expand(rows, response_len).contiguous(),
        }
    )


def _timed(fn, device: str) -> tuple[float, int]:
    """(seconds, peak bytes allocated by torch during fn; 0 on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() if device == "cuda" else 0


def device_gib(device: str) -> float:
    """The device's memory in GiB (the plan's GPU; 80 on CPU, where nothing is measured)."""
    from verl.utils.memory_plan import GIB

    return torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 80.0


class DoesNotFit(Exception):
    """The memory plan says not even one row of this model fits the device: nothing to measure."""


def rows_that_fit(model: Path, device: str, gib: float, args: argparse.Namespace) -> tuple[int, str]:
    """The largest row count <= args.rows whose passes the memory plan fits in `gib`, and a note.

    Raises DoesNotFit (with the plan's totals) when not even one row fits."""
    from verl.utils.fsdp_utils import flash_attn_import_error
    from verl.utils.memory_plan import GIB, plan_memory

    padding_free = flash_attn_import_error() is None
    for rows in range(args.rows, 0, -1):
        config = make_config(model, device, args.prompt_len, args.response_len, rows)
        plan = plan_memory(config, 1, gib, padding_free=padding_free, rollout=False)
        if plan.fits:
            note = "" if rows == args.rows else f"rows {args.rows} -> {rows}: the memory plan fits no more"
            return rows, note
    totals = ", ".join(f"{name} {p.total / GIB:.1f} GiB" for name, p in plan.phases.items())
    raise DoesNotFit(f"the memory plan fits not even 1 row in {gib:.0f} GiB ({totals}): skipped")


def check_model(name: str, shape: dict, device: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Warm up, then measure the experience pass and one update of model `name`; one row per pass."""
    from transformers import AutoConfig

    from verl.utils.flops_counter import count_flops, peak_tflops
    from verl.utils.memory_plan import GIB, plan_memory
    from verl.workers.local import LocalWorkerGroup

    model = write_model(workdir / name, shape)
    n_rows, note = rows_that_fit(model, device, device_gib(device), args)
    if note:
        print(f"{name}: {note}", flush=True)
    config = make_config(model, device, args.prompt_len, args.response_len, n_rows)
    group = LocalWorkerGroup(RandomWeightWorker(config, role="actor_ref"))
    info = group.init_model()[0]
    batch = make_batch(shape["vocab_size"], n_rows, args.prompt_len, args.response_len)
    state: dict = {}

    def experience() -> None:
        data = batch.select()
        data.union(group.compute_log_prob(data))
        data.union(group.compute_ref_log_prob(data))
        state["data"] = data

    def update() -> None:
        state["metrics"] = group.update_actor(state["data"]).meta_info["metrics"]

    for fn in (experience, update):  # warm-up: kernels, the allocator, Adam's state
        _timed(fn, device)
    measured = {"experience": _timed(experience, device), "update": _timed(update, device)}

    plan = plan_memory(config, 1, device_gib(device), padding_free=info["padding_free"], rollout=False)
    hf_config = AutoConfig.from_pretrained(model)
    seqlens = [args.prompt_len + args.response_len] * n_rows
    peak = peak_tflops(info["device_name"]) if device == "cuda" else None
    rows = []
    for phase, (seconds, peak_bytes) in measured.items():
        passes = 2 if phase == "experience" else 1  # actor and reference forwards
        flops = passes * count_flops(hf_config, seqlens, backward=phase == "update")
        estimate = plan.phases[phase].allocated
        rows.append(
            {
                "model": name,
                "pass": phase,
                "rows": n_rows,
                "note": note,
                "attention": f"{'packed' if info['padding_free'] else 'padded'} ({info['attention']})",
                "tokens": passes * sum(seqlens),
                "seconds": seconds,
                "tokens_per_s": passes * sum(seqlens) / seconds,
                "peak_gib": peak_bytes / GIB if device == "cuda" else None,
                "plan_gib": estimate / GIB,
                "plan_error": (estimate - peak_bytes) / peak_bytes if device == "cuda" else None,
                "mfu": flops / seconds / 1e12 / peak if peak else None,
                "loss": state["metrics"].get("actor/loss"),
            }
        )
    return rows


def format_table(rows: list[dict], device_name: str) -> str:
    def cell(value, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    header = f"{'model':<6}{'pass':<12}{'attention':<21}{'tokens':>8}{'s':>8}{'tokens/s':>10}"
    header += f"{'peak GiB':>10}{'plan GiB':>10}{'plan-peak':>10}{'MFU':>7}"
    lines = [f"device check on {device_name}", header]
    for r in rows:
        if r.get("error") or r.get("skipped"):
            lines.append(f"{r['model']:<6}{'FAILED: ' + r['error'] if r.get('error') else r['skipped']}")
            continue
        lines.append(
            f"{r['model']:<6}{r['pass']:<12}{r['attention']:<21}{r['tokens']:>8}{r['seconds']:>8.2f}"
            f"{r['tokens_per_s']:>10.0f}{cell(r['peak_gib'], '.2f'):>10}{r['plan_gib']:>10.2f}"
            f"{cell(r['plan_error'], '+.1%'):>10}{cell(r['mfu'], '.1%'):>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from verl.trainer.config import DataConfig

    shipped = DataConfig()  # the shipped config's lengths: the shapes a run trains on
    parser.add_argument("--models", default=None, help="comma-separated of " + ", ".join(SHAPES))
    parser.add_argument("--prompt-len", type=int, default=shipped.max_prompt_length)
    parser.add_argument("--response-len", type=int, default=shipped.max_response_length)
    parser.add_argument(
        "--rows", type=int, default=16, help="rows per pass at most (fewer if the plan says so)"
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU (gloo), seconds")
    parser.add_argument("--out", default="", help="also write the rows as JSON here (after every model)")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.models, args.prompt_len, args.response_len, args.rows = args.models or "tiny", 16, 32, 6
    args.models = args.models or "1.7b,4b"
    unknown = [m for m in args.models.split(",") if m not in SHAPES]
    if unknown:
        print(f"unknown model(s) {unknown}: use {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or --cpu-smoke", file=sys.stderr)
        return 2
    from verl.single_controller.worker import free_port
    from verl.workers.local import set_rank_env

    set_rank_env(0, 1, free_port())
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run: no memory figures)"
    rows: list[dict] = []
    write_report(args.out, device_name, rows, done=False)  # there is a JSON from the first second on
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in args.models.split(","):
            rows += run_one(name, device, args, Path(tmp))
            write_report(args.out, device_name, rows, done=False)
    write_report(args.out, device_name, rows, done=True)
    print(format_table(rows, device_name))
    heavy = {m: m in sys.modules for m in ("ray", "vllm", "flash_attn")}
    print("imported: " + ", ".join(f"{m}={'yes' if v else 'no'}" for m, v in heavy.items()))
    off = [r for r in rows if r.get("plan_error") is not None and abs(r["plan_error"]) > TOLERANCE]
    for r in off:
        print(
            f"memory plan off by {r['plan_error']:+.1%} for {r['model']} {r['pass']} (limit {TOLERANCE:.0%})"
        )
    failed = [r for r in rows if r.get("error")]
    return 1 if off or failed else 0


def run_one(name: str, device: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    """check_model's rows, or one row with the error: an out-of-memory error (or any other) in one
    model is reported and the next model still runs."""
    try:
        return check_model(name, SHAPES[name], device, args, workdir)
    except DoesNotFit as e:
        print(f"{name}: {e}", flush=True)
        return [{"model": name, "pass": None, "skipped": str(e)}]
    except Exception as e:  # the check reports every failure and goes on to the next model
        kind = "out of memory" if isinstance(e, torch.cuda.OutOfMemoryError) else type(e).__name__
        if kind != "out of memory":
            traceback.print_exc()
        message = str(e).splitlines()[0] if str(e) else ""
        print(f"{name}: FAILED ({kind}): {message}", file=sys.stderr, flush=True)
        return [{"model": name, "pass": None, "error": f"{kind}: {message}"}]
    finally:
        gc.collect()  # the model's shards, optimizer and reference (and a failure's frames) go first
        if device == "cuda":
            torch.cuda.empty_cache()


def write_report(out: str, device_name: str, rows: list[dict], done: bool) -> None:
    """gpu_check.json with the rows so far (atomically: a reader never sees half a file)."""
    if not out:
        return
    heavy = {m: m in sys.modules for m in ("ray", "vllm", "flash_attn")}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"device": device_name, "done": done, "rows": rows, "imported": heavy}, indent=1)
    )
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
