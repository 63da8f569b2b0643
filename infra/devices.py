"""Which GPUs a run may use, and how they are cut into tensor-parallel groups.

One answer everywhere (planner, engines, Solver servers): CUDA_VISIBLE_DEVICES when it is set
(empty or "-1" means no GPU), else the GPUs `nvidia-smi -L` lists. No torch import, so a CPU box can
plan an 8-GPU run by setting CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence


def visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES entries); [] on a CPU machine."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def parse_devices(text: str | None) -> list[str] | None:
    """CLI form of a device list: unset/"" -> None (all visible GPUs), "cpu"/"none" -> [], "0,1" -> ids."""
    if text is None or not text.strip():
        return None
    if text.strip().lower() in ("cpu", "none"):
        return []
    return [d.strip() for d in text.split(",") if d.strip()]


def device_groups(
    devices: Sequence[str] | None, tensor_parallel_size: int = 1, max_groups: int | None = None
) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES value of each engine: consecutive groups of `tensor_parallel_size` GPUs.

    `devices` None means every visible GPU; [] (or no GPU visible) means CPU: one engine, [None].
    `max_groups` caps the number of groups (data-parallel size); None uses every group.
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    devices = visible_gpus() if devices is None else [str(d).strip() for d in devices if str(d).strip()]
    if not devices:
        return [None]
    tp = tensor_parallel_size
    if len(devices) % tp:
        raise ValueError(f"{len(devices)} GPUs {devices} cannot be split into tensor-parallel groups of {tp}")
    groups: list[str | None] = [",".join(devices[i : i + tp]) for i in range(0, len(devices), tp)]
    if max_groups is not None:
        if not 1 <= max_groups <= len(groups):
            raise ValueError(
                f"data_parallel_size={max_groups} x tensor_parallel_size={tp} needs "
                f"{max(max_groups, 1) * tp} GPUs, {len(devices)} visible"
            )
        groups = groups[:max_groups]
    return groups
