"""Segmenter node: frames.rect -> detections, fast or accurate model chosen per frame."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("segmenter")
