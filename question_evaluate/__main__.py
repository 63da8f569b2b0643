"""`python -m question_evaluate SOLVER QUESTIONS OUT_DIR [--options]`, or `--config FILE` (the driver).

See `question_evaluate.pseudo_label` for what is written where; `scripts/question_evaluate.sh` wraps it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.logs import setup_logging
from infra.stage_kit import read_manifest, read_stage_config, stage_entry
from infra.vllm_engines import add_engine_args, engine_options_from_args
from question_evaluate.pseudo_label import QUESTIONS_FILE, STAGE, LabelConfig, pseudo_label
from rzero.profiles import PROFILES


def _band(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in text.split(","))
    return low, high


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m question_evaluate",
        description=(
            "Pseudo-label generated questions with the Solver (majority vote of m answers), filter them "
            "and write the Solver's training set (RZERO_SPEC section 3). Two forms: SOLVER QUESTIONS OUT_DIR "
            "(QUESTIONS: a questions.jsonl or a finished question_generate stage folder), or SOLVER DIR "
            "(questions at DIR/questions.jsonl, outputs in DIR)."
        ),
    )
    parser.add_argument("--config", default=None, help="stage config json written by the driver")
    parser.add_argument("solver", nargs="?", help="Solver model folder or hub id")
    parser.add_argument(
        "questions",
        nargs="?",
        help="questions.jsonl, a question_generate stage folder, or DIR (2-argument form)",
    )
    parser.add_argument("out_dir", nargs="?", default=None, help="stage folder for the outputs")
    parser.add_argument("--profile", default="paper", choices=tuple(PROFILES))
    parser.add_argument("--votes", type=int, default=None, help="answers per question (default: profile's m)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    add_engine_args(parser)
    parser.add_argument("--grader-workers", type=int, default=None)
    parser.add_argument(
        "--grader-timeout-s",
        type=float,
        default=None,
        help="seconds per grader call (default: the profile's grader's, paper 5, rzero_code 10, as the driver)",
    )
    parser.add_argument("--band", type=_band, default=None, help='"LOW,HIGH" replacing the profile band')
    parser.add_argument("--push-to-hub", action="store_true", help="also push train.parquet to the HF Hub")
    parser.add_argument("--hub-repo", default=None, help="hub dataset name (default: from the run folder)")
    return parser


def _config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LabelConfig:
    if not (args.solver and args.questions):
        parser.error("give SOLVER QUESTIONS [OUT_DIR], or --config FILE")
    if args.out_dir is None:
        # SOLVER DIR: the questions and the outputs share DIR. A generation stage folder cannot be
        # DIR: its manifest.json would be replaced by this stage's.
        questions, out_dir = Path(args.questions) / QUESTIONS_FILE, Path(args.questions)
        existing = read_manifest(out_dir)
        if existing is not None and existing.get("stage") != STAGE:
            raise SystemExit(
                f"{out_dir} is a finished {existing.get('stage')} stage folder; write the labels elsewhere: "
                f"SOLVER {out_dir} OUT_DIR"
            )
    else:
        questions, out_dir = Path(args.questions), Path(args.out_dir)
    return LabelConfig(
        solver=args.solver,
        questions=str(questions),
        out_dir=str(out_dir),
        profile=args.profile,
        votes=args.votes,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
        band=args.band,
        grader_workers=args.grader_workers,
        grader_timeout_s=args.grader_timeout_s,
        push_to_hub=args.push_to_hub,
        hub_repo=args.hub_repo,
        engine=engine_options_from_args(args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        config = LabelConfig.from_dict(read_stage_config(args.config))
    else:
        config = _config_from_args(parser, args)
    pseudo_label(config)
    return 0


if __name__ == "__main__":
    sys.exit(stage_entry(main, "question_evaluate"))
