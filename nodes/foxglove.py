"""Foxglove node: frames, detections, tracks and status out over the Foxglove WebSocket protocol."""

from perception.node.loop import node_main
from perception.outputs.foxglove_bridge import FoxgloveConfig, FoxgloveLogic


def main() -> None:
    node_main("foxglove", FoxgloveLogic, FoxgloveConfig)


if __name__ == "__main__":
    main()
