"""Foxglove node: frames, detections, tracks and status out over the Foxglove WebSocket protocol."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("foxglove")
