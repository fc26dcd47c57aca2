"""Replay node: publishes a recorded drive (frames and ground truth) in place of the camera."""

from perception.node import node_main
from perception.replay import ReplayConfig, ReplayLogic


def main() -> None:
    node_main("replay", ReplayLogic, ReplayConfig)


if __name__ == "__main__":
    main()
