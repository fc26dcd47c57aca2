"""Replay node: publishes a recorded drive (frames and ground truth) in place of the camera."""

from perception.drives.replay import ReplayConfig, ReplayLogic
from perception.node.loop import node_main


def main() -> None:
    node_main("replay", ReplayLogic, ReplayConfig)


if __name__ == "__main__":
    main()
