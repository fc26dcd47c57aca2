"""The start of a training run (torch only): the card's tables with the run's overrides,
the model seeded from ``[training] seed`` with its first weights (the card's own, another
file, a pretrained trunk) and frozen parts, its optimizer with the step schedule (linear
warm-up, cosine decay), the weights' moving average, the best-weights keeper, and a
resumed run's checkpoint loaded into them."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from perception.node.config import build_config
from perception.segmentation.card import CardError, ModelCard
from perception.train.build import (
    build_model,
    freeze,
    freeze_batchnorm,
    freeze_prefixes,
    init_from,
    load_pretrained_trunk,
    load_weights,
    param_groups,
    trunk,
)
from perception.train.config import TrainConfig
from perception.train.data import DataConfig
from perception.train.datasets import SourceSpec, parse_specs
from perception.train.validation import BestKeeper

log = logging.getLogger(__name__)


@dataclass
class Run:
    """The parts of one training run that its pieces share. ``cfg.steps`` is where the run
    ends: a spent CPU budget or an early stop moves it to the step just done."""

    card: ModelCard
    cfg: TrainConfig
    device: torch.device
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    keeper: BestKeeper
    ckpt: Path
    #: steps of the run whose weights this one continued from (``--continue``)
    prior_steps: int = 0

    @property
    def final(self) -> torch.nn.Module:
        """The weights to evaluate and save: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    def end_at(self, step: int) -> None:
        self.cfg = replace(self.cfg, steps=step)


def make_ema(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.swa_utils.AveragedModel | None:
    """The weights' moving average (buffers too, so BatchNorm statistics follow), or None."""
    if cfg.ema_decay <= 0:
        return None
    decay, ramp = cfg.ema_decay, cfg.ema_ramp_steps

    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = decay * (1.0 - math.exp(-float(n) / ramp))
        return averaged * d + current * (1.0 - d)

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=avg, use_buffers=True)


def cosine(t: float) -> float:
    """Cosine decay from 1 at ``t = 0`` to 0.05 at ``t >= 1``."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return cosine((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))


def data_specs(card: ModelCard, data_cfg: DataConfig, data: str | None) -> tuple[SourceSpec, ...]:
    """The run's sources: ``--data`` (paths as given), else the card's ``[data] sources``
    (paths relative to the card), else its ``[data] source`` alone."""
    if data:
        return parse_specs(data)
    if data_cfg.sources:
        return parse_specs(data_cfg.sources, base=card.path.parent)
    return (SourceSpec(data_cfg.source),)


def val_specs(card: ModelCard, data_cfg: DataConfig, val: str | None) -> tuple[SourceSpec, ...]:
    """The run's own validation sets: ``--val``, else the card's ``[data] val_sources``
    (relative to the card), else none (held-out parts of the training sources)."""
    if val:
        return parse_specs(val)
    return parse_specs(data_cfg.val_sources, base=card.path.parent) if data_cfg.val_sources else ()


def run_configs(
    card: ModelCard, steps: int | None, settings: dict[str, object] | None, init: str | None, resumes: bool
) -> tuple[TrainConfig, DataConfig]:
    """The card's ``[training]`` (with this run's overrides) and ``[data]`` tables; a
    :class:`CardError` for a card without weights file or ``--init`` with a resumed run."""
    overrides = {**(settings or {}), **({"steps": steps} if steps is not None else {})}
    cfg = build_config(TrainConfig, {**card.training, **overrides}, card.where("training"))
    data_cfg = build_config(DataConfig, card.data, card.where("data"))
    if card.weights is None:
        raise CardError(f"{card.path}: a [weights] table with the output file is needed to train")
    if init and resumes:
        raise CardError("--init starts a new run from a weights file; it does not go with --resume or --continue")
    return cfg, data_cfg


def start_run(
    card: ModelCard, cfg: TrainConfig, ckpt: Path, init: str | None, resume: bool, continue_from_card: bool
) -> Run:
    """The model seeded from ``[training] seed`` with its first weights, its optimizer,
    schedule, weight average and best-weights keeper."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = cfg.torch_device()
    model = build_model(card).to(device).train()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prior_steps = first_weights(model, card, cfg, init, resume, continue_from_card)
    freeze_parts(model, card, cfg)
    opt = torch.optim.AdamW(param_groups(model, card, cfg.trunk_lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, [lambda s, k=g["lr_scale"]: k * lr_factor(s, cfg) for g in opt.param_groups]
    )
    keeper = BestKeeper(ckpt.parent / "best.pt", cfg.patience)
    return Run(card, cfg, device, model, opt, sched, make_ema(model, cfg), keeper, ckpt, prior_steps)


def first_weights(
    model: torch.nn.Module, card: ModelCard, cfg: TrainConfig, init: str | None, resume: bool, continue_from_card: bool
) -> int:
    """Load the weights the run starts from (the card's own with ``--continue``, ``--init``
    or ``[training.init]``, else a pretrained trunk; a resumed run's come from its
    checkpoint later); returns the steps those weights were trained for before."""
    if continue_from_card:
        prior_steps = load_weights(model, card, card.weights.verify())  # type: ignore[union-attr]
        log.info("continuing %s from its weights %s (%d steps before)", card.name, card.weights.path, prior_steps)  # type: ignore[union-attr]
        return prior_steps
    if init or (cfg.init.weights and not resume):
        path, rename = (Path(init), {}) if init else (card.path.parent / cfg.init.weights, cfg.init.rename)
        copied, total = init_from(model, card, path, rename, "--init" if init else "[training.init] weights")
        log.info("initialised %d of %d tensors of %s from %s", copied, total, card.name, path)
    elif not resume and (loaded := load_pretrained_trunk(model, card)):
        log.info("pretrained trunk: %s", loaded)
    return 0


def freeze_parts(model: torch.nn.Module, card: ModelCard, cfg: TrainConfig) -> None:
    """The parts ``[training]`` says do not learn: the trunk, its BatchNorm layers, prefixes."""
    if cfg.freeze_trunk:
        log.info("trunk frozen: %d parameters do not learn", freeze(trunk(model, card)))
    if cfg.freeze_trunk_bn:
        log.info("trunk BatchNorm frozen: %d layers", freeze_batchnorm(trunk(model, card)))
    if cfg.frozen_prefixes:
        n = freeze_prefixes(model, cfg.frozen_prefixes)
        log.info("frozen %s: %d parameters", ", ".join(cfg.frozen_prefixes), n)


def resume_run(run: Run) -> int:
    """Load the run's checkpoint into its parts; returns the step it was taken after."""
    ckpt, card = run.ckpt, run.card
    if not ckpt.is_file():
        raise CardError(f"--resume: no checkpoint {str(ckpt)!r} for card {card.name!r}")
    state = torch.load(ckpt, map_location=run.device, weights_only=True)
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"].cpu())
    if run.ema is not None:
        if "ema" not in state:
            raise CardError(f"--resume: checkpoint {str(ckpt)!r} has no weight average but the card sets ema_decay")
        run.ema.load_state_dict(state["ema"])
    if "best" in state:
        run.keeper.load_state_dict(state["best"])
    run.prior_steps = int(state.get("prior_steps", run.prior_steps))
    log.info("resuming %s from step %d (%s)", card.name, int(state["step"]), ckpt)
    return int(state["step"])
