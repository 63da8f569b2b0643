"""Settings of the R-Zero iteration driver (the engine's own settings live in verl/trainer/config.py).

Precedence: dataclass defaults (the paper's numbers) < `--preset FILE` yaml < `--set key=value`.
The profile's numbers (iterations, votes m, kept band) come from rzero/profiles.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from pipeline.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS
from rzero.profiles import PROFILES, get_profile
from rzero.prompts import challenger_prompts
from verl.trainer.config import CONFIG_DIR, ConfigError
from verl.utils.seed_mode import SEED_MODES

# The benchmark slot the generated arithmetic problems take (`eval_generated_items`).
GENERATED_BENCHMARK = "gsm8k"


@dataclass
class ChallengerPromptConfig:
    """`challenger.*`: the Challenger prompt (rzero/prompts.py), for its GRPO and question generation."""

    # `prompt_variant=persona`: one persona a line, blank lines ignored (empty: configs/personas.txt)
    persona_file: str = ""


@dataclass
class PipelineConfig:
    # the plan the iterations follow (pipeline/experiments.py): rzero (the paper's loop), no_rl_challenger,
    # no_rep_penalty, no_filter, single_model
    experiment: str = DEFAULT_EXPERIMENT
    iterations: int | None = None  # None: the profile's (paper 3, rzero_code 5: the authors' driver)
    profile: str = "paper"
    # question generation (section 3)
    num_questions: int = 8000
    gen_temperature: float = 1.0
    gen_top_p: float = 0.95
    gen_max_tokens: int = 4096
    prompt_variant: str = "default"  # default | persona | general (rzero/prompts.py)
    challenger: ChallengerPromptConfig = field(default_factory=ChallengerPromptConfig)
    # pseudo-labelling: votes 0 = the profile's m (paper 10, rzero_code 9)
    votes: int = 0
    label_max_tokens: int = 4096
    # engine configs layered after configs/challenger.yaml / configs/solver.yaml (e.g. the tiny preset)
    engine_configs: list = field(default_factory=list)
    engine_overrides: list = field(default_factory=list)  # key=value for both training stages
    challenger_overrides: list = field(default_factory=list)
    solver_overrides: list = field(default_factory=list)
    # devices
    solver_gpus: int = 0  # GPUs for the Solver servers in the Challenger stage (0: half)
    cpu_ranks: int = 2
    # CPU only, the 8-GPU plan's shapes without GPUs (the rehearsal, configs/pipeline/rehearsal_*.yaml):
    cpu_challenger_ranks: int = 0  # training ranks of the Challenger stage (0: cpu_ranks)
    cpu_solver_servers: int = 1  # Solver servers of the Challenger stage
    cpu_shards: int = 1  # engines of generation, labelling and evaluation (> 1: one process each)
    # how generation and labelling seed their sampling: auto (one seed per request on CPU, exact
    # resumes; one per engine on GPU, vLLM's fast sampler), per_request or per_engine
    engine_seed_mode: str = "auto"
    gpu_mem_gib: float = 0.0  # GPU memory for the dry run's memory plan (0: nvidia-smi's)
    # evaluation of each new Solver (and the base model once)
    evaluate: bool = True
    eval_benchmarks: list = field(default_factory=list)  # empty: the evaluation package's default set
    eval_data_dir: str = ""  # local benchmark files for offline nodes (<benchmark>.jsonl, ...)
    eval_data: dict = field(default_factory=dict)  # benchmark -> local file (wins over eval_data_dir)
    # > 0: that many generated arithmetic word problems (evaluation/synthetic.py), written into
    # <run>/eval_data/ and evaluated in the GSM8K slot (same schema and grading) instead of GSM8K
    eval_generated_items: int = 0
    eval_max_tokens: int = 0  # new tokens per answer; 0: each benchmark's own (math 4096, general 8192)
    eval_max_model_len: int = 0  # engine context; 0: the model's
    eval_grader_workers: int = 0  # 0: every core but two (2 to 32; rewards.grader.default_grader_workers)
    seed: int = 0
    # another run's folder: its finished stages that this run would launch with the very same settings
    # are linked instead of run (pipeline/reuse.py; `main.sh ... --reuse-from RUN_DIR`)
    reuse_from: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def load_pipeline_config(preset: str | None = None, sets: list[str] | None = None) -> PipelineConfig:
    merged = OmegaConf.structured(PipelineConfig)
    try:
        if preset:
            path = Path(preset)
            for candidate in (CONFIG_DIR.parent / preset, CONFIG_DIR / preset):
                if not path.is_file() and candidate.is_file():
                    path = candidate
            if not path.is_file():
                raise ConfigError(f"preset '{preset}' not found (give a yaml path or a name in configs/)")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        if sets:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(sets)))
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(
            f"unknown pipeline setting '{getattr(e, 'full_key', e)}'; valid: "
            f"{', '.join(PipelineConfig.__dataclass_fields__)}"
        ) from None
    except ValidationError as e:
        raise ConfigError(f"bad value for pipeline setting '{e.full_key}': {e.msg}") from None
    cfg: PipelineConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    if cfg.profile not in PROFILES:
        raise ConfigError(f"profile='{cfg.profile}' is unknown: use one of {', '.join(PROFILES)}")
    if cfg.experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment='{cfg.experiment}' is unknown: use one of {', '.join(EXPERIMENTS)}")
    if cfg.iterations is None:
        cfg.iterations = get_profile(cfg.profile).iterations
    if cfg.iterations < 1:
        raise ConfigError(
            f"iterations={cfg.iterations}: must be >= 1 (leave --iterations out for the profile's default: "
            + ", ".join(f"{name} {p.iterations}" for name, p in PROFILES.items())
            + ")"
        )
    if cfg.num_questions < 1:
        raise ConfigError(f"num_questions={cfg.num_questions}: must be >= 1")
    if min(cfg.cpu_ranks, cfg.cpu_solver_servers, cfg.cpu_shards) < 1 or cfg.cpu_challenger_ranks < 0:
        raise ConfigError(
            "cpu_ranks, cpu_solver_servers and cpu_shards must be >= 1, cpu_challenger_ranks >= 0 "
            "(0: cpu_ranks)"
        )
    if cfg.engine_seed_mode not in SEED_MODES:
        raise ConfigError(f"engine_seed_mode='{cfg.engine_seed_mode}': use one of {', '.join(SEED_MODES)}")
    if cfg.eval_generated_items < 0 or cfg.eval_max_tokens < 0 or cfg.eval_max_model_len < 0:
        raise ConfigError("eval_generated_items, eval_max_tokens and eval_max_model_len must be >= 0")
    cfg.engine_configs = [
        str(Path(p) if Path(p).is_absolute() else (CONFIG_DIR.parent / p)) for p in cfg.engine_configs
    ]
    for p in cfg.engine_configs:
        if not Path(p).is_file():
            raise ConfigError(f"engine_configs: '{p}' does not exist")
    if cfg.challenger.persona_file:
        path = Path(cfg.challenger.persona_file).expanduser()
        if not path.is_absolute() and not path.exists() and (CONFIG_DIR.parent / path).exists():
            path = CONFIG_DIR.parent / path  # a file of the repository, e.g. configs/personas.txt
        cfg.challenger.persona_file = str(path.resolve())
    try:  # the prompt settings, checked before any stage starts (a missing or empty persona file)
        challenger_prompts(cfg.prompt_variant, [], cfg.challenger.persona_file, cfg.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg
