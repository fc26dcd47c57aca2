"""Publisher node: republishes chosen topics on the external endpoint."""

from perception.node.loop import node_main
from perception.outputs.publisher import PublisherConfig, PublisherLogic


def main() -> None:
    node_main("publisher", PublisherLogic, PublisherConfig)


if __name__ == "__main__":
    main()
