"""Segmentation models and the segmenter node: the torch-free ONNX runtime (``runtime``,
``maskrcnn_runtime``, ``postprocess``, ``fast_nms``, ``card``, ``ultralytics_adapter``), the
node's logic and its latency policy (``segmenter_logic``, ``latency_policy``), and the torch
model code used by training and export (``backbone``, ``yolact``, ``yolact_loss``,
``yolact_infer``, ``maskrcnn``, ``maskrcnn_checkpoint``, ``maskrcnn_infer``).

Layer 4: imports layers 0-3 (``camera`` for the letterbox; never ``drives`` or ``tracking``)."""
