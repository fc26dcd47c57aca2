"""Offline evaluation: mask AP (pycocotools), tracking metrics (TrackEval), latency and
drops of a recorded run, reports, ground-truth export (COCO, MOTS), noisy detections from
ground truth for tracker benchmarks.

Layer 5: imports layers 0-4 (drives, never the system that runs them)."""
