"""Offline evaluation: tracking metrics (TrackEval), noisy detections from ground truth."""
