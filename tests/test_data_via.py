"""VGG Image Annotator JSON (``--via``; keras_frcnn.data.via_json): the balloon tutorial's layout,
VIA 1 and 2 exports and project files, their faults, and a run trained and evaluated on them."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_fixtures import examples, write_image, write_turned_photo

from conftest import tiny_config

from keras_frcnn.data import DataError, load_via
from keras_frcnn.data.via_json import default_splits
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)

POLYGON = {"name": "polygon", "all_points_x": [8, 40, 20], "all_points_y": [5, 15, 25]}
RECT = {"name": "rect", "x": 40, "y": 10, "width": 40, "height": 40}


def _via(path, entries, version=2, project=False):
    """A VIA export of ``entries`` (file name -> [(shape_attributes, region_attributes)])."""
    data = {}
    for name, regions in entries.items():
        listed = [{"shape_attributes": shape, "region_attributes": attributes} for shape, attributes in regions]
        data[f"{name}1234"] = {"fileref": "", "size": 1234, "filename": name, "base64_img_data": "",
                               "file_attributes": {},
                               "regions": listed if version == 2 else {str(i): r for i, r in enumerate(listed)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": data} if project else data))


def _objects(source):
    return {e["image/filename"].decode(): (e["objects/bbox"], e["objects/label"].tolist()) for e in examples(source)}


def test_the_balloon_layout_via_1_and_2_and_a_project_file(tmp_path):
    """train/ and val/ each with via_region_data.json beside its images (the Keras Mask R-CNN
    tutorial's balloons: regions without attributes, one class "object"); a VIA 1 export (regions
    a dict) with a class attribute, a radio attribute and every shape; a VIA 2 project file."""
    for split, names in (("train", ["a.jpg", "b.jpg"]), ("val", ["c.jpg"])):
        for name in names:
            write_image(str(tmp_path / "balloon" / split / name), 50, 80, seed=len(name))
        _via(tmp_path / "balloon" / split / "via_region_data.json",
             {name: [(POLYGON, {})] if name != "b.jpg" else [] for name in names})
    assert default_splits(tmp_path / "balloon") == ("train", "val")
    source = load_via(tmp_path / "balloon", "train")
    assert source.class_names == ("object",) and not source.problems
    objects = _objects(source)
    np.testing.assert_allclose(objects["a.jpg"][0], [[0.1, 0.1, 0.5, 0.5]], atol=1e-6)
    assert objects["b.jpg"][1] == [] and list(_objects(load_via(tmp_path / "balloon", "val"))) == ["c.jpg"]

    write_image(str(tmp_path / "v1" / "d.jpg"), 50, 80, seed=3)
    _via(tmp_path / "v1" / "export.json", {"d.jpg": [
        (RECT, {"class": "dog"}), (POLYGON, {"type": {"cat": True, "dog": False}}),
        ({"name": "circle", "cx": 40, "cy": 25, "r": 10}, {"class": "cat"}),
        ({"name": "ellipse", "cx": 40, "cy": 25, "rx": 20, "ry": 10, "theta": 0}, {"class": "cat"}),
        ({"name": "point", "cx": 3, "cy": 3}, {"class": "cat"})]}, version=1)
    source = load_via(tmp_path / "v1" / "export.json", "all")
    assert source.class_names == ("cat", "dog") and source.problems == {"not an object": 1}
    boxes, labels = _objects(source)["d.jpg"]
    np.testing.assert_allclose(boxes, [[0.2, 0.5, 1.0, 1.0], [0.1, 0.1, 0.5, 0.5], [0.3, 0.375, 0.7, 0.625],
                                       [0.3, 0.25, 0.7, 0.75]], atol=1e-6)
    assert labels == [1, 0, 0, 0]
    _via(tmp_path / "v1" / "project.json", {"d.jpg": [(RECT, {"label": "dog"})]}, project=True)
    assert load_via(tmp_path / "v1" / "project.json", "all").class_names == ("dog",)


def test_what_cannot_be_used_is_named_and_counted_and_a_turned_photo(tmp_path, caplog):
    """A region without its points or a class (its image skipped), a missing image; a phone photo
    annotated as the browser shows it (turned), its box turned onto the stored pixels (warned)."""
    for name in ("ok.jpg", "nopoints.jpg", "noclass.jpg", "bare.jpg"):
        write_image(str(tmp_path / name), 50, 80, seed=1)
    (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "phone.jpg", 6)
    _via(tmp_path / "via.json", {"ok.jpg": [(RECT, {"class": "dog"})],
                                 "nopoints.jpg": [({"name": "polygon", "all_points_x": [1, 2]}, {"class": "dog"})],
                                 "noclass.jpg": [(RECT, {"colour": "red", "size": "big"})],
                                 # attributes forgotten where the others have a class: not a class "object"
                                 "bare.jpg": [(RECT, {"class": "dog"}), (POLYGON, {})],
                                 "gone.jpg": [(RECT, {"class": "dog"})],
                                 "phone.jpg": [({"name": "rect", "x": int(c0), "y": int(r0), "width": int(c1 + 1 - c0),
                                                 "height": int(r1 + 1 - r0)}, {"class": "dog"})]})
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_via(tmp_path / "via.json", "all")
    assert source.problems == {"malformed region": 1, "no class": 2, "missing image file": 1,
                               "EXIF orientation": 1}
    assert source.class_names == ("dog",)
    objects = _objects(source)
    assert list(objects) == ["ok.jpg", "phone.jpg"]
    np.testing.assert_allclose(objects["phone.jpg"][0], [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6)
    assert f"{tmp_path / 'via.json'}: nopoints.jpg: regions[0]: a polygon without its 'all_points_y'" in caplog.text
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="bad.json: not a VIA export"):
        load_via(tmp_path / "bad.json", "all")


# A train.py run and two evaluations (~12-15 s of the suite): under -m slow for its budget; the
# reader, its splits and its errors: the tests above; train.py's path for a folder source, its
# config.json and evaluate.py reading it again: the CSV, YOLO, VOC and COCO runs (test_data_csv,
# test_data_yolo, test_data_combined, test_cli).
@pytest.mark.slow
def test_a_run_trains_and_evaluate_reads_it_again(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        names = [f"{split}{n}.jpg" for n in range(count)]
        for n, name in enumerate(names):
            write_image(str(tmp_path / "set" / split / name), 96, 128, seed=n)
        _via(tmp_path / "set" / split / "via_region_data.json", {name: [(
            {"name": "rect", "x": float(x), "y": float(y), "width": 40, "height": 40}, {"class": ("a", "b")[n % 2]})]
            for n, name in enumerate(names) for x, y in [rng.uniform(0, 80, 2)]})
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    data = str(tmp_path / "set")
    assert train.main(["--config", str(tmp_path / "tiny.json"), "--via", data, "--out", str(tmp_path / "run"),
                       "--schedule", "joint", "--steps", "2", "--verbose", "0"]) == 0
    assert f"data: training on VIA {data} train (6 images); evaluating on VIA {data} val (2 images)" in \
        capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_paths"] == [data]
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras")]) == 0
    assert f"on VIA {data} val, 2 images" in capsys.readouterr().out
