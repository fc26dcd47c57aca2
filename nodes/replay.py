"""Replay node: publishes a recorded drive (frames and ground truth) in place of the camera."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("replay")
