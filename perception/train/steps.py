"""One training step's inputs and losses (torch only): batch ``s`` of a run is samples
``s * batch_size + i`` of its data source, targets relabelled to the model's classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from perception.nets.yolact_loss import yolact_loss
from perception.segmentation.card import ModelCard
from perception.train.data import DataSource, Target

if TYPE_CHECKING:
    from perception.train.config import TrainConfig


def to_model_targets(target: Target, class_ids: tuple[int, ...]) -> Target:
    """Keep the instances of the card's classes, relabelled as model class indices."""
    lut = torch.full((max(class_ids) + 1 if class_ids else 1,), -1, dtype=torch.long)
    lut[list(class_ids)] = torch.arange(len(class_ids))
    labels = target["labels"]
    mapped = torch.where(labels < lut.numel(), lut[labels.clamp(max=lut.numel() - 1)], torch.full_like(labels, -1))
    keep = mapped >= 0
    return {"boxes": target["boxes"][keep], "labels": mapped[keep], "masks": target["masks"][keep]}


def batch_at(
    source: DataSource, step: int, batch_size: int, class_ids: tuple[int, ...], device: torch.device | None = None
) -> tuple[torch.Tensor, list[Target]]:
    """Batch ``step``: samples ``step * batch_size + i``, targets relabelled to model classes."""
    samples = [source.sample(step * batch_size + i) for i in range(batch_size)]
    targets = [{k: v.to(device) for k, v in to_model_targets(s[1], class_ids).items()} for s in samples]
    return torch.stack([s[0] for s in samples]).to(device), targets


class StepBatches(torch.utils.data.Dataset):
    """Batch ``s`` of the run as item ``s`` (CPU tensors), so a ``DataLoader`` with workers
    can prepare batches ahead; batches are a pure function of the step either way."""

    def __init__(self, source: DataSource, batch_size: int, class_ids: tuple[int, ...], steps: int) -> None:
        self.source, self.batch_size, self.class_ids, self.steps = source, batch_size, class_ids, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, list[Target]]:
        return batch_at(self.source, step, self.batch_size, self.class_ids)


def loss_terms(
    model: torch.nn.Module, card: ModelCard, images: torch.Tensor, targets: list[Target], cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    """The model's loss terms on a batch, their sum under ``"total"``. ``targets`` use model
    class indices (0-based)."""
    if card.family == "maskrcnn":
        # torchvision's Mask R-CNN computes its own losses in train mode; class 0 is its background
        terms = model(list(images), [{**t, "labels": t["labels"] + 1} for t in targets])
        return {**terms, "total": torch.stack(list(terms.values())).sum()}
    if card.family == "solov2":
        from perception.nets.solov2_loss import solov2_loss

        return solov2_loss(model(images), targets, model.cfg)  # type: ignore[arg-type]
    return yolact_loss(model(images), targets, cfg.loss, getattr(model, "mask_iou", None))
