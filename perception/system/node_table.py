"""The node table: one row per node type, the one place the node graph is written down.

A row names the logic factory and the config class as ``"module:callable"`` strings (so
reading the table imports nothing heavy, and a node's process imports only its own type),
the topics the node takes and sends, and its :class:`~perception.node.capabilities.Capabilities`
(what its loop does beyond receive -> step -> send). Launch files are validated against it
(:mod:`perception.system.launch`), the supervisor starts ``nodes/<type>.py`` from it, the
fleet takes its stages from it, and each script in ``nodes/`` is one call of :func:`run_node`.
``tests/test_node_table.py`` checks that the table, the topic table, ``launch/`` and ``nodes/``
agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from perception.node.capabilities import Capabilities


def resolve(ref: str) -> Any:
    """``"module:attr"`` -> the attribute, importing the module."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class NodeType:
    """One node type. ``logic``: ``"module:callable"`` making its logic from its config
    (and its :class:`~perception.node.loop.NodeContext` when ``with_context``); ``config``:
    ``"module:Class"`` validating its launch-file parameters. ``inputs``/``outputs``: the
    topics it takes and sends; ``inputs_key``: the config field that chooses its inputs
    instead (a relay or a recorder takes the topics it is told), ``inputs`` then listing none.
    A node without inputs is a source (a camera): the supervisor starts sources after every
    other node has sent its first heartbeat, so no frame goes out unheard."""

    name: str
    logic: str
    config: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    caps: Capabilities = Capabilities()
    inputs_key: str = ""
    with_context: bool = False

    @property
    def source(self) -> bool:
        return not self.inputs and not self.inputs_key

    @property
    def module(self) -> str:
        """The entry point run as ``python -m``: ``nodes/<type>.py``."""
        return f"nodes.{self.name}"

    def config_class(self) -> type:
        return resolve(self.config)

    def make_logic(self) -> Callable[..., Any]:
        return resolve(self.logic)


NODES: tuple[NodeType, ...] = (
    NodeType(
        "camera",
        "perception.camera.sources:CameraLogic",
        "perception.camera.sources:CameraConfig",
        (),
        ("frames",),
        Capabilities(close=True),
    ),
    NodeType(
        "replay",
        "perception.drives.replay:ReplayLogic",
        "perception.drives.replay:ReplayConfig",
        (),
        ("frames", "gt"),
        Capabilities(prepare=True, claim=True),
    ),
    NodeType(
        "preprocess",
        "perception.camera.preprocess:PreprocessLogic",
        "perception.camera.preprocess:PreprocessConfig",
        ("frames",),
        ("frames.rect",),
        Capabilities(frame_views=True, claim=True),
    ),
    NodeType(
        "segmenter",
        "perception.segmentation.segmenter_logic:segmenter_node",
        "perception.segmentation.segmenter_logic:SegmenterConfig",
        ("frames.rect",),
        ("detections",),
        Capabilities(frame_views=True, checks_frame_views=True, prepare=True),
        with_context=True,
    ),
    NodeType(
        "tracker",
        "perception.tracking.tracker_logic:TrackerLogic",
        "perception.tracking.tracker_config:TrackerConfig",
        ("detections",),
        ("tracks",),
        Capabilities(prepare=True),
    ),
    NodeType(
        "publisher",
        "perception.outputs.publisher:PublisherLogic",
        "perception.outputs.publisher:PublisherConfig",
        (),
        (),
        Capabilities(relays=True, close=True),
        inputs_key="topics",
    ),
    NodeType(
        "recorder",
        "perception.drives.recorder:RecorderLogic",
        "perception.drives.recorder:RecorderConfig",
        (),
        (),
        Capabilities(keep_all=True, close=True),
        inputs_key="topics",
    ),
    NodeType(
        "foxglove",
        "perception.outputs.foxglove_bridge:FoxgloveLogic",
        "perception.outputs.foxglove_bridge:FoxgloveConfig",
        ("frames", "detections", "tracks", "status"),
        (),
        Capabilities(close=True),
    ),
)

NODE_TYPES: dict[str, NodeType] = {n.name: n for n in NODES}
#: topics no node of the table sends: ``status`` is republished by the supervisor from the
#: nodes' heartbeats
EXTERNAL_TOPICS: dict[str, str] = {"status": "the supervisor"}


def stages() -> tuple[str, ...]:
    """The processing chain from frames to tracks: the node types that take topics and send
    topics (not sources, relays or sinks), in the table's order (each after its producer)."""
    return tuple(n.name for n in NODES if n.inputs and n.outputs and not n.caps.relays)


def run_node(node_type: str, argv: Sequence[str] | None = None) -> None:
    """A node's process: the entry point each script in ``nodes/`` calls with its type."""
    from perception.node.loop import node_main

    row = NODE_TYPES[node_type]
    node_main(node_type, row.make_logic(), row.config_class(), argv, row.with_context, row.caps)
