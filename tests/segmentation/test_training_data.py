"""The training data layer: COCO, YOLO-seg and drive files arrive as written; class maps;
bad entries skipped and counted with their file and entry; sources mixed by weight."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.torch

W, H = 96, 64
#: per image: (class name, pixel polygon) objects
OBJECTS = [
    [("car", [(10, 10), (40, 10), (40, 30), (10, 30)]), ("person", [(50, 5), (70, 5), (60, 40)])],
    [("truck", [(5, 20), (90, 20), (90, 60), (5, 60)])],
    [("person", [(30, 10), (45, 10), (45, 60), (30, 60)]), ("car", [(60, 30), (90, 30), (90, 50), (60, 50)])],
]
COCO_IDS = {"person": 1, "car": 3, "truck": 8}
YOLO_IDS = {"person": 0, "car": 2, "truck": 7}


def _images(folder: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in OBJECTS]
    for name, img in zip("abc", images, strict=True):
        cv2.imwrite(str(folder / f"{name}.png"), img)
    return images


def _fill(poly: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.fillPoly(m, [np.array(poly, np.int32)], 1)
    return m


def write_coco(root: Path, encoding: str = "polygons") -> tuple[Path, list[np.ndarray], list[list[np.ndarray]]]:
    """A COCO instances JSON over three PNGs; returns it, the images and the masks as a
    COCO reader must decode them."""
    from pycocotools import mask as mask_utils

    images = _images(root / "images")
    doc: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for n, i in COCO_IDS.items()] + [{"id": 18, "name": "dog"}],
    }
    truth = []
    for k, objs in enumerate(OBJECTS):
        doc["images"].append({"id": k + 1, "file_name": f"images/{'abc'[k]}.png", "width": W, "height": H})
        masks = []
        for name, poly in objs:
            flat = [float(v) for p in poly for v in p]
            if encoding == "polygons":
                seg: object = [flat]
                masks.append(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], H, W))))
            else:
                m = _fill(poly)
                rle = mask_utils.encode(np.asfortranarray(m))
                seg = {"size": [H, W], "counts": rle["counts"].decode()}
                masks.append(m)
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": k + 1,
                    "category_id": COCO_IDS[name],
                    "segmentation": seg,
                    "iscrowd": 0,
                }
            )
        truth.append(masks)
    doc["annotations"].append(
        {"id": 99, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]}
    )  # a dog: not ours
    path = root / "instances.json"
    path.write_text(json.dumps(doc))
    return path, images, truth


def write_yolo(root: Path) -> tuple[Path, list[np.ndarray], list[list[np.ndarray]]]:
    images = _images(root / "images" / "train")
    (root / "labels" / "train").mkdir(parents=True)
    truth = []
    for k, objs in enumerate(OBJECTS):
        rows = [" ".join([str(YOLO_IDS[n])] + [f"{x / W:.6f} {y / H:.6f}" for x, y in poly]) for n, poly in objs]
        rows.append("9 0.1 0.1 0.2 0.1 0.2 0.2")  # a traffic light: not ours
        (root / "labels" / "train" / f"{'abc'[k]}.txt").write_text("\n".join(rows) + "\n")
        truth.append([_fill(poly) for _, poly in objs])
    return root, images, truth


def _check_arrival(source, images: list[np.ndarray], truth: list[list[np.ndarray]]) -> None:  # type: ignore[no-untyped-def]
    from perception.bus.classes import CLASSES

    for k, objs in enumerate(OBJECTS):
        image, target = source.sample(k)
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(rgb, images[k][:, :, ::-1]), k
        assert target["labels"].tolist() == [CLASSES.index(n) for n, _ in objs]
        for m, want, box in zip(target["masks"].numpy(), truth[k], target["boxes"].tolist(), strict=True):
            assert np.array_equal(m, want)
            ys, xs = np.nonzero(want)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("encoding", ["polygons", "rle"])
def test_coco_images_masks_and_classes_arrive_as_written(
    tmp_path: Path, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    from perception.train.coco import read_coco
    from perception.train.sources import FileSource

    path, images, truth = write_coco(tmp_path, encoding)
    with caplog.at_level(logging.INFO):
        records = read_coco(path)
    assert [r.path.name for r in records] == ["a.png", "b.png", "c.png"]  # type: ignore[union-attr]
    _check_arrival(FileSource(records, W, H, seed=0, shuffle=False), images, truth)
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 1 and "dog (1)" in said[0]


def test_yolo_seg_images_masks_and_classes_arrive_as_written(tmp_path: Path) -> None:
    from perception.train.labelled import read_yolo_seg
    from perception.train.sources import FileSource

    root, images, truth = write_yolo(tmp_path / "set")
    _check_arrival(FileSource(read_yolo_seg(root), W, H, seed=0, shuffle=False), images, truth)


def test_drive_frames_and_ground_truth_arrive_as_recorded(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    from perception.drives.drive_file import DriveReader
    from perception.synth import SynthConfig, write_drive
    from perception.train.labelled import read_drive
    from perception.train.sources import FileSource

    path = tmp_path / "drive.mcap"
    write_drive(SynthConfig(frames=4, seed=3, width=W, height=H, scenario="urban"), path)
    frames = [f for f in DriveReader(path).frames() if f.gt is not None]
    source = FileSource(read_drive(path), W, H, seed=0, shuffle=False)
    assert len(source) == len(frames) == 4
    for k, f in enumerate(frames):
        image, target = source.sample(k)
        assert np.array_equal((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), f.image[:, :, ::-1])
        kept = [
            i
            for i in f.gt.instances
            if not i.ignore  # type: ignore[union-attr]
            and mask_utils.decode(i.mask.to_coco()).sum() >= 16
        ]
        assert target["labels"].tolist() == [i.class_id for i in kept]
        for m, inst in zip(target["masks"].numpy(), kept, strict=True):
            assert np.array_equal(m, mask_utils.decode(inst.mask.to_coco()))


def test_class_map_renames_drops_and_checks(tmp_path: Path) -> None:
    from perception.bus.classes import CLASSES
    from perception.train.coco import read_coco
    from perception.train.errors import DataError
    from perception.train.labelled import ClassMap

    path, _, _ = write_coco(tmp_path)
    records = read_coco(path, ClassMap({"truck": "car", "3": ""}))  # truck -> car; COCO id 3 (car) dropped
    labels = [[CLASSES[o.class_id] for o in r.objects] for r in records]
    assert labels == [["person"], ["car"], ["person"]]
    with pytest.raises(DataError, match=r"\[data.classes\] 'van' = 'lorry': expected one of person"):
        ClassMap({"van": "lorry"})


def _coco_with(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    path, _, _ = write_coco(tmp_path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


BROKEN_COCO = {
    "missing image": (lambda d: d["images"][1].update(file_name="images/nope.png"), "image file not found"),
    "two-point polygon": (
        lambda d: d["annotations"][2].update(segmentation=[[1.0, 2.0, 3.0, 4.0]]),
        "polygon with fewer than three points",
    ),
    "mask of the wrong size": (
        lambda d: d["annotations"][2].update(segmentation={"size": [H + 1, W], "counts": [6240]}),
        "mask of the wrong size",
    ),
    "class id out of range": (lambda d: d["annotations"][2].update(category_id=77), "class id out of range"),
    "image of another size": (lambda d: d["images"][1].update(width=W * 2), "mask of the wrong size"),
}


@pytest.mark.parametrize("case", list(BROKEN_COCO))
def test_one_bad_coco_entry_is_skipped_counted_and_named(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    from perception.train.coco import read_coco

    edit, problem = BROKEN_COCO[case]
    path = _coco_with(tmp_path, edit)
    with caplog.at_level(logging.INFO):
        records = read_coco(path)
    assert [r.path.name for r in records] == ["a.png", "c.png"]  # type: ignore[union-attr]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(path) in warned[0] and problem in warned[0] and "skipped" in warned[0]
    assert any("1 entries skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("85 0.1 0.1 0.5 0.1 0.5 0.5", "class id out of range: 85"),
        ("2 0.1 0.1", "polygon with fewer than three points"),
        ("2 0.5 0.5 0.2 0.2", "a box (x y w h), not a polygon"),
        ("2 10 10 50 10 50 50", "normalised to 0..1"),
        ("car 0.1 0.1 0.5 0.1 0.5 0.5", "class id 'car' is not an integer"),
    ],
)
def test_one_bad_yolo_row_is_skipped_with_its_file_and_line(
    tmp_path: Path, text: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    from perception.train.labelled import read_yolo_seg

    root, _, _ = write_yolo(tmp_path / "set")
    label = root / "labels" / "train" / "b.txt"
    label.write_text(label.read_text() + text + "\n")
    with caplog.at_level(logging.WARNING):
        records = read_yolo_seg(root)
    assert [r.path.name for r in records] == ["a.png", "c.png"]  # type: ignore[union-attr]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith(f"{label}:3: ") and problem in messages[0], messages


def test_missing_yolo_image_and_empty_datasets_are_clear_errors(tmp_path: Path) -> None:
    from perception.train.coco import read_coco
    from perception.train.errors import DataError
    from perception.train.labelled import read_drive, read_yolo_seg

    root, _, _ = write_yolo(tmp_path / "set")
    for name in "abc":
        (root / "images" / "train" / f"{name}.png").unlink()
    with pytest.raises(
        DataError,
        match=r"empty dataset: no usable labelled image among 3 entries \(3 entries "
        r"skipped: image file not found \(3\)\)",
    ):
        read_yolo_seg(root)
    with pytest.raises(DataError, match="not a YOLO-seg folder"):
        read_yolo_seg(tmp_path)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match=r"empty\.json: empty dataset"):
        read_coco(empty)
    empty.write_text("{not json")
    with pytest.raises(DataError, match=r"empty\.json: not a JSON file"):
        read_coco(empty)
    empty.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a COCO instances JSON"):
        read_coco(empty)
    with pytest.raises(DataError, match="no such COCO instances JSON"):
        read_coco(tmp_path / "missing.json")
    (tmp_path / "cut.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\0" * 40)
    with pytest.raises(ValueError, match=r"cut\.mcap"):
        read_drive(tmp_path / "cut.mcap")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
annotation = st.fixed_dictionaries(
    {},
    optional={
        "image_id": st.integers(0, 3) | json_values,
        "category_id": st.sampled_from([1, 3, 8, 18, 77]) | json_values,
        "iscrowd": json_values,
        "segmentation": st.lists(st.lists(st.floats(-200, 200) | st.integers(-5, 100), max_size=10), max_size=2)
        | st.fixed_dictionaries(
            {
                "size": st.lists(st.integers(-1, 100), max_size=3) | json_values,
                "counts": st.text(max_size=12) | st.lists(st.integers(-3, 7000), max_size=4),
            }
        )
        | json_values,
    },
)
image = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(0, 3) | json_values,
        "file_name": st.sampled_from(["images/a.png", "nope.png", "", "images"]) | json_values,
        "width": st.sampled_from([W, 5]) | json_values,
        "height": st.sampled_from([H, 5]) | json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=st.fixed_dictionaries(
        {
            "images": st.lists(image | json_values, max_size=4),
            "annotations": st.lists(annotation | json_values, max_size=5),
            "categories": st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.sampled_from([1, 3, 18]) | json_values,
                        "name": st.sampled_from(["person", "car"]) | json_values,
                    }
                )
                | json_values,
                max_size=3,
            ),
        }
    )
    | json_values
)
def test_fuzzed_coco_json_gives_records_or_a_data_error(tmp_path_factory: pytest.TempPathFactory, doc: object) -> None:
    from perception.train.coco import read_coco
    from perception.train.errors import DataError
    from perception.train.sources import FileSource

    root = tmp_path_factory.mktemp("fuzz")
    _images(root / "images")
    path = root / "x.json"
    path.write_text(json.dumps(doc))
    try:
        records = read_coco(path)
    except DataError as e:
        assert str(path) in str(e)
        return
    source = FileSource(records, W, H, seed=0, shuffle=False)
    for k in range(len(source)):
        source.sample(k)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from("0123456789 .-e\nnaif+_٣"), max_size=60))
def test_fuzzed_yolo_labels_give_records_or_a_data_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    from perception.train.errors import DataError
    from perception.train.labelled import read_yolo_seg
    from perception.train.sources import FileSource

    root = tmp_path_factory.mktemp("fuzz")
    _images(root / "images")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text(text)
    try:
        records = read_yolo_seg(root)
    except DataError as e:
        assert str(root) in str(e)
        return
    FileSource(records, W, H, seed=0).sample(0)


def test_specs_parse_with_weights_and_name_what_is_wrong(tmp_path: Path) -> None:
    from perception.train.datasets import SourceSpec, parse_specs
    from perception.train.errors import DataError

    assert parse_specs("synth, yolo-seg:data/robot@0.5,coco:x.json@2") == (
        SourceSpec("synth"),
        SourceSpec("yolo-seg", "data/robot", 0.5),
        SourceSpec("coco", "x.json", 2.0),
    )
    assert parse_specs(["drive:d.mcap"], base=tmp_path) == (SourceSpec("drive", str(tmp_path / "d.mcap")),)
    for text, problem in [
        ("lidar:x", "kind must be one of synth, shapes, yolo-seg, coco, drive, got 'lidar'"),
        ("coco", "coco needs a path"),
        ("synth:x", "synth takes no path"),
        ("synth@lots", "must be a number, got 'lots'"),
        ("synth@0", "must be > 0"),
        ("", "no data"),
    ]:
        with pytest.raises(DataError, match=problem.replace("(", r"\(")):
            parse_specs(text)


class _Const:
    """A source whose samples say which source they came from (the image's value)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def sample(self, index: int):  # type: ignore[no-untyped-def]
        import torch

        return torch.full((3, 4, 4), self.value), {}


def test_mixed_sources_follow_their_weights() -> None:
    from perception.train.sources import MixedSource

    mix = MixedSource([_Const(0.0), _Const(1.0), _Const(2.0)], [6.0, 3.0, 1.0], seed=4)
    drawn = [int(mix.sample(i)[0][0, 0, 0]) for i in range(1000)]
    assert drawn == [mix.which(i) for i in range(1000)]
    share = np.bincount(drawn, minlength=3) / 1000
    assert np.all(np.abs(share - [0.6, 0.3, 0.1]) <= 0.05), share
    assert drawn == [
        int(MixedSource([_Const(0.0), _Const(1.0), _Const(2.0)], [6, 3, 1], 4).sample(i)[0][0, 0, 0])
        for i in range(1000)
    ]  # reproducible


def test_validation_split_is_stable_and_never_empty(tmp_path: Path) -> None:
    from perception.train.labelled import LabelledImage
    from perception.train.sources import split

    images = [LabelledImage(f"img{i}", 8, 8, ()) for i in range(200)]
    fit, val = split(images, 0.1)
    assert len(fit) + len(val) == 200 and 10 <= len(val) <= 30
    fit2, val2 = split(images[:150] + [LabelledImage("new", 8, 8, ())], 0.1)
    assert {v.where for v in val2} - {"new"} == {v.where for v in val if v.where in {i.where for i in images[:150]}}
    assert [len(p) for p in split(images[:2], 0.01)] == [1, 1]


def test_train_on_a_yolo_seg_folder_and_a_coco_json_mixed(tiny_card: Path, tmp_path: Path) -> None:
    from perception.train.loop import train

    root, _, _ = write_yolo(tmp_path / "set")
    coco, _, _ = write_coco(tmp_path / "coco")
    result = train(
        tiny_card,
        steps=2,
        progress=False,
        run_dir=str(tmp_path / "runs"),
        data=f"yolo-seg:{root}@1,coco:{coco}@1,shapes@1",
    )
    assert result["data"][0] == f"yolo-seg:{root} (weight 1): 2 training and 1 validation images"
    assert "mask_ap" in result["metrics"] and np.isfinite(result["metrics"]["val_loss"])


def test_bad_data_on_the_command_line_is_one_line(
    tiny_card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from perception.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [], "categories": []}')
    for spec, problem in [
        (f"coco:{bad}", "empty dataset"),
        ("lidar:x", "kind must be one of"),
        (f"yolo-seg:{tmp_path}", "not a YOLO-seg folder"),
    ]:
        assert main(["train", "--card", str(tiny_card), "--data", spec, "--steps", "1", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("perception train: error:") and problem in err[0], err


def test_a_validation_set_of_its_own_is_all_that_is_held_out(tmp_path: Path) -> None:
    """``--val``: the training folder is used whole (no split), the held-out samples are the
    validation folder's images at the model size, unaugmented, then the synthetic held-out ones."""
    from perception.bus.classes import CLASSES
    from perception.train.data import DataConfig
    from perception.train.datasets import parse_specs
    from perception.train.sources import build_training_data

    root, _, _ = write_yolo(tmp_path / "train")
    val_root, _, val_truth = write_yolo(tmp_path / "val")
    cfg = DataConfig(eval_images=8, scale_min=0.5, scale_max=2.0, flip=0.5, photometric=1.0)
    data = build_training_data(
        cfg, parse_specs(f"yolo-seg:{root}"), W, H, CLASSES, val_specs=parse_specs(f"yolo-seg:{val_root},shapes")
    )
    assert data.summary[0] == f"yolo-seg:{root} (weight 1): 3 training and 0 validation images"
    assert data.summary[1:] == (f"validation yolo-seg:{val_root}: 3 samples", "validation shapes: 4 samples")
    assert len(data.held_out) == 7
    for i, truth in enumerate(val_truth):  # the images as written, no augmentation
        _, target = data.held_out.sample(i)
        assert np.array_equal(target["masks"].numpy().astype(np.uint8), np.stack(truth)), i
    with pytest.raises(Exception, match="not a YOLO-seg folder"):
        build_training_data(
            cfg, parse_specs(f"yolo-seg:{root}"), W, H, CLASSES, val_specs=parse_specs(f"yolo-seg:{tmp_path}")
        )
