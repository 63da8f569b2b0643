"""The run tag is a name under $STORAGE_PATH, never a path (issue 20, items 5 and 6)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.config import load_pipeline_config
from pipeline.driver import Driver, main, run_tag
from pipeline.planner import plan_devices
from tests.test_experiments import launches  # noqa: F401  (the stage-launch recorder fixture)


@pytest.mark.parametrize("tag", ["../../x", "..", ".", "a/b", "", "run 1", "/abs"])
def test_a_tag_that_is_not_a_name_is_refused(tag: str) -> None:
    with pytest.raises(ValueError, match=r"not a run name.*letters, digits"):
        run_tag("/models/base", tag)


def test_the_derived_tag_is_the_models_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "My-Model_1.5"
    model.mkdir()
    monkeypatch.chdir(model)
    assert run_tag(".", None) == "my-model_1.5"  # "." is the folder's own name, not ""
    assert run_tag(str(model) + "/", None) == "my-model_1.5"
    assert run_tag("Qwen/Qwen3-4B-Base", None) == "qwen3-4b-base"
    assert run_tag("Qwen/Qwen3-4B-Base", "my.run-2") == "my.run-2"
    with pytest.raises(ValueError, match="derived from the model"):
        run_tag("/", None)


def test_main_refuses_a_path_tag_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    storage = tmp_path / "a" / "storage"
    monkeypatch.setenv("STORAGE_PATH", str(storage))
    assert main(["/models/base", "../../x"]) == 2
    assert "not a run name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing written anywhere


def test_the_run_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launches) -> None:  # noqa: F811
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    pipe = load_pipeline_config(None, ["iterations=1"])
    driver = Driver("/models/base", "private", pipe, plan_devices([], cpu_ranks=2), None)
    driver.run()
    assert stat.S_IMODE(driver.run_dir.stat().st_mode) == 0o700
