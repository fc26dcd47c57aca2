"""Segmentation models: the torch-free ONNX runtime (``runtime``, ``maskrcnn_runtime``,
``postprocess``, ``fast_nms``, ``card``, ``ultralytics_adapter``) and the torch model code
used by training and export (``backbone``, ``yolact``, ``yolact_loss``, ``yolact_infer``,
``maskrcnn``, ``maskrcnn_checkpoint``, ``maskrcnn_infer``)."""
