"""Tracker node: detections in, tracks with stable ids out."""

from perception.node.loop import node_main
from perception.tracking.tracker_config import TrackerConfig
from perception.tracking.tracker_logic import TrackerLogic


def main() -> None:
    node_main("tracker", TrackerLogic, TrackerConfig)


if __name__ == "__main__":
    main()
