"""The run summary: `<run_dir>/summary.md` with per-stage counts, timings, reward curves and config.

Reads what the stages leave under `<run_dir>/iter_<i>/<stage>/` (manifest.json, train/metrics.jsonl,
results.json), `<run_dir>/eval_base/results.json` and `<run_dir>/run.json`; writes
`<run_dir>/summary.md` (first the evaluation of the base model and every Solver in the paper's
layout), the iteration plot `<run_dir>/plots/evaluation.png` and the reward plots
`<run_dir>/plots/iter_<i>_<stage>_reward.png`, all atomically. It only reads the stages' files, so it
can run at any time, on a run still in progress or one that crashed: anything absent is shown as
"not run" or "—", anything unreadable is named in the summary instead of stopping it.

    python -m pipeline.summary RUN_DIR [--iteration N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from evaluation.registry import REGISTRY
from evaluation.report import fmt, render_markdown, row_averages, row_from_results, write_plot
from infra.stage_kit import MANIFEST, read_manifest
from pipeline.experiments import EXPERIMENTS
from verl.utils.fs import atomic_write, atomic_write_text
from verl.utils.logger import METRICS_FILE, read_metrics

STAGES = ("challenger", "question_generate", "question_evaluate", "solver", "evaluate")
TRAINING_STAGES = ("challenger", "solver")
MISSING = "—"
# Written by the run analysis (analysis/report.py, SECTION_FILE), read here without importing it.
ANALYSIS_SECTION = "analysis/summary_section.md"
# Counts each stage is expected to report; absent ones show as MISSING, extra ones are appended.
EXPECTED_COUNTS = {
    "challenger": ("steps",),
    "question_generate": ("generated", "valid", "invalid"),
    "question_evaluate": ("valid", "kept", "dropped", "grader_timeouts"),
    "solver": ("steps",),
    "evaluate": (),
}
# Curves drawn next to reward/mean: the reward's components, where the stage logs them.
PLOT_KEYS = {
    "challenger": ("reward/uncertainty", "reward/penalty", "reward/valid"),
    "solver": ("reward/accuracy", "reward/format"),
}
# Non-reward metrics worth a line in the last-step table (every reward/* key is shown as well).
LAST_STEP_KEYS = ("response_length/mean", "actor/kl", "actor/entropy", "actor/grad_norm", "timing_s/step")
# Dotted-key suffixes of the hyperparameters the profiles and presets change, shown by last component.
CONFIG_KEYS = ("profile", "optim.lr", "rollout_batch_size", "prompts_per_update", "rollout.n")
CONFIG_KEYS += ("max_steps", "loss_agg_mode", "kl_coef", "reward_kwargs")
MAX_OTHER_CONFIG = 12  # leaves shown for a non-training stage's config (its own few settings)


def _fmt(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int):  # bools included
        return str(value)
    if isinstance(value, float):
        return MISSING if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m {secs:02d}s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in cells[1:]]


def _iterations(run_dir: Path, iteration: int | None) -> list[int]:
    """Iteration numbers found under run_dir (numeric order); with `iteration`, those up to it."""
    found = {int(p.name[5:]) for p in run_dir.iterdir() if p.is_dir() and re.fullmatch(r"iter_\d+", p.name)}
    if iteration is not None:
        found = {i for i in found if i <= iteration} | {iteration}
    return sorted(found)


def _total_seconds(timings: dict[str, Any]) -> float | None:
    """The manifest's `total` timing, else the sum of its numeric timings."""
    if isinstance(timings.get("total"), (int, float)):
        return float(timings["total"])
    values = [v for v in timings.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(sum(values)) if values else None


def _read_stage(stage_dir: Path) -> dict[str, Any]:
    """{"status", "manifest", "metrics", "errors"} of one stage; never raises on what a run left."""
    info: dict[str, Any] = {"status": "not run", "manifest": None, "metrics": [], "errors": []}
    if not stage_dir.is_dir():
        return info
    try:
        info["manifest"] = read_manifest(stage_dir)
        info["status"] = "done" if info["manifest"] else "unfinished"
        if stage_dir.is_symlink():  # another run's stage, linked by `reuse_from` (pipeline/reuse.py)
            info["status"] += f" (reused: {os.readlink(stage_dir)})"
    except (OSError, ValueError) as e:  # a hand-edited or foreign file: report it, keep summarising
        info["status"] = "unreadable"
        info["errors"].append(f"{MANIFEST}: {e}")
    metrics_path = stage_dir / "train" / METRICS_FILE
    if metrics_path.is_file():
        try:
            info["metrics"] = read_metrics(metrics_path)
        except (OSError, ValueError) as e:
            info["errors"].append(f"train/{METRICS_FILE}: {e}")
    return info


def _counts_text(stage: str, counts: dict[str, Any]) -> str:
    expected = EXPECTED_COUNTS.get(stage, ())
    keys = [*expected, *(k for k in counts if k not in expected)]
    parts = []
    for key in keys:
        value = counts.get(key)
        if isinstance(value, dict):  # e.g. dropped by reason: the total here, the reasons below
            value = sum(v for v in value.values() if isinstance(v, (int, float)))
        parts.append(f"{key} {_fmt(value)}")
    return ", ".join(parts) or MISSING


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values; reward_kwargs stays one leaf (shown as compact JSON)."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and key != "reward_kwargs":
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _config_text(stage: str, config: dict[str, Any]) -> str:
    flat = _flatten(config)
    if stage in TRAINING_STAGES:
        parts = []
        for suffix in CONFIG_KEYS:
            label = suffix.rsplit(".", 1)[-1]
            # a flat config ({"lr": ...}) matches by label, a nested one by its dotted suffix
            match = [v for k, v in flat.items() if k.endswith("." + suffix) or k in (suffix, label)]
            if match:
                parts.append(f"{label}={_fmt(match[0])}")
        return ", ".join(parts)
    items = [f"{k}={_fmt(v)}" for k, v in flat.items() if v not in ({}, [], "")]
    more = len(items) - MAX_OTHER_CONFIG
    return ", ".join(items[:MAX_OTHER_CONFIG]) + (f", … ({more} more)" if more > 0 else "")


def write_reward_plot(rows: list[dict], stage: str, title: str, path: Path) -> Path | None:
    """reward/mean (and the stage's reward components) per step as a PNG; None without reward data."""
    keys = [k for k in ("reward/mean", *PLOT_KEYS.get(stage, ())) if any(r.get(k) is not None for r in rows)]
    if not keys:
        return None
    # The object-oriented API draws on an Agg canvas without touching pyplot's global state,
    # so it is safe in a driver process that may have another backend (or none) selected.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
        xs, ys = zip(*points) if points else ((), ())
        ax.plot(xs, ys, marker="o", linewidth=2.2 if key == "reward/mean" else 1.2, label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not 2.5
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _header(run_dir: Path, iterations: list[int]) -> list[str]:
    lines = [f"# R-Zero run summary: {run_dir.name}", ""]
    run_json = run_dir / "run.json"
    info: dict[str, Any] = {}
    if run_json.is_file():
        try:
            info = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            lines.append(f"- run.json unreadable: {e}")
    for key in ("tag", "experiment", "base_model", "profile", "preset", "iterations"):
        if key in info:
            lines.append(f"- **{key}**: {_fmt(info[key])}")
    if info.get("experiment") in EXPERIMENTS:
        experiment = EXPERIMENTS[info["experiment"]]
        lines.append(f"- **experiment plan**: {experiment.what} (the paper's {experiment.paper})")
    lines.append(f"- **iterations found**: {', '.join(map(str, iterations)) or 'none yet'}")
    if "plan" in info:
        plan = info["plan"] if isinstance(info["plan"], str) else json.dumps(info["plan"], indent=2)
        lines += ["", "<details><summary>plan</summary>", "", "```", plan, "```", "", "</details>"]
    return [*lines, ""]


def _evaluation(stage_dir: Path) -> list[str]:
    results, summary = stage_dir / "results.json", stage_dir / "summary.md"
    if results.is_file():
        try:
            row = row_from_results(json.loads(results.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return [f"results.json unreadable: {e}", ""]
        averages, names = row_averages(row), list(row.scores)
        header = [
            "Model",
            "Overall AVG",
            "MATH AVG",
            *(REGISTRY[n].title if n in REGISTRY else n for n in names),
        ]
        body = [row.label, fmt(averages["overall_avg"][0]), fmt(averages["math_avg"][0])]
        body += [
            fmt(row.scores[n]) + (f" ({row.protocols[n]})" if row.protocols.get(n) else "") for n in names
        ]
        note = "Accuracy in percent; averages over the benchmarks present."
        return [*_table(header, [body]), "", note, ""]
    if summary.is_file():  # no results.json (e.g. another evaluator): show its own table as is
        text = summary.read_text(encoding="utf-8")
        return [re.sub(r"^(#+)", r"###\1", line) for line in text.splitlines()] + [""]
    return []


def _stages_table(stages: dict[str, dict], manifests: dict[str, dict]) -> list[str]:
    rows, total = [], 0.0
    for stage, info in stages.items():
        seconds = _total_seconds(manifests[stage].get("timings_s") or {})
        total += seconds or 0.0
        counts = _counts_text(stage, manifests[stage].get("counts") or {}) if info["manifest"] else MISSING
        rows.append([stage, info["status"], _fmt_seconds(seconds), counts])
    rows.append(["**total**", "", _fmt_seconds(total), ""])
    return ["### Stages", "", *_table(["Stage", "Status", "Time", "Counts"], rows), ""]


def _questions_table(gen: dict[str, Any], ev: dict[str, Any]) -> list[str]:
    """Generated -> valid -> kept, and every drop reason on its own row."""
    rows = [["generated", gen.get("generated")], ["valid (parsed)", gen.get("valid")]]
    rows += [
        ["invalid", gen.get("invalid")],
        ["evaluated (valid)", ev.get("valid")],
        ["kept", ev.get("kept")],
    ]
    dropped = ev.get("dropped")
    if isinstance(dropped, dict):
        rows += [[f"dropped: {reason}", n] for reason, n in sorted(dropped.items())] or [["dropped", 0]]
    else:
        rows.append(["dropped", dropped])
    rows.append(["grader timeouts", ev.get("grader_timeouts")])
    return ["### Questions", "", *_table(["Questions", "Count"], [[k, _fmt(v)] for k, v in rows]), ""]


def _training(run_dir: Path, i: int, stages: dict[str, dict]) -> list[str]:
    """Reward plots and the last logged step of each training stage (also of one still running)."""
    lines, plots, last = [], [], {}
    for stage in TRAINING_STAGES:
        metrics = stages[stage]["metrics"]
        if not metrics:
            continue
        last[stage] = metrics[-1]
        name = f"iter_{i}_{stage}_reward.png"
        if write_reward_plot(metrics, stage, f"iteration {i} · {stage}", run_dir / "plots" / name):
            plots.append(f"![{stage} reward, iteration {i}](plots/{name})")
    if plots:
        lines += ["### Reward curves", "", *[p + "\n" for p in plots]]
    if last:
        keys = sorted({k for row in last.values() for k in row if k.startswith("reward/")})
        keys += [k for k in LAST_STEP_KEYS if any(k in row for row in last.values())]
        header = ["Metric", *[f"{s} (step {_fmt(last[s].get('step'))})" for s in last]]
        body = [[k, *[_fmt(last[s].get(k)) for s in last]] for k in keys]
        lines += ["### Last training step", "", *_table(header, body), ""]
    return lines


def _iteration_section(run_dir: Path, i: int) -> list[str]:
    iter_dir = run_dir / f"iter_{i}"
    stages = {s: _read_stage(iter_dir / s) for s in STAGES}
    manifests = {s: info["manifest"] or {} for s, info in stages.items()}
    lines = [f"## Iteration {i}", "", *_stages_table(stages, manifests)]
    lines += _questions_table(
        manifests["question_generate"].get("counts") or {}, manifests["question_evaluate"].get("counts") or {}
    )
    lines += _training(run_dir, i, stages)
    # results.json is the evaluator's own completion mark: shown even if the manifest is not there yet.
    evaluation = _evaluation(iter_dir / "evaluate")
    if evaluation:
        lines += ["### Evaluation", "", *evaluation]

    notes = [f"- **{s}**: {note}" for s in STAGES for note in manifests[s].get("notes") or []]
    notes += [f"- **{s}**: {err}" for s in STAGES for err in stages[s]["errors"]]
    if notes:
        lines += ["### Notes", "", *notes, ""]

    config = [
        f"- **{s}**: {text}" for s in STAGES if (text := _config_text(s, manifests[s].get("config") or {}))
    ]
    if config:
        lines += ["### Config", "", *config, ""]
    return lines


# Under a table of zeros: what a newcomer running the demo would otherwise read as a broken run.
NOTHING_RIGHT_NOTE = (
    "Every score is 0.00: no model here answered a question right, so no rise can show. With the "
    "demo's embedded tiny model (random weights taught only R-Zero's output formats, not arithmetic) "
    "that is expected: the demo shows every stage running, not learning. For a visible rise see the "
    "README's real-model learning benchmark (SmolLM2-135M, `scripts/bench_real_learning.sh`)."
)


def _evaluation_across_iterations(run_dir: Path, iterations: list[int]) -> list[str]:
    """The base model and each Solver in the paper's table layout, the iteration plot, the data."""
    folders = [run_dir / "eval_base", *(run_dir / f"iter_{i}" / "evaluate" for i in iterations)]
    rows, sources = [], {}
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            continue
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            rows.append(row_from_results(results))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return ["## Evaluation", "", f"{path} unreadable: {e}", ""]
        for name, entry in results.get("benchmarks", {}).items():
            sources.setdefault(name, entry.get("source"))
    if not rows:
        return []
    text = render_markdown(rows, "Evaluation")
    lines = [re.sub(r"^(#+)", r"#\1", line) for line in text.splitlines()]  # one level down
    if all(score == 0 for row in rows for score in row.scores.values()):
        lines += ["", NOTHING_RIGHT_NOTE]
    if len(rows) > 1:
        write_plot(rows, run_dir / "plots" / "evaluation.png")
        lines += ["", "![evaluation across iterations](plots/evaluation.png)"]
    generated = str(run_dir / "eval_data")
    lines += ["", "Data:"]
    for name, source in sources.items():
        title = REGISTRY[name].title if name in REGISTRY else name
        what = " (generated arithmetic word problems, evaluation/synthetic.py: not " + title + ")"
        lines.append(f"- {title}: {source}" + (what if str(source).startswith(generated) else ""))
    return [*lines, ""]


def write_run_summary(run_dir: str | Path, iteration: int | None = None) -> Path:
    """Write `<run_dir>/summary.md` (every iteration found, newest last) and its reward plots.

    `iteration`: summarise iterations up to this one (it is listed even when its folder is absent).
    Returns the path of summary.md.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    iterations = _iterations(run_dir, iteration)
    lines = _header(run_dir, iterations) + _evaluation_across_iterations(run_dir, iterations)
    for i in iterations:
        lines += _iteration_section(run_dir, i)
    # The run analysis's section (scripts/analyze_run.sh writes it beside its results) outlives a
    # rewrite of the summary, e.g. after a later iteration.
    analysis = run_dir / ANALYSIS_SECTION
    if analysis.is_file():
        lines += ["", analysis.read_text(encoding="utf-8").rstrip()]
    return atomic_write_text(run_dir / "summary.md", "\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.summary", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder: $STORAGE_PATH/<tag>")
    parser.add_argument("--iteration", type=int, default=None, help="summarise iterations up to this one")
    args = parser.parse_args(argv)
    try:
        path = write_run_summary(args.run_dir, args.iteration)
    except FileNotFoundError as e:
        parser.error(str(e))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
