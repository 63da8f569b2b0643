"""One logging style for every stage: `logging` with one format, tqdm for progress bars."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
DATE_FORMAT = "%H:%M:%S"


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger of a stage process (stderr, one format). Idempotent."""
    root = logging.getLogger()
    if any(getattr(h, "_rzero", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler._rzero = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
