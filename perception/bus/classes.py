"""The road classes, in one place: shared by the synthetic drives, the model cards and the
models' outputs. ``class_id`` in every message is an index into :data:`CLASSES`."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("person", "bicycle", "car", "motorcycle", "bus", "truck")

#: COCO category id (as in instances_*.json) of each road class, in :data:`CLASSES` order.
COCO_CATEGORY_IDS: tuple[int, ...] = (1, 2, 3, 4, 6, 8)

#: 0-based 80-class COCO index (YOLO label files) of each road class.
COCO80_INDEX: tuple[int, ...] = (0, 1, 2, 3, 5, 7)


def class_id(name: str) -> int:
    """Index of a class name; raises ValueError naming the known classes."""
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}") from None


#: The 80 COCO class names in the order of YOLO label files (Ultralytics' ``coco.yaml``),
#: so a YOLO-seg folder without a ``names`` list is read with COCO's classes.
COCO80_NAMES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
