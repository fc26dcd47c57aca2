"""The torch model code that training, export, benches and tests use (never the node): the
networks (``yolact``, ``maskrcnn``), their trunks (``backbone``) and pretrained weights
(``pretrained``, ``maskrcnn_checkpoint``), the one-stage loss (``yolact_loss``), and torch
inference for training's validation and the torch-vs-ONNX parity tests (``yolact_infer``,
``maskrcnn_infer``, ``fast_nms_torch``).

Layer 5: imports ``bus``, ``geometry`` and ``segmentation`` (post-processing shared with the
runtime); ``train`` imports it."""
