"""Resource pools: one Ray placement group per node, one bundle per device (GPU or CPU rank)."""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, placement_group


@dataclass
class ResourcePool:
    """`nnodes` x `devices_per_node` bundles; a bundle is {"GPU": 1, "CPU": c} on GPU, {"CPU": c} on CPU.

    Each node's bundles are STRICT_PACKed so that ranks node*devices_per_node + i share a node,
    which is what LOCAL_RANK and NCCL's intra-node paths assume.
    """

    nnodes: int
    devices_per_node: int
    use_gpu: bool
    cpus_per_device: int = 1
    name: str = "grpo"
    _pgs: list[PlacementGroup] = field(default_factory=list, init=False, repr=False)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.devices_per_node

    def placement_groups(self, timeout_s: float = 300.0) -> list[PlacementGroup]:
        if self._pgs:
            return self._pgs
        bundle = {"CPU": self.cpus_per_device, **({"GPU": 1} if self.use_gpu else {})}
        pgs = [
            placement_group(
                [dict(bundle) for _ in range(self.devices_per_node)],
                strategy="STRICT_PACK",
                name=f"{self.name}_node{i}",
            )
            for i in range(self.nnodes)
        ]
        ready, _ = ray.wait([pg.ready() for pg in pgs], num_returns=len(pgs), timeout=timeout_s)
        if len(ready) != len(pgs):
            for pg in pgs:
                ray.util.remove_placement_group(pg)
            raise RuntimeError(
                f"Ray could not reserve {self.nnodes} node(s) x {self.devices_per_node} bundle(s) of {bundle} within "
                f"{timeout_s:.0f}s; cluster has {ray.cluster_resources()}. Lower trainer.n_devices_per_node / "
                "trainer.nnodes or add resources."
            )
        self._pgs = pgs
        return pgs

    def release(self) -> None:
        for pg in self._pgs:
            ray.util.remove_placement_group(pg)
        self._pgs = []
