"""Preflight on a GPU node: the driver's CUDA version (nvidia-smi) against torch's, on recorded output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import infra.preflight as preflight

# Headers of plain `nvidia-smi` as recorded on nodes with a CUDA 12.8 and a CUDA 13.0 driver.
SMI_12_8 = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
"""
SMI_13_0 = SMI_12_8.replace("570.86.15 ", "580.65.06 ").replace("CUDA Version: 12.8", "CUDA Version: 13.0")
SMI_LIST = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d})\n" for i in range(8))


def test_driver_older_than_torchs_cuda_major_is_a_problem_with_its_fix() -> None:
    [problem] = preflight.check_cuda_driver(SMI_12_8, "13.0")
    assert "supports CUDA up to 12.8" in problem.what and "built for CUDA 13.0" in problem.what
    assert "driver 580 or newer" in problem.fix
    assert preflight.check_cuda_driver(SMI_13_0, "13.0") == []
    assert preflight.check_cuda_driver(SMI_12_8, "12.6") == []  # minor versions are compatible
    assert preflight.check_cuda_driver(SMI_12_8, None) == []  # CPU torch: nothing to compare


def test_torch_cuda_is_read_without_importing_torch() -> None:
    assert preflight.torch_cuda_of("cuda: Optional[str] = '13.0'\nhip = None\n") == "13.0"
    assert preflight.torch_cuda_of("cuda = '12.8'\n") == "12.8"
    assert preflight.torch_cuda_of("cuda: Optional[str] = None\n") is None


@pytest.mark.parametrize(("header", "refused"), [(SMI_12_8, True), (SMI_13_0, False)])
def test_run_preflight_gpu_check_compares_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: str, refused: bool
) -> None:
    """The path main.sh's preflight takes: check_gpus runs nvidia-smi (-L, then plain) and compares."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "list.txt").write_text(SMI_LIST)
    (tmp_path / "header.txt").write_text(header)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        f'#!/bin/sh\nif [ "$1" = -L ]; then cat {tmp_path}/list.txt; else cat {tmp_path}/header.txt; fi\n'
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(preflight, "installed_torch_cuda", lambda: "13.0")  # this machine's torch is CPU
    problems = preflight.check_gpus([str(i) for i in range(8)])
    assert bool(problems) is refused
    if refused:
        assert "CUDA Version" not in problems[0].what and "12.8" in problems[0].what
