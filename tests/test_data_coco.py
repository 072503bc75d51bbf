"""COCO instances JSON: contiguous labels, xywh conversion, crowd boxes, bad data."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from test_data_fixtures import examples, write_coco, write_turned_photo

from keras_frcnn.config import preset
from keras_frcnn.data import DataError, eval_dataset, load_coco_json, train_dataset

# Listed out of id order on purpose: labels follow category ids, not the file's order.
CATEGORIES = [{"id": 7, "name": "train"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def _annotation(number, image_id, category_id, bbox, iscrowd=0):
    return {"id": number, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "iscrowd": iscrowd, "area": 1.0}


@pytest.fixture
def coco(tmp_path):
    images = [
        {"id": 42, "file_name": "b.jpg", "size": (50, 100)},
        {"id": 7, "file_name": "a.jpg", "size": (40, 60)},
        {"id": 9, "file_name": "empty.jpg", "size": (30, 30)},                 # no annotations
        {"id": 11, "file_name": "missing.jpg", "size": (30, 30), "image": False},
        {"id": 12, "file_name": "corrupt.jpg", "size": (30, 30), "image": b"\xff\xd8 not a jpeg"},
        {"id": 13, "file_name": "c.jpg", "size": (20, 20), "height": 99, "width": 99},  # wrong size
    ]
    annotations = [
        _annotation(1, 7, 3, [10, 5, 20, 15]),                  # car
        _annotation(2, 7, 1, [0, 0, 60, 40], iscrowd=1),        # crowd of people
        _annotation(3, 42, 7, [50.5, 10.25, 30, 20]),           # train
        _annotation(4, 42, 99, [1, 1, 5, 5]),                   # unknown category
        _annotation(5, 1234, 1, [1, 1, 5, 5]),                  # unknown image
        _annotation(6, 42, 1, [5, 5, 0, 10]),                   # degenerate (width 0)
        _annotation(7, 42, 1, [90, 40, 20, 20]),                # clipped at right / bottom
        _annotation(8, 42, 1, [200, 10, 5, 5]),                 # outside
        _annotation(9, 42, 1, [1, 2, "x"]),                     # malformed
        _annotation(12, 42, 1, [True, 10, 30, 20]),             # malformed (JSON's true, not 1)
        _annotation(10, 11, 1, [1, 1, 5, 5]),
        _annotation(11, 13, 1, [2, 4, 10, 8]),
    ]
    return write_coco(tmp_path, images, annotations, CATEGORIES)


def test_coco_end_to_end(coco, caplog):
    json_path, image_dir = coco
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_coco_json(json_path, image_dir)
    assert source.class_names == ("person", "car", "train")  # ordered by category id 1, 3, 7
    got = examples(source)
    # In image id order, bad image files skipped, the unannotated image kept as a negative.
    assert [e["image/id"] for e in got] == [7, 9, 13, 42]
    assert [e["image/filename"].decode() for e in got] == ["a.jpg", "empty.jpg", "c.jpg", "b.jpg"]
    assert source.problems == {"unknown class": 1, "unknown image id": 1, "degenerate box": 1,
                               "box clipped": 1, "box outside the image": 1, "malformed annotation": 2,
                               "bad image file": 1, "missing image file": 1, "size mismatch": 1}

    a, empty, c, b = got
    np.testing.assert_array_equal(a["objects/label"], [1, 0])
    np.testing.assert_array_equal(a["objects/is_difficult"], [False, True])  # iscrowd
    np.testing.assert_array_equal(a["objects/bbox"], np.float32([[5 / 40, 10 / 60, 20 / 40, 30 / 60], [0, 0, 1, 1]]))
    np.testing.assert_array_equal(b["objects/label"], [2, 0])
    np.testing.assert_array_equal(b["objects/bbox"], np.float32([[10.25 / 50, 50.5 / 100, 30.25 / 50, 80.5 / 100],
                                                                 [40 / 50, 90 / 100, 1, 1]]))
    assert empty["objects/bbox"].shape == (0, 4)
    np.testing.assert_array_equal(c["objects/bbox"], np.float32([[4 / 20, 2 / 20, 12 / 20, 12 / 20]]))
    for name in ("missing.jpg", "corrupt.jpg", "instances.json"):
        assert name in caplog.text


def test_ids_written_as_floats_or_strings_read_as_integers(coco):
    """Tools that write JSON through pandas or from spreadsheets store ids as ``3.0`` or ``"3"``:
    the same data, not a file of unknown categories; ``3.5`` or ``true`` is no id."""
    json_path, image_dir = coco
    expected = examples(load_coco_json(json_path, image_dir))
    with open(json_path) as f:
        data = json.load(f)
    for image in data["images"]:
        image["id"] = float(image["id"])
    for annotation in data["annotations"]:
        annotation["image_id"] = str(annotation["image_id"])
        annotation["category_id"] = float(annotation["category_id"])
    data["categories"][0]["id"] = "7"
    data["annotations"][0]["category_id"] = 3.5  # a.jpg's car
    data["annotations"][2]["category_id"] = True  # b.jpg's train
    with open(json_path, "w") as f:
        json.dump(data, f)
    source = load_coco_json(json_path, image_dir)
    assert source.problems["unknown class"] == 3
    got = examples(source)
    assert [e["image/id"] for e in got] == [e["image/id"] for e in expected]
    assert got[0]["objects/label"].tolist() == [0] and got[3]["objects/label"].tolist() == [0]
    np.testing.assert_array_equal(got[2]["objects/bbox"], expected[2]["objects/bbox"])


def test_lvis_entries_with_only_a_coco_url_find_their_images(tmp_path, caplog):
    """LVIS's JSON is COCO's but its images have no ``file_name``, only a ``coco_url``: the URL's
    file, in the image folder or in its COCO folder (train2017/) there. Its federated lists are
    not read, and that is said (evaluation is COCO's)."""
    (tmp_path / "images" / "train2017").mkdir(parents=True)
    images = [{"id": 1, "file_name": "000000000001.jpg", "size": (40, 60)},
              {"id": 2, "file_name": "train2017/000000000002.jpg", "size": (50, 30)}]
    annotations = [_annotation(1, 1, 7, [1, 1, 10, 10]), _annotation(2, 2, 1, [2, 2, 5, 5])]
    json_path, image_dir = write_coco(tmp_path, images, annotations, CATEGORIES)
    with open(json_path) as f:
        data = json.load(f)
    for entry, folder in zip(data["images"], ("val2017", "train2017")):
        name = entry.pop("file_name").split("/")[-1]
        entry["coco_url"] = f"http://images.cocodataset.org/{folder}/{name}"
        entry["neg_category_ids"], entry["not_exhaustive_category_ids"] = [3], []
    data["images"].append({"id": 3, "coco_url": "http://images.cocodataset.org/", "height": 9, "width": 9})
    with open(json_path, "w") as f:
        json.dump(data, f)
    source = load_coco_json(json_path, image_dir)
    got = examples(source)
    assert [e["image/filename"].decode() for e in got] == ["000000000001.jpg", "train2017/000000000002.jpg"]
    assert [e["objects/label"].tolist() for e in got] == [[2], [0]]
    assert source.problems == {"malformed image entry": 1}
    assert "2 images list LVIS's neg_category_ids / not_exhaustive_category_ids, which are not read" in caplog.text


def test_crowd_never_trained_kept_for_evaluation(coco):
    source = load_coco_json(*coco)
    train = next(iter(train_dataset(source, preset("shapes"), batch_size=4, shuffle=False, flip_probability=0.0)))
    by_index = dict(zip(train["index"].numpy(), train["num_gt"].numpy(), strict=True))
    assert by_index[0] == 1  # a.jpg: the crowd box is not a training target
    assert train["gt_classes"].numpy()[0].tolist() == [2, 0]  # car (label 1 + 1), then padding
    evaluation = next(iter(eval_dataset(source, batch_size=1)))
    assert evaluation["num_gt"].numpy().tolist() == [2]
    assert evaluation["gt_difficult"].numpy().tolist() == [[False, True]]
    np.testing.assert_allclose(evaluation["gt_boxes"].numpy()[0, 0], [5, 10, 20, 30], rtol=1e-6)
    assert evaluation["image/id"].numpy().tolist() == [7]


def test_a_json_file_saved_with_a_byte_order_mark_reads_the_same(coco):
    json_path, image_dir = coco
    expected = examples(load_coco_json(json_path, image_dir))
    with open(json_path, encoding="utf-8") as f:
        text = f.read()
    with open(json_path, "w", encoding="utf-8-sig") as f:  # as Windows tools save it
        f.write(text)
    assert [e["image/id"] for e in examples(load_coco_json(json_path, image_dir))] == [e["image/id"] for e in expected]


def test_skip_empty(coco):
    assert [e["image/id"] for e in examples(load_coco_json(*coco, skip_empty=True))] == [7, 13, 42]


def test_malformed_json_is_a_clear_error(tmp_path):
    json_path, image_dir = write_coco(tmp_path, [], [], [], json_text='{"images": [')
    with pytest.raises(DataError, match=r"instances\.json: malformed JSON"):
        load_coco_json(json_path, image_dir)
    json_path, image_dir = write_coco(tmp_path, [], [], [], json_text='{"annotations": []}')
    with pytest.raises(DataError, match=r"instances\.json: not a COCO instances file"):
        load_coco_json(json_path, image_dir)
    with pytest.raises(DataError, match="not found"):
        load_coco_json(tmp_path / "nope.json", image_dir)
    # Two categories of one name (datasets merged by an exporter): refused before training, not
    # when the evaluation or the export tells classes apart by name.
    json_path, image_dir = write_coco(tmp_path, [], [], [{"id": 1, "name": "person"}, {"id": 5, "name": "car"},
                                                         {"id": 9, "name": "person"}])
    with pytest.raises(DataError, match="categories 1 and 9 are both named 'person'"):
        load_coco_json(json_path, image_dir)


def test_strict_raises_on_first_problem(coco):
    with pytest.raises(DataError, match="refers to image id 1234"):
        load_coco_json(*coco, strict=True)


def test_annotation_areas_reach_the_evaluation(coco):
    """COCO's ``area`` travels with each object to evaluation (COCO AP's size bins)."""
    json_path, image_dir = coco
    batches = list(eval_dataset(load_coco_json(json_path, image_dir), batch_size=1))
    first = batches[0]  # a.jpg: the car and the crowd, both written with area 1.0
    assert first["image/filename"].numpy()[0] == b"a.jpg"
    np.testing.assert_array_equal(first["gt_area"].numpy()[0], [1.0, 1.0])


def test_no_usable_image_is_one_clear_error(coco, tmp_path):
    """The image folder given is not the one the JSON's file names are relative to: one error
    saying so, with the first file of each problem, not a traceback deep in the pipeline."""
    json_path, _ = coco
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match=r"instances\.json: no usable example \(6 missing image file, e\.g\. "
                                        r".*elsewhere/a\.jpg: image file is missing; 1 unknown image id, "
                                        r".*are the JSON's file_name values relative to .*elsewhere\?"):
        load_coco_json(json_path, tmp_path / "elsewhere")
    json_path, image_dir = write_coco(tmp_path / "none", [], [], CATEGORIES)
    with pytest.raises(DataError, match=r"instances\.json: no usable example listed$"):
        load_coco_json(json_path, image_dir)


def test_boxes_drawn_on_a_turned_photo_as_shown_land_on_its_stored_pixels(tmp_path):
    """COCO exporters of browser-based tools write the size and boxes of a phone photo as shown
    (EXIF applied); TensorFlow decodes the stored pixels: the boxes are turned onto them."""
    images, annotations = [], []
    for number, orientation in enumerate((1, 5, 6, 7, 8)):
        (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "images" / f"{number}.jpg", orientation)
        images.append({"id": number, "file_name": f"{number}.jpg", "height": int(height), "width": int(width)})
        annotations.append(_annotation(number, number, 1, [int(c0), int(r0), int(c1 - c0 + 1), int(r1 - r0 + 1)]))
    (tmp_path / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))
    source = load_coco_json(tmp_path / "instances.json", tmp_path / "images")
    for example in examples(source):  # each the stored rows 10-24, columns 60-89 of 60 x 100
        np.testing.assert_allclose(example["objects/bbox"], [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6)
    assert source.problems == {"EXIF orientation": 4}
    # Sizes written as text ("60"), as some tools write numbers: read as the numbers.
    (tmp_path / "instances.json").write_text(json.dumps(
        {"images": [{**image, "height": str(image["height"]), "width": str(image["width"])} for image in images],
         "annotations": annotations, "categories": CATEGORIES}))
    source = load_coco_json(tmp_path / "instances.json", tmp_path / "images")
    for example in examples(source):
        np.testing.assert_allclose(example["objects/bbox"], [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6)
    assert source.problems == {"EXIF orientation": 4}
    # A square one is the same size either way: its boxes are taken as stored, and it says so.
    write_turned_photo(tmp_path / "images" / "sq.jpg", 6, stored=(80, 80))
    images.append({"id": 9, "file_name": "sq.jpg", "height": 80, "width": 80})
    (tmp_path / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))
    assert load_coco_json(tmp_path / "instances.json", tmp_path / "images").problems == {"EXIF orientation": 5}


def test_image_folders_default_to_the_json_s_own_or_the_one_holding_its_images(tmp_path):
    """Roboflow's COCO export keeps each split's JSON beside its images (``train/``, ``valid/``):
    without an image folder the JSON's own is read; of several folders, the one holding its images
    (the training images' folder is not the validation JSON's)."""
    sets = {}
    for name, count in (("train", 3), ("valid", 2)):
        json_path, images = write_coco(tmp_path / name, [{"id": i, "file_name": f"{name}_{i}.jpg", "size": (40, 60)}
                                                         for i in range(count)], [], CATEGORIES)
        sets[name] = (shutil.move(json_path, os.path.join(images, "_annotations.coco.json")), images)
    train = load_coco_json(sets["train"][0], None)
    assert train.num_examples == 3 and not train.problems
    valid = load_coco_json(sets["valid"][0], [sets["train"][1], sets["valid"][1]])
    assert valid.num_examples == 2 and not valid.problems
    assert load_coco_json(sets["valid"][0], [None, sets["valid"][1]]).num_examples == 2
    with pytest.raises(DataError, match="nowhere: image directory not found"):
        load_coco_json(sets["valid"][0], str(tmp_path / "nowhere"))
    # COCO's own layout: annotations/instances_val2017.json beside val2017/ (Ultralytics, CVAT:
    # images/val2017/; CVAT's older exports, Supervisely: images/); its person_keypoints_val2017.json as well
    for images_folder, json_name in (("val2017", "instances"), ("images/val2017", "instances"), ("images", "instances"),
                                     ("val2017", "person_keypoints"), ("images/val2017", "person_keypoints")):
        root = tmp_path / f"{images_folder.replace('/', '_')}_{json_name}"
        os.makedirs(root / "annotations")
        json_path = shutil.copy(sets["valid"][0], root / "annotations" / f"{json_name}_val2017.json")
        shutil.copytree(sets["valid"][1], root / images_folder)
        assert load_coco_json(json_path, None).num_examples == 2
        assert load_coco_json(json_path, [sets["train"][1]]).num_examples == 2


def test_file_names_in_other_letter_case_than_on_disk_find_their_images(tmp_path, caplog):
    """A set made on Windows (whose file system ignores case) read on Linux: file_name "IMG_1.jpg",
    the file IMG_1.JPG; "sub\\IMG_3.jpg"; an absolute path of that machine. Read as on disk, said
    once; two files that differ only in case stay missing."""
    json_path, images = write_coco(tmp_path, [{"id": i, "file_name": f"IMG_{i}.jpg", "size": (40, 60)}
                                              for i in range(4)], [], CATEGORIES)
    os.makedirs(os.path.join(images, "sub"))
    os.rename(os.path.join(images, "IMG_3.jpg"), os.path.join(images, "sub", "IMG_3.jpg"))
    data = json.loads(open(json_path).read())
    data["images"][3]["file_name"] = "sub\\IMG_3.jpg"  # (a tool on Windows)
    data["images"][0]["file_name"] = "C:\\Users\\me\\set\\IMG_0.jpg"
    open(json_path, "w").write(json.dumps(data))
    os.rename(os.path.join(images, "IMG_1.jpg"), os.path.join(images, "IMG_1.JPG"))
    os.rename(os.path.join(images, "IMG_2.jpg"), os.path.join(images, "img_2.JPG"))
    shutil.copy(os.path.join(images, "img_2.JPG"), os.path.join(images, "IMG_2.JPEG"))  # (not a case of it)
    with caplog.at_level(logging.WARNING):
        source = load_coco_json(json_path, images)
    assert source.num_examples == 4 and not source.problems
    assert "3 file_name values name their image as written on Windows or macOS" in caplog.text
    assert "1 file_name values are paths of another machine (e.g. C:\\Users\\me\\set\\IMG_0.jpg)" in caplog.text
    shutil.copy(os.path.join(images, "img_2.JPG"), os.path.join(images, "Img_2.jpg"))
    assert load_coco_json(json_path, images).problems == {"missing image file": 1}  # two candidates: missing


def test_a_category_grouping_the_others_without_annotations_is_no_class(tmp_path, caplog):
    """Roboflow's exports put a category 0 named after the project, the others' supercategory,
    with no annotations: not a class. COCO's own "person" (its own supercategory) stays one, with
    or without annotations."""
    categories = [{"id": 0, "name": "pets", "supercategory": "none"},
                  {"id": 1, "name": "cat", "supercategory": "pets"}, {"id": 2, "name": "dog", "supercategory": "pets"},
                  {"id": 3, "name": "person", "supercategory": "person"}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 0}]
    json_path, images = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "size": (40, 60)}], annotations,
                                   categories)
    with caplog.at_level(logging.WARNING):
        source = load_coco_json(json_path, images)
    assert source.class_names == ("cat", "dog", "person")
    assert examples(source)[0]["objects/label"].tolist() == [1]
    assert "category 0 'pets' has no annotations and groups the others" in caplog.text
    annotations.append({"id": 2, "image_id": 1, "category_id": 0, "bbox": [2, 2, 20, 20], "area": 400, "iscrowd": 0})
    json_path, images = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "size": (40, 60)}], annotations,
                                   categories)
    assert load_coco_json(json_path, images).class_names == ("pets", "cat", "dog", "person")  # annotated: a class


def test_a_file_of_the_same_categories_under_other_ids_is_read_in_the_runs_order(tmp_path, caplog):
    """A held-out COCO file numbering the same categories otherwise (ids are a file's own): its
    labels renumbered by name for the run's order, random access and counts alike (before, it was
    refused as "other classes")."""
    from keras_frcnn.data import classes_differ, in_class_order

    images = [{"id": 1, "file_name": "a.jpg", "size": (40, 60)}, {"id": 2, "file_name": "b.jpg", "size": (40, 60)}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 20, 10], "area": 200, "iscrowd": 0},
                   {"id": 2, "image_id": 2, "category_id": 3, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},
                   {"id": 3, "image_id": 2, "category_id": 7, "bbox": [20, 5, 30, 10], "area": 300, "iscrowd": 0}]
    source = load_coco_json(*write_coco(tmp_path, images, annotations,
                                        [{"id": 3, "name": "wide"}, {"id": 7, "name": "square"}]))
    assert source.class_names == ("wide", "square") and source.objects_per_class == (1, 2)
    ordered = in_class_order(source, ("square", "wide"))
    assert ordered.class_names == ("square", "wide") and ordered.objects_per_class == (2, 1)
    assert [e["objects/label"].tolist() for e in examples(ordered)] == [[0], [1, 0]]
    assert ordered.example_at(tf.constant(1, tf.int64))["objects"]["label"].numpy().tolist() == [1, 0]
    assert in_class_order(source, ("square", "round")) is source  # (other names: the caller says so)
    # Some of a model's classes (a held-out file listing only the categories it uses): the same.
    some = in_class_order(source, ("round", "square", "wide"))
    assert some.class_names == ("round", "square", "wide") and some.objects_per_class == (0, 2, 1)
    assert [e["objects/label"].tolist() for e in examples(some)] == [[1], [2, 1]]
    assert classes_differ(("wide", "square", "extra"), ("square", "wide")) == \
        "1 class(es) not among the 2 known: extra"
    # A category beyond the wanted ones that no object trained on has (one crowd region of it): left
    # out with that region, warned; one object of it and the source is the caller's to refuse.
    crowd = {"id": 4, "image_id": 1, "category_id": 9, "bbox": [2, 2, 8, 8], "area": 64, "iscrowd": 1}
    categories = [{"id": 3, "name": "wide"}, {"id": 7, "name": "square"}, {"id": 9, "name": "unused"}]
    unused = load_coco_json(*write_coco(tmp_path / "unused", images, annotations + [crowd], categories))
    with caplog.at_level("WARNING"):
        left = in_class_order(unused, ("square", "wide"))
    assert "lists 1 class(es) that none of its objects has and the 2 classes wanted lack: unused" in caplog.text
    assert left.class_names == ("square", "wide") and left.objects_per_class == (2, 1)
    assert [(e["objects/label"].tolist(), e["objects/is_difficult"].tolist(), len(e["objects/bbox"]))
            for e in examples(left)] == [([0], [False], 1), ([1, 0], [False, False], 2)]
    assert left.example_at(tf.constant(0, tf.int64))["objects"]["label"].numpy().tolist() == [0]
    crowd["iscrowd"] = 0
    one = load_coco_json(*write_coco(tmp_path / "one", images, annotations + [crowd], categories))
    assert in_class_order(one, ("square", "wide")) is one


def test_class_names_are_one_line_of_text_without_spaces_around_them(tmp_path, caplog):
    """Label files list one class a line and their readers strip each line (predict's --labels,
    the SavedModel's labels.txt): "person " trains as "person" (warned), and a name of two lines,
    an empty one, or two that are one without their spaces are refused by name."""
    images = [{"id": 1, "file_name": "a.jpg", "size": (40, 60)}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0}]
    json_path, image_dir = write_coco(tmp_path, images, annotations, [{"id": 1, "name": "person "},
                                                                      {"id": 2, "name": " red car"}])
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        assert load_coco_json(json_path, image_dir).class_names == ("person", "red car")
    assert "class names ['person ', ' red car'] taken without the spaces around them" in caplog.text
    for categories, message in (([{"id": 1, "name": "cat"}, {"id": 2, "name": "cat "}], r"\['cat'\] are each given more"),
                                ([{"id": 1, "name": "a\nb"}], r"one line, not empty: \['a\\nb'\]"),
                                ([{"id": 1, "name": " "}], r"not empty: \[' '\]")):
        json_path, image_dir = write_coco(tmp_path / str(len(message)), images, annotations, categories)
        with pytest.raises(DataError, match="instances.json.*" + message):
            load_coco_json(json_path, image_dir)


def test_one_image_under_two_ids_is_one_example_of_all_its_objects(tmp_path, caplog):
    """Files merged by hand or by tools give one image two ids, each with part of its annotations
    (or the same ones twice): apart, each example taught the other's objects as background. Read
    as one example of all of them, an object given twice kept once, warned and counted."""
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    images = [{"id": 1, "file_name": "a.jpg", "size": (60, 80)}, {"id": 2, "file_name": "b.jpg", "size": (60, 80)},
              {"id": 7, "file_name": "a.jpg", "size": (60, 80), "image": False}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                   {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 30, 30]},
                   {"id": 3, "image_id": 7, "category_id": 2, "bbox": [40, 20, 30, 30]},
                   {"id": 4, "image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20]}]  # (image 1's, again)
    json_path, image_dir = write_coco(tmp_path, images, annotations, categories)
    with caplog.at_level(logging.WARNING):
        source = load_coco_json(json_path, image_dir)
    assert source.num_examples == 2 and source.num_objects == 3
    assert source.problems["image listed twice"] == 1
    assert "a.jpg: listed 2 times (image id 1, image id 7); read once, with every listing's objects: 2 (1 repeated " \
           "exactly, kept once)" in caplog.text
    first = examples(source)[0]
    assert first["image/id"] == 1 and first["objects/label"].tolist() == [0, 1]
    np.testing.assert_allclose(first["objects/bbox"], [[10 / 60, 10 / 80, 30 / 60, 30 / 80],
                                                       [20 / 60, 40 / 80, 50 / 60, 70 / 80]], rtol=1e-6)


def test_a_file_name_in_the_other_unicode_form_is_found(tmp_path):
    """A JSON written on Linux or Windows names "café.jpg" composed (NFC); the folder copied from
    a Mac holds it decomposed (NFD): read as on disk, as other letter case is."""
    import unicodedata

    images = [{"id": 1, "file_name": "café.jpg", "size": (60, 80)}, {"id": 2, "file_name": "b.jpg", "size": (60, 80)}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}]
    json_path, image_dir = write_coco(tmp_path, images, annotations, [{"id": 1, "name": "cat"}])
    os.rename(os.path.join(image_dir, "café.jpg"), os.path.join(image_dir, unicodedata.normalize("NFD", "café.jpg")))
    source = load_coco_json(json_path, image_dir)
    assert source.problems == {} and source.num_examples == 2
