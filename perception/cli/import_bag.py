"""``perception import-bag BAG --image-topic TOPIC --out DRIVE.mcap``: a ROS 2 bag's camera
frames as a drive the node replays (no ROS installation needed)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="rosbag2 folder (MCAP or sqlite3 storage)")
    p.add_argument(
        "--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic, e.g. /cam/image_raw"
    )
    p.add_argument("--camera-info-topic", default=None, help="sensor_msgs/CameraInfo topic: written as the calib file")
    p.add_argument("--out", required=True, help="drive file to write (.mcap)")
    p.add_argument("--calib-out", default=None, help="calibration file to write (default: OUT with .yaml)")
    p.add_argument("--camera-id", default="", help="camera id of the drive (default: from the topic name)")
    p.add_argument("--fps", type=float, default=0.0, help="nominal frame rate to record in the drive")


def run(args: argparse.Namespace) -> int:
    from perception.outputs.ros2_bag import import_bag

    res = import_bag(
        args.bag, args.image_topic, args.out, args.camera_info_topic, args.calib_out, args.camera_id, args.fps
    )
    print(
        f"wrote {args.out}: {res['frames']} frames {res['width']}x{res['height']}"
        + (f"; calibration {res['calibration']}" if res["calibration"] else "")
    )
    return 0
