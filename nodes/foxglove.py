"""Foxglove node: frames, detections, tracks and status out over the Foxglove WebSocket protocol."""

from perception.foxglove_node import FoxgloveConfig, FoxgloveLogic
from perception.node import node_main


def main() -> None:
    node_main("foxglove", FoxgloveLogic, FoxgloveConfig)


if __name__ == "__main__":
    main()
