"""Validation during training (torch only): COCO mask AP of the torch model on the
held-out samples (the same COCO code as ``perception eval``), the held-out loss, and the
keeper of the best weights with early stopping."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from perception.nets.maskrcnn_infer import detect as detect_maskrcnn
from perception.nets.yolact_infer import detect
from perception.segmentation.card import ModelCard
from perception.segmentation.postprocess import postprocess_config
from perception.train.data import DataSource
from perception.train.evaluate import evaluate_samples
from perception.train.steps import loss_terms, to_model_targets

if TYPE_CHECKING:
    from perception.train.config import TrainConfig


def evaluate_model(model: torch.nn.Module, card: ModelCard, source: DataSource, n_images: int) -> dict[str, object]:
    """COCO mask AP of the torch model on samples ``0..n_images-1`` of ``source``."""
    post = postprocess_config(card) if card.family != "solov2" else None  # solov2: its own [postprocess]
    samples = []
    for i in range(n_images):
        image, target = source.sample(i)
        bgr = np.ascontiguousarray((image.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
        samples.append((bgr, target["labels"].tolist(), list(target["masks"].numpy().astype(bool))))

    def predict(bgr: np.ndarray) -> tuple[list[int], list[float], list[np.ndarray]]:
        if post is None:
            return solov2_predict(model, card, bgr)
        if card.family == "maskrcnn":
            d = detect_maskrcnn(
                model,
                bgr,
                card.input_width,
                card.input_height,  # type: ignore[arg-type]
                post.score_threshold,
                post.mask_threshold,
                post.pad_value,
            )
        else:
            d = detect(
                model,
                bgr,
                card.input_width,
                card.input_height,
                post.nms(),
                post.mask_threshold,  # type: ignore[arg-type]
                post.pad_value,
            )
        return [card.class_ids[c] for c in d.labels], d.scores.tolist(), list(d.masks)

    was_training = model.training
    result = evaluate_samples(predict, samples, card.classes)
    model.train(was_training)
    return result


def solov2_predict(
    model: torch.nn.Module, card: ModelCard, bgr: np.ndarray
) -> tuple[list[int], list[float], list[np.ndarray]]:
    """Class ids, scores and camera masks of the torch SOLOv2 on one BGR image."""
    from perception.nets.solov2_infer import detect as detect_solov2
    from perception.segmentation.solov2_runtime import solov2_post_config

    d = detect_solov2(model, bgr, card.input_width, card.input_height, solov2_post_config(card))  # type: ignore[arg-type]
    return [card.class_ids[c] for c in d.labels], d.scores.tolist(), list(d.masks)


def held_out_loss(
    model: torch.nn.Module,
    card: ModelCard,
    source: DataSource,
    n_images: int,
    batch_size: int,
    cfg: TrainConfig,
    device: torch.device | None = None,
) -> float:
    """Mean training loss (``"total"``) of the model on held-out samples ``0..n_images-1``,
    without gradients; the BatchNorm statistics and the train/eval mode are restored after
    (the losses exist in train mode only). NaN without samples."""
    if n_images <= 0:
        return math.nan
    names = {name for name, _ in model.named_buffers()}
    saved = {k: v.clone() for k, v in model.state_dict().items() if k in names}
    was_training = model.training
    model.train()
    total = 0.0
    with torch.no_grad():
        for start in range(0, n_images, batch_size):
            samples = [source.sample(i) for i in range(start, min(n_images, start + batch_size))]
            images = torch.stack([s[0] for s in samples]).to(device)
            targets = [{k: v.to(device) for k, v in to_model_targets(s[1], card.class_ids).items()} for s in samples]
            total += float(loss_terms(model, card, images, targets, cfg)["total"]) * len(samples)
    model.load_state_dict(saved, strict=False)
    model.train(was_training)
    return total / n_images


class BestKeeper:
    """Keeps the weights of the best held-out mask AP of a run in ``path`` (saved by the
    ``save`` callback of :meth:`update`) and says when ``patience`` evaluations in a row
    (0: never) brought no better one."""

    def __init__(self, path: Path, patience: int = 0) -> None:
        self.path, self.patience = path, patience
        self.best_ap, self.best_step, self.since = -math.inf, -1, 0

    def update(self, ap: float, step: int, save: Callable[[Path], None]) -> bool:
        """Record the AP of an evaluation at ``step``; True when it is the best so far."""
        if ap > self.best_ap:
            self.best_ap, self.best_step, self.since = ap, step, 0
            save(self.path)
            return True
        self.since += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since >= self.patience

    def state_dict(self) -> dict[str, float]:
        return {"best_ap": self.best_ap, "best_step": self.best_step, "since": self.since}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best_ap, self.best_step, self.since = float(state["best_ap"]), int(state["best_step"]), int(state["since"])
