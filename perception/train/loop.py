"""``perception train --card``: the training loop driven by a model card (torch only).

Reproducible: seeds fixed from ``[training] seed``, sample ``i`` of step ``s`` is sample
``s * batch_size + i`` of the ``[data] train_seed`` stream, so a resumed run sees the
same data as an uninterrupted one. Checkpoints (model, optimizer, schedule, step, RNG)
go to ``<run_dir>/<card name>/last.pt``; the final weights go to the card's ``[weights]``
file and its sha256 into the card.

:func:`train` reads top down: the run's start (:mod:`.start`: configuration, model and
first weights, optimizer and schedule, or the checkpoint resumed), its data, then
:func:`train_steps`, each step :func:`train_one_step`, the schedule (the step schedule, or
:func:`follow_budget` under a CPU budget, with its snapshots), :func:`evaluate` (and the
best weights kept, the early stop) and :func:`save_checkpoint`, and last :func:`_finish`
(BatchNorm statistics, the card's weights file).

Families: ``yolact`` (the project's loss, :mod:`perception.nets.yolact_loss`) and
``maskrcnn`` (torchvision's Mask R-CNN, which computes its own RPN, box and mask losses in
train mode; its class 0 is the background, so labels are shifted by one).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from perception.segmentation.card import ModelCard, load_card, set_card_value, sha256_of
from perception.train.build import save_weights
from perception.train.data import DataConfig, DataSource
from perception.train.datasets import SourceSpec
from perception.train.sources import TrainingData, build_training_data
from perception.train.start import Run, cosine, data_specs, resume_run, run_configs, start_run, val_specs
from perception.train.steps import StepBatches, batch_at, loss_terms
from perception.train.validation import evaluate_model, held_out_loss

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


@dataclass
class CpuBudget:
    """``cpu_minutes``: the schedule follows this process's CPU time instead of the step
    count (warm-up over the first steps, then the cosine over the budget's fraction spent);
    the averaged weights are saved at each of ``snapshot_minutes``."""

    minutes: float
    snapshot_minutes: list[float]
    t0_s: float = field(default_factory=time.process_time)

    def spent_s(self) -> float:
        return time.process_time() - self.t0_s


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
    cfg, data_cfg = run_configs(card, steps, settings, init, resume or continue_from_card)
    specs = data_specs(card, data_cfg, data)
    root = Path(run_dir or cfg.run_dir)
    run = start_run(card, cfg, root / card.name / "last.pt", init, resume, continue_from_card)
    start = resume_run(run) if resume else 0
    run_data = _training_data(card, data_cfg, specs, root, images_dir, val_specs(card, data_cfg, val))
    source, held_out = _with_copy_paste(run_data.train, card, data_cfg, coco_root), run_data.held_out
    _log_start(run, run_data.summary, len(held_out))
    initial_loss = _initial_loss(run, held_out) if init else None
    batches = _batches(run, source, start, progress)
    budget = CpuBudget(cpu_minutes, sorted(snapshot_minutes)) if cpu_minutes else None
    losses, metrics = train_steps(run, batches, held_out, budget)
    metrics = _finish(run, source, held_out, metrics)
    weights = str(card.weights.path)  # type: ignore[union-attr]
    result = {"losses": losses, "metrics": metrics, "weights": weights, "data": list(run_data.summary)}
    initial = {"initial_val_loss": initial_loss} if initial_loss is not None else {}
    return {**result, "best": run.keeper.state_dict(), **initial}


def _training_data(
    card: ModelCard,
    data_cfg: DataConfig,
    specs: Sequence[SourceSpec],
    root: Path,
    images_dir: str | None,
    val: Sequence[SourceSpec],
) -> TrainingData:
    """The run's training and held-out samples at the model's input size (frame banks of
    synthetic drives cached under ``root``)."""
    w, h = card.input_width, card.input_height
    cache = str(root / "frame_bank")
    return build_training_data(data_cfg, specs, w, h, card.classes, cache, images_dir=images_dir, val_specs=val)


def _with_copy_paste(source: DataSource, card: ModelCard, data_cfg: DataConfig, coco_root: str | None) -> DataSource:
    """``source``, with COCO objects pasted in where ``coco_root`` is given (``--coco-root``)."""
    if not coco_root:
        return source
    from perception.train.copy_paste import CopyPaste

    return CopyPaste(source, Path(coco_root), card.classes, data_cfg.copy_paste_per_image, data_cfg.train_seed)


def _log_start(run: Run, summary: Sequence[str], n_held: int) -> None:
    for line in summary:
        log.info("data: %s", line)
    if not n_held:
        log.warning("no held-out samples (too few images for a validation split): nothing is validated")
    cfg = run.cfg
    log.info("training %s on %s: %d steps of %d images", run.card.name, run.device, cfg.steps, cfg.batch_size)


def _initial_loss(run: Run, held_out: DataSource) -> float:
    """The held-out loss of the first weights (runs started from another file, ``--init``)."""
    loss = _held_out_loss(run, run.model, held_out)
    log.info("held-out loss before training: %.4f", loss)
    return loss


def _batches(run: Run, source: DataSource, start: int, progress: bool) -> tqdm:
    """Steps ``start..steps-1`` with their batches, behind a progress bar. On a GPU, rendering
    workers prepare batches ahead into pinned memory, so copies overlap the step."""
    cfg = run.cfg
    batches = torch.utils.data.DataLoader(
        StepBatches(source, cfg.batch_size, run.card.class_ids, cfg.steps),
        batch_size=None,
        sampler=range(start, cfg.steps),
        num_workers=cfg.workers,
        pin_memory=run.device.type == "cuda",
    )
    steps = zip(range(start, cfg.steps), batches, strict=True)
    return tqdm(steps, initial=start, total=cfg.steps, disable=not progress, desc=run.card.name)


def train_steps(
    run: Run, batches: tqdm, held_out: DataSource, budget: CpuBudget | None
) -> tuple[dict[str, float], dict[str, object]]:
    """Run the steps to the end of the schedule (or of the CPU budget, or an early stop):
    each one a training step, then the schedule, the evaluation every ``eval_every`` steps
    and the checkpoint every ``checkpoint_every``. Returns the last losses and evaluation."""
    losses: dict[str, float] = {}
    metrics: dict[str, object] = {}
    for step, (images, targets) in batches:
        losses = train_one_step(run, images, targets)
        if budget is None:
            run.sched.step()
        else:
            follow_budget(run, budget, step)
        batches.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        done = step + 1
        if done % run.cfg.eval_every == 0 or done == run.cfg.steps:
            metrics = evaluate(run, held_out, done)
            _stop_early(run, done)
        if done % run.cfg.checkpoint_every == 0 or done == run.cfg.steps:
            save_checkpoint(run, done)
        if done == run.cfg.steps:
            break
    return losses, metrics


def train_one_step(run: Run, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One optimizer step on a batch (then the weight average's update); returns the losses."""
    cfg, device, model = run.cfg, run.device, run.model
    layout = torch.channels_last if cfg.channels_last else torch.preserve_format
    images = images.to(device, non_blocking=True, memory_format=layout)
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        terms = loss_terms(model, run.card, images, targets, cfg)
    run.opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    run.opt.step()
    if run.ema is not None:
        run.ema.update_parameters(model)
    return {k: float(v.detach()) for k, v in terms.items()}


def follow_budget(run: Run, budget: CpuBudget, step: int) -> None:
    """After step ``step`` of a CPU-budget run: the learning rate of the budget's fraction
    spent, the snapshots now due, and the run's end when the budget is spent."""
    spent_s, budget_s = budget.spent_s(), budget.minutes * 60.0
    factor = min(1.0, (step + 2) / run.cfg.warmup_steps) * cosine(spent_s / budget_s)
    for group in run.opt.param_groups:
        group["lr"] = run.cfg.lr * group["lr_scale"] * factor
    while budget.snapshot_minutes and spent_s >= budget.snapshot_minutes[0] * 60.0:
        snap = run.ckpt.parent / "snapshots" / f"cpu-{budget.snapshot_minutes.pop(0):g}.pt"
        save_weights(run.final, run.card, snap, run.prior_steps + step + 1)
        log.info("snapshot after %.1f CPU-minutes, step %d: %s", spent_s / 60, step + 1, snap)
    if spent_s >= budget_s:
        log.info("CPU budget of %.1f minutes spent after %d steps", budget.minutes, step + 1)
        run.end_at(step + 1)


def _held_out_loss(run: Run, model: torch.nn.Module, held_out: DataSource) -> float:
    return held_out_loss(model, run.card, held_out, len(held_out), run.cfg.batch_size, run.cfg, run.device)


def evaluate(run: Run, held_out: DataSource, step: int) -> dict[str, object]:
    """Mask AP and loss of the weights to save on the held-out samples after ``step``; with
    ``keep_best`` the best weights so far are kept. Empty without held-out samples."""
    if not len(held_out):
        return {}
    result = evaluate_model(run.final, run.card, held_out, len(held_out))
    result["val_loss"] = _held_out_loss(run, run.final, held_out)
    log.info(
        "step %d: mask AP %.3f AP50 %.3f AP75 %.3f, held-out loss %.4f",
        step,
        result["mask_ap"],
        result["mask_ap50"],
        result["mask_ap75"],
        result["val_loss"],
    )
    if run.cfg.keep_best:
        total = run.prior_steps + step
        run.keeper.update(float(result["mask_ap"]), total, lambda p: save_weights(run.final, run.card, p, total))  # type: ignore[arg-type]
    return result


def _stop_early(run: Run, done: int) -> None:
    """End the run at step ``done`` when ``patience`` evaluations brought no better AP."""
    keeper = run.keeper
    if keeper.should_stop and done < run.cfg.steps:
        log.info(
            "early stop after step %d: %d evaluations without a better mask AP than %.3f (step %d)",
            done,
            keeper.since,
            keeper.best_ap,
            keeper.best_step,
        )
        run.end_at(done)


def save_checkpoint(run: Run, done: int) -> None:
    """``last.pt``: what a resumed run needs to go on as if never stopped."""
    run.ckpt.parent.mkdir(parents=True, exist_ok=True)
    extra = {"ema": run.ema.state_dict()} if run.ema is not None else {}
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "schedule": run.sched.state_dict(),
        "rng": torch.get_rng_state(),
        "step": done,
        "prior_steps": run.prior_steps,
        "best": run.keeper.state_dict(),
    }
    torch.save({**state, **extra}, run.ckpt)


def _finish(run: Run, source: DataSource, held_out: DataSource, metrics: dict[str, object]) -> dict[str, object]:
    """After the last step: BatchNorm statistics recomputed (``precise_bn_images``) and
    evaluated again, then the card's weights file written, the best kept weights where they
    beat the last ones, and its sha256 put in the card. Returns the final evaluation."""
    card, cfg, keeper = run.card, run.cfg, run.keeper
    if cfg.precise_bn_images > 0:
        n = precise_bn(run.final, card, source, cfg.precise_bn_images, cfg.batch_size, cfg.steps, run.device)
        log.info("BatchNorm statistics recomputed on %d unseen training images", n)
        metrics = evaluate(run, held_out, cfg.steps)
    last_ap = float(metrics.get("mask_ap", -math.inf))  # type: ignore[arg-type]
    if cfg.keep_best and keeper.best_step >= 0 and keeper.best_ap > last_ap:
        shutil.copyfile(keeper.path, card.weights.path)  # type: ignore[union-attr]
        log.info(
            "kept the weights of step %d (held-out mask AP %.3f) over the last ones (%.3f)",
            keeper.best_step,
            keeper.best_ap,
            metrics.get("mask_ap"),
        )
    else:
        save_weights(run.final, card, card.weights.path, run.prior_steps + cfg.steps)  # type: ignore[union-attr]
    set_card_value(card.path, "weights", "sha256", sha256_of(card.weights.path))  # type: ignore[union-attr]
    return metrics
