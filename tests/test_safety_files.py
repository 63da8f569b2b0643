"""A folder-replacing write never deletes what the project did not write (issue 20, item 1).

Every entry point that replaces a folder (the tiny and SmolLM2 builders, the model merger, the HF
export of a checkpoint) goes through `verl.utils.fs.atomic_dir`, which replaces a folder only when it
is empty or carries the project's marker, or with an explicit overwrite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl.utils.fs import MARKER_FILE, UnsafeTargetError, atomic_dir, check_replaceable

ROOT = Path(__file__).resolve().parents[1]


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def _survived(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "years of work"


def test_atomic_dir_refuses_a_users_folder_and_keeps_its_files(tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UnsafeTargetError, match=r"did not write.*--overwrite"), atomic_dir(user) as tmp:
        (tmp / "config.json").write_text("{}")
    assert _survived(user) and not (user / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left behind


def test_atomic_dir_refuses_a_file_at_the_target(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(UnsafeTargetError, match="not a folder the project wrote"), atomic_dir(target):
        pass
    assert target.read_text() == "mine"


@pytest.mark.parametrize("name", ["", ".", "/", "~", "..", "cwd_parent_abs"])
def test_folders_that_are_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    target = {"~": str(tmp_path / "home"), "cwd_parent_abs": str(tmp_path / "a")}.get(name, name)
    with pytest.raises(UnsafeTargetError, match="name a"):
        check_replaceable(target, overwrite=True)  # not even with overwrite
    assert work.is_dir()


def test_atomic_dir_replaces_an_empty_or_project_written_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()  # empty: replaceable
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    assert (target / MARKER_FILE).is_file()  # the project's own folder carries the marker
    with atomic_dir(target) as tmp:  # a rebuild into the project's folder works
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old folder is gone
    # A user who removes the marker (or adds their own folder) protects it.
    (target / MARKER_FILE).unlink()
    with pytest.raises(UnsafeTargetError), atomic_dir(target):
        pass
    assert (target / "v").read_text() == "2"


def test_overwrite_replaces_a_users_folder_only_when_asked(tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with atomic_dir(user, overwrite=True) as tmp:
        (tmp / "config.json").write_text("{}")
    assert not (user / "thesis.tex").exists() and (user / "config.json").is_file()


def test_a_failed_build_leaves_the_old_project_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "v").write_text("new")
        raise RuntimeError("build failed")
    assert (target / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd or ROOT,
        env=env,
    )


def test_tiny_builder_refuses_a_users_folder(tmp_path: Path) -> None:
    from model_zoo.tiny import build_tiny_model

    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UnsafeTargetError, match="--overwrite"):
        build_tiny_model(user, hidden_size=32, num_layers=1)
    assert _survived(user) and not (user / "config.json").exists()


def test_tiny_builder_cli_refuses_the_working_directory(tmp_path: Path) -> None:
    """The probe of the issue: `make_tiny_model.py --out .` (or an unset variable) in a user's folder."""
    user = _user_folder(tmp_path / "mine")
    proc = _run("scripts/make_tiny_model.py", "--out", ".", cwd=user)
    assert proc.returncode != 0 and "working directory" in proc.stderr, proc.stderr[-2000:]
    assert _survived(user) and sorted(p.name for p in user.iterdir()) == ["thesis.tex"]


def test_tiny_builder_rebuilds_into_its_own_folder(tmp_path: Path, tiny_model_dir: str) -> None:
    from model_zoo.tiny import build_tiny_model

    assert (Path(tiny_model_dir) / MARKER_FILE).is_file()
    out = build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1)
    again = build_tiny_model(out, hidden_size=32, num_layers=1, seed=1)  # the demo's rebuild
    assert (again / "config.json").is_file() and (again / MARKER_FILE).is_file()


def test_smollm2_builder_refuses_a_users_folder_before_loading(tmp_path: Path) -> None:
    from model_zoo.smollm2 import main

    user = _user_folder(tmp_path / "mine")
    assert main(["--out", str(user)]) == 2
    assert _survived(user) and sorted(p.name for p in user.iterdir()) == ["thesis.tex"]


def test_model_merger_cli_refuses_a_users_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from scripts.model_merger import main

    user = _user_folder(tmp_path / "mine")
    argv = ["model_merger.py", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(user)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="did not write"):
        main()
    assert _survived(user)


def test_checkpoint_hf_export_refuses_a_users_folder_before_the_collective(tmp_path: Path) -> None:
    from verl.utils.fsdp_utils import export_hf

    user = _user_folder(tmp_path / "mine")
    # No process group: the refusal must come before the collective gathers the weights.
    with pytest.raises(UnsafeTargetError):
        export_hf(model=None, tokenizer=None, out_dir=user)  # type: ignore[arg-type]
    assert _survived(user)
