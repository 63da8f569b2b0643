"""`python -m question_generate MODEL OUT_DIR [N] [--options]` or `python -m question_generate --config F`.

See `question_generate.generate` for what is written where; `scripts/question_generate.sh` wraps this.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from infra.logs import setup_logging
from infra.stage_kit import read_stage_config, stage_entry
from infra.vllm_engines import add_engine_args, engine_options_from_args
from question_generate.generate import GenerateConfig, generate_questions
from rzero.profiles import PROFILES
from rzero.prompts import VARIANTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m question_generate",
        description="Sample N questions from a Challenger model with vLLM (RZERO_SPEC section 3).",
    )
    parser.add_argument("--config", default=None, help="stage config json written by the driver")
    parser.add_argument("model", nargs="?", help="Challenger model folder or hub id")
    parser.add_argument("out_dir", nargs="?", help="stage folder: questions.jsonl and manifest.json go here")
    parser.add_argument("num_questions", nargs="?", type=int, default=8000, help="default 8000")
    parser.add_argument("--variant", default="default", choices=VARIANTS)
    parser.add_argument(
        "--persona-file",
        default="",
        help="persona variant: one persona a line (default configs/personas.txt)",
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="paper", choices=tuple(PROFILES), help="how samples are parsed")
    add_engine_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        config = GenerateConfig.from_dict(read_stage_config(args.config))
    elif args.model and args.out_dir:
        config = GenerateConfig(
            model=args.model,
            out_dir=args.out_dir,
            num_questions=args.num_questions,
            variant=args.variant,
            persona_file=args.persona_file,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
            profile=args.profile,
            engine=engine_options_from_args(args),
        )
    else:
        parser.error("give MODEL OUT_DIR [N], or --config FILE")
    generate_questions(config)
    return 0


if __name__ == "__main__":
    sys.exit(stage_entry(main, "question_generate"))
