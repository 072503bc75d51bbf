"""CVAT's own export, "CVAT for images 1.1" (``--cvat``; keras_frcnn.data.cvat_xml): a task's and a
project's layout, every shape, its faults, and a run trained and evaluated on it."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_fixtures import examples, write_image, write_turned_photo

from conftest import tiny_config

from keras_frcnn.data import DataError, load_cvat
from keras_frcnn.data.cvat_xml import default_splits
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)

META = """<meta><task><name>t</name><mode>annotation</mode><labels>
  <label><name>car</name><type>rectangle</type><attributes><attribute><name>difficult</name></attribute></attributes></label>
  <label><name>person</name><type>any</type></label>
  <label><name>body</name><type>skeleton</type></label>
  <label><name>head</name><type>points</type><parent>body</parent></label>
  <label><name>night</name><type>tag</type></label>
</labels></task></meta>"""


def _cvat(path, images, meta=META):
    """annotations.xml of ``images``: (name, width, height, subset or None, [shape XML])."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>', meta]
    for number, (name, width, height, subset, shapes) in enumerate(images):
        extra = f' subset="{subset}" task_id="1"' if subset else ""
        parts.append(f'<image id="{number}" name="{name}"{extra} width="{width}" height="{height}">'
                     + "".join(shapes) + "</image>")
    parts.append("</annotations>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def _box(label, x0, y0, x1, y1, extra="", inner=""):
    return f'<box label="{label}" occluded="0" source="manual" xtl="{x0}" ytl="{y0}" xbr="{x1}" ybr="{y1}" ' \
           f'z_order="0"{extra}>{inner}</box>'


def _objects(source):
    return {e["image/filename"].decode(): (e["objects/bbox"], e["objects/label"].tolist(),
                                           e["objects/is_difficult"].tolist()) for e in examples(source)}


def test_a_task_export_with_every_shape(tmp_path):
    """A task exported with its images (annotations.xml, images/): boxes (one rotated, one
    difficult), a polygon, an ellipse, a mask, a cuboid; points, a skeleton and a tag are no objects;
    classes in the meta's order (a skeleton's point label and a tag-only label left out), a label
    only the shapes name after them; an image without shapes is a negative; no subsets: all[:90%]."""
    write_image(str(tmp_path / "task" / "images" / "a.jpg"), 50, 80, seed=1)
    write_image(str(tmp_path / "task" / "images" / "sub" / "b.png"), 50, 80, seed=2)
    shapes = [
        _box("car", 40, 10, 80, 50),
        _box("car", 10, 10, 30, 20, ' rotation="90.00"'),  # turned about its centre (20, 15): 15 x 20 .. 25 x 5
        _box("person", 8, 5, 40, 25, inner='<attribute name="difficult">true</attribute>'),
        '<polygon label="person" source="manual" occluded="0" points="8.00,5.00;40.00,15.00;20.00,25.00" z_order="0"/>',
        '<ellipse label="car" source="manual" occluded="0" cx="40" cy="25" rx="20" ry="10" z_order="0"/>',
        '<mask label="car" source="manual" occluded="0" rle="3,4" left="4" top="6" width="10" height="8" z_order="0"/>',
        '<cuboid label="truck" source="manual" occluded="0" xtl1="1" ytl1="2" xbl1="1" ybl1="12" xtr1="9" ytr1="2" '
        'xbr1="9" ybr1="12" xtl2="3" ytl2="1" xbl2="3" ybl2="11" xtr2="11" ytr2="1" xbr2="11" ybr2="11" z_order="0"/>',
        '<points label="person" source="manual" occluded="0" points="3,3" z_order="0"/>',
        '<skeleton label="body" source="manual" z_order="0"><points label="head" points="3,3" outside="0" '
        'occluded="0"/></skeleton>',
        '<tag label="night" source="manual"/>',
    ]
    _cvat(tmp_path / "task" / "annotations.xml", [("a.jpg", 80, 50, None, shapes), ("sub/b.png", 80, 50, None, [])])
    assert default_splits(tmp_path / "task") == ("all[:-1]", "all[-1:]")
    source = load_cvat(tmp_path / "task", "all")
    assert source.class_names == ("car", "person", "truck")
    assert source.problems == {"not an object": 3}
    objects = _objects(source)
    boxes, labels, difficult = objects["a.jpg"]
    np.testing.assert_allclose(boxes, np.array([
        [10, 40, 50, 80], [5, 15, 25, 25], [5, 8, 25, 40], [5, 8, 25, 40], [15, 20, 35, 60], [6, 4, 14, 14],
        [1, 1, 12, 11]]) / [50, 80, 50, 80], atol=1e-6)
    assert labels == [0, 0, 1, 1, 0, 0, 2] and difficult == [False, False, True, False, False, False, False]
    assert objects["b.png"][1] == []  # a negative
    assert load_cvat(tmp_path / "task" / "annotations.xml", "all[-1:]").num_examples == 1


def test_an_object_drawn_in_parts_is_one_object(tmp_path):
    """A group of one label's shapes (group_id, CVAT's G key: an object drawn in parts, a car behind
    a post) is one object, the box around them all, as CVAT's COCO export merges it; a group's shape
    of another label stays its own object, and group 0 is no group."""
    write_image(str(tmp_path / "task" / "images" / "a.jpg"), 50, 80, seed=1)
    shapes = [_box("car", 10, 10, 20, 30, ' group_id="1"'),
              _box("person", 60, 5, 70, 45, ' group_id="1"'),
              '<polygon label="car" source="manual" occluded="0" points="30,5;40,25;35,20" z_order="0" group_id="1"/>',
              _box("car", 0, 40, 16, 50, ' group_id="0"'), _box("car", 2, 42, 10, 48, ' group_id="0"')]
    _cvat(tmp_path / "task" / "annotations.xml", [("a.jpg", 80, 50, None, shapes)])
    boxes, labels, _ = _objects(load_cvat(tmp_path / "task", "all"))["a.jpg"]
    np.testing.assert_allclose(boxes, np.array([[5, 10, 30, 40], [5, 60, 45, 70], [40, 0, 50, 16],
                                                [42, 2, 48, 10]]) / [50, 80, 50, 80], atol=1e-6)
    assert labels == [0, 1, 0, 0]


def test_a_project_export_splits_by_subset(tmp_path, caplog):
    """A project's export: each image's subset (Train, Validation) and its images in
    images/<subset>/; train -> val; a subset of another name is a split of that name."""
    images = []
    for subset, names in (("Train", ["t0.jpg", "t1.jpg"]), ("Validation", ["v0.jpg"]), ("default", ["d0.jpg"])):
        for name in names:
            write_image(str(tmp_path / "project" / "images" / subset / name), 50, 80, seed=len(images))
            images.append((name, 80, 50, subset, [_box("car", 10, 10, 40, 40)]))
    _cvat(tmp_path / "project" / "annotations.xml", images, meta=META.replace("<task>", "<project>").replace(
        "</task>", "</project>"))
    assert default_splits(tmp_path / "project") == ("train", "val")
    assert [list(_objects(load_cvat(tmp_path / "project", split))) for split in ("train", "val", "default")] == [
        ["t0.jpg", "t1.jpg"], ["v0.jpg"], ["d0.jpg"]]
    assert load_cvat(tmp_path / "project", "all").num_examples == 4
    # An image of the Train subset not there: named where the export keeps it (images/Train/), not images/.
    (tmp_path / "project" / "images" / "Train" / "t1.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        assert load_cvat(tmp_path / "project", "train").problems == {"missing image file": 1}
    assert f"{tmp_path / 'project' / 'images' / 'Train' / 't1.jpg'}: image file is missing" in caplog.text
    with pytest.raises(DataError, match="split 'test': not one of its splits"):
        load_cvat(tmp_path / "project", "test")


def test_what_cannot_be_used_is_named_and_counted_and_a_turned_photo(tmp_path, caplog):
    """A shape without its coordinates or a label (its image skipped), a missing and a corrupt
    image; a phone photo whose stated size is its size as shown (CVAT shows it turned): its box
    turned onto the stored pixels; a video export and a file that is not one are refused."""
    write_image(str(tmp_path / "images" / "ok.jpg"), 50, 80, seed=1)
    write_image(str(tmp_path / "images" / "other.jpg"), 50, 80, seed=4)  # stated 160 x 100: another image's boxes?
    write_image(str(tmp_path / "images" / "nocoords.jpg"), 50, 80, seed=2)
    write_image(str(tmp_path / "images" / "nolabel.jpg"), 50, 80, seed=3)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "images" / "phone.jpg", 6)
    _cvat(tmp_path / "annotations.xml", [
        ("ok.jpg", 80, 50, None, [_box("car", 1, 1, 20, 20)]),
        ("other.jpg", 160, 100, None, [_box("car", 1, 1, 20, 20)]),
        ("nocoords.jpg", 80, 50, None, ['<polygon label="car" points="" z_order="0"/>']),
        ("nolabel.jpg", 80, 50, None, [_box("", 1, 1, 20, 20)]),
        ("gone.jpg", 80, 50, None, [_box("car", 1, 1, 20, 20)]),
        ("broken.jpg", 80, 50, None, [_box("car", 1, 1, 20, 20)]),
        ("phone.jpg", width, height, None, [_box("car", c0, r0, c1 + 1, r1 + 1)]),
    ])
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_cvat(tmp_path, "all")
    assert source.problems == {"malformed shape": 1, "no class": 1, "bad image file": 1, "missing image file": 1,
                               "EXIF orientation": 1, "size mismatch": 1}
    assert "image other.jpg: width x height 160 x 100 but other.jpg is 80 x 50; using the image's size" in caplog.text
    objects = _objects(source)
    assert list(objects) == ["ok.jpg", "other.jpg", "phone.jpg"]
    np.testing.assert_allclose(objects["phone.jpg"][0], [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6)
    assert f"{tmp_path / 'annotations.xml'}: image nocoords.jpg: <polygon> 0: a polygon with coordinates" in caplog.text
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "annotations.xml").write_text(
        '<annotations><version>1.1</version><track id="0" label="car"><box frame="0" xtl="1" ytl="1" xbr="2" '
        'ybr="2" outside="0" occluded="0" keyframe="1"/></track></annotations>')
    with pytest.raises(DataError, match='a "CVAT for video" export'):
        load_cvat(tmp_path / "video", "all")
    with pytest.raises(DataError, match="no annotations.xml in it"):
        load_cvat(tmp_path / "images", "all")
    (tmp_path / "bad.xml").write_text("<annotations><image")
    with pytest.raises(DataError, match="bad.xml: malformed XML"):
        load_cvat(tmp_path / "bad.xml", "all")


# A train.py run and two evaluations (~12-15 s of the suite): under -m slow for its budget; the
# reader, its splits and its errors: the tests above; train.py's path for a folder source, its
# config.json and evaluate.py reading it again: the CSV, YOLO, VOC and COCO runs (test_data_csv,
# test_data_yolo, test_data_combined, test_cli).
@pytest.mark.slow
def test_a_run_trains_and_evaluate_reads_it_again(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = []
    for subset, count in (("Train", 6), ("Validation", 2)):
        for n in range(count):
            name = f"{subset}{n}.jpg"
            write_image(str(tmp_path / "set" / "images" / subset / name), 96, 128, seed=n)
            x, y = rng.uniform(0, 80, 2)
            images.append((name, 128, 96, subset, [_box(("car", "person")[n % 2], x, y, x + 40, y + 40)]))
    _cvat(tmp_path / "set" / "annotations.xml", images)
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    data = str(tmp_path / "set")
    assert train.main(["--config", str(tmp_path / "tiny.json"), "--cvat", data, "--out", str(tmp_path / "run"),
                       "--schedule", "joint", "--steps", "2", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert f"data: training on CVAT {data}/annotations.xml train (6 images); evaluating on CVAT " \
           f"{data}/annotations.xml val (2 images)" in out
    assert "objects to train on, by class (6): car 3, person 3" in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_paths"] == [data]
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras")]) == 0
    assert f"on CVAT {data}/annotations.xml val, 2 images" in capsys.readouterr().out


def test_several_exports_train_together_and_the_first_tests(tmp_path):
    """CVAT exports a project's tasks one by one: --cvat repeated trains on all of each further
    export beside the first one's training part, and the first tests (as --voc-dir repeated);
    config.json keeps them all for --resume and evaluate; one export named twice is refused."""
    import dataclasses

    from keras_frcnn import cli

    for task, count in (("task1", 3), ("task2", 2)):
        images = []
        for n in range(count):
            write_image(str(tmp_path / task / "images" / f"{task}_{n}.jpg"), 50, 80, seed=n)
            images.append((f"{task}_{n}.jpg", 80, 50, None, [_box("car", 10, 10, 40, 40)]))
        _cvat(tmp_path / task / "annotations.xml", images)
    first, second = str(tmp_path / "task1"), str(tmp_path / "task2")
    args = train.parse_args(["--cvat", first, "--cvat", second])
    choice = cli.choose_data(args, train.build_config(args))
    assert (choice.name, choice.train_split, choice.test_split, choice.more) == (
        first, "all[:-1]", "all[-1:]", ((second, "all"),))
    assert cli.load_training_source(args, choice).num_examples == 2 + 2
    assert cli.load_test_source(args, choice).num_examples == 1
    run = dataclasses.replace(train.build_config(args), dataset="cvat", data_paths=(first, second),
                              train_split="all[:-1]", test_split="all[-1:]")
    assert cli.choose_data(train.parse_args([]), run).more == ((second, "all"),)  # a run's config: both again
    args = train.parse_args(["--cvat", first, "--cvat", str(tmp_path / "task1" / ".")])
    with pytest.raises(cli.UsageError, match="the same file or folder as --cvat"):
        cli.choose_data(args, train.build_config(args))


def test_a_label_typed_with_a_space_after_it_is_one_class(tmp_path):
    """CVAT keeps a label as typed ("car "): its name in <meta> and on its shapes are one class, "car"
    (the names were taken without the space, the shapes' labels with it: a second class, or refused)."""
    write_image(str(tmp_path / "task" / "images" / "a.jpg"), 50, 80)
    _cvat(tmp_path / "task" / "annotations.xml", [("a.jpg", 80, 50, None, [_box("car ", 10, 10, 40, 40),
                                                                         _box("person", 5, 5, 20, 20)])],
          meta=META.replace("<name>car</name>", "<name>car </name>"))
    source = load_cvat(tmp_path / "task", "all")
    assert source.class_names == ("car", "person") and not source.problems
    assert _objects(source)["a.jpg"][1] == [0, 1]
