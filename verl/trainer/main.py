"""Command-line entry point of the GRPO engine.

    python -m verl.trainer.main config=configs/solver.yaml worker.actor.optim.lr=1e-6 [--dry-run] [--gpu-mem GiB]

`--dry-run` loads, validates and prints the effective configuration and
the memory plan per GPU and phase (verl/utils/memory_plan.py; as yaml comments), then exits without
starting Ray or loading a model. The plan needs the GPU memory: nvidia-smi's, or `--gpu-mem GiB`
to plan from a machine without the GPU. Configuration errors exit with status 2 and a message that
names the key.
"""

from __future__ import annotations

import sys

from verl.trainer.config import ConfigError, PPOConfig, config_to_yaml, load_config

USAGE = __doc__


def _pop_gpu_mem(args: list[str]) -> tuple[list[str], float | None]:
    """Remove `--gpu-mem X` / `--gpu-mem=X` from args; return the rest and X (GiB) or None."""
    rest, value = [], None
    it = iter(args)
    for arg in it:
        if arg == "--gpu-mem" or arg.startswith("--gpu-mem="):
            raw = arg.split("=", 1)[1] if "=" in arg else next(it, "")
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(
                    f"--gpu-mem needs a number of GiB (e.g. --gpu-mem 80), got '{raw}'"
                ) from None
        else:
            rest.append(arg)
    return rest, value


def parse_and_validate(argv: list[str]) -> tuple[PPOConfig, bool, float | None]:
    dry_run = "--dry-run" in argv
    args, gpu_mem = _pop_gpu_mem([a for a in argv if a != "--dry-run"])
    unknown_flags = [a for a in args if a.startswith("--")]
    if unknown_flags:
        raise ConfigError(
            f"unknown flag(s) {unknown_flags}: the flags are --dry-run and --gpu-mem; settings are key=value"
        )
    config = load_config(args)
    config.validate()
    return config, dry_run, gpu_mem


def memory_plan_text(config: PPOConfig, gpu_mem: float | None) -> str:
    """The memory plan as yaml comment lines (so the dry run's output stays valid yaml), or why not."""
    from verl.utils.memory_plan import gpu_memory_gib, plan_memory

    gpu_mem = gpu_mem if gpu_mem is not None else gpu_memory_gib()
    if gpu_mem is None:
        return "# memory plan: no GPU visible (nvidia-smi); pass --gpu-mem GiB to plan for one (e.g. --gpu-mem 80)"
    try:
        text = plan_memory(config, gpu_mem_gib=gpu_mem).format()
    except (FileNotFoundError, ValueError) as e:
        text = f"memory plan unavailable: {e}"
    return "\n".join(f"# {line}" for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        config, dry_run, gpu_mem = parse_and_validate(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print("# effective config")
    print(config_to_yaml(config))
    if dry_run:
        print(memory_plan_text(config, gpu_mem))
        print("# --dry-run: configuration is valid; nothing was started")
        return 0
    from verl.trainer.ray_trainer import run_training

    run_training(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
