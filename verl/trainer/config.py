"""Configuration of a GRPO run: nested dataclasses merged with OmegaConf.

Precedence, lowest to highest:
    dataclass defaults (this file, the one source of truth for defaults)
    < overlays handed in by the caller (`load_config(..., overlays=...)`: e.g. the settings an
      application layers under its yaml files)
    < the yaml files given as `config=FILE` (several allowed, merged in order, e.g. a stage file
      then the tiny CPU preset)
    < `key=value` overrides on the command line.

Validation runs on the merged result
before anything heavy starts, and every error names the key and what to do.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from verl.trainer.core_algos import LOSS_AGG_MODES
from verl.utils.vllm_runner import VLLM_MODEL_RUNNERS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the fix."""


@dataclass
class DataConfig:
    train_files: str = ""  # parquet / jsonl / json file, or "" when prompt_source is used
    val_files: str = ""
    prompt_key: str = "prompt"
    answer_key: str = "answer"
    system_prompt: str = ""  # prepended as a system message when the prompt is plain text
    prompt_source: str = ""  # "file.py:function" or "module:function" returning prompt records (zero data)
    prompt_source_kwargs: dict = field(default_factory=dict)
    max_prompt_length: int = 2048
    max_response_length: int = 4096
    rollout_batch_size: int = 512  # prompts per rollout step
    val_batch_size: int = -1  # -1: the whole validation set at once
    shuffle: bool = True
    seed: int = 1
    filter_overlong_prompts: bool = True


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True  # False gives Dr.GRPO's advantage
    use_kl_loss: bool = True  # KL as a loss term (not in the reward)
    kl_penalty: str = "low_var_kl"
    kl_coef: float = 1e-2


@dataclass
class ModelConfig:
    model_path: str = ""
    tokenizer_path: str = ""  # "" = model_path
    trust_remote_code: bool = False
    enable_gradient_checkpointing: bool = True


@dataclass
class OptimConfig:
    lr: float = 1e-6
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-2
    lr_warmup_steps: int = 0
    lr_scheduler: str = "constant"  # constant | cosine


@dataclass
class FSDPConfig:
    param_offload: bool = False
    # Adam's moments in host memory between updates (GPU only). null: when the memory plan says the
    # generate phase does not fit with them on the GPU (verl/utils/memory_plan.py).
    optimizer_offload: bool | None = None
    dtype: str = "auto"  # auto: bf16 mixed precision on GPU, fp32 on CPU


@dataclass
class ActorConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    prompts_per_update: int = 128  # prompts per optimizer step (x rollout.n responses)
    micro_batch_size_per_device_for_update: int = 4
    micro_batch_size_per_device_for_experience: int = 16
    # Token budgets of one micro-batch (real tokens packed, or rows x trimmed width padded); rows are
    # grouped by length to fill them. 0: fixed micro-batches of micro_batch_size_per_device_* rows.
    # The update of loss_agg_mode=microbatch-token-mean always uses fixed rows (its loss depends on them).
    max_tokens_per_micro_batch_for_update: int = 16384
    max_tokens_per_micro_batch_for_experience: int = 32768
    max_grad_norm: float = 1.0
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.3
    clip_ratio_dual: float = 3.0
    loss_agg_mode: str = "token-mean"
    ppo_epochs: int = 1
    padding_free: bool = True  # used only where flash-attn is installed


@dataclass
class RefConfig:
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    micro_batch_size_per_device_for_experience: int = 16
    max_tokens_per_micro_batch_for_experience: int = 32768


@dataclass
class RolloutConfig:
    n: int = 4
    temperature: float = 1.0
    top_p: float = 0.99
    top_k: int = -1
    seed: int = 1
    # auto: a seed per request on CPU (exact resumes), one per engine on GPU (vLLM's fast sampler).
    seed_mode: str = "auto"  # auto | per_request | per_engine
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.6
    max_num_batched_tokens: int = 8192
    # Set explicitly: vLLM 0.32 defaults to 1024 on H100/H200 (256 elsewhere); the memory plan
    # sizes the sampler's logits and the CUDA graphs for this many sequences.
    max_num_seqs: int = 256
    # vLLM 0.32 picks its experimental Model Runner V2 on CUDA whenever Triton imports, while the
    # CPU runner every test exercises derives from V1: v1 (default) | v2 | auto (vLLM decides).
    model_runner: str = "v1"
    # true: vLLM backs its CUDA-graph pool up to host memory while asleep (its default keeps it on
    # the GPU; the memory plan then counts it in the experience and update phases).
    sleep_offload_cudagraph: bool = False
    enforce_eager: bool = False  # always eager on CPU
    cpu_kvcache_space_gib: int = 1
    val_temperature: float = 0.6
    val_top_p: float = 0.95
    val_n: int = 1


@dataclass
class RewardConfig:
    reward_function: str = ""  # "path/to/file.py:function" or "package.module:function"
    reward_type: str = "batch"  # batch: fn(list[dict]) -> list[dict]; sequential: fn(dict) -> dict
    reward_kwargs: dict = field(default_factory=dict)
    num_cpus: int = 1


@dataclass
class WorkerConfig:
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class TrainerConfig:
    project_name: str = "grpo"
    experiment_name: str = "run"
    output_dir: str = "outputs/run"
    total_epochs: int = 1
    max_steps: int = -1  # -1: total_epochs over the data
    device: str = "auto"  # auto | cuda | cpu
    nnodes: int = 1
    n_devices_per_node: int = 8  # GPUs (or CPU ranks) per node used for training
    logger: list = field(default_factory=lambda: ["console", "jsonl"])
    save_freq: int = -1  # -1: only the last step
    save_limit: int = 2  # keep the newest N checkpoints (-1: all)
    export_hf: bool = True  # HF-format folder beside each checkpoint
    val_freq: int = -1
    val_before_train: bool = False
    resume: bool = True  # resume from output_dir's latest checkpoint when there is one
    ray_num_cpus: int = 0  # 0: let Ray count
    seed: int = 1
    # What a GPU launch does when the memory plan (printed first) says a phase does not fit.
    memory_check: str = "warn"  # warn | error | off
    # Reorder each rollout batch so that every data-parallel rank gets about the same number of
    # tokens, as EasyR1's trainer does (verl/trainer/balance.py); it decides which rows share a
    # micro-batch. false: prompt order.
    balance_batch: bool = False
    # Every rollout of each step with its reward, one json line per sample, in
    # <output_dir>/rollouts/step_<k>.jsonl (written by the reward actor beside the log-prob passes).
    log_rollouts: bool = False


@dataclass
class PPOConfig:
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def validate(self, check_paths: bool = True) -> None:
        validate_config(self, check_paths=check_paths)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            keys.extend(_all_keys(type(default), name + "."))
    return keys


def _suggest(key: str, cls: type = PPOConfig) -> str:
    close = difflib.get_close_matches(key, _all_keys(cls), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key if getattr(e, "full_key", None) else str(e)
        raise ConfigError(
            f"unknown config key '{key}' in {source}.{_suggest(str(key))} "
            "Run with --dry-run to see every valid key and its value."
        ) from None
    except ValidationError as e:
        raise ConfigError(f"bad value for config key '{e.full_key}' in {source}: {e.msg}") from None


def _parse_cli(args: list[str]) -> tuple[list[str], list[str]]:
    config_files, dotlist = [], []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(
                f"argument '{arg}' is not of the form key=value (e.g. worker.actor.optim.lr=1e-6)"
            )
        key, value = arg.split("=", 1)
        if key == "config":
            config_files.append(value)
        else:
            dotlist.append(arg)
    return config_files, dotlist


def load_config(
    args: list[str] | None = None,
    config_files: list[str] | None = None,
    overlays: list[tuple[str, dict]] | None = None,
) -> PPOConfig:
    """Build the effective PPOConfig from yaml files and `key=value` overrides (not yet validated).

    `overlays`: (name, nested dict) pairs merged right above the dataclass defaults, below the files.
    """
    cli_files, dotlist = _parse_cli(list(args or []))
    files = list(config_files or []) + cli_files
    file_cfgs = []
    for config_file in files:
        if not Path(config_file).is_file():
            raise ConfigError(
                f"config file '{config_file}' does not exist (config=PATH must name a yaml file)"
            )
        file_cfgs.append((config_file, OmegaConf.load(config_file)))
    try:
        cli_cfg = OmegaConf.from_dotlist(dotlist)
    except Exception as e:  # omegaconf's grammar errors do not share a base class worth naming
        raise ConfigError(f"could not parse command-line overrides {dotlist}: {e}") from None
    merged = OmegaConf.structured(PPOConfig)
    for name, overlay in overlays or []:
        merged = _merge(merged, overlay, name)
    for config_file, cfg in file_cfgs:
        merged = _merge(merged, cfg, f"config file {config_file}")
    merged = _merge(merged, cli_cfg, "command-line overrides")
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def config_to_yaml(config: PPOConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: PPOConfig, path: str | os.PathLike) -> None:
    """Write the effective config atomically (printed and saved with every run)."""
    from verl.utils.fs import atomic_write_text

    atomic_write_text(path, config_to_yaml(config))


# ---------------------------------------------------------------------------------------------
# Validation


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_function_spec(key: str, spec: str) -> None:
    """`path/to/file.py:function` (relative to the working dir) or `package.module:function`."""
    from verl.utils.import_utils import FunctionSpecError, load_function

    try:
        load_function(spec)
    except FunctionSpecError as e:
        raise ConfigError(f"{key}: {e}") from None


def validate_config(cfg: PPOConfig, world_size: int | None = None, check_paths: bool = True) -> None:
    """Check values and batch arithmetic; raise ConfigError naming the key and the fix."""
    actor, rollout, data = cfg.worker.actor, cfg.worker.rollout, cfg.data
    _require(
        bool(actor.model.model_path),
        "worker.actor.model.model_path is empty: set it to a HF model id or folder",
    )
    if check_paths:
        mp = actor.model.model_path
        looks_local = mp.startswith(("/", ".", "~")) or os.path.exists(mp) or mp.count("/") != 1
        _require(
            not looks_local or Path(mp).expanduser().is_dir(),
            f"worker.actor.model.model_path='{mp}' is not a folder: give a local HF model folder or a hub id "
            "(org/name)",
        )
        _require(
            bool(data.train_files) or bool(data.prompt_source),
            "data.train_files is empty: give a "
            "parquet/jsonl file, or data.prompt_source=file.py:function for generated prompts",
        )
        if data.train_files:
            _require(Path(data.train_files).exists(), f"data.train_files='{data.train_files}' does not exist")
        if data.val_files:
            _require(Path(data.val_files).exists(), f"data.val_files='{data.val_files}' does not exist")
        if data.prompt_source:
            _check_function_spec("data.prompt_source", data.prompt_source)
        _require(
            bool(cfg.worker.reward.reward_function),
            "worker.reward.reward_function is empty: set path/to/file.py:function",
        )
        _check_function_spec("worker.reward.reward_function", cfg.worker.reward.reward_function)
    _require(
        cfg.worker.reward.reward_type in ("batch", "sequential"),
        "worker.reward.reward_type must be 'batch' or 'sequential'",
    )
    from verl.trainer import core_algos

    _require(
        cfg.algorithm.adv_estimator in core_algos.ADV_ESTIMATORS,
        f"algorithm.adv_estimator='{cfg.algorithm.adv_estimator}' is unknown: use one of "
        f"{', '.join(sorted(core_algos.ADV_ESTIMATORS))}",
    )
    _require(
        cfg.algorithm.kl_penalty in core_algos.KL_ESTIMATORS,
        f"algorithm.kl_penalty='{cfg.algorithm.kl_penalty}' is unknown: use one of "
        f"{', '.join(sorted(core_algos.KL_ESTIMATORS))}",
    )
    _require(
        actor.loss_agg_mode in LOSS_AGG_MODES,
        f"worker.actor.loss_agg_mode='{actor.loss_agg_mode}' is unknown: use one of "
        f"{', '.join(LOSS_AGG_MODES)}",
    )
    _require(cfg.trainer.device in ("auto", "cuda", "cpu"), "trainer.device must be auto, cuda or cpu")
    _require(
        actor.fsdp.dtype in ("auto", "bf16", "fp32"), "worker.actor.fsdp.dtype must be auto, bf16 or fp32"
    )
    _require(
        actor.optim.lr_scheduler in ("constant", "cosine"), "worker.actor.optim.lr_scheduler: constant|cosine"
    )
    for name in ("rollout_batch_size", "max_prompt_length", "max_response_length"):
        _require(getattr(data, name) > 0, f"data.{name} must be > 0")
    _require(rollout.n >= 1, "worker.rollout.n must be >= 1")
    _require(actor.prompts_per_update > 0, "worker.actor.prompts_per_update must be > 0")
    _require(
        data.rollout_batch_size % actor.prompts_per_update == 0,
        f"data.rollout_batch_size={data.rollout_batch_size} is not divisible by "
        f"worker.actor.prompts_per_update={actor.prompts_per_update}: make the rollout batch a multiple of "
        "the prompts per update",
    )
    world = world_size or cfg.trainer.nnodes * cfg.trainer.n_devices_per_node
    _require(world >= 1, "trainer.nnodes * trainer.n_devices_per_node must be >= 1")
    _require(
        world % rollout.tensor_parallel_size == 0,
        f"trainer.n_devices_per_node*nnodes={world} is not divisible by "
        f"worker.rollout.tensor_parallel_size={rollout.tensor_parallel_size}",
    )
    _require(
        (data.rollout_batch_size * rollout.n) % world == 0,
        f"data.rollout_batch_size*worker.rollout.n={data.rollout_batch_size * rollout.n} responses cannot be "
        f"split evenly over {world} devices: change data.rollout_batch_size or trainer.n_devices_per_node",
    )
    mini = actor.prompts_per_update * rollout.n
    _require(
        mini % world == 0,
        f"worker.actor.prompts_per_update*worker.rollout.n={mini} responses per update cannot be split over "
        f"{world} devices: change worker.actor.prompts_per_update",
    )
    per_device = mini // world
    mb = actor.micro_batch_size_per_device_for_update
    _require(
        mb > 0 and per_device % mb == 0,
        f"worker.actor.micro_batch_size_per_device_for_update={mb} does not divide the {per_device} "
        f"responses each device gets per update (prompts_per_update*n/devices): pick a divisor of {per_device}",
    )
    _require(
        actor.micro_batch_size_per_device_for_experience > 0,
        "worker.actor.micro_batch_size_per_device_for_experience must be > 0",
    )
    longest = data.max_prompt_length + data.max_response_length
    for key, value in (
        ("worker.actor.max_tokens_per_micro_batch_for_update", actor.max_tokens_per_micro_batch_for_update),
        (
            "worker.actor.max_tokens_per_micro_batch_for_experience",
            actor.max_tokens_per_micro_batch_for_experience,
        ),
        (
            "worker.ref.max_tokens_per_micro_batch_for_experience",
            cfg.worker.ref.max_tokens_per_micro_batch_for_experience,
        ),
    ):
        _require(
            value == 0 or value >= longest,
            f"{key}={value} is below the longest row (data.max_prompt_length + data.max_response_length = "
            f"{longest}): raise it to at least {longest}, or 0 for fixed-size micro-batches",
        )
    _require(
        rollout.seed_mode in ("auto", "per_request", "per_engine"),
        "worker.rollout.seed_mode must be auto, per_request or per_engine",
    )
    _require(
        rollout.model_runner in VLLM_MODEL_RUNNERS,
        f"worker.rollout.model_runner must be one of {', '.join(VLLM_MODEL_RUNNERS)} (v1: the runner CI tests)",
    )
    _require(rollout.max_num_seqs >= 1, "worker.rollout.max_num_seqs must be >= 1")
    _require(
        cfg.trainer.memory_check in ("warn", "error", "off"),
        "trainer.memory_check must be warn, error or off",
    )
    _require(
        0 <= actor.clip_ratio_low < 1 and actor.clip_ratio_high >= 0,
        "worker.actor.clip_ratio_low must be in [0, 1) and clip_ratio_high >= 0",
    )
    _require(actor.clip_ratio_dual > 1.0, "worker.actor.clip_ratio_dual must be > 1 (3.0 in the paper)")
    _require(actor.ppo_epochs >= 1, "worker.actor.ppo_epochs must be >= 1")
    _require(cfg.trainer.total_epochs >= 1, "trainer.total_epochs must be >= 1")
    _require(
        cfg.trainer.max_steps == -1 or cfg.trainer.max_steps >= 1, "trainer.max_steps must be -1 or >= 1"
    )
    from verl.utils.logger import VALID_LOGGERS

    unknown_loggers = set(cfg.trainer.logger) - set(VALID_LOGGERS)
    _require(
        not unknown_loggers,
        f"trainer.logger has unknown entries {sorted(unknown_loggers)}: use console, "
        "jsonl, tensorboard, wandb",
    )
