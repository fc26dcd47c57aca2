"""Camera node: publishes frames from a device, a video file or an image folder."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("camera")
