"""The segmenter the node runs, torch-free: ONNX Runtime sessions and the model families
(``runtime``, ``maskrcnn_runtime``, ``ultralytics_adapter``, picked by a card's family in
``families``), ``providers``, ``postprocess``, ``fast_nms``, ``card``, the node's logic
and its latency policy (``segmenter_logic``, ``latency_policy`` on ``latency_estimate``).
The torch networks that training and export use are in :mod:`perception.nets`.

Layer 4: imports layers 0-3 (``geometry`` for the letterbox; never ``drives`` or
``tracking``); never torch (tests/test_layout.py checks it)."""
