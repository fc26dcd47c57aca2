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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.config import build_config
from perception.segmentation.postprocess import postprocess_config
from perception.segmentation.card import CardError, ModelCard, load_card, set_card_value, sha256_of
from perception.segmentation.maskrcnn_infer import detect as detect_maskrcnn
from perception.segmentation.yolact_infer import detect
from perception.segmentation.yolact_loss import LossConfig, yolact_loss
from perception.train.build import build_model, init_from, load_weights, save_weights
from perception.train.data import DataConfig, DataSource, Target, make_source
from perception.train.evaluate import evaluate_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitConfig:
    """``[training.init]``: start from another weights file of the project instead of random
    weights (``weights`` relative to the card's folder; ``rename`` maps name prefixes of that
    file to this model's). Tensors whose renamed name or shape do not match are left random."""

    weights: str = ""
    rename: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """The card's ``[training]`` table (``[training.loss]`` holds :class:`LossConfig`)."""

    steps: int = 20000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 300
    grad_clip: float = 10.0
    seed: int = 0
    eval_every: int = 2000
    checkpoint_every: int = 500
    threads: int = 1
    device: str = "auto"
    workers: int = 0
    run_dir: str = "runs"
    precise_bn_images: int = 0
    #: exponential moving average of the weights (0 = off): decay ``ema_decay * (1 -
    #: exp(-updates / ema_ramp_steps))``, so the average follows quickly early in a run; the
    #: average is what is evaluated and saved
    ema_decay: float = 0.0
    ema_ramp_steps: int = 500
    loss: LossConfig = field(default_factory=LossConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps and batch_size must be >= 1 and lr > 0")
        if not 0 <= self.ema_decay < 1 or self.ema_ramp_steps < 1:
            raise ValueError(f"ema_decay must be in [0, 1) and ema_ramp_steps >= 1, got {self.ema_decay}, "
                             f"{self.ema_ramp_steps}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def torch_device(self) -> torch.device:
        """``auto``: the first CUDA device when there is one, else the CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def to_model_targets(target: Target, class_ids: tuple[int, ...]) -> Target:
    """Keep the instances of the card's classes, relabelled as model class indices."""
    lut = torch.full((max(class_ids) + 1 if class_ids else 1,), -1, dtype=torch.long)
    lut[list(class_ids)] = torch.arange(len(class_ids))
    labels = target["labels"]
    mapped = torch.where(labels < lut.numel(), lut[labels.clamp(max=lut.numel() - 1)], torch.full_like(labels, -1))
    keep = mapped >= 0
    return {"boxes": target["boxes"][keep], "labels": mapped[keep], "masks": target["masks"][keep]}


def batch_at(source: DataSource, step: int, batch_size: int, class_ids: tuple[int, ...],
             device: torch.device | None = None) -> tuple[torch.Tensor, list[Target]]:
    """Batch ``step``: samples ``step * batch_size + i``, targets relabelled to model classes."""
    samples = [source.sample(step * batch_size + i) for i in range(batch_size)]
    targets = [{k: v.to(device) for k, v in to_model_targets(s[1], class_ids).items()} for s in samples]
    return torch.stack([s[0] for s in samples]).to(device), targets


def precise_bn(model: torch.nn.Module, card: ModelCard, source: DataSource, n_images: int, batch_size: int,
               first_step: int, device: torch.device) -> int:
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

    was_training = model.training
    update_bn(inputs(), module)
    model.train(was_training)
    return steps * batch_size


class StepBatches(torch.utils.data.Dataset):
    """Batch ``s`` of the run as item ``s`` (CPU tensors), so a ``DataLoader`` with workers
    can prepare batches ahead; batches are a pure function of the step either way."""

    def __init__(self, source: DataSource, batch_size: int, class_ids: tuple[int, ...], steps: int) -> None:
        self.source, self.batch_size, self.class_ids, self.steps = source, batch_size, class_ids, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, list[Target]]:
        return batch_at(self.source, step, self.batch_size, self.class_ids)


def loss_terms(model: torch.nn.Module, card: ModelCard, images: torch.Tensor, targets: list[Target],
               cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The model's loss terms on a batch, their sum under ``"total"``. ``targets`` use model
    class indices (0-based)."""
    if card.family == "maskrcnn":
        # torchvision's Mask R-CNN computes its own losses in train mode; class 0 is its background
        terms = model(list(images), [{**t, "labels": t["labels"] + 1} for t in targets])
        return {**terms, "total": torch.stack(list(terms.values())).sum()}
    return yolact_loss(model(images), targets, cfg.loss)


def evaluate_model(model: torch.nn.Module, card: ModelCard, source: DataSource, n_images: int) -> dict[str, object]:
    """COCO mask AP of the torch model on samples ``0..n_images-1`` of ``source``."""
    post = postprocess_config(card)
    samples = []
    for i in range(n_images):
        image, target = source.sample(i)
        bgr = np.ascontiguousarray((image.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
        samples.append((bgr, target["labels"].tolist(), list(target["masks"].numpy().astype(bool))))

    def predict(bgr: np.ndarray) -> tuple[list[int], list[float], list[np.ndarray]]:
        if card.family == "maskrcnn":
            d = detect_maskrcnn(model, bgr, card.input_width, card.input_height,  # type: ignore[arg-type]
                                post.score_threshold, post.mask_threshold, post.pad_value)
        else:
            d = detect(model, bgr, card.input_width, card.input_height, post.nms(), post.mask_threshold,  # type: ignore[arg-type]
                       post.pad_value)
        return [card.class_ids[c] for c in d.labels], d.scores.tolist(), list(d.masks)

    was_training = model.training
    result = evaluate_samples(predict, samples, card.classes)
    model.train(was_training)
    return result


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


def train(card_path: str | Path, steps: int | None = None, resume: bool = False, coco_root: str | None = None,
          run_dir: str | None = None, progress: bool = True, continue_from_card: bool = False,
          cpu_minutes: float | None = None, snapshot_minutes: tuple[float, ...] = (),
          settings: dict[str, object] | None = None) -> dict[str, object]:
    """Train the model of ``card_path``; returns the final losses and evaluation.

    ``resume``: pick up the interrupted run from its checkpoint (same schedule, same result
    as an uninterrupted run). ``continue_from_card``: start a new schedule from the card's
    own weights file (checkpoints do not travel between machines; the committed weights do);
    the saved weights count the steps of both runs.

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
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = cfg.torch_device()
    model = build_model(card).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    root = Path(run_dir or cfg.run_dir)
    ckpt = root / card.name / "last.pt"
    start = 0
    prior_steps = 0
    if continue_from_card:
        prior_steps = load_weights(model, card, card.weights.verify())
        log.info("continuing %s from its weights %s (%d steps before)", card.name, card.weights.path, prior_steps)
    ema = make_ema(model, cfg)
    if resume:
        if not ckpt.is_file():
            raise CardError(f"--resume: no checkpoint {str(ckpt)!r} for card {card.name!r}")
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"].cpu())
        start = int(state["step"])
        prior_steps = int(state.get("prior_steps", prior_steps))
        if ema is not None:
            if "ema" not in state:
                raise CardError(f"--resume: checkpoint {str(ckpt)!r} has no weight average but the card sets ema_decay")
            ema.load_state_dict(state["ema"])
        log.info("resuming %s from step %d (%s)", card.name, start, ckpt)
    elif cfg.init.weights and not continue_from_card:
        init_path = card.path.parent / cfg.init.weights
        copied, total = init_from(model, init_path, cfg.init.rename)
        log.info("initialised %d of %d tensors of %s from %s", copied, total, card.name, init_path)
    source = make_source(data_cfg, card.input_width, card.input_height, data_cfg.train_seed, card.classes,
                         cache_dir=str(root / "frame_bank"))
    if coco_root:
        from perception.train.copy_paste import CopyPaste

        source = CopyPaste(source, Path(coco_root), card.classes, data_cfg.copy_paste_per_image, data_cfg.train_seed)
    held_out = make_source(data_cfg, card.input_width, card.input_height, data_cfg.eval_seed, card.classes,
                           cache_dir=str(root / "frame_bank"), held_out=True)
    log.info("training %s on %s: %d steps of %d images", card.name, device, cfg.steps, cfg.batch_size)

    def final() -> torch.nn.Module:
        """The weights to evaluate and save: the moving average when there is one."""
        return ema.module if ema is not None else model  # type: ignore[return-value]

    losses: dict[str, float] = {}
    metrics: dict[str, object] = {}
    batches = torch.utils.data.DataLoader(StepBatches(source, cfg.batch_size, card.class_ids, cfg.steps),
                                          batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.workers)
    bar = tqdm(zip(range(start, cfg.steps), batches, strict=True), initial=start, total=cfg.steps,
               disable=not progress, desc=card.name)
    t0_cpu = time.process_time()
    budget_s = cpu_minutes * 60.0 if cpu_minutes else None
    pending = sorted(snapshot_minutes)
    for step, (images, targets) in bar:
        images, targets = images.to(device), [{k: v.to(device) for k, v in t.items()} for t in targets]
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
                group["lr"] = cfg.lr * factor
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
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            extra = {"ema": ema.state_dict()} if ema is not None else {}
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                        "rng": torch.get_rng_state(), "step": done, "prior_steps": prior_steps, **extra}, ckpt)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            metrics = evaluate_model(final(), card, held_out, data_cfg.eval_images)
            log.info("step %d: mask AP %.3f AP50 %.3f AP75 %.3f", done, metrics["mask_ap"], metrics["mask_ap50"],
                     metrics["mask_ap75"])
        if done == cfg.steps:
            break
    if cfg.precise_bn_images > 0:
        n = precise_bn(final(), card, source, cfg.precise_bn_images, cfg.batch_size, cfg.steps, device)
        metrics = evaluate_model(final(), card, held_out, data_cfg.eval_images)
        log.info("BatchNorm statistics recomputed on %d unseen training images: mask AP %.3f AP50 %.3f AP75 %.3f",
                 n, metrics["mask_ap"], metrics["mask_ap50"], metrics["mask_ap75"])
    save_weights(final(), card, card.weights.path, prior_steps + cfg.steps)
    set_card_value(card.path, "weights", "sha256", sha256_of(card.weights.path))
    return {"losses": losses, "metrics": metrics, "weights": str(card.weights.path)}
