"""Preprocess node: frames -> frames.rect (letterboxed to the model input size)."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("preprocess")
