"""Decide, before pip starts compiling, whether flash-attn is built and how (used by setup.sh).

flash-attn 2.8.3 publishes no wheel for torch 2.13, so `pip install flash-attn` compiles it from
source: that needs an `nvcc` of torch's CUDA major version, takes tens of minutes (by default for
four GPU architectures) and, with too many parallel jobs, exhausts host memory. This script looks
first and prints shell assignments for setup.sh to `eval`:

    FLASH_ATTN_DECISION=build|skip    FLASH_ATTN_REASON='...'
    FLASH_ATTN_CUDA_ARCHS='90'        MAX_JOBS=4      (only when building)

`RZERO_FLASH_ATTN=build` forces the build (it still fails loudly without nvcc), `skip` skips it,
unset or `auto` builds only when a matching nvcc exists. Skipping is safe: training then uses
padded SDPA attention (slower, same results).

    python scripts/flash_attn_plan.py [--torch-cuda 13.0]   # default: read from the installed torch
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

# The architectures flash-attn 2.8 compiles (FLASH_ATTN_CUDA_ARCHS); a GPU runs the code of its major.
FLASH_ATTN_ARCHS = {8: "80", 9: "90", 10: "100", 12: "120"}
# One nvcc job of flash-attn holds several GiB of host memory at its peak.
GIB_PER_JOB = 8


def _run(cmd: list[str]) -> str:
    """stdout of `cmd`, or "" when it is absent or fails (each caller says what that means)."""
    if shutil.which(cmd[0]) is None and not os.access(cmd[0], os.X_OK):
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"flash_attn_plan: {' '.join(cmd)} failed: {e}", file=sys.stderr)
        return ""


def nvcc_version(text: str) -> tuple[int, int] | None:
    """CUDA version of `nvcc --version` output ("Cuda compilation tools, release 12.8, V12.8.93")."""
    m = re.search(r"release (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cuda_archs(compute_caps: str) -> str:
    """FLASH_ATTN_CUDA_ARCHS for the GPUs of `nvidia-smi --query-gpu=compute_cap` output ("9.0\\n9.0")."""
    archs = []
    for line in compute_caps.split():
        major = int(line.split(".")[0]) if re.fullmatch(r"\d+\.\d+", line) else None
        if major in FLASH_ATTN_ARCHS and FLASH_ATTN_ARCHS[major] not in archs:
            archs.append(FLASH_ATTN_ARCHS[major])
    return ";".join(archs)


def max_jobs(cores: int, mem_gib: float) -> int:
    """Parallel compile jobs that fit both the cores and the host memory (at least 1)."""
    return max(1, min(cores, int(mem_gib // GIB_PER_JOB)))


def decide(
    mode: str, torch_cuda: str | None, nvcc_text: str, compute_caps: str, cores: int, mem_gib: float
) -> dict[str, str]:
    """The plan as shell variables; pure, so that every branch is tested with recorded tool output."""
    mode = (mode or "auto").strip().lower()
    if mode not in ("auto", "build", "skip"):
        raise ValueError(f"RZERO_FLASH_ATTN must be build, skip or auto, got {mode!r}")
    if mode == "skip":
        return {"FLASH_ATTN_DECISION": "skip", "FLASH_ATTN_REASON": "RZERO_FLASH_ATTN=skip"}
    nvcc = nvcc_version(nvcc_text)
    torch_major = int(torch_cuda.split(".")[0]) if torch_cuda else None
    why_not = None
    if torch_major is None:
        why_not = "the installed torch has no CUDA build"
    elif nvcc is None:
        why_not = (
            f"no nvcc found (torch is built for CUDA {torch_cuda}; install that CUDA toolkit to build it)"
        )
    elif nvcc[0] != torch_major:
        why_not = (
            f"nvcc is CUDA {nvcc[0]}.{nvcc[1]} but torch is built for CUDA {torch_cuda} (majors must match)"
        )
    archs = cuda_archs(compute_caps)
    if why_not is None and not archs:
        why_not = f"no visible GPU of an architecture flash-attn builds for (compute capability: {compute_caps.split()})"
    if why_not is not None and mode == "auto":
        return {"FLASH_ATTN_DECISION": "skip", "FLASH_ATTN_REASON": why_not}
    jobs = max_jobs(cores, mem_gib)
    reason = (
        f"building from source for CUDA arch {archs or 'flash-attn default (4 archs)'} with MAX_JOBS={jobs}: "
        "expect 15-60 minutes"
    )
    if why_not is not None:
        reason += f" (RZERO_FLASH_ATTN=build although {why_not})"
    plan = {"FLASH_ATTN_DECISION": "build", "FLASH_ATTN_REASON": reason, "MAX_JOBS": str(jobs)}
    if archs:
        plan["FLASH_ATTN_CUDA_ARCHS"] = archs
    return plan


def nvcc_path() -> str:
    """The nvcc torch's extension builder would use: on PATH, else $CUDA_HOME/bin, else /usr/local/cuda."""
    found = shutil.which("nvcc")
    if found:
        return found
    return os.path.join(os.environ.get("CUDA_HOME") or "/usr/local/cuda", "bin", "nvcc")


def _torch_cuda() -> str | None:
    import torch  # the venv's torch, installed before this runs

    return torch.version.cuda


def _mem_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--torch-cuda", default=None, help="torch's CUDA version (default: the installed torch's)"
    )
    args = ap.parse_args(argv)
    try:
        plan = decide(
            os.environ.get("RZERO_FLASH_ATTN", "auto"),
            args.torch_cuda or _torch_cuda(),
            _run([nvcc_path(), "--version"]),
            _run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"]),
            os.cpu_count() or 1,
            _mem_gib(),
        )
    except ValueError as e:
        print(f"flash_attn_plan: {e}", file=sys.stderr)
        return 2
    for key, value in plan.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
