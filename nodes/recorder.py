"""Recorder node: writes the recorded topics of the run to MCAP drives."""

from perception.node import node_main
from perception.recorder import RecorderConfig, RecorderLogic


def main() -> None:
    node_main("recorder", RecorderLogic, RecorderConfig)


if __name__ == "__main__":
    main()
