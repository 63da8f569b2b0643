"""Engine config: defaults < overlays < yaml files < CLI, validation errors that name the key, dry run.

The R-Zero profiles sit on top of this in training/common.py (tests/test_stage_configs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl.trainer.config import CONFIG_DIR, ConfigError, PPOConfig, load_config, save_config
from verl.trainer.main import main as cli_main
from verl.utils.toy_task import make_toy_dataset

SHIPPED = sorted(p for p in CONFIG_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_toy_dataset(str(tmp_path_factory.mktemp("toy") / "train.parquet"), n=32)


def _toy_args(model: str, data: str) -> list[str]:
    return [
        f"config={CONFIG_DIR / 'toy.yaml'}",
        f"worker.actor.model.model_path={model}",
        f"data.train_files={data}",
    ]


def test_shipped_configs_exist() -> None:
    names = {p.name for p in SHIPPED}
    assert {"toy.yaml", "challenger.yaml", "solver.yaml", "tiny_cpu.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_yaml_loads_and_validates(path: Path, tiny_model_dir: str, toy_data: str) -> None:
    args = [f"config={path}", f"worker.actor.model.model_path={tiny_model_dir}"]
    if path.name != "toy.yaml":  # the tiny preset's batch sizes on top of the paper's stage configs
        args.insert(1, f"config={CONFIG_DIR / 'tiny_cpu.yaml'}")
    cfg = load_config(args)
    cfg.validate(check_paths=False)
    if path.name == "toy.yaml":
        cfg.data.train_files = toy_data
        cfg.validate(check_paths=True)


def test_dataclass_defaults_are_the_paper_grpo_settings() -> None:
    cfg = PPOConfig()
    actor, rollout, algo = cfg.worker.actor, cfg.worker.rollout, cfg.algorithm
    assert (actor.optim.lr, actor.optim.weight_decay, actor.max_grad_norm) == (1e-6, 1e-2, 1.0)
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_dual) == (0.2, 0.3, 3.0)
    assert (algo.kl_penalty, algo.kl_coef, algo.use_kl_loss) == ("low_var_kl", 1e-2, True)
    assert (cfg.data.rollout_batch_size, cfg.data.max_prompt_length, cfg.data.max_response_length) == (
        512,
        2048,
        4096,
    )
    assert (rollout.temperature, rollout.top_p, actor.ppo_epochs) == (1.0, 0.99, 1)


def test_precedence_cli_beats_file_beats_overlay(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "worker:\n  actor:\n    prompts_per_update: 32\n    loss_agg_mode: seq-mean-token-mean\n"
    )
    overlay = ("an overlay", {"worker": {"actor": {"prompts_per_update": 16, "ppo_epochs": 2}}})
    cfg = load_config([f"config={extra}"], overlays=[overlay])
    assert cfg.worker.actor.prompts_per_update == 32  # the file overrides the overlay
    assert cfg.worker.actor.ppo_epochs == 2  # the overlay overrides the defaults
    cfg = load_config([f"config={extra}", "worker.actor.prompts_per_update=64"], overlays=[overlay])
    assert (
        cfg.worker.actor.prompts_per_update == 64 and cfg.worker.actor.loss_agg_mode == "seq-mean-token-mean"
    )
    with pytest.raises(ConfigError, match=r"worker\.actor\.nope.*in an overlay"):
        load_config([], overlays=[("an overlay", {"worker": {"actor": {"nope": 1}}})])


def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"worker\.actor\.optim\.lrr.*Did you mean: worker\.actor\.optim\.lr"
    ):
        load_config(["worker.actor.optim.lrr=1e-6"])


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match=r"trainer\.max_step.*bad\.yaml.*Did you mean: trainer\.max_steps"):
        load_config([f"config={bad}"])


def test_bad_value_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"data\.rollout_batch_size"):
        load_config(["data.rollout_batch_size=many"])


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["config=/no/such/file.yaml"])


def test_batch_arithmetic_errors_name_the_key(tiny_model_dir: str, toy_data: str) -> None:
    base = _toy_args(tiny_model_dir, toy_data)
    with pytest.raises(
        ConfigError,
        match=r"data\.rollout_batch_size=16 is not divisible by worker\.actor\.prompts_per_update=6",
    ):
        load_config([*base, "worker.actor.prompts_per_update=6"]).validate()
    with pytest.raises(ConfigError, match=r"micro_batch_size_per_device_for_update=3"):
        load_config([*base, "worker.actor.micro_batch_size_per_device_for_update=3"]).validate()
    with pytest.raises(ConfigError, match=r"cannot be split evenly over 3 devices"):
        load_config([*base, "trainer.n_devices_per_node=3"]).validate()


def test_gpu_path_settings_are_checked(tiny_model_dir: str, toy_data: str) -> None:
    """Token budgets must hold the longest row (toy: 64 + 8 tokens); 0 means fixed micro-batches."""
    base = _toy_args(tiny_model_dir, toy_data)
    with pytest.raises(
        ConfigError, match=r"max_tokens_per_micro_batch_for_update=50 is below the longest row"
    ):
        load_config([*base, "worker.actor.max_tokens_per_micro_batch_for_update=50"]).validate()
    with pytest.raises(ConfigError, match=r"worker\.ref\.max_tokens_per_micro_batch_for_experience=71"):
        load_config([*base, "worker.ref.max_tokens_per_micro_batch_for_experience=71"]).validate()
    load_config([*base, "worker.actor.max_tokens_per_micro_batch_for_update=0"]).validate()
    with pytest.raises(ConfigError, match=r"seed_mode must be auto, per_request or per_engine"):
        load_config([*base, "worker.rollout.seed_mode=sometimes"]).validate()
    with pytest.raises(ConfigError, match=r"memory_check must be warn, error or off"):
        load_config([*base, "trainer.memory_check=maybe"]).validate()
    cfg = load_config(base)
    assert cfg.worker.actor.fsdp.optimizer_offload is None  # null: the memory plan decides
    assert cfg.trainer.project_name == "grpo"


def test_missing_paths_fail_before_anything_starts(
    tiny_model_dir: str, toy_data: str, tmp_path: Path
) -> None:
    base = _toy_args(tiny_model_dir, toy_data)
    with pytest.raises(ConfigError, match=r"model_path='/no/such/model' is not a folder"):
        load_config([*base, "worker.actor.model.model_path=/no/such/model"]).validate()
    with pytest.raises(ConfigError, match=r"model_path is empty"):
        load_config([*base, "worker.actor.model.model_path=''"]).validate()
    with pytest.raises(ConfigError, match=r"reward_function.*'missing\.py' does not exist"):
        load_config([*base, "worker.reward.reward_function=missing.py:fn"]).validate()
    reward_file = tmp_path / "r.py"
    reward_file.write_text("def other(batch):\n    return []\n")
    with pytest.raises(ConfigError, match=r"has no function named 'score'"):
        load_config([*base, f"worker.reward.reward_function={reward_file}:score"]).validate()
    with pytest.raises(ConfigError, match=r"data\.train_files='nope\.parquet' does not exist"):
        load_config([*base, "data.train_files=nope.parquet"]).validate()


def test_cli_dry_run_prints_effective_config(
    tiny_model_dir: str, toy_data: str, capsys: pytest.CaptureFixture
) -> None:
    assert cli_main([*_toy_args(tiny_model_dir, toy_data), "--dry-run"]) == 0
    out = capsys.readouterr().out
    printed = OmegaConf.create(out.split("# --dry-run")[0])
    assert printed.worker.actor.optim.lr == 5e-3 and printed.trainer.max_steps == 16


def test_cli_bad_key_exits_nonzero_naming_key(tiny_model_dir: str, toy_data: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main",
            *_toy_args(tiny_model_dir, toy_data),
            "worker.rollout.nn=3",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert proc.returncode == 2
    assert "worker.rollout.nn" in proc.stderr and "worker.rollout.n" in proc.stderr


def test_save_config_round_trips(tmp_path: Path, tiny_model_dir: str, toy_data: str) -> None:
    cfg = load_config(_toy_args(tiny_model_dir, toy_data))
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config([f"config={tmp_path / 'config.yaml'}"])
    assert again == cfg
