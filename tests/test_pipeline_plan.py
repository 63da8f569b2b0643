"""The driver's planning: device roles for 1, 2, 4, 8 GPUs and CPU, the dry run, small-dataset batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_shapes import QWEN3_4B

from pipeline.config import load_pipeline_config
from pipeline.planner import plan_devices
from training.solver import fit_batch_to_data as _fit_batch_to_data
from verl.trainer.config import CONFIG_DIR, ConfigError, load_config

GPUS = [str(i) for i in range(8)]


@pytest.mark.parametrize(
    ("n", "trainer", "solver"),
    [(8, GPUS[:4], GPUS[4:]), (4, GPUS[:2], GPUS[2:4]), (2, ["0"], ["1"]), (1, ["0"], ["0"])],
)
def test_plan_splits_gpus_between_trainer_and_solver_servers(n: int, trainer: list, solver: list) -> None:
    plan = plan_devices(GPUS[:n])
    assert plan.kind == "cuda" and plan.devices == GPUS[:n]
    assert (plan.challenger_trainer, plan.challenger_solver) == (trainer, solver)
    assert plan.shared_gpu == (n == 1)
    assert plan.trainer_world == len(trainer) and plan.solver_world == n


def test_plan_on_cpu_and_overrides() -> None:
    cpu = plan_devices([], cpu_ranks=2)
    assert (cpu.kind, cpu.trainer_world, cpu.solver_world, cpu.challenger_solver) == ("cpu", 2, 2, [])
    plan = plan_devices(GPUS, solver_gpus=2)
    assert plan.challenger_trainer == GPUS[:6] and plan.challenger_solver == GPUS[6:]
    with pytest.raises(ValueError, match="solver-gpus=8"):
        plan_devices(GPUS, solver_gpus=8)


def _dry_run(
    visible: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *extra: str
) -> str:
    """The driver's entry point in this process (main.sh's own dry run: test_experiments.py)."""
    from pipeline.driver import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path / "storage"))
    capsys.readouterr()
    code = main(["Qwen/Qwen3-4B-Base", "qwen3-4b", "--dry-run", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert not (tmp_path / "storage").exists()  # a dry run creates nothing
    return out


def test_dry_run_plans_the_paper_run_on_8_gpus(tmp_path: Path, monkeypatch, capsys) -> None:
    out = _dry_run(",".join(GPUS), tmp_path, monkeypatch, capsys)
    assert "base model Qwen/Qwen3-4B-Base, profile paper, 3 iteration(s)" in out
    assert "challenger: trainer on ['0', '1', '2', '3'], Solver servers on ['4', '5', '6', '7']" in out
    assert "solver: FSDP over 8 rank(s)" in out
    assert "8000 questions (T=1.0, top_p=0.95, max 4096 tokens)" in out
    assert "m=10 votes, keep p_hat in [0.25, 0.75]" in out
    challenger, solver = out.split("effective engine config, challenger stage:")[1].split(
        "effective engine config, solver stage:"
    )
    assert "n_devices_per_node: 4" in challenger and "n_devices_per_node: 8" in solver
    assert "max_steps: 5" in challenger and "max_steps: 15" in solver
    assert "prompts_per_update: 128" in challenger and "rollout_batch_size: 512" in challenger
    # what a reader checks against the paper, per profile
    assert "Solver prompt (every Solver query, GRPO and math evaluation): 'Please reason step by step" in out
    assert "stop ids (every engine):" in out and "answers: last \\boxed{} (none: no vote)" in out
    assert 'drops: empty label, label "None"\n' in out
    assert "p_hat, reward time vs labelling: largest group / m | largest group / m\n" in out
    assert "loss token-mean; batch order as prompted" in out
    assert "micro-batches, challenger: update 4, experience 16 per device; 128 prompts per update" in out
    assert "  iterations: 3\n" in out


def test_dry_run_adapts_to_fewer_gpus_and_profile(tmp_path: Path, monkeypatch, capsys) -> None:
    out = _dry_run("0,1", tmp_path, monkeypatch, capsys, "--profile", "rzero_code")
    assert "challenger: trainer on ['0'], Solver servers on ['1']" in out
    assert "m=9 votes, keep p_hat in [0.3, 0.8]" in out
    assert "profile rzero_code, 5 iteration(s)" in out
    assert 'drops: empty label, label "None", 证明 in question, box in question, text in label' in out
    assert "micro-batches, challenger: update 2, experience 8 per device; 16 prompts per update" in out
    assert "micro-batches, solver: update 1, experience 1 per device; 128 prompts per update" in out
    assert "mathruler extract_boxed_content" in out
    # The two p_hat rules of rzero_code side by side (RZERO_SPEC section 2), and the batch order.
    assert (
        "p_hat, reward time vs labelling: largest group / all m samples (empty boxes count) | "
        "largest group / answers left after dropping empty boxes\n" in out
    )
    assert "loss microbatch-token-mean; batch order balanced by length over the ranks" in out
    challenger = out.split("effective engine config, challenger stage:")[1].split("effective engine config")[
        0
    ]
    assert "prompts_per_update: 16" in challenger and "loss_agg_mode: microbatch-token-mean" in challenger
    out = _dry_run("0", tmp_path, monkeypatch, capsys)
    assert "(shared GPU)" in out


def test_pipeline_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="unknown pipeline setting 'num_question'"):
        load_pipeline_config(None, ["num_question=5"])
    with pytest.raises(ConfigError, match="profile='x'"):
        load_pipeline_config(None, ["profile=x"])
    demo = load_pipeline_config("configs/pipeline/demo.yaml")
    assert demo.iterations == 1 and Path(demo.engine_configs[0]).is_file()


def test_small_dataset_lowers_the_rollout_batch() -> None:
    cfg = load_config(
        [
            f"config={CONFIG_DIR / 'solver.yaml'}",
            f"config={CONFIG_DIR / 'tiny_cpu.yaml'}",
            "worker.actor.model.model_path=org/model",
        ]
    )
    assert (cfg.data.rollout_batch_size, cfg.worker.rollout.n) == (8, 5)
    assert _fit_batch_to_data(cfg, 20, world=2) is None  # enough data: nothing changes
    note = _fit_batch_to_data(cfg, 7, world=2)
    # 7*5=35 and 6*5=30 (15 per rank) do not split into micro-batches of 2; 4*5=20 (10 per rank) does.
    assert cfg.data.rollout_batch_size == 4 and cfg.worker.actor.prompts_per_update == 4
    assert "dataset has 7 questions" in note and "lowered to 4" in note
    cfg.validate(check_paths=False)
    with pytest.raises(RuntimeError, match="no question survived"):
        _fit_batch_to_data(cfg, 0, world=2)


def test_dry_run_prints_the_memory_plan_of_both_training_stages(tmp_path: Path, monkeypatch, capsys) -> None:
    """From a CPU box, with the model's config.json at hand and --gpu-mem: the paper's run on 8 x 40 GB."""
    import json

    model = tmp_path / "qwen3-4b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN3_4B))
    from pipeline.driver import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(GPUS))
    monkeypatch.setenv("STORAGE_PATH", str(tmp_path / "storage"))
    capsys.readouterr()
    code = main([str(model), "t", "--dry-run", "--gpu-mem", "40"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    challenger = out.split("challenger stage memory plan:")[1].split("solver stage memory plan:")[0]
    solver = out.split("solver stage memory plan:")[1].split("effective engine config")[0]
    assert "(4.02B params), 4 training GPU(s) of 40 GiB" in challenger
    assert "(4.02B params), 8 training GPU(s) of 40 GiB" in solver
    for table in (challenger, solver):
        assert "generate  experience      update" in table and "vllm (kv cache)" in table
        fits = next(line for line in table.splitlines() if line.startswith("fits"))
        assert fits.split()[1:] == ["yes", "yes", "yes"]  # the shipped defaults fit 40 GB GPUs
