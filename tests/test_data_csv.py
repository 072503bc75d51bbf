"""Detection CSV files (``--csv``; keras_frcnn.data.csv_files): keras-retinanet's rows, the TF OD API
tutorials' and Roboflow's headed files, Open Images' normalised columns, their faults, and a run
trained and evaluated on them."""

import json
import logging
import os
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from test_data_fixtures import examples, write_image, write_turned_photo

from conftest import tiny_config

from keras_frcnn.data import DataError, load_csv
from keras_frcnn.data.csv_files import default_splits, read_csv_data
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)

HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _objects(source):
    return {e["image/filename"].decode(): (e["objects/bbox"], e["objects/label"].tolist(),
                                           e["objects/is_difficult"].tolist()) for e in examples(source)}


def _images(folder, names, size=(50, 80)):
    for name in names:
        write_image(os.path.join(folder, name), *size, seed=len(name))


def test_the_tf_od_api_tutorials_layout_roboflow_s_two_csv_exports_and_keras_retinanet_s(tmp_path):
    """``data/train_labels.csv`` + ``data/test_labels.csv`` beside ``images/`` (xml_to_csv.py's
    files); Roboflow's "Tensorflow Object Detection CSV" (a headed ``_annotations.csv`` in each of
    train/ valid/) and "RetinaNet Keras CSV" (header-less rows, ``_classes.csv`` beside them); one
    keras-retinanet file with a negative's row and a classes file of ``name,id``."""
    _images(tmp_path / "tut" / "images", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "tut" / "data").mkdir()
    (tmp_path / "tut" / "data" / "train_labels.csv").write_text(
        HEADER + "a.jpg,80,50,raccoon,8,5,40,25\na.jpg,80,50,dog,40,10,80,50\nb.jpg,80,50,dog,0,0,20,10\n")
    (tmp_path / "tut" / "data" / "test_labels.csv").write_text(HEADER + "c.jpg,80,50,raccoon,8,5,40,25\n")
    data = tmp_path / "tut" / "data"
    assert default_splits(data) == ("train", "test")
    train_source = load_csv(data, "train")
    assert train_source.class_names == ("dog", "raccoon") and not train_source.problems  # sorted, of all splits
    objects = _objects(train_source)
    np.testing.assert_allclose(objects["a.jpg"][0], [[0.1, 0.1, 0.5, 0.5], [0.2, 0.5, 1.0, 1.0]], atol=1e-6)
    assert objects["a.jpg"][1] == [1, 0] and objects["b.jpg"][1] == [0]
    assert list(_objects(load_csv(data, "test"))) == ["c.jpg"]

    for export, header, rows, classes in (("tf", HEADER, "{name},80,50,{cls},8,5,40,25\n", None),
                                          ("retinanet", "", "{name},8,5,40,25,{cls}\n", "bird,1\nfish,0\n")):
        root = tmp_path / export
        for split, names in (("train", ["p.jpg", "q.jpg"]), ("valid", ["r.jpg"])):
            _images(root / split, names)
            (root / split / "_annotations.csv").write_text(
                header + "".join(rows.format(name=n, cls="bird") for n in names))
            if classes:
                (root / split / "_classes.csv").write_text(classes)
        assert default_splits(root) == ("train", "val")
        source = load_csv(root, "train")
        assert source.class_names == (("fish", "bird") if classes else ("bird",)), export
        assert _objects(source)["q.jpg"][1] == [1 if classes else 0]
        assert load_csv(root, "val").num_examples == 1

    _images(tmp_path / "kr" / "imgs", ["x.png", "y.png", "z.png"])
    (tmp_path / "kr" / "ann.csv").write_text("imgs/x.png,8,5,40,25,cat\nimgs/y.png,,,,,\nimgs/z.png,0,0,80,50,cat\n"
                                             "./imgs/x.png,40,5,80,25,cat\n")  # (x.png's second object)
    (tmp_path / "kr" / "classes.csv").write_text("cat,0\n")
    assert default_splits(tmp_path / "kr" / "ann.csv") == ("all[:-1]", "all[-1:]")  # (a tenth of 3: none)
    source = load_csv(tmp_path / "kr" / "ann.csv", "all")
    assert [(name, labels) for name, (_, labels, _) in _objects(source).items()] == [
        ("imgs/x.png", [0, 0]), ("imgs/y.png", []), ("imgs/z.png", [0])]
    assert [load_csv(tmp_path / "kr" / "ann.csv", split).num_examples for split in ("all[:2]", "all[67%:]")] == [2, 1]
    with pytest.raises(DataError, match=r"split 'train': not one of its splits \['all'\]"):
        load_csv(tmp_path / "kr" / "ann.csv", "train")


def test_spreadsheet_and_windows_files_open_images_columns_and_a_turned_photo(tmp_path):
    """A semicolon-delimited file with a byte-order mark and decimal commas, paths written on Windows
    in another letter case, quoted names; Open Images' columns (ImageID without a suffix, normalised XMin/XMax/YMin/YMax,
    IsGroupOf: never a positive); a phone photo whose rows give its size as shown."""
    _images(tmp_path / "pics" / "Sub", ["One.JPG", "id42.jpg", unicodedata.normalize("NFD", "Café.jpg")])
    (tmp_path / "sheet.csv").write_bytes("\ufeffImage Path;Label;X_Min;Y_Min;X_Max;Y_Max\r\n"
                                         'pics\\sub\\one.jpg;"big, red";8,0;5;40;25,00\r\n'
                                         'pics\\sub\\café.jpg;"big, red";8,0;5;40;25,00\r\n'.encode("utf-8"))
    objects = _objects(load_csv(tmp_path / "sheet.csv", "all", classes_file=None))  # (café as a Mac wrote it)
    assert list(objects) == ["pics/sub/one.jpg", "pics/sub/café.jpg"]
    np.testing.assert_allclose(objects["pics/sub/one.jpg"][0], [[0.1, 0.1, 0.5, 0.5]], atol=1e-6)
    assert load_csv(tmp_path / "sheet.csv", "all").class_names == ("big, red",)

    (tmp_path / "oi.csv").write_text("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsGroupOf\n"
                                     "id42,xclick,/m/01g317,1,0.1,0.5,0.2,0.6,0,0\n"
                                     "id42,xclick,/m/01g317,1,0.5,0.9,0.2,0.6,0,1\n")
    objects = _objects(load_csv(tmp_path / "oi.csv", "all", images=tmp_path / "pics" / "Sub"))
    np.testing.assert_allclose(objects["id42"][0], [[0.2, 0.1, 0.6, 0.5], [0.2, 0.5, 0.6, 0.9]], atol=1e-6)
    assert objects["id42"][2] == [False, True]

    windows, notebook = "C:\\Users\\me\\set\\pics\\Sub\\One.JPG", "/content/drive/MyDrive/set/pics/Sub/id42.jpg"
    (tmp_path / "moved.csv").write_text(f"{windows},8,5,40,25,a\n{notebook},8,5,40,25,a\n")  # another machine's paths
    assert list(_objects(load_csv(tmp_path / "moved.csv", "all"))) == [windows.replace("\\", "/"), notebook]
    (tmp_path / "ids.csv").write_text("frame,xmin,xmax,ymin,ymax,class_id\n" + "".join(
        f"pics/Sub/One.JPG,8,40,5,25,{n}\n" for n in (10, 2, 1)))  # Udacity's columns: classes are ids
    assert load_csv(tmp_path / "ids.csv", "all").class_names == ("1", "2", "10")

    (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "phone" / "p.jpg", 6)
    (tmp_path / "phone" / "p.csv").write_text(HEADER + f"p.jpg,{width},{height},cat,{c0},{r0},{c1 + 1},{r1 + 1}\n")
    objects = _objects(load_csv(tmp_path / "phone" / "p.csv", "all"))
    np.testing.assert_allclose(objects["p.jpg"][0], [[10 / 60, 60 / 100, 25 / 60, 90 / 100]], atol=1e-6)


def test_rows_that_cannot_be_used_are_named_by_file_and_row_and_counted(tmp_path, caplog):
    """A row that cannot be read skips its image (part of its objects would teach the others as
    background); a degenerate box, one outside the image, or of a class not in the classes file
    skips its object; a box reaching out is clipped; a repeated row is kept once; a missing or
    corrupt image is skipped."""
    _images(tmp_path, [f"{name}.jpg" for name in ("ok", "short", "words", "nobox", "flat", "out", "edge", "twice",
                                                  "other")])
    (tmp_path / "corrupt.jpg").write_bytes(b"not a jpeg")
    rows = ["ok.jpg,8,5,40,25,cat", "short.jpg,8,5,40,25,cat", "short.jpg,1,2,3", "words.jpg,a,b,c,d,cat",
            "nobox.jpg,8,5,40,25,", "flat.jpg,8,5,8,25,cat", "flat.jpg,1,1,9,9,cat", "out.jpg,90,5,99,25,cat",
            "edge.jpg,-5,5,90,25,cat", "twice.jpg,8,5,40,25,cat", "twice.jpg,8,5,40,25,cat",
            "other.jpg,8,5,40,25,bird", "other.jpg,1,1,9,9,cat", "gone.jpg,8,5,40,25,cat", "corrupt.jpg,8,5,40,25,cat",
            ",1,1,9,9,cat"]
    (tmp_path / "ann.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.csv").write_text("cat,0\n")
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_csv(tmp_path / "ann.csv", "all")
    assert source.problems == {"malformed row": 4, "degenerate box": 1, "box outside the image": 1, "box clipped": 1,
                               "duplicate row": 1, "unknown class": 1, "missing image file": 1, "bad image file": 1}
    objects = _objects(source)
    assert sorted(objects) == ["edge.jpg", "flat.jpg", "ok.jpg", "other.jpg", "out.jpg", "twice.jpg"]
    np.testing.assert_allclose(objects["edge.jpg"][0], [[0.1, 0.0, 0.5, 1.0]], atol=1e-6)
    assert [len(objects[name][1]) for name in ("flat.jpg", "out.jpg", "twice.jpg", "other.jpg")] == [1, 0, 1, 1]
    csv_path = tmp_path / "ann.csv"
    for message in ("row 3 (short.jpg): 4 fields, 6 expected; image skipped",
                    "row 4 (words.jpg): a box that is not numbers (a,b,c,d); image skipped",
                    "row 5 (nobox.jpg): a box without a class; image skipped", "row 16: no image named; row skipped",
                    "row 6 (flat.jpg): box (8,5,8,25) has no width or height; object skipped",
                    "row 8 (out.jpg): box (90,5,99,25) lies outside the 80 x 50 image; object skipped",
                    "row 9 (edge.jpg): box (-5,5,90,25) reaches outside the 80 x 50 image; clipped to it",
                    "row 11 (twice.jpg): the same object as an earlier row; kept once",
                    "row 12 (other.jpg): class 'bird' is not one of the classes; object skipped",
                    f"row 14: image gone.jpg not found (looked in {tmp_path}"):
        assert f"{csv_path}: {message}" in caplog.text
    with pytest.raises(DataError, match=r"ann.csv: row 16: no image named"):
        load_csv(tmp_path / "ann.csv", "all", strict=True)


def test_what_cannot_be_read_is_an_error_naming_it(tmp_path):
    _images(tmp_path, ["a.jpg"])
    for text, message in (("image,kind,left,top\n", r"the header row 'image,kind,left,top' names no column for the "
                           "class and the box"),
                          ("", "empty: no rows"), ("a.jpg,,,,,\n", "no row names a class")):
        (tmp_path / "x.csv").write_text(text)
        with pytest.raises(DataError, match=f"{tmp_path / 'x.csv'}: {message}"):
            load_csv(tmp_path / "x.csv", "all")
    (tmp_path / "x.csv").write_text("a.jpg,1,1,9,9,cat\n")
    for text, message in (("cat,0\ndog,2\n", r"the ids must be 0 .. 1, each once; got \[0, 2\]"),
                          ("cat,0\ncat,1\n", r"\['cat'\] named twice"), ("cat,zero\n", "not a whole number")):
        (tmp_path / "classes.csv").write_text(text)
        with pytest.raises(DataError, match=message):
            load_csv(tmp_path / "x.csv", "all")
    with pytest.raises(DataError, match="no such file or folder"):
        read_csv_data(tmp_path / "none.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no CSV files \(\*.csv\) in it"):
        read_csv_data(tmp_path / "empty")


def test_a_run_trains_on_train_evaluates_on_val_and_evaluate_reads_it_again(tmp_path, capsys):
    """``train.py --csv`` (Roboflow's split folders): trained on train/, evaluated on valid/ (VOC07
    mAP, as keras-retinanet's CSV users measure); config.json keeps the path, so evaluate without
    data options evaluates valid/ again; --csv-images with another source is a usage error."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("valid", 3)):
        names = [f"im{n}.jpg" for n in range(count)]
        _images(tmp_path / "set" / split, names, size=(96, 128))
        rows = [f"{name},128,96,{('a', 'b')[n % 2]},{x:.0f},{y:.0f},{x + 40:.0f},{y + 40:.0f}"
                for n, name in enumerate(names) for x, y in [rng.uniform(0, 80, 2)]]
        (tmp_path / "set" / split / "_annotations.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    data = str(tmp_path / "set")
    args = ["--config", str(tmp_path / "tiny.json"), "--csv", data, "--out", str(tmp_path / "run"),
            "--schedule", "joint", "--steps", "2", "--verbose", "0"]
    assert train.main(args + ["--label-map", "x.pbtxt"]) == 2
    assert "--label-map goes with --tfrecord, not with this run's data (--csv)" in capsys.readouterr().err
    assert train.main(args) == 0
    assert f"data: training on CSV {data} train (6 images); evaluating on CSV {data} val (3 images)" in \
        capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["data_paths"], config["train_split"], config["test_split"]) == (
        "csv", [data, "", ""], "train", "val")
    model = str(tmp_path / "run" / "model.keras")
    assert evaluate_main(["--model", model]) == 0
    assert f"on CSV {data} val, 3 images" in capsys.readouterr().out
    valid = str(tmp_path / "set" / "valid" / "_annotations.csv")
    assert evaluate_main(["--model", model, "--csv", valid]) == 0  # one file: all of it
    assert f"on CSV {valid} all, 3 images" in capsys.readouterr().out
    assert evaluate_main(["--model", model, "--dataset", "shapes", "--csv-images", data]) == 2
    capsys.readouterr()
    # A training image added since: the held-out folder is not a slice of the training files, no warning.
    _images(tmp_path / "set" / "train", ["im9.jpg"], size=(96, 128))
    with open(tmp_path / "set" / "train" / "_annotations.csv", "a") as f:
        f.write("im9.jpg,128,96,a,10,10,50,50\n")
    assert evaluate_main(["--model", model]) == 0
    assert "is not the files the model was trained on" not in capsys.readouterr().err


def test_evaluate_says_so_when_files_added_since_training_move_its_held_out_slice(tmp_path, capsys):
    """One CSV file is the split ``all``: the run trains on ``all[:-1]`` and evaluates on
    ``all[-1:]``. Images added to the file since move that slice onto trained images, which the
    splits read again cannot show: evaluate compares the files with those the run recorded."""
    names = [f"im{n}.jpg" for n in range(5)]
    _images(tmp_path / "set", names, size=(96, 128))
    rows = [f"{name},128,96,a,{10 + 5 * n},10,{50 + 5 * n},50" for n, name in enumerate(names)]
    (tmp_path / "set" / "ann.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    assert train.main(["--config", str(tmp_path / "tiny.json"), "--csv", str(tmp_path / "set" / "ann.csv"),
                       "--out", str(tmp_path / "run"), "--schedule", "joint", "--steps", "2", "--verbose", "0"]) == 0
    model = str(tmp_path / "run" / "model.keras")
    capsys.readouterr()
    assert evaluate_main(["--model", model]) == 0
    assert "is not the files the model was trained on" not in capsys.readouterr().err
    # The run's file named again, with a split of its training images: said so too.
    assert evaluate_main(["--model", model, "--csv", str(tmp_path / "set" / "ann.csv"), "--split", "all"]) == 0
    assert "warning: 4 of the 5 evaluation images are training images too" in capsys.readouterr().err
    _images(tmp_path / "set", ["im5.jpg", "im6.jpg"], size=(96, 128))
    with open(tmp_path / "set" / "ann.csv", "a") as f:
        f.write("im5.jpg,128,96,a,10,10,50,50\nim6.jpg,128,96,a,20,20,60,60\n")
    assert evaluate_main(["--model", model]) == 0
    err = capsys.readouterr().err
    assert "is not the files the model was trained on (4 images then, 6 now; " in err, err


def test_quotes_in_class_names_read_as_csv_writers_write_them(tmp_path):
    """A quote inside a quoted field is doubled (Python's csv, pandas, Excel); the sniffer, given a
    first line without one, took the whole file for a dialect without that (a class ``12" pipe``
    read as ``12" pipe"``)."""
    import csv

    _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"], size=(60, 60))
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a.jpg", 1, 2, 30, 40, "dog"], ["b.jpg", 1, 2, 30, 40, '12" pipe'],
                                 ["c.jpg", 1, 2, 30, 40, 'say "hi", then go']])
    assert load_csv(tmp_path / "train.csv", "all").class_names == ('12" pipe', "dog", 'say "hi", then go')
    # The delimiter is the one splitting every line alike (the sniffer took the comma of a decimal
    # comma or of a class name on the first line), spaces after it skipped on every line.
    for name, text in (("semicolons", "a.jpg;1,5;2;30;40,5;dog\nb.jpg;1;2;30;40;cat\n"),
                       ("tabs", "a.jpg\t1.5\t2\t30\t40.5\tred, big car\nb.jpg\t1\t2\t30\t40\tcat\n"),
                       ("spaced", 'image,xmin,ymin,xmax,ymax,label\na.jpg, 1.5, 2, 30, 40.5, "red, big car"\n'
                                  'b.jpg, 1, 2, 30, 40, cat\n')):
        (tmp_path / f"{name}.csv").write_text(text)
        source = load_csv(tmp_path / f"{name}.csv", "all")
        boxes = {e["image/filename"].decode(): e["objects/bbox"][0] * 60 for e in examples(source)}
        np.testing.assert_allclose(boxes["a.jpg"], [2, 1.5, 40.5, 30], atol=1e-4, err_msg=name)
        assert source.num_examples == 2 and len(source.class_names) == 2 and not source.problems, name
