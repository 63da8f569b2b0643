"""Device roles for each R-Zero stage, derived from what is visible (or from flags).

The Challenger stage needs two things at once: GPUs for its GRPO trainer and GPUs for the frozen
Solver's vLLM servers. The other stages use every device: question generation, pseudo-labelling
and evaluation run one vLLM engine per device, and Solver training uses them all for FSDP.

    8 GPUs: Challenger trainer 0-3, Solver servers 4-7 (one per GPU); everything else 0-7
    4 GPUs: 0-1 / 2-3;   2 GPUs: 0 / 1;   1 GPU: shared (memory split between the two)
    CPU:    `cpu_solver_servers` Solver servers (one by default) plus `cpu_ranks` training ranks
            (FSDP on gloo; `cpu_challenger_ranks` for the Challenger stage when set), and
            `cpu_shards` engine processes for generation, labelling and evaluation (one by default)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from infra.devices import visible_gpus
from pipeline.config import PipelineConfig


@dataclass
class DevicePlan:
    kind: str  # "cuda" or "cpu"
    devices: list[str]  # all devices the run uses (GPU ids; empty on CPU)
    challenger_trainer: list[str]
    challenger_solver: list[str]
    shared_gpu: bool = False  # 1 GPU: Solver servers and trainer share it
    cpu_ranks: int = 2
    notes: list[str] = field(default_factory=list)
    cpu_challenger_ranks: int = 0  # 0: cpu_ranks
    cpu_solver_servers: int = 1
    cpu_shards: int = 1

    @property
    def trainer_world(self) -> int:
        """Training ranks of the Challenger stage."""
        if self.kind == "cuda":
            return len(self.challenger_trainer)
        return self.cpu_challenger_ranks or self.cpu_ranks

    @property
    def solver_servers(self) -> int:
        """Solver servers of the Challenger stage (one per GPU of `challenger_solver` on CUDA)."""
        return len(self.challenger_solver) if self.kind == "cuda" else self.cpu_solver_servers

    @property
    def engine_shards(self) -> int:
        """Engines of generation, labelling and evaluation on CPU (on CUDA: one per GPU group)."""
        return 1 if self.kind == "cuda" else self.cpu_shards

    @property
    def solver_world(self) -> int:
        """Training ranks of the Solver stage."""
        return len(self.devices) if self.kind == "cuda" else self.cpu_ranks

    def to_dict(self) -> dict:
        return {**asdict(self), "trainer_world": self.trainer_world, "solver_world": self.solver_world}


def plan_for(pipe: PipelineConfig, gpus: list[str] | None = None) -> DevicePlan:
    """The device plan of a run's pipeline settings (`solver_gpus`, the `cpu_*` counts)."""
    return plan_devices(
        gpus,
        pipe.solver_gpus or None,
        pipe.cpu_ranks,
        cpu_challenger_ranks=pipe.cpu_challenger_ranks,
        cpu_solver_servers=pipe.cpu_solver_servers,
        cpu_shards=pipe.cpu_shards,
    )


def plan_devices(
    gpus: list[str] | None = None,
    solver_gpus: int | None = None,
    cpu_ranks: int = 2,
    *,
    cpu_challenger_ranks: int = 0,
    cpu_solver_servers: int = 1,
    cpu_shards: int = 1,
) -> DevicePlan:
    """Split `gpus` (default: the visible ones) between the Challenger trainer and the Solver servers.

    `solver_gpus` overrides the default half; the trainer keeps the rest (at least one GPU). The
    `cpu_*` counts apply only when no GPU is visible.
    """
    gpus = visible_gpus() if gpus is None else list(gpus)
    if not gpus:
        plan = DevicePlan(
            "cpu",
            [],
            [],
            [],
            cpu_ranks=cpu_ranks,
            cpu_challenger_ranks=cpu_challenger_ranks,
            cpu_solver_servers=cpu_solver_servers,
            cpu_shards=cpu_shards,
        )
        servers = "one Solver server" if cpu_solver_servers == 1 else f"{cpu_solver_servers} Solver servers"
        ranks = (
            f"{cpu_ranks} training ranks"
            if plan.trainer_world == cpu_ranks
            else f"{plan.trainer_world} Challenger / {cpu_ranks} Solver training ranks"
        )
        shards = f", {cpu_shards} engine processes per stage" if cpu_shards > 1 else ""
        plan.notes.append(f"no GPU visible: CPU run with {ranks} and {servers}{shards}")
        return plan
    n = len(gpus)
    if n == 1:
        return DevicePlan(
            "cuda",
            gpus,
            gpus,
            gpus,
            shared_gpu=True,
            notes=["1 GPU: the Solver servers and the Challenger trainer share it (memory split)"],
        )
    k = n // 2 if solver_gpus is None else solver_gpus
    if not 1 <= k < n:
        raise ValueError(
            f"--solver-gpus={k} must leave at least one of the {n} GPUs to the trainer and take >= 1"
        )
    notes = []
    if (n - k) & (n - k - 1):
        notes.append(f"{n - k} trainer GPUs is not a power of two: batch sizes must divide by it")
    return DevicePlan("cuda", gpus, gpus[: n - k], gpus[n - k :], notes=notes)
