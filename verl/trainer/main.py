"""Command-line entry point of the GRPO engine.

    python -m verl.trainer.main config=configs/solver.yaml worker.actor.optim.lr=1e-6 [--dry-run]

`--dry-run` loads, validates and prints the effective configuration (with the profile applied),
then exits without starting Ray or loading a model. Configuration errors exit with status 2 and a
message that names the key.
"""

from __future__ import annotations

import sys

from verl.trainer.config import ConfigError, PPOConfig, config_to_yaml, load_config

USAGE = __doc__


def parse_and_validate(argv: list[str]) -> tuple[PPOConfig, bool]:
    dry_run = "--dry-run" in argv
    args = [a for a in argv if a != "--dry-run"]
    unknown_flags = [a for a in args if a.startswith("--")]
    if unknown_flags:
        raise ConfigError(
            f"unknown flag(s) {unknown_flags}: only --dry-run is a flag; settings are key=value"
        )
    config = load_config(args)
    config.validate()
    return config, dry_run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        config, dry_run = parse_and_validate(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(f"# effective config (profile={config.profile}, role={config.role})")
    print(config_to_yaml(config))
    if dry_run:
        print("# --dry-run: configuration is valid; nothing was started")
        return 0
    from verl.trainer.ray_trainer import run_training

    run_training(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
