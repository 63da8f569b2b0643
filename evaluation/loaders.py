"""Load a benchmark into evaluation items: hub or local file, field mapping, gold extraction, subsampling.

A local file (jsonl, json, parquet or csv) is read with the same code path as the hub copy: rows
are plain dicts, the entry's field candidates (or a `--fields` override) pick the columns, and the
entry's gold extractor turns the answer column into the gold answer string.

Subsampling is seeded by (seed, benchmark name), so the same items are drawn on every machine and
for every model; the kept items stay in source order.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.registry import BenchmarkSpec, get_spec, resolve_name
from rewards.answer_parsing import last_boxed

logger = logging.getLogger(__name__)

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Item:
    """One benchmark question, ready for prompting and scoring."""

    id: str
    index: int  # row index in the source (before subsampling)
    question: str
    gold: str
    options: tuple[str, ...] | None = None
    category: str | None = None


@dataclass
class LoadedBenchmark:
    """Items of one benchmark plus where they came from (recorded in results.json)."""

    spec: BenchmarkSpec
    items: list[Item]
    source: str
    num_rows: int
    skipped_empty: int = 0
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gold: str = ""
    limit: int | None = None
    seed: int = 0


# ----------------------------------------------------------------------------- value helpers


def _to_python(value: Any) -> Any:
    """numpy arrays / scalars (parquet, datasets) -> plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _as_list(value: Any) -> list | None:
    """A list value, also when a csv/json copy stored it as its repr ("['2']") or JSON text."""
    value = _to_python(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    return parsed
    return None


def _text(value: Any) -> str:
    value = _to_python(value)
    return "" if value is None else str(value).strip()


# ----------------------------------------------------------------------------- gold extraction


def gold_text(value: Any) -> str:
    """The answer column as it is (MATH-500, AMC23, AIME, BBEH)."""
    return _text(value)


def gold_after_hashes(value: Any) -> str:
    """GSM8K: the text after the last `####`, thousands separators removed ("1,600" -> "1600")."""
    text = _text(value).split("####")[-1].strip()
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)


def gold_first(value: Any) -> str:
    """OlympiadBench: the first item of the `final_answer` list ("$" delimiters dropped)."""
    items = _as_list(value)
    text = _text(items[0]) if items else _text(value)
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def gold_last_boxed(value: Any) -> str:
    """Minerva: the content of the last balanced \\boxed{} of the solution (unboxed text passes through)."""
    text = _text(value)
    boxed = last_boxed(text)
    return boxed.strip() if boxed is not None else text


def gold_letter(value: Any) -> str:
    """Multiple choice: an option letter ("C", "(c)") or a 0-based option index (2) -> "C"."""
    value = _to_python(value)
    if isinstance(value, bool):
        raise ValueError(f"not an option letter or index: {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return OPTION_LETTERS[int(value)]
    text = _text(value).strip("()").strip().upper()
    if len(text) == 1 and text in OPTION_LETTERS:
        return text
    raise ValueError(f"not an option letter or index: {value!r}")


GOLD_EXTRACTORS: dict[str, Callable[[Any], str]] = {
    "text": gold_text,
    "after_hashes": gold_after_hashes,
    "first": gold_first,
    "last_boxed": gold_last_boxed,
    "letter": gold_letter,
}


# ----------------------------------------------------------------------------- reading rows


def read_rows(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a local jsonl / json / parquet / csv file as plain dicts.

    A json file may hold a list of rows, or an object whose `split` (or "data"/"rows") key holds it.
    CSV cells are read as text ("None" stays "None"); list columns stored as text are parsed later.
    """
    path_str = str(path)
    suffix = Path(path_str).suffix.lower()
    if suffix == ".jsonl":
        with open(path_str, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix == ".json":
        with open(path_str, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):
            for key in (split, "data", "rows"):
                if key and isinstance(data.get(key), list):
                    return data[key]
            raise ValueError(f"{path_str}: json object without a list under {split!r}, 'data' or 'rows'")
        return list(data)
    if suffix in (".parquet", ".csv"):
        import pandas as pd

        if suffix == ".parquet":
            frame = pd.read_parquet(path_str)
        else:
            frame = pd.read_csv(path_str, dtype=str, keep_default_na=False)
        return [{k: _to_python(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    raise ValueError(f"{path_str}: unsupported file type {suffix!r} (use one of {', '.join(LOCAL_SUFFIXES)})")


def read_hub_rows(spec: BenchmarkSpec) -> list[dict]:
    """Rows of the hub copy (`datasets.load_dataset(hub_id, config, split=...)`); needs network or cache."""
    import datasets

    dataset = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.split)
    return [dict(row) for row in dataset]


def find_local_file(name: str, data_dir: str | Path) -> Path | None:
    """A file in `data_dir` named after the benchmark or one of its aliases (e.g. aime24.jsonl)."""
    spec = get_spec(name)
    folder = Path(data_dir)
    for stem in (spec.name, *spec.aliases):
        for suffix in LOCAL_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


# ----------------------------------------------------------------------------- field mapping


def parse_data_args(values: Iterable[str]) -> dict[str, str]:
    """`["gsm8k=/data/gsm8k.jsonl", ...]` -> {"gsm8k": "/data/gsm8k.jsonl"} (names canonicalised)."""
    out: dict[str, str] = {}
    for value in values:
        for part in _split_list(value):
            name, sep, path = part.partition("=")
            if not sep or not path:
                raise ValueError(f"--data expects NAME=PATH, got {part!r}")
            out[resolve_name(name)] = path.strip()
    return out


def parse_field_args(values: Iterable[str]) -> dict[str, dict[str, str]]:
    """`["minerva:question=problem,answer=solution"]` -> {"minerva_math": {"question": "problem", ...}}.

    Keys: question, answer, options, category, and gold (an extractor name). Several option
    columns (GPQA style) are joined with "+": `options=A+B+C+D`.
    """
    out: dict[str, dict[str, str]] = {}
    for value in values:
        name, sep, mapping = value.partition(":")
        if not sep:
            raise ValueError(f"--fields expects NAME:field=column,..., got {value!r}")
        entry = out.setdefault(resolve_name(name), {})
        for pair in mapping.split(","):
            if not pair.strip():
                continue
            key, sep2, column = pair.partition("=")
            key = key.strip()
            if not sep2 or key not in ("question", "answer", "options", "category", "gold"):
                raise ValueError(f"--fields {value!r}: bad pair {pair!r}")
            if key == "gold" and column.strip() not in GOLD_EXTRACTORS:
                raise ValueError(f"--fields {value!r}: gold must be one of {sorted(GOLD_EXTRACTORS)}")
            entry[key] = column.strip()
    return out


def _split_list(value: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s]+", value) if p.strip()]


def _pick_column(row: dict, candidates: tuple[str, ...], logical: str, source: str) -> str:
    for column in candidates:
        if column in row:
            return column
    raise KeyError(
        f"{source}: no column for {logical!r} (tried {list(candidates)}; the file has {sorted(row)}); "
        f"map it with --fields NAME:{logical}=COLUMN"
    )


# ----------------------------------------------------------------------------- loading


def subsample_indices(num_rows: int, limit: int | None, seed: int, name: str) -> list[int]:
    """Sorted indices of a seeded random subset of size `limit` (all rows when limit is None or >= n)."""
    if limit is None or limit >= num_rows:
        return list(range(num_rows))
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    # A string seed is hashed with sha512 by `random`, so the draw is the same on every machine.
    rng = random.Random(f"{seed}:{name}")
    return sorted(rng.sample(range(num_rows), limit))


def _columns(
    spec: BenchmarkSpec, first: dict, mapping: dict[str, tuple[str, ...]], overrides: dict, source: str
) -> tuple[str, str | None, str | None, str | None, tuple[str, ...] | None]:
    """The columns of (question, category, answer, options, GPQA option texts) in a benchmark's rows."""
    q_col = _pick_column(first, mapping["question"], "question", source)
    cat_col = next((c for c in mapping.get("category", ()) if c in first), None)
    if spec.options_builder == "gpqa" and "options" not in overrides:
        option_cols = mapping["options"]
        for column in option_cols:
            _pick_column(first, (column,), "options", source)
        a_col = None
    else:
        option_cols = None
        a_col = _pick_column(first, mapping["answer"], "answer", source)
    opt_col = None
    if spec.metric == "mc" and option_cols is None:
        opt_col = _pick_column(first, mapping["options"], "options", source)
    return q_col, cat_col, a_col, opt_col, option_cols


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    fields: dict[str, str] | None = None,
    limit: int | None = -1,
    seed: int = 0,
) -> LoadedBenchmark:
    """Load benchmark `name` from `path` (local file) or, when `path` is None, from the hub.

    Args:
        fields: overrides of the entry's field candidates, e.g. {"question": "problem", "gold": "text"}.
        limit: number of seeded-random items to keep (an explicit subset, labelled in the report);
            -1 = the entry's default (the full set for every registry entry), None = all.
        seed: subsampling seed (also the GPQA option-shuffle seed).
    """
    spec = get_spec(name)
    overrides = dict(fields or {})
    gold_name = overrides.pop("gold", spec.gold)
    mapping: dict[str, tuple[str, ...]] = dict(spec.fields)
    for key, column in overrides.items():
        mapping[key] = tuple(column.split("+")) if key == "options" else (column,)
    if limit == -1:
        limit = spec.default_limit

    if path is not None:
        source = str(path)
        rows = read_rows(path, split=spec.split)
    else:
        source = f"hub:{spec.hub_id}" + (f"/{spec.hub_config}" if spec.hub_config else "") + f"[{spec.split}]"
        rows = read_hub_rows(spec)
    if not rows:
        raise ValueError(f"{spec.name}: {source} has no rows")

    q_col, cat_col, a_col, opt_col, option_cols = _columns(spec, rows[0], mapping, overrides, source)
    extract = GOLD_EXTRACTORS[gold_name]

    items: list[Item] = []
    skipped = 0
    for index in subsample_indices(len(rows), limit, seed, spec.name):
        row = rows[index]
        question = _text(row.get(q_col))
        options: tuple[str, ...] | None = None
        if option_cols is not None:
            # GPQA: correct answer + 3 distractors, shuffled per item with the run's seed so the
            # correct letter is not always "A" (the authors shuffle unseeded).
            texts = [_text(row.get(c)) for c in option_cols]
            order = list(range(len(texts)))
            random.Random(f"{seed}:{spec.name}:options:{index}").shuffle(order)
            options = tuple(texts[i] for i in order)
            gold = OPTION_LETTERS[order.index(0)]
        else:
            gold = extract(row.get(a_col))
            if opt_col is not None:
                raw = _as_list(row.get(opt_col))
                if raw is None:
                    raise ValueError(f"{spec.name}: row {index}: options column {opt_col!r} is not a list")
                options = tuple(_text(o) for o in raw)
        if not question or not gold:
            skipped += 1
            continue
        if options is not None and OPTION_LETTERS.index(gold) >= len(options):
            raise ValueError(f"{spec.name}: row {index}: gold {gold} but only {len(options)} options")
        category = _text(row.get(cat_col)) if cat_col else None
        items.append(Item(f"{spec.name}-{index}", index, question, gold, options, category or None))
    if skipped:
        logger.warning("%s: skipped %d rows with an empty question or gold answer", spec.name, skipped)
    if not items:
        raise ValueError(f"{spec.name}: no usable rows in {source}")
    used = {"question": (q_col,), "answer": (a_col,) if a_col else ()}
    if opt_col or option_cols:
        used["options"] = (opt_col,) if opt_col else tuple(option_cols or ())
    return LoadedBenchmark(spec, items, source, len(rows), skipped, used, gold_name, limit, seed)
