"""Camera node: publishes frames from a device, a video file or an image folder."""

from perception.camera.sources import CameraConfig, CameraLogic
from perception.node.loop import node_main


def main() -> None:
    node_main("camera", CameraLogic, CameraConfig)


if __name__ == "__main__":
    main()
