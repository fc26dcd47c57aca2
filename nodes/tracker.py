"""Tracker node: detections in, tracks with stable ids out."""

from perception.node import node_main
from perception.tracking import TrackerConfig
from perception.tracking_node import TrackerLogic


def main() -> None:
    node_main("tracker", TrackerLogic, TrackerConfig)


if __name__ == "__main__":
    main()
