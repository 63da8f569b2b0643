"""The two profiles of the method (RZERO_SPEC.md), defined once.

`paper` is the paper's numbers (the default); `rzero_code` is what the authors' public code does
where it differs. Everything that depends on the profile is read from here: pseudo-label votes m,
the kept band, iterations, the engine overrides per training role, and the descriptions the dry run
prints. The reward formulas, the answer semantics and the drops are implemented in `rewards/` and
`question_evaluate/filtering.py`, which branch on the profile's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("challenger", "solver")


@dataclass(frozen=True)
class Profile:
    name: str
    iterations: int  # R-Zero iterations of the driver
    votes: int  # pseudo-label answers per question (m)
    band: tuple[float, float]  # kept p̂ band, inclusive
    answer_semantics: str  # how answers are extracted and compared (one line, for the dry run)
    p_hat_rule: str  # in pseudo-labelling
    reward_p_hat_rule: str  # in the Challenger reward (the Solver's answers at reward time)
    drops: tuple[str, ...]  # what the filter drops besides the band
    challenger_reward: str
    solver_reward: str
    # Engine config per training role, merged above the engine defaults and below the stage's yaml
    # files (so a preset such as configs/tiny_cpu.yaml still shrinks batches).
    engine: dict[str, dict[str, Any]] = field(default_factory=dict)

    def engine_overlay(self, role: str) -> dict[str, Any]:
        if role not in ROLES:
            raise ValueError(f"role '{role}' is unknown: use one of {', '.join(ROLES)}")
        return self.engine.get(role, {})


def _engine(
    prompts_per_update: int,
    loss_agg_mode: str,
    profile: str,
    micro_batches: tuple[int, int] | None = None,
    balance_batch: bool = False,
) -> dict[str, Any]:
    """Engine overrides of one role; `micro_batches` = (update, experience) per device, or None for
    the engine defaults; `balance_batch`: reorder each rollout batch by length over the ranks."""
    actor: dict[str, Any] = {"prompts_per_update": prompts_per_update, "loss_agg_mode": loss_agg_mode}
    worker: dict[str, Any] = {"actor": actor, "reward": {"reward_kwargs": {"profile": profile}}}
    if micro_batches is not None:
        update, experience = micro_batches
        actor["micro_batch_size_per_device_for_update"] = update
        actor["micro_batch_size_per_device_for_experience"] = experience
        worker["ref"] = {"micro_batch_size_per_device_for_experience": experience}
    overlay: dict[str, Any] = {"worker": worker}
    if balance_batch:
        overlay["trainer"] = {"balance_batch": True}
    return overlay


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        iterations=3,
        votes=10,
        band=(0.25, 0.75),
        answer_semantics="last \\boxed{} (none: no vote); math-verify equivalence in killable workers",
        p_hat_rule="largest group / m",
        reward_p_hat_rule="largest group / m",
        drops=("empty label", 'label "None"'),
        challenger_reward="valid: max(0, 1 - 2|p̂ - 0.5| - penalty); invalid: 0",
        solver_reward="1 if the boxed answer matches the label, else 0",
        engine={
            "challenger": _engine(128, "token-mean", "paper"),
            "solver": _engine(128, "token-mean", "paper"),
        },
    ),
    "rzero_code": Profile(
        name="rzero_code",
        iterations=5,
        votes=9,
        band=(0.3, 0.8),
        answer_semantics="mathruler extract_boxed_content ('None' is a vote) and grade_answer both ways",
        p_hat_rule="largest group / answers left after dropping empty boxes",
        reward_p_hat_rule="largest group / all m samples (empty boxes count)",
        drops=("empty label", 'label "None"', "证明 in question", "box in question", "text in label"),
        challenger_reward="valid: min(p̂, 1 - p̂) - penalty; invalid: -1 - penalty",
        solver_reward="0.9 accuracy + 0.1 format (<think>...</think>...\\boxed{})",
        # The authors' micro-batch sizes per device (update: Challenger 2, Solver 1) and their
        # trainer's reordering of each rollout batch by length over the ranks (balance batch) are what
        # makes each micro-batch's own token mean weigh tokens as theirs does; experience 8 and 1
        # (speed only).
        engine={
            "challenger": _engine(
                16, "microbatch-token-mean", "rzero_code", micro_batches=(2, 8), balance_batch=True
            ),
            "solver": _engine(
                128, "microbatch-token-mean", "rzero_code", micro_batches=(1, 1), balance_batch=True
            ),
        },
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`; a clear error naming the choices otherwise."""
    if name not in PROFILES:
        raise ValueError(f"profile '{name}' is unknown: use one of {', '.join(PROFILES)}")
    return PROFILES[name]
