"""setup.sh's flash-attn decision (scripts/flash_attn_plan.py) on recorded nvcc / nvidia-smi output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import flash_attn_plan as plan  # noqa: E402

NVCC_12_8 = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.8, V12.8.93\n"
NVCC_13_0 = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.48\n"
H100_X8 = "9.0\n" * 8


def test_auto_builds_only_with_nvcc_of_torchs_major() -> None:
    built = plan.decide("auto", "13.0", NVCC_13_0, H100_X8, cores=64, mem_gib=1024)
    assert built["FLASH_ATTN_DECISION"] == "build"
    assert built["FLASH_ATTN_CUDA_ARCHS"] == "90"  # one architecture, not flash-attn's four
    assert built["MAX_JOBS"] == "64"
    skipped = plan.decide("auto", "13.0", NVCC_12_8, H100_X8, cores=64, mem_gib=1024)
    assert skipped["FLASH_ATTN_DECISION"] == "skip"
    assert "nvcc is CUDA 12.8 but torch is built for CUDA 13.0" in skipped["FLASH_ATTN_REASON"]
    none = plan.decide("auto", "13.0", "", H100_X8, cores=64, mem_gib=1024)
    assert none["FLASH_ATTN_DECISION"] == "skip" and "no nvcc" in none["FLASH_ATTN_REASON"]


def test_explicit_modes_and_bad_value() -> None:
    assert plan.decide("skip", "13.0", NVCC_13_0, H100_X8, 8, 64)["FLASH_ATTN_DECISION"] == "skip"
    forced = plan.decide("build", "13.0", "", H100_X8, 8, 64)
    assert forced["FLASH_ATTN_DECISION"] == "build" and "although no nvcc" in forced["FLASH_ATTN_REASON"]
    with pytest.raises(ValueError, match="build, skip or auto"):
        plan.decide("yes", "13.0", NVCC_13_0, H100_X8, 8, 64)


def test_archs_and_jobs() -> None:
    assert plan.cuda_archs("8.0\n8.6\n9.0\n") == "80;90"  # 8.6 runs sm_80 code
    assert plan.cuda_archs("7.5\n") == ""  # below what flash-attn 2 supports
    assert plan.max_jobs(cores=96, mem_gib=64) == 8  # memory-bound: 8 GiB a job
    assert plan.max_jobs(cores=4, mem_gib=512) == 4
    assert plan.max_jobs(cores=16, mem_gib=4) == 1


def test_cli_reads_the_tools_on_path(tmp_path: Path) -> None:
    """The path setup.sh takes: the script runs nvcc and nvidia-smi and prints shell assignments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvcc").write_text(f"#!/bin/sh\nprintf '%s' '{NVCC_13_0}'\n")
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '9.0\\n9.0\\n'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RZERO_FLASH_ATTN": "auto"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/flash_attn_plan.py"), "--torch-cuda", "13.0"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "FLASH_ATTN_DECISION=build" in out and "FLASH_ATTN_CUDA_ARCHS=90" in out
    assert (
        subprocess.run(  # the output is valid shell that setup.sh can eval
            ["bash", "-c", 'eval "$1"; test "$FLASH_ATTN_DECISION" = build && test -n "$MAX_JOBS"', "_", out]
        ).returncode
        == 0
    )
    env["RZERO_FLASH_ATTN"] = "maybe"
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts/flash_attn_plan.py"), "--torch-cuda", "13.0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "build, skip or auto" in bad.stderr
