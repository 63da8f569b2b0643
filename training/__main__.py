"""`python -m training --config FILE`: run the training stage a TrainStageConfig json describes.

The driver (and `scripts/questioner_train.sh`, `scripts/solver_train.sh` through `pipeline.launch`)
writes that file into the stage folder."""

from __future__ import annotations

import argparse
import sys

from infra.logs import setup_logging
from infra.stage_kit import read_stage_config, stage_entry
from training.challenger import run_challenger_stage
from training.common import TrainStageConfig
from training.solver import run_solver_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--config", required=True, help="stage config json (TrainStageConfig)")
    args = parser.parse_args(argv)
    setup_logging()
    config = TrainStageConfig.from_dict(read_stage_config(args.config))
    run = run_challenger_stage if config.stage == "challenger" else run_solver_stage
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(stage_entry(main, "training stage"))
