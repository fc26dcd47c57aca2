"""Preprocess node: frames -> frames.rect (letterboxed to the model input size)."""

from perception.node import node_main
from perception.preprocess import PreprocessConfig, PreprocessLogic


def main() -> None:
    node_main("preprocess", PreprocessLogic, PreprocessConfig)


if __name__ == "__main__":
    main()
