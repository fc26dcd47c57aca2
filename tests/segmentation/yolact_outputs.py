"""Test helper: a random-init one-stage model made to give varied outputs."""

from __future__ import annotations


def spread_outputs(model, probe) -> None:  # type: ignore[no-untyped-def]
    """Make a random-init model give varied scores and masks that are neither empty nor
    full (its raw outputs barely depend on the image)."""
    import torch

    with torch.no_grad():
        model.head.cls.bias.fill_(0.0)  # the focal-loss prior puts every score near 0.01
        model.head.cls.weight.mul_(8.0)
        c3 = model.fpn(model.backbone((probe[None] - model.mean) / model.std))["c3"]
        pn = model.protonet
        pre = pn.post[1](pn.post[0](torch.nn.functional.interpolate(pn.pre(c3), scale_factor=2.0, mode="bilinear")))
        std = pre.std((0, 2, 3))  # prototypes: unit spread around zero before the ReLU
        pn.post[1].bias.sub_(pre.mean((0, 2, 3))).div_(std)
        pn.post[1].weight.div_(std[:, None, None, None])
        mean_proto = pn(c3).mean((0, 2, 3))  # coefficients orthogonal to the mean prototype
        u = torch.empty(model.head.a, mean_proto.numel()).uniform_(-0.7, 0.7)
        u -= (u @ mean_proto)[:, None] * mean_proto / (mean_proto @ mean_proto)
        model.head.coef.bias.copy_(torch.atanh(u.clamp(-0.95, 0.95)).flatten())
