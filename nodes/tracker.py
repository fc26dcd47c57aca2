"""Tracker node: detections in, tracks with stable ids out."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("tracker")
