"""The files of the pseudo-labelling stage besides labelled.jsonl: the training set and the p̂ plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from verl.utils.fs import atomic_write


def write_dataset(path: Path, rows: list[dict]) -> Path:
    """train.parquet with an explicit schema (an empty table keeps its column types)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("question", pa.string()), ("answer", pa.string()), ("p_hat", pa.float64()), ("id", pa.string())]
    )
    table = pa.table(
        {
            "question": [r["question"] for r in rows],
            "answer": [r["label"] for r in rows],
            "p_hat": [float(r["p_hat"]) for r in rows],
            "id": [str(r["id"]) for r in rows],
        },
        schema=schema,
    )
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def plot_p_hat_histogram(
    path: Path, p_hats: Sequence[float], band: tuple[float, float], votes: int, title: str
) -> Path:
    """PNG histogram of p̂ with one bar per possible share k/m and the kept band shaded."""
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    edges = (np.arange(votes + 2) - 0.5) / votes  # bars centred on 0, 1/m, ..., 1
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        ax.axvspan(
            band[0], band[1], color="tab:green", alpha=0.15, label=f"kept band [{band[0]:g}, {band[1]:g}]"
        )
        ax.hist(list(p_hats), bins=edges, color="tab:blue", edgecolor="white")
        ax.set_xlim(edges[0], edges[-1])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("p̂ (share of the majority answer)")
        ax.set_ylabel("questions")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
