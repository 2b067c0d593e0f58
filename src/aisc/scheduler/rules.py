"""Which requests a cluster can ever run: shared by submission checks and the policy core."""

from __future__ import annotations

from collections.abc import Sequence

from aisc.scheduler.interface import NodeSpec


class Unschedulable(ValueError):
    """A job that could never run on this cluster."""


def check_request(nodes: Sequence[NodeSpec], gpus: int, gpu_model: str) -> None:
    """Raise Unschedulable, with the reason, for a request these nodes can never run.

    A job up to one node's size runs on one node; a larger one takes whole nodes, so it must ask
    for a multiple of the node size (on a model whose nodes are all one size).
    """
    if gpus < 1:
        raise Unschedulable("a job needs at least one GPU")
    sizes = [n.gpus for n in nodes if n.gpu_model == gpu_model]
    if not sizes:
        raise Unschedulable(f"the cluster has no {gpu_model} GPUs")
    total, largest = sum(sizes), max(sizes)
    if gpus > total:
        raise Unschedulable(
            f"{gpus} GPUs is more than the cluster has ({total} {gpu_model} GPUs in all)"
        )
    if gpus > largest and (len(set(sizes)) != 1 or gpus % largest):
        raise Unschedulable(
            f"{gpus} GPUs is more than any {gpu_model} node has ({largest}); a larger job takes "
            f"whole nodes, so ask for a multiple of {largest}"
        )
