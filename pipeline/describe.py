"""What `main.sh --dry-run` (and every run) prints first: devices, stages, the profile's numbers as
they will be used, and the effective engine config of both training stages."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.experiments import get_experiment, run_plan
from pipeline.launch import run_engine_configs
from pipeline.planner import DevicePlan
from rzero.profiles import get_profile
from rzero.prompts import SOLVER_SYSTEM_PROMPT
from verl.trainer.config import config_to_yaml
from verl.utils.memory_plan import plan_memory
from verl.utils.stop_tokens import model_stop_token_ids


def _stop_ids(model: str) -> str:
    """The stop ids every engine of the run uses, when the model's tokenizer is at hand."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        if len(tokenizer) < 2:  # transformers builds an empty tokenizer for a folder without its files
            raise OSError(f"{model} has no tokenizer files")
        ids = model_stop_token_ids(model, tokenizer)
        return f"{ids} ({', '.join(repr(tokenizer.convert_ids_to_tokens(i)) for i in ids)})"
    except (OSError, ValueError) as e:  # not downloaded yet / offline: the rule still holds
        return (
            f"(tokenizer not available here: {type(e).__name__}; rule: EOS ids + chat template end of turn)"
        )


def _memory_plans(engines: dict, plan: DevicePlan, gpu_mem_gib: float) -> list[str]:
    """The memory plan of each training stage (verl/utils/memory_plan.py), or why there is none."""
    if plan.kind != "cuda" and not gpu_mem_gib:
        return ["memory plan: CPU run (give --gpu-mem GiB to plan a GPU node from here)"]
    lines = []
    for stage, config in engines.items():
        world = plan.trainer_world if stage == "challenger" else plan.solver_world
        try:
            memory = plan_memory(config, world_size=world, gpu_mem_gib=gpu_mem_gib or None)
        except (OSError, ValueError, KeyError) as e:  # no config.json at hand, no GPU to ask
            lines.append(f"memory plan, {stage} stage: not available ({e})")
            continue
        lines += [f"{stage} stage {memory.format()}", ""]
    return lines


def _devices(plan: DevicePlan) -> list[str]:
    return [
        f"devices: {plan.kind}"
        + (f" {','.join(plan.devices)}" if plan.devices else f", {plan.cpu_ranks} ranks"),
        f"  challenger: trainer on {plan.challenger_trainer or f'{plan.trainer_world} CPU ranks'}, "
        f"Solver servers on {plan.challenger_solver or f'CPU ({plan.solver_servers} server(s))'}"
        + (" (shared GPU)" if plan.shared_gpu else ""),
        f"  question_generate / question_evaluate / evaluate: one vLLM engine per device "
        f"({len(plan.devices) or plan.engine_shards} engine(s))",
        f"  solver: FSDP over {plan.solver_world} rank(s)",
        *[f"  note: {n}" for n in plan.notes],
    ]


def _experiment_plan(p: PipelineConfig, plan: DevicePlan, engines: dict) -> list[str]:
    """The experiment, its stages per iteration, the model each stage starts from, and its cost."""
    prof, exp = get_profile(p.profile), get_experiment(p.experiment)
    steps = {s.stage: s for s in exp.iteration(1)}
    band = list(exp.band) if exp.band is not None else list(prof.band)
    votes = p.votes or prof.votes
    challenger = steps.get("challenger")
    reward = "uncertainty - repetition penalty"
    if challenger is not None and challenger.options.get("reward_kwargs", {}).get("penalty_weight") == 0:
        reward = "uncertainty only; the penalty is logged, not charged"
    lines = [
        f"experiment {exp.name}: {exp.what}",
        f"  the paper's: {exp.paper}",
        "",
        "stages per iteration:",
        f"  1 challenger        GRPO vs frozen Solver ({reward})"
        if challenger
        else "  1 challenger        not run: questions from the base model with the Challenger prompt",
        f"  2 question_generate {p.num_questions} questions (T={p.gen_temperature}, top_p={p.gen_top_p}, "
        f"max {p.gen_max_tokens} tokens)",
        f"  3 question_evaluate m={votes} votes, keep p_hat in {band}"
        + (" (no filtering: the label drops only)" if exp.band is not None else ""),
        "  4 solver            GRPO on the kept questions (majority-label reward)",
        f"  5 evaluate          {'on' if p.evaluate else 'off'}",
        "",
        "stage plan (base = the base model; iter_<i>/<stage> = that stage's output):",
    ]
    for i, iteration in enumerate(run_plan(exp, p.iterations), 1):
        lines += [f"  iteration {i}:", *[f"    {step.describe()}" for step in iteration]]
    n = p.iterations
    cost = [f"cost of the run ({n} iteration(s)):"]
    if "challenger" in engines:
        c = engines["challenger"]
        cost.append(
            f"  Challenger GRPO: {n} x {c.trainer.max_steps} steps, trainer on "
            f"{plan.challenger_trainer or f'{plan.trainer_world} CPU ranks'}, Solver servers on "
            f"{plan.challenger_solver or f'CPU ({plan.solver_servers})'} ({c.data.rollout_batch_size} x {c.worker.rollout.n} "
            f"questions per step, each answered {c.worker.reward.reward_kwargs.get('solver_votes', '?')} times)"
        )
    cost += [
        f"  question generation: {n} x {p.num_questions} questions",
        f"  pseudo-labelling: {n} x {p.num_questions} x {votes} Solver answers",
        f"  Solver GRPO: {n} x {engines['solver'].trainer.max_steps} steps on {plan.solver_world} rank(s)",
        f"  evaluation: {n + 1 if p.evaluate else 0} model(s) (the base model and each Solver)",
    ]
    return [*lines, "", *cost]


def describe_run(base_model: str, tag: str, run_dir: Path, p: PipelineConfig, plan: DevicePlan) -> str:
    prof = get_profile(p.profile)
    engines = dict(run_engine_configs(p, plan, base_model, run_dir))
    micro = {
        stage: f"update {c.worker.actor.micro_batch_size_per_device_for_update}, "
        f"experience {c.worker.actor.micro_batch_size_per_device_for_experience} per device; "
        f"{c.worker.actor.prompts_per_update} prompts per update; loss {c.worker.actor.loss_agg_mode}; "
        f"batch order {'balanced by length over the ranks' if c.trainer.balance_batch else 'as prompted'}"
        for stage, c in engines.items()
    }
    lines = [
        f"R-Zero run '{tag}': base model {base_model}, profile {p.profile}, {p.iterations} iteration(s), "
        f"experiment {p.experiment}",
        f"outputs: {run_dir}/iter_<i>/<stage>/",
        "",
        *_devices(plan),
        "",
        f"profile {prof.name} (RZERO_SPEC.md):",
        f"  Solver prompt (every Solver query, GRPO and math evaluation): {SOLVER_SYSTEM_PROMPT!r}",
        f"  stop ids (every engine): {_stop_ids(base_model)}",
        f"  answers: {prof.answer_semantics}",
        f"  pseudo-labels: m={p.votes or prof.votes}, p_hat = {prof.p_hat_rule}, kept band {list(prof.band)}",
        f"  p_hat, reward time vs labelling: {prof.reward_p_hat_rule} | {prof.p_hat_rule}",
        f"  drops: {', '.join(prof.drops)}",
        f"  Challenger reward: {prof.challenger_reward}",
        f"  Solver reward: {prof.solver_reward}",
        *[f"  micro-batches, {stage}: {text}" for stage, text in micro.items()],
        f"  iterations: {p.iterations}",
        "",
        *_experiment_plan(p, plan, engines),
        "",
        "pipeline settings:",
        *[f"  {k}: {v}" for k, v in p.to_dict().items()],
    ]
    lines += ["", *_memory_plans(engines, plan, p.gpu_mem_gib)]
    for stage, config in engines.items():
        lines += [
            "",
            f"effective engine config, {stage} stage:",
            *["  " + ln for ln in config_to_yaml(config).splitlines()],
        ]
    return "\n".join(lines)
