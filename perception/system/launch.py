"""Launch files: YAML lists of nodes with their parameters, validated before anything runs.

Layout::

    run: camera                 # run name: sockets live in <tmp>/perception-<uid>/<run>/
    deterministic: false        # process every frame in order instead of keeping the newest
    supervisor:                 # optional, see SupervisorConfig
      heartbeat_timeout_s: 3
    nodes:
      camera:                   # node name; its type is the name unless `type:` says otherwise
        source: frames/
        fps: 15
      preprocess: {width: 640, height: 384, spin_us: 500}  # spin_us: optional on any node,
                                # it spins for its inputs' next message (see NodeSpec)
      segmenter: {isolate: true} # optional on any node: its step threads on CPUs of their own
      tracker: {cpus: [0]}      # optional on any node: pin its process to these CPUs
      publisher: {}

A node's type must be a row of the node table (:data:`~perception.system.node_table.NODE_TYPES`),
whose config class validates its parameters.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from perception.bus.shm_ring import ShmConfig
from perception.node.config import ConfigError, build_config
from perception.system.node_table import NODE_TYPES


@dataclass(frozen=True)
class SupervisorConfig:
    """Heartbeat and restart policy. A node is restarted when it exits or when no
    heartbeat arrived for ``heartbeat_timeout_s`` (``startup_timeout_s`` after a start);
    restarts back off from ``backoff_initial_s`` doubling to ``backoff_max_s``; more than
    ``max_restarts`` within ``restart_window_s`` fails the launch. A silent node that is
    starved of CPU rather than hung (it waited for a CPU more than it ran) is restarted only
    once it has been silent for ``starved_timeout_s``."""

    heartbeat_timeout_s: float = 3.0
    starved_timeout_s: float = 20.0
    startup_timeout_s: float = 30.0
    max_restarts: int = 5
    restart_window_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    grace_s: float = 3.0
    #: CPUs kept from halting while the run lasts, by an idle-priority poll loop on each
    #: (:mod:`perception.system.idle_poll`): the light nodes' CPUs, for less latency per frame
    #: on machines whose idle CPUs halt, for the power of CPUs that never rest. Empty: none
    poll_idle: tuple[int, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    name: str
    type: str
    config: Any
    params: dict[str, Any]
    #: CPUs the node's process runs on (``cpus:`` in the launch file; empty: any). Pinning
    #: the segmenter to a core of its own keeps the other nodes' wake-ups off the core that
    #: runs the network (what ``taskset``/``isolcpus`` do for a robot's perception stack)
    cpus: tuple[int, ...] = ()
    #: CPUs of its own for the node's step threads (``isolate:``; 0: none), every other
    #: thread of the run kept off them (:mod:`perception.system.cpu_plan`)
    isolate: int = 0
    #: how long before (and after) an input's next message is due the node stops sleeping
    #: and checks for it without sleeping (``spin_us:``; 0: never;
    #: :mod:`perception.bus.arrivals`): less latency per hop for CPU time
    spin_us: int = 0


@dataclass(frozen=True)
class LaunchSpec:
    path: str
    run: str
    deterministic: bool
    nodes: tuple[NodeSpec, ...]
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    #: frames between local nodes in shared memory (``shm: {slots, slot_mb}``; off in
    #: deterministic mode, where a queued frame must never be overwritten)
    shm: ShmConfig = field(default_factory=ShmConfig)


#: the longest ``spin_us:`` (a window of twice this a frame; more is a core spinning)
MAX_SPIN_US = 10_000
_TOP_KEYS = ("run", "deterministic", "supervisor", "shm", "nodes")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``node.key=value`` -> (node, key, value), the value read as a YAML scalar."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected node.key=value")
    lhs, value = text.split("=", 1)
    node, key = lhs.split(".", 1)
    return node, key, yaml.safe_load(value) if value else ""


def load_launch(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> LaunchSpec:
    """Read and validate a launch file (plus ``--set`` overrides).

    Raises :class:`ConfigError` naming the file, node and key at the first problem.
    """
    p = Path(path)
    where = str(path)
    doc = _read_doc(p, where)
    raw_nodes: dict[str, dict[str, Any]] = {}
    for name, params in doc["nodes"].items():
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: node {name!r}: parameters must be a mapping")
        raw_nodes[str(name)] = dict(params)
    # the top-level sections --set reaches too (--set shm.slots=0, --set supervisor.poll_idle=[0])
    sections = {
        name: dict(doc.get(name) or {}) if isinstance(doc.get(name) or {}, dict) else doc.get(name)
        for name in ("shm", "supervisor")
    }
    _apply_overrides(overrides, raw_nodes, sections, where)
    nodes = [spec for name, params in raw_nodes.items() if (spec := _node_spec(name, params, where)) is not None]
    sup = build_config(SupervisorConfig, sections["supervisor"], where=f"{where}: supervisor")
    # checked and kept as a node's cpus: are (sorted, each CPU once)
    sup = replace(sup, poll_idle=_cpus(list(sup.poll_idle), f"{where}: supervisor", "poll_idle"))
    run = str(doc.get("run") or p.stem)
    shm = build_config(ShmConfig, sections["shm"], where=f"{where}: shm")
    return LaunchSpec(where, run, bool(doc.get("deterministic", False)), tuple(nodes), sup, shm)


def _read_doc(p: Path, where: str) -> dict[str, Any]:
    """The launch file's YAML mapping, its top-level keys and ``nodes:`` checked."""
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"launch file {where!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:  # found by bench/fuzz.py
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start}): a launch file is YAML text") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), dict) or not doc["nodes"]:
        raise ConfigError(f"{where}: expected a mapping with a non-empty 'nodes:' mapping")
    for key in doc:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{where}: unknown top-level key {key!r}; known keys: {', '.join(_TOP_KEYS)}")
    return doc


def _apply_overrides(
    overrides: Sequence[str], raw_nodes: dict[str, dict[str, Any]], sections: dict[str, Any], where: str
) -> None:
    """``--set node.key=value`` into a node's parameters (or a top-level section's)."""
    for text in overrides:
        node, key, value = parse_override(text)
        if node in sections and node not in raw_nodes and isinstance(sections[node], dict):
            sections[node][key] = value
            continue
        if node not in raw_nodes:
            raise ConfigError(f"{where}: --set {text!r}: no node {node!r}; nodes: {', '.join(raw_nodes)}")
        raw_nodes[node][key] = value


def _node_spec(name: str, params: dict[str, Any], where: str) -> NodeSpec | None:
    """One node's spec from its parameters (``None`` when ``enabled: false``)."""
    enabled = params.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: node {name!r}: key 'enabled' must be true or false, got {enabled!r}")
    if not enabled:  # in the file, off until `--set NODE.enabled=true`
        return None
    cpus = _cpus(params.pop("cpus", []), f"{where}: node {name!r}")
    isolate = params.pop("isolate", False)
    spin_us = _spin_us(params.pop("spin_us", 0), f"{where}: node {name!r}")
    type_name = str(params.pop("type", name))
    if type_name not in NODE_TYPES:
        raise ConfigError(
            f"{where}: node {name!r}: unknown node type {type_name!r}; known types: {', '.join(NODE_TYPES)}"
        )
    cfg = build_config(NODE_TYPES[type_name].config_class(), params, where=f"{where}: node {name!r}")
    n_isolated = _isolate(isolate, cpus, getattr(cfg, "threads", None), f"{where}: node {name!r}")
    if n_isolated and getattr(cfg, "threads", None) == 0:
        # its runtime's default pool is one thread a core; on CPUs of its own it gets one a CPU
        params["threads"] = n_isolated
        cfg = build_config(NODE_TYPES[type_name].config_class(), params, where=f"{where}: node {name!r}")
    return NodeSpec(name, type_name, cfg, params, cpus, n_isolated, spin_us)


def _cpus(value: Any, where: str, key: str = "cpus") -> tuple[int, ...]:
    """A node's ``cpus:`` (or another ``key`` of CPUs) as CPU ids this process may run on
    (checked here, where it runs)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        raise ConfigError(f"{where}: key {key!r} must be a list of CPU numbers, e.g. [1], got {value!r}")
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    missing = [c for c in value if c not in available]
    if missing:
        raise ConfigError(
            f"{where}: key {key!r}: CPU {', '.join(map(str, missing))} not available to this process "
            f"(available: {', '.join(map(str, available)) or 'none: no CPU affinity here'})"
        )
    return tuple(sorted(set(value)))


def _spin_us(value: Any, where: str) -> int:
    """A node's ``spin_us:``: microseconds, 0 to :data:`MAX_SPIN_US`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPIN_US:
        raise ConfigError(
            f"{where}: key 'spin_us' must be a whole number of microseconds from 0 to {MAX_SPIN_US}, "
            f"e.g. 500, got {value!r}"
        )
    return value


def _isolate(value: Any, cpus: tuple[int, ...], threads: int | None, where: str) -> int:
    """A node's ``isolate:`` as a number of CPUs (0: not isolated). ``true`` is one CPU
    per thread of the node's ``threads:`` (one when it has none or leaves it to the runtime)."""
    if value is False or value == 0:
        return 0
    if value is True:
        n = threads if threads else 1
    elif isinstance(value, int) and value > 0:
        n = value
    else:
        raise ConfigError(f"{where}: key 'isolate' must be true, false or a number of CPUs, e.g. 1, got {value!r}")
    if cpus:
        raise ConfigError(
            f"{where}: keys 'cpus' and 'isolate' exclude each other: 'cpus' pins the whole process, "
            "'isolate' picks its CPUs itself"
        )
    return n


def with_node(spec: LaunchSpec, name: str, params: dict[str, Any], type_name: str | None = None) -> LaunchSpec:
    """``spec`` with node ``name`` added (or its parameters updated), validated like a file's."""
    nodes = list(spec.nodes)
    existing = next((n for n in nodes if n.name == name), None)
    t = type_name or (existing.type if existing else name)
    merged = {**(existing.params if existing else {}), **params}
    node = NodeSpec(
        name,
        t,
        build_config(NODE_TYPES[t].config_class(), merged, where=f"{spec.path}: node {name!r}"),
        merged,
        existing.cpus if existing else (),
        existing.isolate if existing else 0,
        existing.spin_us if existing else 0,
    )
    nodes = [node if n.name == name else n for n in nodes] if existing else [*nodes, node]
    return replace(spec, nodes=tuple(nodes))


def default_run_dir(run: str) -> str:
    """``$PERCEPTION_RUN_DIR`` if set, else ``<tmp>/perception-<uid>/<run>``."""
    base = os.environ.get("PERCEPTION_RUN_DIR")
    if base:
        return base
    return os.path.join(tempfile.gettempdir(), f"perception-{os.getuid()}", run)
