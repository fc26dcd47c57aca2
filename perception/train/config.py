"""The card's ``[training]`` table (torch only for the device choice)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from perception.nets.yolact_loss import LossConfig


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
    #: fine-tuning: train without the trunk (the backbone's feature extractor; FPN and heads
    #: still learn)
    freeze_trunk: bool = False
    #: pretrained trunks: the trunk's BatchNorm layers keep their (ImageNet) statistics and
    #: affine parameters, as detectron2's FrozenBatchNorm does (batches of 2-8 images give
    #: statistics too noisy to learn); ``frozen_prefixes``: parameter name prefixes that do
    #: not learn at all (the stem and the stride-2/4 blocks, as detectron2's FREEZE_AT)
    freeze_trunk_bn: bool = False
    frozen_prefixes: tuple[str, ...] = ()
    #: the trunk's learning rate relative to ``lr`` (pretrained trunks learn slower than the
    #: new heads)
    trunk_lr_scale: float = 1.0
    #: validation: keep the weights of the best held-out mask AP of the run (evaluated every
    #: ``eval_every`` steps and at the end) rather than the last ones; stop after
    #: ``patience`` evaluations without a better one (0 = never stop early)
    keep_best: bool = True
    patience: int = 0
    #: on a GPU, run the forward pass and losses in bfloat16 (autocast; the weights and the
    #: optimiser stay float32, so no loss scaling is needed); ignored on the CPU
    amp: bool = False
    #: convolutions in channels-last (NHWC) memory, weights and input images: the same
    #: results, in less time on the CPU (measured on the 2-core development CPU, one thread,
    #: CPU seconds per step of 4 images: YOLACT Lite0 2.1 -> 1.4, Mask R-CNN Lite0 2.4-2.7
    #: -> 2.0; EfficientNet's depthwise convolutions gain most) and on GPUs with AMP
    channels_last: bool = True
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
            raise ValueError(
                f"ema_decay must be in [0, 1) and ema_ramp_steps >= 1, got {self.ema_decay}, {self.ema_ramp_steps}"
            )
        if not 0 < self.trunk_lr_scale <= 10:
            raise ValueError(f"trunk_lr_scale must be in (0, 10], got {self.trunk_lr_scale}")
        if self.patience < 0 or self.eval_every < 1:
            raise ValueError(f"patience must be >= 0 and eval_every >= 1, got {self.patience}, {self.eval_every}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def torch_device(self) -> torch.device:
        """``auto``: the first CUDA device when there is one, else the CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
