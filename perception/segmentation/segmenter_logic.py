"""The segmenter node's logic: its models warm, the policy picks one per frame.

``frames.rect`` -> ``detections``. Each output says which model ran, its inference time,
how long the frame waited before inference, how old the frame was at publish, and why the
policy chose that model. A frame already older than the budget when its turn comes is
dropped and counted (``stale``) instead of being processed late, except in
deterministic mode, where every frame is processed in order.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import msgspec
import numpy as np

from perception.bus.pubsub import Received
from perception.bus.schema import Detections, FrameHeader
from perception.node.loop import FrameOverwritten, NodeContext, Outgoing
from perception.segmentation.card import ModelCard, load_card
from perception.segmentation.families import load_segmenter
from perception.segmentation.latency_policy import ACCURATE, AUTO, FAST, LatencyProfile, Mode, Policy, PolicyConfig
from perception.segmentation.precision import check_request
from perception.segmentation.providers import describe
from perception.segmentation.runtime import Segmenter, TwoStepSegmenter

log = logging.getLogger(__name__)


#: a model's name in ``segmenter.models``: what ``policy``, the counters and the heartbeat call it
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model of ``segmenter.models`` (between ``fast`` and ``accurate``): ``name`` (what
    ``policy``, the counters ``usage.<name>`` and the heartbeat call it), ``card`` (its model
    card file) and ``precision`` (fp32, fp16, int8 or auto, as ``fast_precision``)."""

    name: str
    card: str
    precision: str = "auto"


@dataclass(frozen=True)
class SegmenterConfig:
    """``fast`` / ``accurate``: model card files; ``models``: further models between them,
    fastest first (:class:`ModelEntry`: name, card, precision); ``policy``: ``auto`` or a
    model's name (fast, accurate or one of ``models``); ``budget_ms``: capture-to-published-
    detections budget; ``threads``: ONNX Runtime intra-op threads per model (0 = its default);
    ``providers``: the execution providers to use, in order, each of which must be available
    (empty = TensorRT, CUDA, CPU by availability; see :mod:`perception.segmentation.providers`);
    ``fast_precision`` / ``accurate_precision``: fp32, fp16, int8 or auto, each model's file
    and arithmetic (auto: the fastest the card lists within its AP tolerance;
    :mod:`perception.segmentation.precision`)."""

    fast: str = "models/yolact_fast.toml"
    accurate: str = "models/maskrcnn_accurate.toml"
    policy: Mode = AUTO
    budget_ms: float = 100.0
    overhead_ms: float = 3.0
    margin_ms: float = 5.0
    quantile: float = 0.99
    switch_up_after: int = 3
    accurate_every_n: int = 0
    threads: int = 0
    providers: tuple[str, ...] = ()
    score_threshold: float = 0.3
    fast_precision: str = "auto"
    accurate_precision: str = "auto"
    models: tuple[ModelEntry, ...] = ()

    def ladder(self) -> tuple[tuple[str, str, str], ...]:
        """(name, card file, precision) of every model, fastest first: ``fast``, the
        ``models`` in their order, ``accurate``."""
        return (
            (FAST, self.fast, self.fast_precision),
            *((m.name, m.card, m.precision) for m in self.models),
            (ACCURATE, self.accurate, self.accurate_precision),
        )

    def model_names(self) -> tuple[str, ...]:
        """The models' names, fastest first."""
        return tuple(name for name, _, _ in self.ladder())

    def needed(self) -> tuple[str, ...]:
        """The names of the models the policy runs (all for ``auto``), fastest first."""
        return self.model_names() if self.policy == AUTO else (self.policy,)

    def policy_config(self) -> PolicyConfig:
        """The latency policy's settings (the ladder: :meth:`model_names`)."""
        return PolicyConfig(
            mode=self.policy,
            budget_ms=self.budget_ms,
            overhead_ms=self.overhead_ms,
            margin_ms=self.margin_ms,
            quantile=self.quantile,
            switch_up_after=self.switch_up_after,
            accurate_every_n=self.accurate_every_n,
            models=self.model_names(),
        )

    def validate(self) -> None:
        """``ValueError`` with a one-line message naming the key at the first bad value."""
        self._validate_models()
        self.policy_config().validate()
        check_request(self.fast_precision, "segmenter.fast_precision")
        check_request(self.accurate_precision, "segmenter.accurate_precision")

    def _validate_models(self) -> None:
        names = [FAST, ACCURATE]
        for i, m in enumerate(self.models):
            where = f"segmenter.models[{i}]"
            if not MODEL_NAME.fullmatch(m.name):
                raise ValueError(f"{where}.name must be lowercase letters, digits and _ (letter first), got {m.name!r}")
            if m.name == AUTO:
                raise ValueError(f"{where}.name may not be 'auto' (that is the policy that chooses)")
            if m.name in names:
                raise ValueError(f"{where}.name {m.name!r} is taken (names so far: {', '.join(names)}); use another")
            names.append(m.name)
            if not m.card:
                raise ValueError(f"{where}.card must be a model card file (.toml), got an empty string")
            check_request(m.precision, f"{where}.precision")

    def card_and_precision(self, model: str) -> tuple[str, str]:
        """The card file and the precision asked for of ``model`` (a name of :meth:`ladder`)."""
        for name, card, precision in self.ladder():
            if name == model:
                return card, precision
        raise ValueError(f"segmenter has no model {model!r}; models: {', '.join(self.model_names())}")


class SegmenterLogic:
    #: shared-memory frames are read in place (its node table row: ``frame_views`` and
    #: ``checks_frame_views``), and checked right after the network input is made from them
    #: (:meth:`_predict`), not after the step: a frame is needed only until then, and a slot
    #: overwritten during the inference (tens of ms, a ring lapped by a camera faster than the
    #: model) must not throw the inference away. Copying each frame out on receipt instead
    #: cost a tenth of a millisecond of every frame's latency.
    inputs: tuple[str, ...] = ("frames.rect",)
    outputs: tuple[str, ...] = ("detections",)

    def __init__(
        self,
        cfg: SegmenterConfig,
        models: dict[str, Segmenter],
        profiles: dict[str, LatencyProfile],
        deterministic: bool = False,
    ) -> None:
        missing = set(cfg.needed()) - set(models)
        if missing:
            raise ValueError(f"segmenter needs the {', '.join(sorted(missing))} model for policy {cfg.policy!r}")
        self.cfg = cfg
        self.models = models
        self.deterministic = deterministic
        # a fixed policy loads its model alone: the others' seeds are its own (never used)
        default = profiles.get(cfg.policy) or next(iter(profiles.values()))
        seeds = [profiles.get(m) or default for m in cfg.model_names()]
        self.policy = Policy(cfg.policy_config(), *seeds)
        #: provider, device and precision of each model's session, for the heartbeat
        self.runtime = {m: describe(model.session) for m, model in models.items() if hasattr(model, "session")}
        self.frames = 0
        self.stale = 0
        self.deadline_misses = 0
        self.published = 0

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def prepare(self, now_ns: int) -> None:
        """While waiting for the next frame: its latency estimates, so that they are not
        made between its arrival and its inference."""
        self.policy.prepare()

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if msg is None or msg.pixels is None or msg.envelope.source is None:
            return []
        self.frames += 1
        src = msg.envelope.source
        header: FrameHeader = msg.envelope.payload  # type: ignore[assignment]
        if not self.deterministic and (now_ns - src.capture_ns) / 1e6 > self.cfg.budget_ms:
            self.stale += 1  # already past its deadline: drop it rather than publish it late
            return []
        decision = self.policy.choose(now_ns, src)
        start = time.monotonic_ns()
        det = self._predict(self.models[decision.model], msg, header)
        end = time.monotonic_ns()
        inference_ms = (end - start) / 1e6
        self.policy.observe(decision.model, inference_ms, len(det.instances))
        age_ms = (end - src.capture_ns) / 1e6
        if age_ms > self.cfg.budget_ms:
            self.deadline_misses += 1
        det = replace(
            det,
            model=self.models[decision.model].name,
            inference_ms=inference_ms,
            queue_wait_ms=max(0.0, (start - msg.recv_ns) / 1e6) if msg.recv_ns else 0.0,
            frame_age_ms=age_ms,
            policy_reason=decision.reason,
        )
        self.published += 1
        return [Outgoing("detections", det, src)]

    @staticmethod
    def _predict(model: Segmenter, msg: Received, header: FrameHeader) -> Detections:
        """The frame's detections. A frame read in place from shared memory (``unchanged``
        given) is checked once the model no longer reads it: right after its network input
        (:class:`~perception.segmentation.runtime.TwoStepSegmenter`), or after a copy for a
        model without the two steps; :class:`FrameOverwritten` when the producer overwrote it."""
        image = np.asarray(msg.pixels)
        if msg.unchanged is None:
            return model.predict(image, header.transform)
        if not hasattr(model, "network_input"):
            image = image.copy()
            if not msg.unchanged():
                raise FrameOverwritten(f"frame {msg.envelope.seq} overwritten in its slot while copied")
            return model.predict(image, header.transform)
        two_step: TwoStepSegmenter = model  # type: ignore[assignment]
        t0 = time.perf_counter()
        blob, lb = two_step.network_input(image, header.transform)
        prepared_ms = (time.perf_counter() - t0) * 1e3
        if not msg.unchanged():
            raise FrameOverwritten(f"frame {msg.envelope.seq} overwritten in its slot while its network input was made")
        return two_step.predict_input(blob, lb, prepared_ms)

    def counters(self) -> dict[str, int | float | str | bool]:
        runtime = {f"{m}_{k}": v for m, d in self.runtime.items() for k, v in d.items()}
        return {
            "frames": self.frames,
            "published": self.published,
            "stale": self.stale,
            "deadline_misses": self.deadline_misses,
            **self.policy.counters(),
            **runtime,
        }


def latency_profile(card: ModelCard, precision: str = "fp32", provider: str = "") -> LatencyProfile:
    """The policy's seed for a model: the card's first end-to-end latency row for the
    precision it runs in (on its provider when the card has such a row; p95, and the cost
    per instance where the card gives one); pessimistic when the card has none."""
    rows = [r for r in card.latency if r.stage == "end_to_end" and r.precision == precision]
    rows = [r for r in rows if r.provider == provider] or rows
    if not rows:
        log.warning("%s: no end-to-end latency in its card; assuming 1000 ms until measured", card.path)
        return LatencyProfile(p95_ms=1000.0)
    return LatencyProfile(p95_ms=rows[0].p95_ms, per_instance_ms=rows[0].per_instance_ms)


def segmenter_node(cfg: SegmenterConfig, ctx: NodeContext) -> SegmenterLogic:
    """The segmenter node's logic (its row in the node table), deterministic when the run is."""
    return build_segmenter(cfg, ctx.deterministic)


def build_segmenter(
    cfg: SegmenterConfig,
    deterministic: bool = False,
    loaded: dict[tuple[str, int, tuple[str, ...], str], Segmenter] | None = None,
) -> SegmenterLogic:
    """Load the models the policy needs (all of them for ``auto``, warm before the first
    frame), each in the precision the config asks for. A bad config raises ``ValueError``
    naming the key, a card or model that fails to load raises with a message naming the
    file. ``loaded``: models already loaded, by card, threads, providers and precision,
    reused and added to (a process that runs many drives one after the other loads each
    model once). Returns the node's logic with the models by name (``fast``, ...)."""
    cfg.validate()
    cache = {} if loaded is None else loaded
    models, profiles = {}, {}
    warm = np.zeros((64, 64, 3), np.uint8)
    for m in cfg.needed():
        path, precision = cfg.card_and_precision(m)
        key = (str(path), cfg.threads, tuple(cfg.providers), precision)
        if key not in cache:
            cache[key] = load_segmenter(path, cfg.threads, cfg.providers or None, precision)
            cache[key].predict(warm)  # first run allocates; keep it out of the first frame's latency
        models[m] = cache[key]
        runs = describe(models[m].session) if hasattr(models[m], "session") else {"precision": "fp32", "provider": ""}
        profiles[m] = latency_profile(load_card(path), runs["precision"], runs["provider"])
    return SegmenterLogic(cfg, models, profiles, deterministic)
