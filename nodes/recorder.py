"""Recorder node: writes the recorded topics of the run to MCAP drives."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("recorder")
