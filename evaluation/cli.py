"""Command line of the evaluation package.

    python -m evaluation --model M [--benchmarks a,b] [--data NAME=PATH ...] [--data-dir DIR]
                         [--fields NAME:question=COL,answer=COL ...] [--out DIR] [options]
    python -m evaluation report RESULTS_OR_DIRS... --out DIR [--paper]
    python -m evaluation list

`run` is the default sub-command. Options can also come from a yaml/json file (`--config FILE`,
keys named like the long options with "_" for "-"; `data` and `fields` may be mappings there);
the command line wins over the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from evaluation.generate import EngineConfig
from evaluation.loaders import parse_data_args, parse_field_args
from evaluation.preflight import describe_missing, unavailable_benchmarks
from evaluation.registry import DEFAULT_BENCHMARKS, REGISTRY, resolve_name
from evaluation.report import PAPER_ROWS, load_rows, write_reports
from infra.preflight import EXIT_PREFLIGHT, Problem, check_model, format_problems


def _limit(value: str) -> int | None:
    """ "all"/"none" -> None (every item), "default" -> -1 (the registry default), else a positive int."""
    if value.lower() in ("all", "none"):
        return None
    if value.lower() == "default":
        return -1
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("limit must be positive, 'all' or 'default'")
    return number


def _name_values(values: list[str], convert, option: str) -> dict:
    out = {}
    for value in values:
        for part in value.replace(" ", ",").split(","):
            if not part:
                continue
            name, sep, number = part.partition("=")
            if not sep:
                raise SystemExit(f"{option} expects NAME=VALUE, got {part!r}")
            key = "all" if name.strip().lower() == "all" else resolve_name(name)
            out[key] = convert(number)
    return out


def default_out_dir(model: str) -> str:
    """$STORAGE_PATH/eval/<model name> (./eval_results/<model name> without STORAGE_PATH)."""
    name = model.rstrip("/")
    name = Path(name).name if os.path.isdir(name) else name.replace("/", "_")
    root = os.environ.get("STORAGE_PATH")
    return str(Path(root) / "eval" / name) if root else str(Path("eval_results") / name)


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation", description="Evaluate a model on the R-Zero benchmarks."
    )
    p.add_argument("--config", help="yaml/json file with option values (command line wins)")
    p.add_argument("--model", help="HF model folder or hub id")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model)")
    p.add_argument(
        "--benchmarks",
        default=",".join(DEFAULT_BENCHMARKS),
        help="comma-separated names (default: the paper's 10)",
    )
    p.add_argument(
        "--data", action="append", default=[], help="local file of a benchmark: NAME=PATH (repeatable)"
    )
    p.add_argument(
        "--data-dir", help="folder with <benchmark>.{jsonl,json,parquet,csv} files (aliases accepted)"
    )
    p.add_argument(
        "--fields",
        action="append",
        default=[],
        help="field mapping: NAME:question=COL,answer=COL[,options=COL][,gold=RULE]",
    )
    p.add_argument(
        "--offline", action="store_true", help="never load from the hub; every benchmark needs a local file"
    )
    p.add_argument("--out", help="output folder (default $STORAGE_PATH/eval/<model name>)")
    p.add_argument("--label", help="row label in the report (default: model folder name)")
    p.add_argument(
        "--limit",
        type=_limit,
        default=-1,
        help="items per benchmark: N (a seeded subset, labelled in the report), 'all' or 'default' (the full set)",
    )
    p.add_argument("--limit-for", action="append", default=[], help="NAME=N|all per benchmark")
    p.add_argument("--seed", type=int, default=0, help="subsampling, option-shuffle and sampling seed")
    p.add_argument(
        "--k", type=int, default=1, help="samples per question for AMC/AIME (the paper's mean@32 benchmarks)"
    )
    p.add_argument(
        "--k-for", action="append", default=[], help="NAME=K per benchmark (NAME 'all' = every benchmark)"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="temperature when k=1 (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="top_p when k=1")
    p.add_argument("--sample-temperature", type=float, default=0.6, help="temperature for mean@k (k>1)")
    p.add_argument("--sample-top-p", type=float, default=0.95, help="top_p for mean@k (k>1)")
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="max new tokens per response (default: math 4096, general 8192)",
    )
    p.add_argument("--max-model-len", type=int, help="vLLM context length (default: the model's)")
    p.add_argument("--dtype", default="auto", help="vLLM dtype (auto = model dtype on GPU, float32 on CPU)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--data-parallel-size", type=int, help="engines (default: every visible GPU group)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--grader-workers", type=int, default=None, help="default: every core but two (2 to 32)")
    p.add_argument("--grader-timeout", type=float, default=5.0, help="seconds per math-verify call")
    p.add_argument("--no-reuse", action="store_true", help="regenerate even when matching responses exist")
    p.add_argument(
        "--judge-url", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1); enables the judge"
    )
    p.add_argument("--judge-model", help="model name sent to the judge endpoint")
    p.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the judge's key"
    )
    p.add_argument("--judge-cache", help="verdict cache file (default <out>/judge_cache.json)")
    p.add_argument("--judge-max-tokens", type=int, default=16, help="reply budget of the judge")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _config_defaults(path: str) -> dict:
    """Option values from a yaml/json file; `data`/`fields` mappings become NAME=PATH / NAME:k=v strings."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        raw = json.loads(text)
    else:
        import yaml

        raw = yaml.safe_load(text) or {}
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    if isinstance(values.get("data"), dict):
        values["data"] = [f"{k}={v}" for k, v in values["data"].items()]
    if isinstance(values.get("fields"), dict):
        values["fields"] = [
            f"{k}:" + ",".join(f"{a}={b}" for a, b in m.items()) for k, m in values["fields"].items()
        ]
    for key in ("benchmarks",):
        if isinstance(values.get(key), list):
            values[key] = ",".join(values[key])
    if "limit" in values and not isinstance(values["limit"], int):
        values["limit"] = _limit(str(values["limit"]))
    return values


def parse_run_args(argv: list[str]):
    parser = build_run_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        defaults = _config_defaults(first.config)
        unknown = set(defaults) - {a.dest for a in parser._actions}
        if unknown:
            parser.error(f"unknown keys in {first.config}: {sorted(unknown)}")
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model is required")
    return args


def build_run_config(args: argparse.Namespace):
    """The RunConfig described by parsed `run` arguments."""
    from evaluation.runner import JudgeConfig, RunConfig  # vLLM + torch: not for `list` / `report`

    judge = None
    if args.judge_url:
        if not args.judge_model:
            raise SystemExit("--judge-url needs --judge-model")
        from evaluation.judge import check_judge_url

        try:  # before any model loads
            check_judge_url(args.judge_url)
        except ValueError as e:
            raise SystemExit(f"--judge-url: {e}") from None
        judge = JudgeConfig(
            args.judge_url,
            args.judge_model,
            os.environ.get(args.judge_api_key_env),
            args.judge_cache,
            max_tokens=args.judge_max_tokens,
        )
    engine = EngineConfig(
        model=args.model,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        enforce_eager=args.enforce_eager,
        seed=args.seed,
    )
    return RunConfig(
        engine=engine,
        out_dir=args.out or default_out_dir(args.model),
        benchmarks=[resolve_name(b) for b in args.benchmarks.replace(" ", ",").split(",") if b],
        data=parse_data_args(args.data),
        data_dir=args.data_dir,
        fields=parse_field_args(args.fields),
        allow_hub=not args.offline,
        limit=args.limit,
        limit_for=_name_values(args.limit_for, _limit, "--limit-for"),
        seed=args.seed,
        k=args.k,
        k_for=_name_values(args.k_for, int, "--k-for"),
        temperature=args.temperature,
        top_p=args.top_p,
        sample_temperature=args.sample_temperature,
        sample_top_p=args.sample_top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        label=args.label,
        grader_workers=args.grader_workers,
        grader_timeout_s=args.grader_timeout,
        reuse=not args.no_reuse,
        judge=judge,
    )


def preflight_problems(config) -> list[Problem]:
    """The model and every benchmark's data, checked before an engine starts (all problems at once)."""
    problems = check_model(config.engine.model, "model")
    missing = unavailable_benchmarks(config.benchmarks, config.data, config.data_dir, config.allow_hub)
    if missing:
        problems.append(
            Problem(
                f"no data for {len(missing)} benchmark(s): {describe_missing(missing)}",
                "point at local files (--data NAME=PATH, or --data-dir DIR holding <benchmark>.jsonl/"
                ".json/.parquet/.csv; names and aliases: python -m evaluation list), or leave these "
                "benchmarks out of --benchmarks",
            )
        )
    return problems


def run_main(argv: list[str]) -> int:
    from evaluation.runner import EvaluationRun  # vLLM + torch: not for `list` / `report`

    args = parse_run_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    config = build_run_config(args)
    problems = preflight_problems(config)
    if problems:
        print(format_problems(problems, "evaluation preflight"), file=sys.stderr)
        return EXIT_PREFLIGHT
    results = EvaluationRun(config).run()
    print(Path(config.out_dir, "summary.md").read_text(encoding="utf-8"))
    print(f"results: {Path(config.out_dir, 'results.json')}")
    return 0 if results["benchmarks"] else 1


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation report", description="Table/CSV/plot over several results."
    )
    p.add_argument("paths", nargs="+", help="results.json files or folders searched for them")
    p.add_argument("--out", required=True, help="folder for <stem>.md / .csv / .png")
    p.add_argument("--stem", default="comparison")
    p.add_argument("--title", default="Evaluation results")
    p.add_argument("--paper", action="store_true", help="add the paper's published Qwen3-4B-Base rows")
    args = p.parse_args(argv)
    rows = load_rows(args.paths)
    if args.paper:
        rows = [*PAPER_ROWS, *rows]
    if not rows:
        raise SystemExit("no results.json found")
    for path in write_reports(rows, args.out, stem=args.stem, title=args.title):
        print(path)
    return 0


def list_main() -> int:
    for spec in REGISTRY.values():
        hub = spec.hub_id + (f" ({spec.hub_config})" if spec.hub_config else "") + f" [{spec.split}]"
        limit = f", {spec.default_limit} items" if spec.default_limit else ""
        print(f"{spec.name:14s} {spec.metric:5s} {hub}{limit}; aliases: {', '.join(spec.aliases) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    if argv and argv[0] == "list":
        return list_main()
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_main(argv)
