"""What a node's logic asks of the loop beyond ``step``: its optional capabilities, declared.

Each node type's row in the node table (:mod:`perception.system.node_table`) holds one
:class:`Capabilities`; the process entry point passes it to
:class:`~perception.node.loop.NodeLoop`, which reads it instead of probing the logic object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    #: every message in order even outside deterministic mode (a recorder must not keep only
    #: the newest frame); what is still queued is also stepped when the node is told to stop
    keep_all: bool = False
    #: the step is done with a frame's pixels when it returns, so frames that come in shared
    #: memory are given in place, without a copy (the loop checks afterwards that the slot was
    #: not overwritten meanwhile, and drops the step's outputs and counts the frame as dropped
    #: if it was)
    frame_views: bool = False
    #: with ``frame_views``: the logic checks ``msg.unchanged()`` itself once it no longer reads
    #: the pixels (the segmenter, right after making its network input: a ring lapped during the
    #: inference that follows costs nothing) and raises
    #: :class:`~perception.node.loop.FrameOverwritten` when it finds the slot overwritten
    checks_frame_views: bool = False
    #: the step passes messages on unchanged, and gets them with their payload undecoded
    #: (``Subscriber(relay=True)``; frames as ever)
    relays: bool = False
    #: ``logic.prepare(now_ns)`` is called before each wait: work that can be done ahead of the
    #: next step (a replay decodes its next frame there); it may return a monotonic time in ns
    #: at which it wants to be called again (the wait ends then), or None
    prepare: bool = False
    #: ``logic.claim`` is set to a function ``(topic, shape) -> array | None``: the next
    #: shared-memory slot of an output topic to make a frame in, which then goes out without a
    #: copy (None without a ring, or when the frame does not fit a slot)
    claim: bool = False
    #: ``logic.close()`` is called on shutdown
    close: bool = False
