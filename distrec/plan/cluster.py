"""A GPU cluster described in numbers, as TorchRec's planner sees it.

``Cluster(nodes=8, gpus_per_node=8, hbm_gb=80, ddr_gb=512)`` is 64 ranks, each with 80 GiB of
HBM and a 64 GiB share of its node's host memory (DDR, where UVM-cached tables live), NVLink
between the GPUs of a node (``intra_gbps``) and the network between nodes (``inter_gbps``).
``topology()`` is the planner's ``Topology`` with ``compute_device="cuda"``: building it reads
no hardware, so a CPU-only machine can plan for any cluster.

Units: GB = 2^30 bytes and GB/s = 2^30 bytes per second, as TorchRec's own constants
(``HBM_CAP``, ``INTRA_NODE_BANDWIDTH``) count them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torchrec.distributed.planner.types import HardwareConfig, KernelConfig, Topology, TopologyFactory, TrainerConfig

from distrec.errors import UserError

__all__ = ["Cluster", "GB", "larger_clusters"]

GB = 1 << 30


@dataclass(frozen=True)
class Cluster:
    nodes: int = 1
    gpus_per_node: int = 8
    hbm_gb: float = 80.0  # per GPU
    ddr_gb: float = 512.0  # host memory per node, shared by its GPUs
    intra_gbps: float = 600.0  # GB/s between two GPUs of a node (TorchRec's default; NVLink)
    inter_gbps: float = 12.5  # GB/s between nodes, per GPU (TorchRec's default; 100 Gbit/s)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise UserError(f"--nodes and --gpus-per-node must be at least 1, got {self.nodes} and {self.gpus_per_node}")
        for flag, value in (
            ("--hbm-gb", self.hbm_gb),
            ("--ddr-gb", self.ddr_gb),
            ("--intra-gbps", self.intra_gbps),
            ("--inter-gbps", self.inter_gbps),
        ):
            if not value > 0:
                raise UserError(f"{flag} must be positive, got {value}")

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def hbm_bytes(self) -> int:
        """HBM of one GPU."""
        return int(self.hbm_gb * GB)

    @property
    def ddr_bytes_per_rank(self) -> int:
        """A GPU's share of its node's host memory (TorchRec's ``ddr_cap`` is per rank)."""
        return int(self.ddr_gb * GB / self.gpus_per_node)

    def describe(self) -> str:
        return f"{self.nodes} node(s) × {self.gpus_per_node} GPU(s) = {self.world} GPU(s)"

    def as_dict(self) -> dict:
        return {
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "gpus": self.world,
            "hbm_gb_per_gpu": self.hbm_gb,
            "ddr_gb_per_node": self.ddr_gb,
            "ddr_gb_per_gpu": self.ddr_gb / self.gpus_per_node,
            "intra_gbps": self.intra_gbps,
            "inter_gbps": self.inter_gbps,
            "compute_device": "cuda",
        }

    def topology(self) -> Topology:
        per_ms = GB / 1000  # bytes per ms in one GB/s
        return TopologyFactory.create_topology(
            trainer_config=TrainerConfig(
                world_size=self.world,
                local_world_size=self.gpus_per_node,
                hbm_cap_bytes=self.hbm_bytes,
                ddr_cap_bytes=self.ddr_bytes_per_rank,
            ),
            hardware_config=HardwareConfig(intra_host_bw=self.intra_gbps * per_ms, inter_host_bw=self.inter_gbps * per_ms),
            kernel_config=KernelConfig(compute_device="cuda", use_hardware_based_bandwidth=True),
        )

    def with_shape(self, nodes: int, gpus_per_node: int) -> Cluster:
        return Cluster(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            hbm_gb=self.hbm_gb,
            ddr_gb=self.ddr_gb,
            intra_gbps=self.intra_gbps,
            inter_gbps=self.inter_gbps,
        )


def larger_clusters(like: Cluster, *, max_nodes: int) -> Iterator[Cluster]:
    """Clusters of ``like``'s GPUs and nodes by growing GPU count: one node with 1, 2, 4, …
    of its GPUs, then 1, 2, 3, … ``max_nodes`` full nodes."""
    gpus = 1
    while gpus < like.gpus_per_node:
        yield like.with_shape(1, gpus)
        gpus *= 2
    for nodes in range(1, max_nodes + 1):
        yield like.with_shape(nodes, like.gpus_per_node)
