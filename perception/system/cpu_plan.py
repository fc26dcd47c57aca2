"""Which CPUs each node's threads run on: the launch file's ``cpus:`` and ``isolate:`` keys
resolved against the CPUs this process may use.

``cpus: [1]`` pins a node's whole process. ``isolate: true`` (or a number of CPUs) gives a
node's *step* threads (the thread that runs its logic, plus the threads its logic started
while loading, such as ONNX Runtime's intra-op pool) CPUs of their own, the last ones
available, and moves every other thread of the run there is no need to put on them (the
node's own ZeroMQ I/O and receiver threads, and every other node without a ``cpus:`` of its
own) to the rest. On a segmenter that keeps the other nodes' wake-ups, its socket I/O and
the memory traffic of letterboxing off the cores that run the network, which is what lets a
pipeline keep up with the network called alone in a loop (``bench/pipeline.py``); it is
what ``isolcpus``/``taskset`` do for a robot's perception stack, per thread instead of per
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class _Node(Protocol):
    name: str
    cpus: tuple[int, ...]
    isolate: int


@dataclass(frozen=True)
class NodeCpus:
    """``cpus``: the node's process (empty: any CPU); ``step``: its step threads (empty:
    the same as the process)."""

    cpus: tuple[int, ...] = ()
    step: tuple[int, ...] = ()


@dataclass(frozen=True)
class CpuPlan:
    nodes: dict[str, NodeCpus] = field(default_factory=dict)
    #: why ``isolate:`` could not be honoured (too few CPUs), or None
    warning: str | None = None
    #: the CPUs left for everything not isolated, the supervisor's own threads too (empty:
    #: nothing is isolated)
    rest: tuple[int, ...] = ()

    def of(self, name: str) -> NodeCpus:
        return self.nodes.get(name, NodeCpus())


def plan_cpus(nodes: Sequence[_Node], available: Sequence[int]) -> CpuPlan:
    """The CPUs of every node in ``nodes`` given the ``available`` CPU ids.

    Isolated nodes take CPUs from the end of ``available``, in launch-file order; every other
    thread goes on what is left. At least one CPU must be left, or nothing is isolated (the
    plan says why in ``warning``) and each node keeps only its own ``cpus:``."""
    avail = sorted(set(available))
    wanted = [n for n in nodes if n.isolate > 0]
    own = {n.name: NodeCpus(tuple(n.cpus)) for n in nodes if n.cpus}
    if not wanted:
        return CpuPlan(own)
    need = sum(n.isolate for n in wanted)
    if need >= len(avail):
        names = ", ".join(f"{n.name} ({n.isolate})" for n in wanted)
        return CpuPlan(
            own,
            f"isolate: {names} need {need} CPU{'s' if need > 1 else ''} of their own and one more "
            f"for the rest, but this process may use {len(avail)} ({', '.join(map(str, avail))}): "
            "running without isolation",
        )
    rest = tuple(avail[: len(avail) - need])
    plan: dict[str, NodeCpus] = {}
    end = len(avail)
    for n in wanted:
        plan[n.name] = NodeCpus(rest, tuple(avail[end - n.isolate : end]))
        end -= n.isolate
    for n in nodes:
        if n.name not in plan:
            plan[n.name] = own.get(n.name, NodeCpus(rest))
    return CpuPlan(plan, rest=rest)
