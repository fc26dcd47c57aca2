"""Envelopes to msgpack bytes and back, typed and validated by msgspec against the topic
table of :mod:`perception.bus.schema` (a payload that is not its topic's type, a wrong
schema version, an unknown topic or a malformed field raises a :class:`SchemaError` that
names it)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import msgspec

from perception.bus.rle_codec import validate_rles
from perception.bus.schema import (
    DECODE_ERRORS,
    MAX_ENVELOPE_BYTES,
    SCHEMA_VERSION,
    TOPICS,
    Envelope,
    MalformedMessage,
    Rle,
    SchemaError,
    Source,
    Text,
    WrongSchemaVersion,
    rles_checked_together,
    topic,
)

_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class _RawEnvelope:
    topic: Text
    seq: int
    stamp_ns: int
    source: Source | None
    payload: msgspec.Raw
    valid: bool = True
    schema_version: int = SCHEMA_VERSION


_raw_decoder = msgspec.msgpack.Decoder(_RawEnvelope)
_payload_decoders = {t.name: msgspec.msgpack.Decoder(t.msg_type) for t in TOPICS}


def _typed_envelope(name: str, payload: type) -> type[msgspec.Struct]:
    """The envelope of one topic with its payload type spelled out, decoded in one pass
    (the two-pass decode through ``msgspec.Raw`` costs twice as much on a reader that just
    woke up, where a frame's hop is counted in tenths of a millisecond)."""
    return msgspec.defstruct(
        f"Envelope_{name.replace('.', '_')}",
        [
            ("topic", Text),
            ("seq", int),
            ("stamp_ns", int),
            ("source", Source | None),
            ("payload", payload),
            ("valid", bool, True),
            ("schema_version", int, SCHEMA_VERSION),
        ],
    )


_typed_decoders = {t.name: msgspec.msgpack.Decoder(_typed_envelope(t.name, t.msg_type)) for t in TOPICS}


def _holds_masks(tp: object) -> bool:
    """Whether a message type can hold an :class:`Rle` anywhere inside it."""
    if tp is Rle:
        return True
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return any(_holds_masks(hints[f.name]) for f in dataclasses.fields(tp))
    return any(_holds_masks(a) for a in typing.get_args(tp))


#: topics whose messages hold no masks (frame headers, status): decoded without the masks'
#: one-pass check and its bookkeeping (a tenth of a millisecond of a frame's hop on a reader
#: that just woke up)
_WITHOUT_MASKS = frozenset(t.name for t in TOPICS if not _holds_masks(t.msg_type))
_FIELDS = ("topic", "seq", "stamp_ns", "source", "payload", "valid", "schema_version")


def encode(env: Envelope) -> bytes:
    """Encode an envelope to msgpack bytes. Raises :class:`SchemaError` on a bad payload.

    A payload of :func:`decode_relay` (``msgspec.Raw``) goes out as the bytes it came in."""
    expected = topic(env.topic).msg_type
    if not isinstance(env.payload, expected) and not isinstance(env.payload, msgspec.Raw):
        raise SchemaError(f"topic {env.topic!r} carries {expected.__name__}, got {type(env.payload).__name__}")
    return _encoder.encode(env)


def decode(data: bytes | memoryview, expected_topic: str | None = None) -> Envelope:
    """Decode msgpack bytes into an :class:`Envelope` with a typed payload.

    Raises :class:`MalformedMessage` for bytes that are not an envelope (naming the bad
    field), :class:`WrongSchemaVersion` for another version, :class:`UnknownTopic` for a
    topic not in the table.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise MalformedMessage(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    typed = _typed_decoders.get(expected_topic) if expected_topic is not None else None
    if typed is not None:  # one pass; anything unexpected takes the path below, which names it
        try:
            if expected_topic in _WITHOUT_MASKS:
                wire = typed.decode(data)
            else:
                with rles_checked_together() as masks:
                    wire = typed.decode(data)
                validate_rles([(m.size, m.counts) for m in masks])
        except (*DECODE_ERRORS, ValueError):  # the path below names the bad field
            wire = None
        if wire is not None and wire.topic == expected_topic and wire.schema_version == SCHEMA_VERSION:
            env = object.__new__(Envelope)  # every field was just validated by msgspec
            env.__dict__.update(zip(_FIELDS, msgspec.structs.astuple(wire), strict=True))
            return env
    raw = _checked_envelope(data, expected_topic)
    decoder = _payload_decoders.get(raw.topic)
    if decoder is None:
        topic(raw.topic)  # raises UnknownTopic
    try:
        payload = decoder.decode(raw.payload)  # type: ignore[union-attr]
    except DECODE_ERRORS as e:
        raise MalformedMessage(f"bad {raw.topic!r} payload: {e}") from None
    return Envelope(
        topic=raw.topic,
        seq=raw.seq,
        stamp_ns=raw.stamp_ns,
        source=raw.source,
        payload=payload,
        valid=raw.valid,
        schema_version=raw.schema_version,
    )


def _checked_envelope(data: bytes | memoryview, expected_topic: str | None) -> _RawEnvelope:
    """The envelope's fields decoded and checked, its payload left as msgpack."""
    try:
        raw = _raw_decoder.decode(data)
    except DECODE_ERRORS as e:
        raise MalformedMessage(f"not a message envelope: {e}") from None
    if raw.schema_version != SCHEMA_VERSION:
        raise WrongSchemaVersion(
            f"message on {raw.topic!r} has schema_version {raw.schema_version}, this node speaks {SCHEMA_VERSION}"
        )
    if expected_topic is not None and raw.topic != expected_topic:
        raise MalformedMessage(f"expected topic {expected_topic!r}, envelope says {raw.topic!r}")
    return raw


def decode_relay(data: bytes | memoryview, expected_topic: str) -> Envelope:
    """An envelope to pass on unchanged (the external publisher): its own fields decoded and
    checked as :func:`decode` does (topic, schema version, seq, stamps, source), its payload
    kept as the msgpack it came in (``msgspec.Raw``), which :func:`encode` writes back byte
    for byte. The payload is neither decoded nor checked here: whoever reads it does that
    (an external :class:`~perception.bus.pubsub.Subscriber` counts a bad one and drops it).
    A ``detections`` message of the bench drive (21 masks) takes 0.08 ms so, against 0.45 ms
    decoded in full and encoded again, on a CPU that just woke up (``bench/relay.py``).
    Frame topics decode whole: the relay needs the header to find the pixels."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise MalformedMessage(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    if topic(expected_topic).kind == "frame":
        return decode(data, expected_topic)
    raw = _checked_envelope(data, expected_topic)
    return Envelope(
        topic=raw.topic,
        seq=raw.seq,
        stamp_ns=raw.stamp_ns,
        source=raw.source,
        payload=raw.payload,
        valid=raw.valid,
        schema_version=raw.schema_version,
    )  # type: ignore[arg-type]


def to_plain(obj: object) -> object:
    """A message as plain dicts/lists (for JSON, echo and MCAP JSON schemas)."""
    return msgspec.to_builtins(obj)
