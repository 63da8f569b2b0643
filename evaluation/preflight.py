"""Where each benchmark of a run will come from, checked before any engine starts: a local file
(`--data NAME=PATH`, `--data-dir DIR`) that exists, or a hub dataset that resolves or is cached.

Used by the evaluation CLI (`scripts/evaluate.sh`) and by the run's preflight (`pipeline.preflight`),
which phrase the fix in their own options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evaluation.loaders import find_local_file
from evaluation.registry import get_spec, resolve_name
from infra.preflight import hub_status


def unavailable_benchmarks(
    benchmarks: Sequence[str],
    data: Mapping[str, str] | None = None,
    data_dir: str | None = None,
    allow_hub: bool = True,
) -> dict[str, str]:
    """{benchmark: why it cannot be loaded} for the benchmarks that have no usable source."""
    data = dict(data or {})
    missing: dict[str, str] = {}
    from_hub: list[str] = []
    for name in benchmarks:
        try:
            name = resolve_name(name)
        except KeyError as e:
            missing[name] = str(e).strip("'\"")
            continue
        if name in data:
            if not Path(data[name]).expanduser().is_file():
                missing[name] = f"local file {data[name]} does not exist"
        elif data_dir and find_local_file(name, data_dir) is not None:
            continue
        elif not allow_hub:
            where = f" in {data_dir}" if data_dir else ""
            missing[name] = f"no local file{where} and hub loading is off"
        else:
            from_hub.append(name)
    # One request per benchmark, in parallel: ten benchmarks still answer within the hub timeout.
    with ThreadPoolExecutor(max_workers=max(1, len(from_hub))) as pool:
        statuses = dict(
            zip(from_hub, pool.map(lambda n: hub_status(get_spec(n).hub_id, "dataset"), from_hub))
        )
    for name, (status, detail) in statuses.items():
        if status == "offline":
            missing[name] = f"not in the HF cache, and {detail}"
        elif status == "unreachable":
            missing[name] = f"the hub cannot be reached ({detail}) and the dataset is not in the HF cache"
        elif status not in ("cached", "found"):
            missing[name] = detail
    return missing


def describe_missing(missing: Mapping[str, str]) -> str:
    """The benchmarks of `unavailable_benchmarks`, grouped by reason, each with its hub id."""
    by_reason: dict[str, list[str]] = {}
    for name, why in missing.items():
        try:
            label = f"{name} ({get_spec(name).hub_id})"
        except KeyError:
            label = name
        by_reason.setdefault(why, []).append(label)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())
