"""A source's own splits, for the sources whose files or folders are named by split (CSV,
TFRecord, LabelMe, VIA): train -> val (else test), trainval -> test, never the same split both
trained and evaluated on, and held-out data alone never trained on."""

import argparse
import json
import os

import pytest
from test_data_fixtures import examples, write_image

from keras_frcnn.cli import add_data_args, choose_data
from keras_frcnn.config import Config
from keras_frcnn.data import DataError, load_csv, load_labelme
from keras_frcnn.data import csv_files, labelme_folder, via_json
from keras_frcnn.data.splits import every_split, named_splits, own_splits

HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def test_the_rules():
    ten = lambda split: 10  # noqa: E731
    assert own_splits({"train": 1, "val": 1, "test": 1}, ten) == ("train", "val")
    assert own_splits({"train": 1, "test": 1}, ten) == ("train", "test")
    assert own_splits({"trainval": 1, "val": 1, "test": 1}, ten) == ("trainval", "test")  # (val is in trainval)
    assert own_splits({"trainval": 1, "val": 1}, ten) == ("trainval[:90%]", "trainval[90%:]")
    assert own_splits({"train": 1, "trainval": 1, "val": 1}, ten) == ("train", "val")
    assert own_splits({"all": 1}, lambda split: 3) == ("all[:-1]", "all[-1:]")
    assert own_splits({"val": 1, "test": 1}, ten) == (None, "val")  # (evaluated, never trained on)

    def split_of(name):
        return {"train": "train", "trainval": "trainval", "val": "val"}.get(name.split(".")[0])

    assert named_splits(["d/data.csv", "d/val.csv"], split_of) == {"train": ("d/data.csv",), "val": ("d/val.csv",)}
    assert named_splits(["train.csv", "trainval.csv", "val.csv"], split_of) == {
        "train": ("train.csv",), "trainval": ("trainval.csv",), "val": ("val.csv",)}
    assert named_splits(["a.csv", "b.csv"], split_of) == {"all": ("a.csv", "b.csv")}
    assert named_splits(["a.csv", "train.csv"], split_of) == {"all": ("a.csv", "train.csv")}
    assert every_split({"train": 1, "val": 1, "trainval": 1, "test": 1}) == "trainval+test"  # (train, val in it)
    assert every_split({"train": 1, "val": 1}) == "train+val"


def _choose(flag, path, evaluation=False):
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    choice = choose_data(parser.parse_args([flag, str(path)]), Config(), evaluation=evaluation)
    return choice.train_split, choice.test_split


def _labelme(path, label="dog"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_image(path[:-5] + ".jpg", 50, 80, seed=len(path))
    with open(path, "w") as f:
        json.dump({"shapes": [{"label": label, "shape_type": "rectangle", "points": [[8, 5], [40, 25]]}],
                   "imagePath": os.path.basename(path)[:-5] + ".jpg", "imageHeight": 50, "imageWidth": 80}, f)


def test_a_folder_of_training_files_beside_val_trains_on_them_and_val_alone_trains_nothing(tmp_path):
    """LabelMe / VIA / CSV: files at the top and a val/ folder: the top's files train, val/ is held
    out (before, val/ was both trained and evaluated on, the top's files dropped). A val/ folder
    alone: evaluated, and a training run refused by name."""
    for name in ("a", "b", "c"):
        _labelme(str(tmp_path / "lm" / f"{name}.json"))
    _labelme(str(tmp_path / "lm" / "val" / "v.json"))
    assert labelme_folder.default_splits(tmp_path / "lm") == ("train", "val")
    assert [e["image/filename"].decode() for e in examples(load_labelme(tmp_path / "lm", "train"))] == [
        "a.jpg", "b.jpg", "c.jpg"]
    _labelme(str(tmp_path / "only" / "val" / "v.json"))
    assert _choose("--labelme", tmp_path / "only", evaluation=True) == (None, "val")
    with pytest.raises(DataError, match=r"--labelme .*only: held-out data only \(its 'val' split\), nothing to train"):
        _choose("--labelme", tmp_path / "only")

    (tmp_path / "via" / "val").mkdir(parents=True)
    entry = {"filename": "a.jpg", "regions": []}
    (tmp_path / "via" / "via_region_data.json").write_text(json.dumps({"a": entry}))
    (tmp_path / "via" / "val" / "via_region_data.json").write_text(json.dumps({"b": {**entry, "filename": "b.jpg"}}))
    assert via_json.default_splits(tmp_path / "via") == ("train", "val")


def test_a_trainval_file_is_its_own_split_and_evaluates_on_test(tmp_path):
    """train.csv, val.csv, trainval.csv and test.csv (VOC's names): trainval is train + val, so
    train -> val, or trainval -> test; never trainval merged into train (before: train's images
    twice a pass, val's trained on and then evaluated)."""
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(str(tmp_path / name), 50, 80, seed=len(name))
    rows = {"train": ["a.jpg"], "val": ["b.jpg"], "trainval": ["a.jpg", "b.jpg"], "test": ["c.jpg"]}
    for split, names in rows.items():
        (tmp_path / f"{split}.csv").write_text(HEADER + "".join(f"{n},80,50,dog,8,5,40,25\n" for n in names))
    assert set(csv_files.read_csv_data(tmp_path).splits) == {"train", "val", "trainval", "test"}
    assert csv_files.default_splits(tmp_path) == ("train", "val")
    assert load_csv(tmp_path, "train").num_examples == 1 and load_csv(tmp_path, "trainval").num_examples == 2
    for name in ("train", "val"):
        (tmp_path / f"{name}.csv").unlink()
    assert csv_files.default_splits(tmp_path) == ("trainval", "test")
    (tmp_path / "trainval.csv").unlink()  # test.csv alone: held out, never trained on
    assert csv_files.read_csv_data(tmp_path).splits == {"test": (str(tmp_path / "test.csv"),)}
    with pytest.raises(DataError, match="held-out data only"):
        _choose("--csv", tmp_path)
