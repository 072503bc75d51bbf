"""A folder of LabelMe JSON files (``--labelme``; keras_frcnn.data.labelme_folder): its shapes, its
faults, and a run trained and evaluated on it."""

import base64
import io
import json
import logging
import os
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_fixtures import examples, write_image, write_turned_photo

from conftest import tiny_config

from keras_frcnn.data import DataError, load_labelme
from keras_frcnn.data.labelme_folder import default_splits
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)


def _labelme(path, shapes, image_path=None, size=(50, 80), image_data=None):
    """A LabelMe JSON file as LabelMe writes it; ``shapes``: (label, shape_type, points[, flags])."""
    entries = [{"label": s[0], "shape_type": s[1], "points": s[2], "group_id": s[4] if len(s) > 4 else None,
                "flags": s[3] if len(s) > 3 else {}} for s in shapes]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"version": "5.4.1", "flags": {}, "shapes": entries,
                   "imagePath": image_path or os.path.basename(path)[:-5] + ".jpg", "imageData": image_data,
                   "imageHeight": size[0], "imageWidth": size[1]}, f)


def _objects(source):
    return {e["image/filename"].decode(): (e["objects/bbox"], e["objects/label"].tolist(),
                                           e["objects/is_difficult"].tolist()) for e in examples(source)}


def test_shapes_as_labelme_saves_them_split_folders_and_labels_txt(tmp_path):
    """Rectangles (two corners in any order), polygons, circles (the box around them); points and
    lines no objects; a difficult flag; labels.txt (labelme2voc's) orders the classes; images found
    by imagePath written on Windows, or by the JSON's own name."""
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for name in names:
            write_image(str(tmp_path / split / f"{name}.jpg"), 50, 80, seed=len(name))
    _labelme(str(tmp_path / "train" / "a.json"), [
        ("dog", "rectangle", [[40, 25], [8, 5]]), ("cat", "polygon", [[0, 0], [20, 5], [10, 10]]),
        ("cat", "circle", [[40, 25], [40, 35]], {"difficult": True}), ("dog", "point", [[3, 3]])])
    _labelme(str(tmp_path / "train" / "b.json"), [], image_path="..\\train\\b.jpg")
    _labelme(str(tmp_path / "val" / "c.json"), [("cat", "rectangle", [[8, 5], [40, 25]])], image_path="moved.jpg")
    # imagePath "crème.jpg" composed (NFC), the file as a Mac wrote it (NFD): found
    write_image(str(tmp_path / "val" / unicodedata.normalize("NFD", "crème.jpg")), 50, 80, seed=4)
    _labelme(str(tmp_path / "val" / "d.json"), [("cat", "rectangle", [[8, 5], [40, 25]])], image_path="crème.jpg")
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ndog\ncat\n")
    assert default_splits(tmp_path) == ("train", "val")
    source = load_labelme(tmp_path, "train")
    assert source.class_names == ("dog", "cat") and source.problems == {"not an object": 1}
    objects = _objects(source)
    np.testing.assert_allclose(objects["train/a.jpg"][0], [[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.2, 0.25],
                                                           [0.3, 0.375, 0.7, 0.625]], atol=1e-6)
    assert objects["train/a.jpg"][1:] == ([0, 1, 1], [False, False, True]) and objects["train/b.jpg"][1] == []
    assert list(_objects(load_labelme(tmp_path, "val"))) == ["val/c.jpg", unicodedata.normalize("NFD", "val/crème.jpg")]
    # A copy of a file beside it ("a - Copy.json", naming a.jpg): one example of both files' objects.
    _labelme(str(tmp_path / "train" / "a - Copy.json"), [("dog", "rectangle", [[40, 25], [8, 5]]),
                                                        ("dog", "rectangle", [[60, 30], [70, 40]])], image_path="a.jpg")
    source = load_labelme(tmp_path, "train")
    assert source.problems == {"not an object": 1, "image listed twice": 1} and len(_objects(source)) == 2
    # (the copy first, in name order; its first rectangle a.json's, kept once)
    assert _objects(source)["train/a.jpg"][1] == [0, 0, 1, 1]


def test_an_object_drawn_in_parts_is_one_object(tmp_path):
    """LabelMe marks an object drawn in pieces (a car behind a post) by one group_id on its shapes;
    labelme2coco makes them one instance. Each shape was a box of its own: two half cars taught as
    cars, and a whole car found scored as a false positive and a miss."""
    write_image(str(tmp_path / "a.jpg"), 50, 80, seed=1)
    _labelme(str(tmp_path / "a.json"), [
        ("car", "polygon", [[8, 10], [20, 10], [20, 30]], {}, 1),
        ("person", "rectangle", [[60, 5], [70, 45]], {}, 1),  # (group 1 of another label: its own object)
        ("car", "polygon", [[30, 5], [40, 25], [35, 20]], {"difficult": True}, 1),
        ("car", "rectangle", [[0, 40], [16, 50]], {}, None),
        ("car", "rectangle", [[44, 40], [56, 45]], {}, 2)])
    boxes, labels, difficult = _objects(load_labelme(tmp_path))["a.jpg"]
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.6, 0.5], [0.1, 0.75, 0.9, 0.875],
                                       [0.8, 0.0, 1.0, 0.2], [0.8, 0.55, 0.9, 0.7]], atol=1e-6)
    assert labels == [0, 1, 0, 0] and difficult == [True, False, False, False]


def test_files_that_cannot_be_used_are_named_and_counted_and_a_turned_photo(tmp_path, caplog):
    """A file that is not JSON or not LabelMe's, a shape without numbers (its image skipped), a
    missing image, an imageData that is not base64; an image only inside its JSON (imageData: read
    from there); phone photos annotated as shown."""
    for name in ("ok", "words", "notlabelme", "bad"):
        write_image(str(tmp_path / f"{name}.jpg"), 50, 80, seed=1)
    _labelme(str(tmp_path / "ok.json"), [("cat", "rectangle", [[8, 5], [40, 25]]),
                                         ("cat", "rectangle", [[70, 5], [90, 25]])])  # reaching out: clipped
    _labelme(str(tmp_path / "words.json"), [("cat", "polygon", [["a", "b"], [1, 2]])])
    (tmp_path / "notlabelme.json").write_text('{"images": []}')
    (tmp_path / "bad.json").write_text("{not json")
    inside = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(inside, format="PNG")
    _labelme(str(tmp_path / "inside.json"), [("cat", "rectangle", [[4, 3], [20, 15]])],
             image_data=base64.b64encode(inside.getvalue()).decode(), size=(30, 40))
    _labelme(str(tmp_path / "notbase64.json"), [("cat", "rectangle", [[1, 1], [9, 9]])], image_data="%%%")
    _labelme(str(tmp_path / "gone.json"), [("cat", "rectangle", [[1, 1], [9, 9]])])
    for orientation in (3, 6):  # (LabelMe shows every orientation applied: 180 degrees too, of the same size)
        (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / f"phone{orientation}.jpg", orientation)
        _labelme(str(tmp_path / f"phone{orientation}.json"),
                 [("cat", "rectangle", [[int(c0), int(r0)], [int(c1) + 1, int(r1) + 1]])], size=(height, width))
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_labelme(tmp_path, "all")
    assert source.problems == {"malformed JSON": 3, "malformed shape": 1, "missing image file": 1, "box clipped": 1}
    objects = _objects(source)
    assert sorted(objects) == ["inside.png", "ok.jpg", "phone3.jpg", "phone6.jpg"]
    np.testing.assert_allclose(objects["inside.png"][0], [[0.1, 0.1, 0.5, 0.5]], atol=1e-6)
    assert "1 images only inside their LabelMe files (imageData) read from there" in caplog.text
    np.testing.assert_allclose(objects["ok.jpg"][0][1], [0.1, 0.875, 0.5, 1.0], atol=1e-6)
    for name in ("phone3.jpg", "phone6.jpg"):
        np.testing.assert_allclose(objects[name][0], [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6)
    for message in ("bad.json: not JSON", "notlabelme.json: not a LabelMe file (no 'shapes' list)",
                    "words.json: shapes[0]: points that are not [x, y] pairs",
                    "notbase64.json: imageData is not base64", "gone.json: its image gone.jpg is not there"):
        assert f"{tmp_path}/{message}" in caplog.text
    with pytest.raises(DataError, match="not a folder"):
        load_labelme(tmp_path / "ok.json")


# A train.py run and two evaluations (~12-15 s of the suite): under -m slow for its budget; the
# reader, its splits and its errors: the tests above; train.py's path for a folder source, its
# config.json and evaluate.py reading it again: the CSV, YOLO, VOC and COCO runs (test_data_csv,
# test_data_yolo, test_data_combined, test_cli).
@pytest.mark.slow
def test_a_run_trains_and_evaluate_reads_it_again(tmp_path, capsys):
    """``train.py --labelme`` on a folder without split folders: all[:90%] -> all[90%:] (the last
    of nine images); config.json keeps the folder, so evaluate reads it again."""
    rng = np.random.default_rng(0)
    for n in range(9):
        write_image(str(tmp_path / "set" / f"im{n}.jpg"), 96, 128, seed=n)
        x, y = rng.uniform(0, 80, 2)
        _labelme(str(tmp_path / "set" / f"im{n}.json"), [(("a", "b")[n % 2], "rectangle", [[x, y], [x + 40, y + 40]])],
                 size=(96, 128))
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    data = str(tmp_path / "set")
    assert train.main(["--config", str(tmp_path / "tiny.json"), "--labelme", data, "--out", str(tmp_path / "run"),
                       "--schedule", "joint", "--steps", "2", "--verbose", "0"]) == 0
    assert f"data: training on LabelMe {data} all[:-1] (8 images); evaluating on LabelMe {data} all[-1:] " \
           "(1 images)" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["data_paths"]) == ("labelme", [data])
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras")]) == 0
    out = capsys.readouterr()
    assert f"on LabelMe {data} all[-1:], 1 images" in out.out and "warning" not in out.err
    # A split of its training images, evaluated: said so (the run's own files read again).
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras"), "--split", "all[-2:]"]) == 0
    assert "warning: 1 of the 2 evaluation images are training images too" in capsys.readouterr().err
