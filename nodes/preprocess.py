"""Preprocess node: frames -> frames.rect (letterboxed to the model input size)."""

from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
from perception.node.loop import node_main


def main() -> None:
    node_main("preprocess", PreprocessLogic, PreprocessConfig)


if __name__ == "__main__":
    main()
