"""Camera node: publishes frames from a device, a video file or an image folder."""

from perception.camera import CameraConfig, CameraLogic
from perception.node import node_main


def main() -> None:
    node_main("camera", CameraLogic, CameraConfig)


if __name__ == "__main__":
    main()
