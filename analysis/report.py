"""The analysis in words and a picture: analysis.md, accuracy.png and the run summary's section.

The summary section is written to `analysis/summary_section.md` (links relative to the run folder)
and put into `<run>/summary.md` between two markers, replacing an older one; `pipeline.summary` puts
the same file back when it rewrites summary.md, so the section survives a later iteration.
"""

from __future__ import annotations

from pathlib import Path

from verl.utils.fs import atomic_write, atomic_write_text

SECTION_FILE = "summary_section.md"
BEGIN, END = "<!-- analysis:begin -->", "<!-- analysis:end -->"
MISSING = "—"


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def _num(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def _matrix(record: dict, key: str) -> list[str]:
    sets = [s["name"] for s in record["sets"]]
    rows = [[name, *[_pct(cols.get(s)) for s in sets]] for name, cols in record[key].items()]
    return _table(["model \\ questions of", *sets], rows)


def render_markdown(record: dict, plot_link: str | None) -> str:
    """The analysis as markdown: settings, both matrices, label accuracy, question statistics."""
    oracle = record.get("oracle")
    k, seed = record["per_iteration"], record["seed"]
    lines = [
        "## Analysis: question difficulty and pseudo-label accuracy",
        "",
        f"K = {k} kept questions drawn per iteration (seed {seed}); every model answers greedily with the "
        f"Solver prompt (at most {record['max_tokens']} new tokens); graded with the `{record['profile']}` "
        "profile's equivalence, the reference as gold. Models: "
        + ", ".join(f"{r['name']} `{r['model']}`" for r in record["rows"])
        + ".",
        "",
        "**Accuracy (%) against the pseudo-labels**",
        "",
        *_matrix(record, "matrix_vs_label"),
        "",
    ]
    if oracle:
        who = oracle["oracle"] + (f" (model {oracle['oracle_model']})" if oracle.get("oracle_model") else "")
        lines += [
            f"**Pseudo-label accuracy (%)** against the oracle {who}: "
            + ", ".join(f"{s}: {_pct(v)}" for s, v in record["label_accuracy"].items()),
            "",
            "**Accuracy (%) against the oracle's answers**",
            "",
            *_matrix(record, "matrix_vs_oracle"),
            "",
        ]
    else:
        lines += ["No oracle given (`--oracle`): pseudo-label accuracy not measured.", ""]
    header = [
        "questions",
        "kept",
        "drawn",
        "mean pairwise BLEU",
        "distinct-2",
        "distinct-3",
        "mean words",
        "mean p̂",
        "p̂ histogram (drawn)",
    ]
    rows = []
    for s in record["sets"]:
        q = record["questions"][s["name"]]["drawn"]
        hist = " ".join(f"{key}:{n}" for key, n in q["p_hat_hist"].items() if n)
        rows.append(
            [
                s["name"],
                str(s["kept"]),
                str(s["drawn"]),
                _num(q["mean_pairwise_bleu"]),
                _num(q["distinct_2"]),
                _num(q["distinct_3"]),
                _num(q["mean_length_words"], 1),
                _num(q["mean_p_hat"]),
                hist or MISSING,
            ]
        )
    lines += ["**Questions per iteration**", "", *_table(header, rows), ""]
    if plot_link:
        lines += [f"![accuracy across iterations]({plot_link})", ""]
    lines += [f"- {note}" for note in record.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def write_plot(path: Path, record: dict) -> Path | None:
    """Accuracy of each model per question set (and the label accuracy), one line each."""
    if not record["sets"]:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    sets = [s["name"] for s in record["sets"]]
    panels = [("matrix_vs_label", "against the pseudo-labels")]
    if record.get("oracle"):
        panels.append(("matrix_vs_oracle", "against the oracle"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.0), dpi=100, squeeze=False)
    try:
        for ax, (key, title) in zip(axes[0], panels):
            for name, cols in record[key].items():
                ax.plot(sets, [cols.get(s) for s in sets], marker="o", label=name)
            if key == "matrix_vs_oracle":
                values = [record["label_accuracy"].get(s) for s in sets]
                ax.plot(sets, values, marker="s", linestyle="--", color="black", label="pseudo-labels")
            ax.set_ylim(-2, 102)
            ax.set_xlabel("questions of")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=8)
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def update_run_summary(run_dir: Path, markdown_path: Path) -> Path:
    """Write the summary section file and put it into summary.md (replacing an older section)."""
    record_dir = markdown_path.parent.name
    text = markdown_path.read_text(encoding="utf-8")
    # Links of analysis.md are relative to analysis/; in summary.md they are relative to the run.
    text = text.replace("](accuracy.png)", f"]({record_dir}/accuracy.png)")
    section = f"{BEGIN}\n{text.rstrip()}\n\nDetails: [{record_dir}/{markdown_path.name}]({record_dir}/{markdown_path.name}), `{record_dir}/analysis.json`.\n{END}\n"
    atomic_write_text(markdown_path.parent / SECTION_FILE, section)
    summary = run_dir / "summary.md"
    old = summary.read_text(encoding="utf-8") if summary.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        old = head + rest.split(END, 1)[1].lstrip("\n")
    return atomic_write_text(summary, old.rstrip() + "\n\n" + section if old.strip() else section)
