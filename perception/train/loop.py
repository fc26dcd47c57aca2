"""``perception train --card``: the training loop driven by a model card (torch only).

Reproducible: seeds fixed from ``[training] seed``, sample ``i`` of step ``s`` is sample
``s * batch_size + i`` of the ``[data] train_seed`` stream, so a resumed run sees the
same data as an uninterrupted one. Checkpoints (model, optimizer, schedule, step, RNG)
go to ``<run_dir>/<card name>/last.pt``; the final weights go to the card's ``[weights]``
file and its sha256 into the card.

Families: ``yolact`` (the project's loss, :mod:`perception.segmentation.yolact_loss`) and
``maskrcnn`` (torchvision's Mask R-CNN, which computes its own RPN, box and mask losses in
train mode; its class 0 is the background, so labels are shifted by one).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from perception.node.config import build_config
from perception.segmentation.card import CardError, ModelCard, load_card, set_card_value, sha256_of
from perception.train.build import (
    build_model,
    freeze,
    freeze_batchnorm,
    freeze_prefixes,
    init_from,
    load_pretrained_trunk,
    load_weights,
    param_groups,
    save_weights,
    trunk,
)
from perception.train.config import TrainConfig
from perception.train.data import DataConfig, DataSource
from perception.train.sources import SourceSpec, build_training_data, parse_specs
from perception.train.steps import StepBatches, batch_at, loss_terms
from perception.train.validation import BestKeeper, evaluate_model, held_out_loss

log = logging.getLogger(__name__)


def precise_bn(
    model: torch.nn.Module,
    card: ModelCard,
    source: DataSource,
    n_images: int,
    batch_size: int,
    first_step: int,
    device: torch.device,
) -> int:
    """Recompute the BatchNorm running statistics with the final weights over ``n_images``
    training images (batches ``first_step``, ``first_step + 1``, ...; pass the end of the
    schedule so they are images the run never saw), as detectron2's PreciseBN does: the
    running averages kept while training mix statistics of weights that kept changing, and
    with the small batches of a CPU run they are noisy enough to move the evaluated AP by
    several points from one checkpoint to the next. ``torch.optim.swa_utils.update_bn`` does
    the averaging; for Mask R-CNN the backbone (the only part with BatchNorm) is fed the
    images as its transform resizes and normalises them. Returns the number of images."""
    from torch.optim.swa_utils import update_bn

    if n_images <= 0 or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return 0
    steps = max(1, n_images // batch_size)
    maskrcnn = card.family == "maskrcnn"
    module: torch.nn.Module = model.backbone if maskrcnn else model  # type: ignore[assignment]

    def inputs():  # type: ignore[no-untyped-def]
        for s in range(steps):
            images, _ = batch_at(source, first_step + s, batch_size, card.class_ids, device)
            with torch.no_grad():
                yield model.transform(list(images))[0].tensors if maskrcnn else images  # type: ignore[operator]

    # frozen BatchNorm layers (a pretrained trunk's) keep their statistics: update_bn resets
    # every layer's, and a frozen one, held in eval mode, would not gather new ones
    held = {
        name: (m.running_mean.clone(), m.running_var.clone())
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and m.weight is not None
        and not m.weight.requires_grad
        and m.running_mean is not None
    }
    was_training = model.training
    update_bn(inputs(), module)
    for name, m in module.named_modules():
        if name in held:
            m.running_mean.copy_(held[name][0])
            m.running_var.copy_(held[name][1])
    model.train(was_training)
    return steps * batch_size


def make_ema(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.swa_utils.AveragedModel | None:
    """The weights' moving average (buffers too, so BatchNorm statistics follow), or None."""
    if cfg.ema_decay <= 0:
        return None
    decay, ramp = cfg.ema_decay, cfg.ema_ramp_steps

    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = decay * (1.0 - math.exp(-float(n) / ramp))
        return averaged * d + current * (1.0 - d)

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=avg, use_buffers=True)


def _cosine(t: float) -> float:
    """Cosine decay from 1 at ``t = 0`` to 0.05 at ``t >= 1``."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return _cosine((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))


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


def train(
    card_path: str | Path,
    steps: int | None = None,
    resume: bool = False,
    coco_root: str | None = None,
    run_dir: str | None = None,
    progress: bool = True,
    continue_from_card: bool = False,
    cpu_minutes: float | None = None,
    snapshot_minutes: tuple[float, ...] = (),
    settings: dict[str, object] | None = None,
    data: str | None = None,
    images_dir: str | None = None,
    init: str | None = None,
    val: str | None = None,
) -> dict[str, object]:
    """Train the model of ``card_path``; returns the final losses and evaluation.

    ``resume``: pick up the interrupted run from its checkpoint (same schedule, same result
    as an uninterrupted run). ``continue_from_card``: start a new schedule from the card's
    own weights file (checkpoints do not travel between machines; the committed weights do);
    the saved weights count the steps of both runs. ``init``: start from another weights
    file (:func:`~perception.train.build.init_from`: the project's or torchvision's format).

    ``data``: source specs (:mod:`perception.train.sources`) instead of the card's; COCO
    images are looked up in ``images_dir`` when given. The held-out samples are evaluated
    every ``eval_every`` steps and at the end; with ``keep_best`` the weights of the best
    evaluation are the ones saved. ``val``: validation specs of their own (``--val``).

    ``cpu_minutes``: a budget of this process's CPU time instead of a step count (learning
    curves): the cosine schedule runs over the budget's fraction spent, the run stops when it
    is spent; ``snapshot_minutes``: CPU-minutes at which the (averaged) weights are also saved
    to ``<run_dir>/<name>/snapshots/cpu-<minutes>.pt``. Not exactly reproducible (the schedule
    follows the clock). ``settings``: ``[training]`` keys overridden for this run."""
    card = load_card(card_path)
    overrides = {**(settings or {}), **({"steps": steps} if steps is not None else {})}
    cfg = build_config(TrainConfig, {**card.training, **overrides}, card.where("training"))
    data_cfg = build_config(DataConfig, card.data, card.where("data"))
    if card.weights is None:
        raise CardError(f"{card.path}: a [weights] table with the output file is needed to train")
    if init and (resume or continue_from_card):
        raise CardError("--init starts a new run from a weights file; it does not go with --resume or --continue")
    specs = data_specs(card, data_cfg, data)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = cfg.torch_device()
    model = build_model(card).to(device).train()
    root = Path(run_dir or cfg.run_dir)
    ckpt = root / card.name / "last.pt"
    prior_steps = 0
    if continue_from_card:
        prior_steps = load_weights(model, card, card.weights.verify())
        log.info("continuing %s from its weights %s (%d steps before)", card.name, card.weights.path, prior_steps)
    elif init or (cfg.init.weights and not resume):
        path, rename = (Path(init), {}) if init else (card.path.parent / cfg.init.weights, cfg.init.rename)
        copied, total = init_from(model, card, path, rename, "--init" if init else "[training.init] weights")
        log.info("initialised %d of %d tensors of %s from %s", copied, total, card.name, path)
    elif not resume and (loaded := load_pretrained_trunk(model, card)):
        log.info("pretrained trunk: %s", loaded)
    if cfg.freeze_trunk:
        log.info("trunk frozen: %d parameters do not learn", freeze(trunk(model, card)))
    if cfg.freeze_trunk_bn:
        log.info("trunk BatchNorm frozen: %d layers", freeze_batchnorm(trunk(model, card)))
    if cfg.frozen_prefixes:
        log.info(
            "frozen %s: %d parameters", ", ".join(cfg.frozen_prefixes), freeze_prefixes(model, cfg.frozen_prefixes)
        )
    opt = torch.optim.AdamW(param_groups(model, card, cfg.trunk_lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, [lambda s, k=g["lr_scale"]: k * _lr_factor(s, cfg) for g in opt.param_groups]
    )
    ema = make_ema(model, cfg)
    keeper = BestKeeper(ckpt.parent / "best.pt", cfg.patience)
    start = 0
    if resume:
        start, prior_steps = _resume(ckpt, card, model, opt, sched, ema, keeper, device, prior_steps)
    run_data = build_training_data(
        data_cfg,
        specs,
        card.input_width,
        card.input_height,
        card.classes,
        cache_dir=str(root / "frame_bank"),
        images_dir=images_dir,
        val_specs=val_specs(card, data_cfg, val),
    )
    for line in run_data.summary:
        log.info("data: %s", line)
    source = run_data.train
    if coco_root:
        from perception.train.copy_paste import CopyPaste

        source = CopyPaste(source, Path(coco_root), card.classes, data_cfg.copy_paste_per_image, data_cfg.train_seed)
    held_out, n_held = run_data.held_out, len(run_data.held_out)
    if not n_held:
        log.warning("no held-out samples (too few images for a validation split): nothing is validated")
    log.info("training %s on %s: %d steps of %d images", card.name, device, cfg.steps, cfg.batch_size)

    def final() -> torch.nn.Module:
        """The weights to evaluate and save: the moving average when there is one."""
        return ema.module if ema is not None else model  # type: ignore[return-value]

    def validate(step: int) -> dict[str, object]:
        if not n_held:
            return {}
        result = evaluate_model(final(), card, held_out, n_held)
        result["val_loss"] = held_out_loss(final(), card, held_out, n_held, cfg.batch_size, cfg, device)
        log.info(
            "step %d: mask AP %.3f AP50 %.3f AP75 %.3f, held-out loss %.4f",
            step,
            result["mask_ap"],
            result["mask_ap50"],
            result["mask_ap75"],
            result["val_loss"],
        )
        if cfg.keep_best:
            keeper.update(
                float(result["mask_ap"]),
                prior_steps + step,  # type: ignore[arg-type]
                lambda p: save_weights(final(), card, p, prior_steps + step),
            )
        return result

    initial_loss = held_out_loss(model, card, held_out, n_held, cfg.batch_size, cfg, device) if init else None
    if initial_loss is not None:
        log.info("held-out loss before training: %.4f", initial_loss)
    losses: dict[str, float] = {}
    metrics: dict[str, object] = {}
    # on a GPU, rendering workers prepare batches ahead into pinned memory, so copies overlap the step
    batches = torch.utils.data.DataLoader(
        StepBatches(source, cfg.batch_size, card.class_ids, cfg.steps),
        batch_size=None,
        sampler=range(start, cfg.steps),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )
    bar = tqdm(
        zip(range(start, cfg.steps), batches, strict=True),
        initial=start,
        total=cfg.steps,
        disable=not progress,
        desc=card.name,
    )
    t0_cpu = time.process_time()
    budget_s = cpu_minutes * 60.0 if cpu_minutes else None
    pending = sorted(snapshot_minutes)
    for step, (images, targets) in bar:
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            terms = loss_terms(model, card, images, targets, cfg)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if budget_s is None:
            sched.step()
        if ema is not None:
            ema.update_parameters(model)
        if budget_s is not None:
            spent_s = time.process_time() - t0_cpu
            factor = min(1.0, (step + 2) / cfg.warmup_steps) * _cosine(spent_s / budget_s)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * group["lr_scale"] * factor
            while pending and spent_s >= pending[0] * 60.0:
                snap = ckpt.parent / "snapshots" / f"cpu-{pending.pop(0):g}.pt"
                save_weights(final(), card, snap, prior_steps + step + 1)
                log.info("snapshot after %.1f CPU-minutes, step %d: %s", spent_s / 60, step + 1, snap)
            if spent_s >= budget_s:
                log.info("CPU budget of %.1f minutes spent after %d steps", cpu_minutes, step + 1)
                cfg = replace(cfg, steps=step + 1)
        losses = {k: float(v.detach()) for k, v in terms.items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            metrics = validate(done)
            if keeper.should_stop and done < cfg.steps:
                log.info(
                    "early stop after step %d: %d evaluations without a better mask AP than %.3f (step %d)",
                    done,
                    keeper.since,
                    keeper.best_ap,
                    keeper.best_step,
                )
                cfg = replace(cfg, steps=done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            extra = {"ema": ema.state_dict()} if ema is not None else {}
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": done,
                    "prior_steps": prior_steps,
                    "best": keeper.state_dict(),
                    **extra,
                },
                ckpt,
            )
        if done == cfg.steps:
            break
    if cfg.precise_bn_images > 0:
        n = precise_bn(final(), card, source, cfg.precise_bn_images, cfg.batch_size, cfg.steps, device)
        log.info("BatchNorm statistics recomputed on %d unseen training images", n)
        metrics = validate(cfg.steps)
    if cfg.keep_best and keeper.best_step >= 0 and keeper.best_ap > float(metrics.get("mask_ap", -math.inf)):  # type: ignore[arg-type]
        shutil.copyfile(keeper.path, card.weights.path)
        log.info(
            "kept the weights of step %d (held-out mask AP %.3f) over the last ones (%.3f)",
            keeper.best_step,
            keeper.best_ap,
            metrics.get("mask_ap"),
        )
    else:
        save_weights(final(), card, card.weights.path, prior_steps + cfg.steps)
    set_card_value(card.path, "weights", "sha256", sha256_of(card.weights.path))
    return {
        "losses": losses,
        "metrics": metrics,
        "weights": str(card.weights.path),
        "data": list(run_data.summary),
        "best": keeper.state_dict(),
        **({"initial_val_loss": initial_loss} if initial_loss is not None else {}),
    }


def _resume(
    ckpt: Path,
    card: ModelCard,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    ema: torch.optim.swa_utils.AveragedModel | None,
    keeper: BestKeeper,
    device: torch.device,
    prior_steps: int,
) -> tuple[int, int]:
    """Load the run's checkpoint into its parts; returns ``(step, prior_steps)``."""
    if not ckpt.is_file():
        raise CardError(f"--resume: no checkpoint {str(ckpt)!r} for card {card.name!r}")
    state = torch.load(ckpt, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"].cpu())
    if ema is not None:
        if "ema" not in state:
            raise CardError(f"--resume: checkpoint {str(ckpt)!r} has no weight average but the card sets ema_decay")
        ema.load_state_dict(state["ema"])
    if "best" in state:
        keeper.load_state_dict(state["best"])
    log.info("resuming %s from step %d (%s)", card.name, int(state["step"]), ckpt)
    return int(state["step"]), int(state.get("prior_steps", prior_steps))
