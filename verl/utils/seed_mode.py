"""How vLLM sampling is seeded: one seed per request or one per engine (no torch import: the driver
and the stage configs resolve it too)."""

from __future__ import annotations

SEED_MODES = ("auto", "per_request", "per_engine")


def resolve_seed_mode(mode: str, device: str) -> str:
    """'per_request' or 'per_engine' ('auto': per-request on CPU, per-engine on GPU).

    Per-request seeds make every prompt's samples independent of the batch it lands in (a resumed
    run regenerates exactly the same responses), but vLLM 0.32 then samples top-p/top-k with its
    Python-loop fallback (`v1/sample/ops/topk_topp_sampler.py`: per-request generators are not
    supported by the fast kernels). On GPU each engine gets its own seed instead.
    """
    if mode == "auto":
        return "per_request" if device == "cpu" else "per_engine"
    if mode not in SEED_MODES:
        raise ValueError(f"seed_mode='{mode}': use {', '.join(SEED_MODES)}")
    return mode
