"""Annotation files that are hostile or merely odd: each reader refuses them with the file named,
or skips the entry with a counted warning; none hangs, crashes, or reads one value as another."""

import os

import numpy as np
import pytest
from test_data_fixtures import LABEL_MAP, tf_example

from keras_frcnn.data import DataError
from keras_frcnn.data import coco_json, csv_files, labelme_folder, tfrecord_files, via_json, yolo_folder
from keras_frcnn.data.problems import DataProblems, read_json


def test_csv_class_ids_of_one_number_sort_by_their_text():
    """``1`` and ``01`` were one sort key: their order followed Python's per-process string
    hashing (a resume in another process swapped the labels). Non-ASCII digits are names."""
    names = ["01", "1", "²", "10", "b", "2"]
    orders = {tuple(sorted(order, key=csv_files._in_order)) for order in (names, names[::-1], sorted(names))}
    assert orders == {("01", "1", "2", "10", "b", "²")}


def test_yolo_names_yaml_reads_as_other_types_are_refused(tmp_path):
    path = tmp_path / "data.yaml"
    for names, shown in (([True, "dog"], "True"), ([None], "None"), ([0.1], "0.1"), ([["a"] * 3, "dog"], "list")):
        with pytest.raises(DataError, match=rf"data.yaml: names\[0\]: {shown}.*quote it"):
            yolo_folder._class_names(str(path), {"names": names})
    assert yolo_folder._class_names(str(path), {"names": ["cat", 7]}) == ("cat", "7")
    (tmp_path / "classes.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="classes.txt: the class names cannot be read.*UTF-8"):
        yolo_folder._names_file(str(tmp_path / "classes.txt"))


def test_yolo_link_loops_fifos_are_neither_walked_twice_nor_waited_on(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (images / name).write_bytes(b"")
    os.symlink(".", images / "again")
    assert sorted(os.path.basename(p) for p in yolo_folder._image_files(str(images))) == ["a.jpg", "b.jpg"]
    from keras_frcnn.data.image_files import check_image

    with pytest.raises(ValueError, match=r"^image file is empty \(0 bytes"):  # (not "corrupt or unreadable")
        check_image(str(images / "a.jpg"))
    os.mkfifo(tmp_path / "b.txt")
    problems = DataProblems("test")
    assert yolo_folder._read_labels(str(tmp_path / "b.txt"), None, problems)[0] is None
    assert problems.counts["unreadable label file"] == 1


def test_json_readers_refuse_fifos_deep_nesting_and_keys_given_twice(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "deep.json").write_text('{"shapes":' + "[" * 100000 + "]" * 100000 + "}")
    (tmp_path / "twice.json").write_text('{"k": {"filename": "a.jpg"}, "k": {"filename": "b.jpg"}}')
    for name, message in (("fifo.json", "not a regular file"), ("deep.json", "nested too deeply"),
                          ("twice.json", "the key 'k' twice")):
        with pytest.raises(ValueError, match=message):
            read_json(str(tmp_path / name))
    with pytest.raises(DataError, match="twice.json: the key 'k' twice"):
        via_json._entries(str(tmp_path / "twice.json"))
    (tmp_path / "coco.json").write_text('{"images":' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(DataError, match="coco.json: malformed JSON .nested too deeply"):
        coco_json.load_coco_json(str(tmp_path / "coco.json"), str(tmp_path))


def test_flags_and_names_written_as_text_or_null_are_read_as_meant():
    problems = DataProblems("test")
    assert [coco_json._flag(v, "a.json", "iscrowd", problems) for v in (0, 1, "0", "1", "false", "true", True)] \
        == [False, True, False, True, False, True, True]
    assert coco_json._flag("maybe", "a.json", "iscrowd", problems) is False and problems.counts["malformed annotation"] == 1
    assert [labelme_folder._ticked(v) for v in ("false", "0", "", "true", 1, 0, None)] == [False] * 3 + [True, True, False, False]
    assert via_json._class_of({"class": None}) is None and via_json._class_of({"class": "dog"}) == "dog"
    with pytest.raises(ValueError, match="outside the 64-bit ids"):
        coco_json._whole(2**63)
    assert coco_json._whole("-12") == -12


def test_tfrecord_class_text_that_is_not_utf8_skips_its_record():
    """The graph looks classes up by these bytes: a text read with replacement characters became
    label -1 (background) in training and a crash in evaluation."""
    record = tf_example("a.png", boxes=[[0.1, 0.1, 0.5, 0.5]], image__object__class__text=[b"caf\xe9"])
    assert tfrecord_files.record_facts(record)[0] == "a class text that is not UTF-8"
    good = tfrecord_files.record_facts(tf_example("a.png", boxes=[[0.1, 0.1, 0.5, 0.5]], texts=["café"]))
    assert good[0] == "" and good[2] == ["café"]


def test_a_label_map_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "label_map.pbtxt"
    path.write_text(LABEL_MAP, encoding="utf-8-sig")
    assert tfrecord_files.read_label_map(str(path)) == tfrecord_files.read_label_map(str(_plain(tmp_path)))


def _plain(tmp_path):
    path = tmp_path / "plain.pbtxt"
    path.write_text(LABEL_MAP)
    return path


def test_a_box_with_its_corners_reversed_is_named_so():
    """A box of reversed corners (a hand edit, a negative width) was called one of "no width or
    height"."""
    from keras_frcnn.data.problems import DataProblems, box_in_image

    problems = DataProblems("test")
    assert box_in_image((60, 10, 20, 40), 50, 80, problems, "a.xml", "a box") is None
    assert box_in_image((20, 10, 20, 40), 50, 80, problems, "a.xml", "a box") is None
    assert problems.counts["degenerate box"] == 2
    assert problems.first["degenerate box"] == "a.xml: a box has its corners the wrong way round (max below min)"


def test_numbers_no_float_holds_lists_that_are_not_lists_and_deep_yaml_are_named_not_tracebacks(tmp_path):
    """Cases an annotation fuzzing run (2,249 mutated files over the seven readers) found raising
    TypeError, OverflowError, RecursionError or TensorFlow's ValueError: a JSON integer of 400
    digits (Python reads it whole; no float holds it), 'annotations' / 'regions' a number, an
    image id 1e308 written as a float, a data.yaml nested 500 deep. Each is now refused naming its
    file, or its entry skipped with a counted warning."""
    import json

    from test_data_fixtures import write_coco, write_image

    from keras_frcnn.data import load_coco_json, load_labelme, load_via, load_yolo

    huge = 10 ** 400
    images = [{"id": 1, "file_name": "a.jpg", "size": (50, 80)}, {"id": 2, "file_name": "b.jpg", "size": (50, 80)}]
    box = {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0}
    json_path, image_dir = write_coco(tmp_path / "coco", images, [
        {**box, "id": 1, "image_id": 1, "bbox": [5, huge, 20, 20]},  # skipped, counted
        {**box, "id": 2, "area": huge}], [{"id": 1, "name": "cat"}])  # kept, its area unknown
    source = load_coco_json(json_path, image_dir)
    assert source.problems == {"malformed annotation": 1} and source.num_examples == 2
    data = json.loads(open(json_path).read())
    for key, value, message in (("annotations", 5, "'annotations' is 5, not a list"),
                                ("images", [{"id": 1e308, "file_name": "a.jpg"}], r"1e\+308 is outside the 64-bit ids")):
        with open(json_path, "w") as f:
            json.dump({**data, key: value}, f)
        with pytest.raises(DataError, match=message):
            load_coco_json(json_path, image_dir)

    write_image(tmp_path / "via" / "a.jpg", 50, 80)
    write_image(tmp_path / "via" / "b.jpg", 50, 80)
    rect = {"shape_attributes": {"name": "rect", "x": 5, "y": 5, "width": 20, "height": 20},
            "region_attributes": {"class": "cat"}}
    (tmp_path / "via" / "via.json").write_text(json.dumps({
        "a": {"filename": "a.jpg", "regions": [rect, {**rect, "shape_attributes": {**rect["shape_attributes"],
                                                                                   "x": huge}}]},
        "b": {"filename": "b.jpg", "regions": 5},
        "c": {"filename": "a.jpg", "regions": [rect]}}))
    source = load_via(tmp_path / "via" / "via.json", "all")
    assert source.num_examples == 1 and source.problems == {"malformed region": 2}  # "a" (its x), "b" (5)

    write_image(tmp_path / "labelme" / "a.jpg", 50, 80)
    write_image(tmp_path / "labelme" / "b.jpg", 50, 80)
    shape = {"label": "cat", "shape_type": "rectangle", "points": [[5, 5], [25, 25]]}
    (tmp_path / "labelme" / "a.json").write_text(json.dumps(
        {"shapes": [shape, {**shape, "points": [[huge, 5], [25, 25]]}], "imagePath": "a.jpg"}))
    (tmp_path / "labelme" / "b.json").write_text(json.dumps(
        {"shapes": [shape], "imagePath": "b.jpg", "imageHeight": huge, "imageWidth": 80}))
    source = load_labelme(tmp_path / "labelme", "all")
    assert source.num_examples == 1 and source.problems == {"malformed shape": 1}

    (tmp_path / "deep.yaml").write_text("train: images\nnames: [cat]\nx: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(DataError, match="deep.yaml: malformed YAML .nested too deeply."):
        load_yolo(tmp_path / "deep.yaml", "train")


def test_a_box_too_thin_for_float32_is_skipped_counted_not_stored_flat(tmp_path):
    """A box of some width in the file (1e-9 pixels) but none once normalised in float32 passed the
    readers' checks (made in float64) and reached the data set flat, uncounted; it is a degenerate
    box now, skipped and counted. VOC's pixel numbers are not so read: equal corners are a pixel."""
    from test_data_fixtures import examples, write_coco, write_image

    from keras_frcnn.data import load_coco_json, load_csv

    images = [{"id": 1, "file_name": "a.jpg", "size": (50, 80)}]
    box = {"image_id": 1, "category_id": 1, "iscrowd": 0}
    json_path, image_dir = write_coco(tmp_path / "coco", images, [
        {**box, "id": 1, "bbox": [10, 10, 1e-9, 20]}, {**box, "id": 2, "bbox": [10, 10, 20, 20]}],
        [{"id": 1, "name": "cat"}])
    source = load_coco_json(json_path, image_dir)
    assert source.problems == {"degenerate box": 1}
    assert [len(e["objects/bbox"]) for e in examples(source)] == [1]
    write_image(tmp_path / "csv" / "a.jpg", 50, 80)
    (tmp_path / "csv" / "ann.csv").write_text("a.jpg,8,5,8.000000001,25,cat\na.jpg,8,5,30,25,cat\n")
    source = load_csv(tmp_path / "csv" / "ann.csv", "all")
    assert source.problems == {"degenerate box": 1}
    (kept,) = examples(source)
    np.testing.assert_allclose(kept["objects/bbox"], [[0.1, 0.1, 0.5, 0.375]], rtol=1e-6)
