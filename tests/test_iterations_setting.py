"""`--iterations 0` is refused, as negative values are (it used to mean "the profile's default",
silently overriding a preset's 1 with 3); leaving it out gives the profile's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_pipeline_config
from pipeline.driver import main as driver_main


@pytest.mark.parametrize("value", ["0", "-2"])
def test_iterations_below_one_are_refused_before_anything_starts(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path / "storage"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code = driver_main([str(tmp_path / "model"), "t", "--iterations", value, "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"iterations={value}: must be >= 1" in err and "paper 3, rzero_code 5" in err
    assert not (tmp_path / "storage").exists()


def test_iterations_default_is_the_profiles_and_a_preset_keeps_its_own() -> None:
    assert load_pipeline_config(None, []).iterations == 3
    assert load_pipeline_config(None, ["profile=rzero_code"]).iterations == 5
    assert load_pipeline_config("configs/pipeline/demo.yaml", []).iterations == 1
    assert load_pipeline_config(None, ["iterations=10"]).iterations == 10
