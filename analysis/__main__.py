"""`python -m analysis RUN_DIR [--per-iteration K] [--oracle URL_OR_FOLDER]` (scripts/analyze_run.sh)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analysis.analyze import analyze_run
from analysis.oracle import OracleSpec
from infra.logs import setup_logging
from infra.vllm_engines import add_engine_args, engine_options_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/analyze_run.sh",
        description=(
            "Question difficulty and pseudo-label accuracy across the iterations of a finished run: K kept "
            "questions per iteration answered greedily by the base model and every Solver (and an oracle). "
            "Writes RUN_DIR/analysis/ and a section of RUN_DIR/summary.md; a rerun answers only missing cells."
        ),
    )
    parser.add_argument("run_dir", help="the run folder: $STORAGE_PATH/<tag>")
    parser.add_argument("--per-iteration", type=int, default=200, help="questions drawn per iteration (200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (0)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="new tokens per answer (4096)")
    parser.add_argument(
        "--oracle",
        default=None,
        help="a stronger model: an OpenAI-compatible base URL (http(s)://.../v1) or a local model folder",
    )
    parser.add_argument("--oracle-model", default=None, help="model name sent to the oracle endpoint")
    parser.add_argument(
        "--oracle-api-key-env", default="OPENAI_API_KEY", help="environment variable with the endpoint's key"
    )
    parser.add_argument("--oracle-max-tokens", type=int, default=4096, help="reply budget of the endpoint")
    parser.add_argument("--grader-workers", type=int, default=2)
    add_engine_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    oracle = None
    if args.oracle:
        oracle = OracleSpec(
            args.oracle, args.oracle_model, args.oracle_api_key_env, max_tokens=args.oracle_max_tokens
        )
    try:
        record = analyze_run(
            args.run_dir,
            per_iteration=args.per_iteration,
            seed=args.seed,
            oracle=oracle,
            max_tokens=args.max_tokens,
            engine=engine_options_from_args(args),
            grader_workers=args.grader_workers,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"analysis: {e}", file=sys.stderr)
        return 2
    print(f"{record['run_dir']}/analysis/analysis.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
