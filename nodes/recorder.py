"""Recorder node: writes the recorded topics of the run to MCAP drives."""

from perception.drives.recorder import RecorderConfig, RecorderLogic
from perception.node.loop import node_main


def main() -> None:
    node_main("recorder", RecorderLogic, RecorderConfig)


if __name__ == "__main__":
    main()
