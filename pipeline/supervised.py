"""Supervised follow-up (the paper's "synergy with supervised data"): GRPO with the Solver reward
against a labelled dataset's answers, through the Solver training stage.

    python -m pipeline.supervised INIT DATASET OUT [--steps N] [--question-key Q] [--answer-key A]
                                  [--answer-format text|after_hashes|last_boxed] [--split S]
                                  [--preset P] [--profile P] [--set key=value] [engine key=value ...]

INIT: a model folder or hub id, or a run folder of scripts/main.sh (its final Solver, found through
the iterations' solver manifests). DATASET: a local jsonl / json / parquet / csv file with a question
and an answer column, or a Hugging Face dataset id (needs the network or the HF cache). It is
converted to `OUT/data/train.parquet` (columns question, answer, id: the format the Solver stage
reads), then the Solver stage (`pipeline.launch`, the same one the driver runs) trains INIT on it
into `OUT/solver/`: the profile's Solver prompt and reward, its seed, `--steps` GRPO steps.
`OUT/supervised.json` records what was trained from what; the final model is printed.

The paper's comparison is two runs with the same DATASET, steps and seeds, one from the base model
and one from the run's final Solver, each then evaluated (README, "Reproducing the paper's tables").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from evaluation.loaders import GOLD_EXTRACTORS, LOCAL_SUFFIXES, read_rows
from infra.logs import setup_logging
from infra.preflight import EXIT_PREFLIGHT
from infra.stage_kit import read_manifest
from pipeline import launch
from verl.utils.fs import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

DATA_FILE = "train.parquet"
RECORD_FILE = "supervised.json"
QUESTION_COLUMNS = ("question", "problem", "prompt", "query")
ANSWER_COLUMNS = ("answer", "final_answer", "gold", "label", "target")
ANSWER_FORMATS = ("text", "after_hashes", "last_boxed")


class DatasetError(ValueError):
    """A dataset the follow-up cannot train on; the message names the problem and the fix."""


def resolve_init(init: str) -> str:
    """INIT itself, or for a run folder (run.json inside) the Solver of its last finished iteration."""
    path = Path(init)
    if not (path / "run.json").is_file():
        return init
    solvers = []
    for it in path.glob("iter_*"):
        manifest = read_manifest(it / "solver")
        if it.name[5:].isdigit() and manifest is not None:
            solvers.append((int(it.name[5:]), str(manifest["outputs"]["model"])))
    if not solvers:
        raise DatasetError(f"{init} is a run folder without a finished Solver stage: give a model folder")
    iteration, model = max(solvers)
    logger.info("INIT %s: the run's final Solver (iteration %d): %s", init, iteration, model)
    return model


def _pick(
    columns: Sequence[str], given: str | None, candidates: tuple[str, ...], what: str, source: str
) -> str:
    if given is not None:
        if given not in columns:
            raise DatasetError(
                f"{source} has no column '{given}' (--{what}-key); its columns are {sorted(columns)}"
            )
        return given
    for name in candidates:
        if name in columns:
            return name
    raise DatasetError(
        f"{source} has no {what} column: looked for {', '.join(candidates)}; its columns are "
        f"{sorted(columns)}. Name it with --{what}-key COLUMN"
    )


def read_labelled_rows(dataset: str, split: str) -> tuple[list[dict], str]:
    """The dataset's rows and a description of where they came from (a local file or the hub)."""
    path = Path(dataset)
    if path.exists() or path.suffix.lower() in LOCAL_SUFFIXES:
        if not path.is_file():
            raise DatasetError(f"dataset file {dataset} does not exist")
        if path.suffix.lower() not in LOCAL_SUFFIXES:
            raise DatasetError(f"{dataset}: unsupported file type; use one of {', '.join(LOCAL_SUFFIXES)}")
        return read_rows(path, split), str(path.resolve())
    try:
        import datasets

        rows = list(datasets.load_dataset(dataset, split=split))
    except Exception as e:  # offline, unknown id, no such split: all say the same to the user
        raise DatasetError(
            f"{dataset} is neither a local file nor a loadable hub dataset (split '{split}'): {e}. "
            "Give a local jsonl/json/parquet/csv file, or go online (HF_HUB_OFFLINE unset)"
        ) from e
    return rows, f"hub:{dataset}:{split}"


def convert_dataset(
    dataset: str,
    out_file: Path,
    question_key: str | None = None,
    answer_key: str | None = None,
    answer_format: str = "text",
    split: str = "train",
) -> dict:
    """Write the Solver stage's parquet (question, answer, id) from a labelled dataset.

    Rows with an empty question or answer are left out and counted. Returns the conversion record.
    """
    if answer_format not in ANSWER_FORMATS:
        raise DatasetError(f"--answer-format {answer_format!r}: use one of {', '.join(ANSWER_FORMATS)}")
    rows, source = read_labelled_rows(dataset, split)
    if not rows:
        raise DatasetError(f"{dataset} holds no rows")
    columns = list(rows[0].keys())
    q_col = _pick(columns, question_key, QUESTION_COLUMNS, "question", dataset)
    a_col = _pick(columns, answer_key, ANSWER_COLUMNS, "answer", dataset)
    extract = GOLD_EXTRACTORS[answer_format]
    kept, empty = [], 0
    for i, row in enumerate(rows):
        question = str(row.get(q_col) or "").strip()
        answer = extract(row.get(a_col))
        if not question or not answer:
            empty += 1
            continue
        kept.append({"question": question, "answer": answer, "id": str(row.get("id", i))})
    if not kept:
        raise DatasetError(f"{dataset}: every row has an empty '{q_col}' or '{a_col}'")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        kept, schema=pa.schema([("question", pa.string()), ("answer", pa.string()), ("id", pa.string())])
    )
    atomic_write(out_file, lambda tmp: pq.write_table(table, tmp))
    return {
        "source": source,
        "question_column": q_col,
        "answer_column": a_col,
        "answer_format": answer_format,
        "rows": len(rows),
        "kept": len(kept),
        "empty_left_out": empty,
        "dataset": str(out_file.resolve()),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/supervised_grpo.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("init", help="model folder or hub id, or a run folder (its final Solver)")
    parser.add_argument("dataset", help="labelled jsonl/json/parquet/csv file, or a hub dataset id")
    parser.add_argument("out_dir", help="output folder: data/, solver/, supervised.json")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the Solver stage's)")
    parser.add_argument("--question-key", default=None, help=f"question column (default: {QUESTION_COLUMNS})")
    parser.add_argument("--answer-key", default=None, help=f"answer column (default: {ANSWER_COLUMNS})")
    parser.add_argument(
        "--answer-format",
        default="text",
        choices=ANSWER_FORMATS,
        help="how the answer column holds the answer: as it is, after '####' (GSM8K), or in the last \\boxed{}",
    )
    parser.add_argument("--split", default="train", help="hub split, or a json file's key (train)")
    parser.add_argument(
        "--preset", default=None, help="pipeline preset yaml (e.g. configs/pipeline/demo.yaml)"
    )
    parser.add_argument("--profile", default=None, choices=("paper", "rzero_code"))
    parser.add_argument("--set", action="append", default=[], help="pipeline setting key=value")
    parser.add_argument("overrides", nargs="*", help="engine config key=value for the Solver stage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    if args.steps is not None and args.steps < 1:
        print(f"--steps must be >= 1, got {args.steps}", file=sys.stderr)
        return EXIT_PREFLIGHT
    out = Path(args.out_dir)
    try:
        init = resolve_init(args.init)
        conversion = convert_dataset(
            args.dataset,
            out / "data" / DATA_FILE,
            args.question_key,
            args.answer_key,
            args.answer_format,
            args.split,
        )
    except DatasetError as e:
        print(f"supervised follow-up: {e}", file=sys.stderr)
        return EXIT_PREFLIGHT
    logger.info("dataset: %d of %d rows -> %s", conversion["kept"], conversion["rows"], conversion["dataset"])
    # Engine overrides right after the positionals: launch's parser takes them as one run of words.
    stage_args = ["solver", init, conversion["dataset"], str(out / "solver"), *args.overrides]
    if args.steps:
        stage_args.append(f"trainer.max_steps={args.steps}")
    if args.preset:
        stage_args += ["--preset", args.preset]
    if args.profile:
        stage_args += ["--profile", args.profile]
    for item in args.set:
        stage_args += ["--set", item]
    code = launch.main(stage_args)  # preflight, then the Solver stage in its own process
    if code != 0:
        return code
    manifest = read_manifest(out / "solver") or {}
    record = {
        "init": args.init,
        "init_model": init,
        "data": conversion,
        "steps": manifest.get("counts", {}).get("steps"),
        "model": manifest.get("outputs", {}).get("model"),
        "stage_args": stage_args,
    }
    atomic_write_json(out / RECORD_FILE, record)
    print(json.dumps({"model": record["model"], "record": str(out / RECORD_FILE)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
