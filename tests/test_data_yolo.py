"""A data set in the YOLO format (``--yolo-data data.yaml``; keras_frcnn.data.yolo_folder): the
layouts Ultralytics and Roboflow write, the label files' faults, and a run trained and evaluated on it."""

import json
import logging
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_data_fixtures import examples, write_image, write_turned_photo, write_yolo

from conftest import tiny_config

from keras_frcnn.data import DataError, load_yolo
from keras_frcnn.data.yolo_folder import default_splits
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)

NAMES = ("cat", "dog")
SPLITS = {
    "train": {"a": ["0 0.5 0.5 0.5 0.25", "1 0.1 0.2 0.3 0.2 0.3 0.6"],  # a box; a segment of 3 points
              "b": None, "c": []},  # no label file, an empty one: negatives
    "val": {"d": ["1 0.25 0.25 0.5 0.5"]},
}


def _objects(source):
    return {os.path.basename(e["image/filename"].decode()): (e["objects/bbox"], e["objects/label"].tolist())
            for e in examples(source)}


@pytest.mark.parametrize("layout", ["ultralytics", "roboflow"])
def test_the_layouts_ultralytics_and_roboflow_write_read_boxes_segments_and_negatives(tmp_path, layout):
    data = write_yolo(tmp_path, SPLITS, NAMES, layout=layout)
    assert default_splits(data) == ("train", "val")
    train_source = load_yolo(data, "train")
    assert train_source.class_names == NAMES and not train_source.problems
    objects = _objects(train_source)
    np.testing.assert_allclose(objects["a.jpg"][0], [[0.375, 0.25, 0.625, 0.75], [0.2, 0.1, 0.6, 0.3]], atol=1e-6)
    assert objects["a.jpg"][1] == [0, 1] and objects["b.jpg"][1] == objects["c.jpg"][1] == []
    assert _objects(load_yolo(data, "val"))["d.jpg"][1] == [1]
    assert load_yolo(data, "train+val").num_examples == 4
    assert [len(load_yolo(data, split).files) for split in ("train[:2]", "train[2:]", "train[:67%]")] == [2, 1, 2]
    with pytest.raises(DataError, match=r"split 'test': not one of its splits \['train', 'val'\]"):
        load_yolo(data, "test")


def test_lists_of_image_paths_pose_lines_and_a_data_set_without_val(tmp_path):
    """A split given as a .txt list of image paths (COCO's train2017.txt; lines written on Windows,
    in other letter case, absolute paths of another machine), pose lines (their box) and a YAML
    without val (train[:90%] -> train[90%:])."""
    data = write_yolo(tmp_path, {"train": {f"i{n}": ["0 0.5 0.5 0.2 0.4 0.5 0.5 2 0.6 0.6 1"] for n in range(10)}},
                      ["person"], yaml_text="train: train.txt\nkpt_shape: [2, 3]\nnames: [person]\n")
    (tmp_path / "train.txt").write_text("./images/train/I0.JPG\nimages\\train\\i1.jpg\n"
                                        "/content/drive/MyDrive/set/images/train/i2.jpg\n"
                                        "D:\\data\\set\\images\\train\\i3.jpg\n" + "".join(
                                            f"{tmp_path}/images/train/i{n}.jpg\n" for n in range(4, 10)))
    assert default_splits(data) == ("train[:90%]", "train[90%:]")
    source = load_yolo(data, "train[:90%]")
    assert source.num_examples == 9 and not source.problems
    np.testing.assert_allclose(_objects(source)["i0.jpg"][0], [[0.3, 0.4, 0.7, 0.6]], atol=1e-6)
    assert _objects(load_yolo(data, "train[90%:]")).keys() == {"i9.jpg"}


def test_split_folders_as_ultralytics_lists_them(tmp_path):
    """A split folder linked from elsewhere finds its labels where it points (Ultralytics resolves
    it); hidden files and folders (.ipynb_checkpoints) and GIFs are not images of the set;
    "validation" is val, and without val the set is evaluated on test."""
    elsewhere = tmp_path / "elsewhere"
    write_yolo(elsewhere, {"train": {"a": ["0 0.5 0.5 0.2 0.2"], "b": ["1 0.5 0.5 0.2 0.2"]}}, NAMES)
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    os.symlink(elsewhere / "images" / "train", root / "images" / "train")
    write_image(str(elsewhere / "images" / "train" / ".ipynb_checkpoints" / "a-checkpoint.jpg"), 20, 20)
    write_image(str(elsewhere / "images" / "train" / "._a.jpg"), 20, 20)
    write_image(str(elsewhere / "images" / "train" / "c.gif"), 20, 20, fmt="GIF")
    (root / "data.yaml").write_text("train: images/train\nvalidation: images/train\nnames: [cat, dog]\n")
    objects = _objects(load_yolo(root / "data.yaml", "val"))
    assert sorted(objects) == ["a.jpg", "b.jpg"] and objects["b.jpg"][1] == [1]
    assert default_splits(root / "data.yaml") == ("train", "val")
    (root / "data.yaml").write_text("train: images/train\ntest: images/train\nnames: [cat, dog]\n")
    assert default_splits(root / "data.yaml") == ("train", "test")


def test_darknet_s_obj_data_and_a_folder_with_classes_txt(tmp_path):
    """CVAT's "YOLO 1.1" export (obj.data, obj.names, train.txt of data/obj_train_data/a.jpg, labels
    beside their images) and Label Studio's (images/, labels/, classes.txt, no split): given as the
    file or the folder."""
    cvat = tmp_path / "cvat"
    for key, folder in (("train", "obj_train_data"), ("valid", "obj_valid_data")):
        for n in range(3):
            write_image(str(cvat / folder / f"{key}{n}.jpg"), 60, 80, seed=n)
            (cvat / folder / f"{key}{n}.txt").write_text(f"{n % 2} 0.5 0.5 0.25 0.5\n")
        (cvat / f"{key}.txt").write_text("".join(f"data/{folder}/{key}{n}.jpg\n" for n in range(3)))
    (cvat / "obj.names").write_text("cat\ndog\n")
    (cvat / "obj.data").write_text("classes = 2\nTrain = data/train.txt\nValidation = data/valid.txt\n"
                                   "names = data/obj.names\nbackup = backup/\n")  # (CVAT: subsets as typed)
    for given in (cvat, cvat / "obj.data"):
        assert default_splits(given) == ("train", "val")
        objects = _objects(load_yolo(given, "val"))
        assert sorted(objects) == ["valid0.jpg", "valid1.jpg", "valid2.jpg"] and objects["valid1.jpg"][1] == [1]
        np.testing.assert_allclose(objects["valid0.jpg"][0], [[0.25, 0.375, 0.75, 0.625]], atol=1e-6)
    studio = tmp_path / "studio"
    for n in range(10):
        write_image(str(studio / "images" / f"{n}.jpg"), 60, 80, seed=n)
        (studio / "labels").mkdir(exist_ok=True)
        (studio / "labels" / f"{n}.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (studio / "classes.txt").write_text("cat\ndog\n")
    (studio / "notes.json").write_text("{}")
    assert default_splits(studio) == ("train[:90%]", "train[90%:]")
    source = load_yolo(studio, "train[:90%]")
    assert source.num_examples == 9 and source.class_names == NAMES and not source.problems
    assert _objects(source)["0.jpg"][1] == [1]
    with pytest.raises(DataError, match="not a YOLO data set"):
        load_yolo(studio / "images")


def test_a_label_file_that_cannot_be_read_whole_skips_its_image_named_and_counted(tmp_path, caplog):
    """As Ultralytics does: pixel coordinates, a class beyond the names, words, a line of six
    numbers skip the image (part of its objects would teach the others as background); duplicates
    are kept once, boxes reaching out are clipped, boxes of no width left out."""
    lines = {"ok": ["0 0.5 0.5 0.2 0.2"], "pixels": ["0 40 30 20 10"], "class": ["2 0.5 0.5 0.2 0.2"],
             "words": ["cat 0.5 0.5 0.2 0.2"], "six": ["0 0.5 0.5 0.2 0.2 0.1"], "negative": ["0 0.5 0.5 -0.1 0.2"],
             "twice": ["1 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2 0.2"], "edge": ["0 0.02 0.5 0.1 0.2"],
             "tall": ["0 0.5 0.5 0.2 1.005", "1 0.9 0.1 1.02 0.1 1.02 0.3 0.9 0.3"],  # (Ultralytics: 1 % out)
             "flat": ["0 0.5 0.5 0 0.2", "1 0.5 0.5 0.4 0.4"], "corrupt": ["0 0.5 0.5 0.2 0.2"]}
    data = write_yolo(tmp_path, {"train": lines}, NAMES)
    (tmp_path / "images" / "train" / "corrupt.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_yolo(data, "train")
    assert source.problems == {"malformed label file": 5, "duplicate label": 1, "box clipped": 3,
                               "degenerate box": 1, "bad image file": 1}
    objects = _objects(source)
    assert sorted(objects) == ["edge.jpg", "flat.jpg", "ok.jpg", "tall.jpg", "twice.jpg"]
    np.testing.assert_allclose(objects["tall.jpg"][0], [[0.0, 0.4, 1.0, 0.6], [0.1, 0.9, 0.3, 1.0]], atol=1e-6)
    np.testing.assert_allclose(objects["edge.jpg"][0], [[0.4, 0.0, 0.6, 0.07]], atol=1e-6)
    assert objects["twice.jpg"][1] == [1] and objects["flat.jpg"][1] == [1]
    label = tmp_path / "labels" / "train"
    for name, why in (("pixels", "coordinates outside [0, 1] (40 30 20 10): YOLO labels are normalised"),
                      ("class", "class 2 is not one of the 2 class ids 0 .. 1"), ("words", "not numbers"),
                      ("six", "6 numbers: a box line has 5"),
                      ("negative", "a negative width or height (0.5 0.5 -0.1 0.2): YOLO labels are x_center")):
        assert f"{label / name}.txt: line 1: {why}" in caplog.text
    with pytest.raises(DataError, match=f"{label / 'class'}.txt: line 1: class 2"):
        load_yolo(data, "train", strict=True)


def test_boxes_of_a_turned_photo_are_on_it_as_shown_and_land_on_its_stored_pixels(tmp_path):
    """Ultralytics reads images with their EXIF orientation applied, so labels are normalised to
    the image as shown: turned onto the stored pixels TensorFlow decodes."""
    data = write_yolo(tmp_path, {"train": {}}, NAMES)
    for orientation in (3, 6, 8):
        (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "images" / "train" / f"o{orientation}.jpg",
                                                               orientation)
        x, y = (c0 + c1 + 1) / 2 / width, (r0 + r1 + 1) / 2 / height
        w, h = (c1 + 1 - c0) / width, (r1 + 1 - r0) / height
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "train" / f"o{orientation}.txt").write_text(f"1 {x} {y} {w} {h}\n")
    for name, (boxes, _) in _objects(load_yolo(data, "train")).items():
        np.testing.assert_allclose(boxes, [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6, err_msg=name)


def test_a_data_yaml_that_cannot_be_used_is_an_error_naming_it_and_its_field(tmp_path):
    write_image(str(tmp_path / "images" / "train" / "a.jpg"), 20, 20)
    path = tmp_path / "data.yaml"
    cases = {"train: images/train\nnames: {0: a, 2: b}\n": "names: the keys must be the class ids 0 .. 1",
             "train: images/train\nnames: [a, b, a]\n": r"names: \['a'\] named twice",
             "train: images/train\nnc: 3\nnames: [a, b]\n": "nc: 3, but names has 2",
             "train: images/train\n": "names: give the class names",
             "train: images/nowhere\nnames: [a]\n": "train: images/nowhere is not a folder or a .txt file",
             "path: elsewhere\ntrain: images/other\nnames: [a]\n": "path: elsewhere is not a folder",
             "names: [a]\n": "not a YOLO data YAML",
             "train: [images/train\n": "malformed YAML"}
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(DataError, match=f"{path}: {message}"):
            load_yolo(path, "train")
    # A path of the machine the set was made on (a notebook's), the YAML now beside the images;
    # names keyed by quoted ids
    path.write_text("path: /content/datasets/gone\ntrain: images/train\nnames: {'0': a}\n")
    assert load_yolo(path, "train").class_names == ("a",)
    with pytest.raises(DataError, match="data.yaml: YOLO data YAML file not found"):
        load_yolo(tmp_path / "nowhere" / "data.yaml")
    (tmp_path / "obj.names").write_text("a\nb\n")
    for text, message in (("train = train.txt\n", "names: missing"),
                          ("classes = 3\nnames = obj.names\ntrain = train.txt\n",
                           "classes = 3, but obj.names names 2")):
        (tmp_path / "obj.data").write_text(text)
        with pytest.raises(DataError, match=f"{tmp_path / 'obj.data'}: {message}"):
            load_yolo(tmp_path / "obj.data")


# (~14 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); which images each split
# holds is tested above, and train.py's run on a folder source, evaluated on its held-out split and
# evaluated again from config.json, by default in test_data_csv and test_data_combined.)
@pytest.mark.slow
def test_a_run_trains_on_train_evaluates_on_val_and_evaluate_reads_it_again(tmp_path, capsys):
    """``train.py --yolo-data`` (Roboflow's layout): trained on train/, evaluated on valid/ with
    COCO AP (Ultralytics' mAP50-95) as the headline, at step 2 too (--eval-every; the best kept); config.json keeps the YAML, so evaluate
    without data options evaluates valid/ again, and --split test the test images."""
    rng = np.random.default_rng(0)

    def boxes(count):
        return {f"im{n}": [f"{n % 2} {rng.uniform(0.3, 0.7):.4f} {rng.uniform(0.3, 0.7):.4f} 0.3 0.3"]
                for n in range(count)}

    data = write_yolo(tmp_path / "set", {"train": boxes(6), "val": boxes(3), "test": boxes(2)}, NAMES,
                      layout="roboflow")
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    args = ["--config", str(tmp_path / "tiny.json"), "--yolo-data", data, "--out", str(tmp_path / "run"),
            "--schedule", "joint", "--steps", "6", "--verbose", "0"]
    assert train.main(args + ["--classes", "a,b"]) == 2
    assert "--classes goes with --voc-dir, not with this run's data (--yolo-data)" in capsys.readouterr().err
    assert train.main(args + ["--log-every", "1", "--eval-every", "2"]) == 0  # (and evaluated at steps 2 and 4;
    # step 6, the last, only once: as the end's evaluation)
    out = capsys.readouterr().out
    assert f"data: training on YOLO {data} train (6 images); evaluating on YOLO {data} val (3 images)" in out
    assert "COCO AP@[.5:.95]" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("   joint step")] == [
        "   joint step 2", "   joint step 4"]
    # One events file a folder (a writer a call made one an evaluation: ~70 in a VOC run's eval folder).
    logs = tmp_path / "run" / "logs"
    files = [list(folder.iterdir()) for folder in (logs / "joint" / "eval", logs / "eval")]
    assert [len(f) for f in files] == [1, 1]
    events = tf.compat.v1.train.summary_iterator(str(files[0][0]))
    assert {(v.tag, e.step) for e in events for v in e.summary.value} == {
        (tag, step) for tag in ("mAP_voc07", "mAP_area", "coco_AP", "coco_AP50") for step in (2, 4)}
    # The best evaluation (step 2's, or the end's where it is higher) kept as best.keras, named in metrics.json.
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["stage"] == "joint" and best["step"] in (2, 4, 6) and best["metric"] == "COCO AP"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best"] == best
    assert f"best so far: COCO AP {best['value']:.4f} (joint step 2)" in out
    assert keras.models.load_model(tmp_path / "run" / "best.keras").class_names == NAMES
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["data_paths"], config["train_split"], config["test_split"]) == (
        "yolo", [data], "train", "val")
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras")]) == 0
    assert f"on YOLO {data} val, 3 images" in capsys.readouterr().out
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras"), "--split", "test"]) == 0
    assert f"on YOLO {data} test, 2 images" in capsys.readouterr().out
