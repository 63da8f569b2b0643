"""`python -m evaluation ...`: see evaluation/cli.py."""

import sys

from evaluation.cli import main
from infra.stage_kit import stage_entry

if __name__ == "__main__":
    sys.exit(stage_entry(main, "evaluation"))
