"""The command line as a user meets it: which data each source trains and evaluates on, COCO end
to end, and one clean ``error:`` line (exit status 2) for every user mistake, with no traceback
and no TensorFlow start-up chatter."""

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_data_fixtures import write_coco, write_voc_folder
from test_data_tfds import VOC_EXTRAS, _as_dataset_fn, mock_tfds

from conftest import tiny_config
from keras_frcnn import cli
from keras_frcnn.config import Config, ConfigError
from keras_frcnn.data import load_shapes, load_voc_folder, train_dataset
from keras_frcnn.data.problems import DataError
from keras_frcnn.data.stored_proposals import ProposalStore, ProposalWriter
from keras_frcnn.evaluate import headline
from keras_frcnn.evaluate import main as evaluate_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the repository's train.py)

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "wide"}]


def _coco_split(root, count, seed):
    """``count`` images with one square and one wide box each (annotations with COCO areas)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(count):
        images.append({"id": 100 + i, "file_name": f"{seed}_{i}.jpg", "size": (96, 128)})
        for category, (w, h) in ((1, (30, 30)), (2, (50, 24))):
            x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": category,
                                "bbox": [x, y, w, h], "area": 0.8 * w * h, "iscrowd": 0})
    return write_coco(root, images, annotations, CATEGORIES)


@pytest.fixture
def tiny_config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(tiny_config().to_json())
    return path


def _train(argv, capsys):
    code = train.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_coco_json_evaluates_its_val_file_and_never_its_training_images(tmp_path, tiny_config_file, capsys,
                                                                          caplog):
    train_json, train_images = _coco_split(tmp_path / "train", 4, seed=1)
    val_json, val_images = _coco_split(tmp_path / "val", 3, seed=2)
    more_json, more_images = _coco_split(tmp_path / "more", 2, seed=3)
    common = ["--config", str(tiny_config_file), "--coco-json", train_json, "--coco-images", train_images,
              "--schedule", "joint", "--steps", "2", "--verbose", "0"]

    # Two files of the same categories train together (--coco-json repeated; --coco-images once for
    # each); config.json keeps both, and the run's config reads both again.
    code, out, _ = _train(common + ["--coco-json", more_json, "--coco-images", more_images,
                                    "--out", str(tmp_path / "alone")], capsys)
    assert code == 0
    assert "no evaluation: a --coco-json run evaluates only on held-out images" in out
    assert f"training on COCO {train_json} + COCO {more_json} (6 images)" in out
    metrics = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert metrics["evaluated_on"] is None and metrics["mAP"] is None
    assert (tmp_path / "alone" / "model.keras").exists()
    config = json.loads((tmp_path / "alone" / "config.json").read_text())
    assert config["data_paths"] == [train_json, train_images, "", "", more_json, more_images]
    args = train.parse_args(["--config", str(tmp_path / "alone" / "config.json")])
    choice = cli.choose_data(args, train.build_config(args))
    assert (choice.name, choice.more) == (train_json, ((more_json, None),))
    assert cli.load_training_source(args, choice).num_examples == 6
    for argv, message in (([train_json, train_json], "the same file as --coco-json"),
                          ([train_json, more_json, "--coco-images", train_images, "--coco-images", more_images,
                            "--coco-images", val_images], "--coco-images given 3 times for 2 --coco-json files")):
        args = train.parse_args(["--coco-json", argv[0], "--coco-json", *argv[1:]])
        with pytest.raises(cli.UsageError, match=message):
            cli.choose_data(args, train.build_config(args))
    args = train.parse_args(["--coco-json", train_json, "--test-split", "all[90%:]"])  # (was ignored: nothing held out)
    with pytest.raises(cli.UsageError, match=r"split 'all\[90%:\]': a --coco-json file has no splits"):
        cli.choose_data(args, train.build_config(args), args.train_split, args.test_split)

    # Each JSON beside its images, as Roboflow exports them (train/_annotations.coco.json, valid/...):
    # no image folder options needed.
    train_json, val_json = (shutil.copy(json_path, os.path.join(images, "_annotations.coco.json"))
                            for json_path, images in ((train_json, train_images), (val_json, val_images)))
    code, out, _ = _train(["--config", str(tiny_config_file), "--coco-json", train_json, "--schedule", "joint",
                           "--steps", "2", "--verbose", "0", "--out", str(tmp_path / "held_out"),
                           "--coco-val-json", val_json], capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "held_out" / "metrics.json").read_text())
    assert metrics["evaluated_on"] == f"COCO {val_json}" and metrics["num_images"] == 3
    assert set(metrics["coco"]) >= {"AP", "AP50", "AP_small", "AP_medium", "AP_large"}
    assert f"evaluating on COCO {val_json} (3 images)" in out
    assert "COCO AP@[.5:.95]" in out and f"on COCO {val_json}" in out  # the headline names the data

    # The run's config.json says what it trained on; evaluate.py without data options evaluates on
    # the held-out file the run was evaluated on (a run without one: say so).
    config = json.loads((tmp_path / "held_out" / "config.json").read_text())
    assert (config["dataset"], config["data_paths"]) == ("coco-json", [train_json, "", val_json, ""])
    assert metrics["trained_on"] == f"COCO {train_json}"
    model = str(tmp_path / "held_out" / "model.keras")
    assert evaluate_main(["--model", model]) == 0
    assert f"on COCO {val_json}, 3 images" in capsys.readouterr().out
    assert evaluate_main(["--model", str(tmp_path / "alone" / "model.keras")]) == 2
    assert "without a held-out file: give the data to evaluate on" in capsys.readouterr().err
    # Other data of other classes: refused.
    assert evaluate_main(["--model", model, "--dataset", "shapes", "--shapes-images", "4,2", "--data-dir",
                          str(tmp_path / "tfds")]) == 2
    err = capsys.readouterr().err
    assert "has 3 class(es) not among the 2 known: circle, triangle, cross (the model's classes)" in err
    # A held-out file listing only the categories it uses (FiftyOne's export): its classes are some
    # of the model's, matched by name (it was refused with both lists).
    one_class = json.loads(open(val_json).read())
    kept = next(c["id"] for c in one_class["categories"] if c["name"] == "wide")
    one_class["categories"] = [c for c in one_class["categories"] if c["id"] == kept]
    one_class["annotations"] = [a for a in one_class["annotations"] if a["category_id"] == kept]
    (tmp_path / "wide.json").write_text(json.dumps(one_class))
    assert evaluate_main(["--model", model, "--coco-json", str(tmp_path / "wide.json"), "--coco-images", val_images,
                          "--out", str(tmp_path / "wide_metrics.json")]) == 0
    wide = json.loads((tmp_path / "wide_metrics.json").read_text())
    assert wide["num_positives"] == {"square": 0, "wide": len(one_class["annotations"])} and wide["coco"]
    # A held-out file listing a category the model lacks that none of its objects has (an annotation
    # tool's unused label, here with one crowd region of it): left out with a warning (it was refused).
    extra = json.loads(open(val_json).read())
    extra["categories"].append({"id": 99, "name": "unused"})
    extra["annotations"].append({"id": 10 ** 6, "image_id": extra["images"][0]["id"], "category_id": 99,
                                 "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1})
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    with caplog.at_level("WARNING"):
        assert evaluate_main(["--model", model, "--coco-json", str(tmp_path / "extra.json"), "--coco-images",
                              val_images, "--out", str(tmp_path / "extra_metrics.json")]) == 0
    assert "lists 1 class(es) that none of its objects has and the 2 classes wanted lack: unused; left out" \
        in caplog.text
    assert evaluate_main(["--model", model, "--coco-json", val_json, "--coco-images", val_images,
                          "--out", str(tmp_path / "val_metrics.json")]) == 0
    with_extra, alone = (json.loads((tmp_path / name).read_text()) for name in ("extra_metrics.json", "val_metrics.json"))
    assert with_extra["num_positives"] == alone["num_positives"] and with_extra["mAP"] == alone["mAP"]
    assert with_extra["coco"] == alone["coco"]
    # With an object of it, the model cannot be evaluated on it: refused, naming it.
    extra["annotations"][-1]["iscrowd"] = 0
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    assert evaluate_main(["--model", model, "--coco-json", str(tmp_path / "extra.json"), "--coco-images",
                          val_images]) == 2
    assert "has 1 class(es) not among the 2 known: unused (the model's classes)" in capsys.readouterr().err
    assert evaluate_main(["--model", model, "--coco-json", val_json, "--coco-json", more_json]) == 2
    assert "--coco-json given 2 times: evaluate one file" in capsys.readouterr().err
    written = tmp_path / "results" / "new" / "metrics.json"  # its folders made first
    assert evaluate_main(["--model", model, "--coco-json", val_json, "--coco-images", val_images,
                          "--out", str(written)]) == 0
    assert f"on COCO {val_json}, 3 images" in capsys.readouterr().out
    assert json.loads(written.read_text())["evaluated_on"] == f"COCO {val_json}"
    assert evaluate_main(["--model", model, "--coco-json", val_json, "--coco-images", val_images,
                          "--out", str(tmp_path)]) == 2
    assert "a folder; give the metrics file's name" in capsys.readouterr().err
    # A VOC folder is read with the model's classes: its own would be the names found in its files
    # ("other" besides them here, none of "wide"), which no model of this run has.
    write_voc_folder(tmp_path / "voc", {"a": {"objects": [("square", (1, 1, 9, 9), False), ("other", (2, 2, 8, 8), False)]},
                                        "b": {"objects": [("square", (3, 3, 9, 9), False)]}}, {"test": ["a", "b"]})
    assert evaluate_main(["--model", model, "--voc-dir", str(tmp_path / "voc")]) == 0
    out = capsys.readouterr().out
    assert f"on VOC folder {tmp_path / 'voc'} (test), 2 images" in out
    assert [line.split()[-2] for line in out.splitlines() if line.startswith("square ")] == ["2"]  # positives
    # A folder with none of the model's classes: refused, not "mAP undefined" and status 0.
    write_voc_folder(tmp_path / "dogs", {"a": {"objects": [("dog", (1, 1, 9, 9), False)]}}, {"test": ["a"]})
    assert evaluate_main(["--model", model, "--voc-dir", str(tmp_path / "dogs")]) == 2
    assert "has no labelled objects of the model's classes (square, wide)" in capsys.readouterr().err


# (~22 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); COCO's TFDS splits
# (test_data_tfds: tfds_default_splits, crowd boxes) and a run evaluated with COCO AP on held-out
# images (test_coco_json_...) run by default.)
@pytest.mark.slow
def test_tfds_coco_trains_on_train_and_evaluates_on_validation(tmp_path, tiny_config_file, capsys):
    requested = []
    extras = {"is_crowd": (np.bool_, lambda o: False), "id": (np.int64, lambda o: 1),
              "area": (np.int64, lambda o: 100)}
    mock = _as_dataset_fn(extras)

    def recording(self, split, decoders=None, **kwargs):
        requested.append((str(split), bool(decoders)))
        return mock(self, split, decoders=decoders, **kwargs)

    out_dir = tmp_path / "run"
    with mock_tfds(as_dataset_fn=recording, data_dir=str(tmp_path / "tfds")):
        code, out, err = _train(["--config", str(tiny_config_file), "--dataset", "coco/2017", "--data-dir",
                                 str(tmp_path / "tfds"), "--schedule", "joint", "--steps", "2", "--verbose", "0",
                                 "--out", str(out_dir)], capsys)
    assert code == 0, err
    # Training reads train (encoded images: decoded after shuffling), evaluation reads validation.
    assert ("train", True) in requested and ("validation", False) in requested
    assert not any(split.startswith("test") for split, _ in requested)
    config = json.loads((out_dir / "config.json").read_text())
    assert (config["dataset"], config["train_split"], config["test_split"]) == ("coco/2017", "train", "validation")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "coco/2017 validation" and "coco" in metrics
    assert "training on coco/2017 train" in out and "evaluating on coco/2017 validation" in out


def test_tfds_oxford_pets_trains_on_its_head_boxes_and_tests_on_a_tenth_of_train(tmp_path):
    """The TF OD API's pet tutorial set: one head box an image, the breed its class; its test split
    has no boxes, so train.py holds out the last tenth of train (and never reads test). The
    training data is counted once when loaded (images without a head box are left out, so TFDS's
    count is not the data's; train.py's data line said "None images")."""
    from test_data_tfds import _image_labelled_fn

    requested = []
    mock = _image_labelled_fn("head_bbox", lambda n: 30 + n, {
        "species": lambda n: np.int64(n % 2), "segmentation_mask": lambda n: np.zeros((1, 1, 1), np.uint8)},
        filename="file_name")

    def recording(self, split, decoders=None, **kwargs):
        requested.append(str(split))
        return mock(self, split, decoders=decoders, **kwargs)

    args = train.parse_args(["--dataset", "oxford_iiit_pet", "--data-dir", str(tmp_path)])
    with mock_tfds(as_dataset_fn=recording, data_dir=str(tmp_path)):
        choice = cli.choose_data(args, train.build_config(args))
        assert (choice.train_split, choice.test_split) == ("train[:90%]", "train[90%:]")
        source = cli.load_training_source(args, choice, decode_images=False)
    assert source.num_examples == 2 and len(source.class_names) == 37
    assert requested == ["train[:90%]"]


@pytest.mark.slow  # (12 s; the combination itself is tested in test_data_combined)
def test_tfds_voc_07_plus_12_trains_on_both_and_tests_on_2007(tmp_path, tiny_config_file, capsys):
    """--dataset voc/2007+voc/2012: the paper's 07+12 (VOC 2007 trainval and VOC 2012 trainval,
    tested on VOC 2007 test), kept in the run's config for evaluate and --resume."""
    requested = []
    mock = _as_dataset_fn(VOC_EXTRAS)

    def recording(self, split, decoders=None, **kwargs):
        requested.append((self.builder_config.name, str(split)))
        return mock(self, split, decoders=decoders, **kwargs)

    out_dir = tmp_path / "run"
    with mock_tfds(as_dataset_fn=recording, data_dir=str(tmp_path / "tfds"), num_examples=3):
        code, out, err = _train(["--config", str(tiny_config_file), "--dataset", "voc/2007+voc/2012", "--data-dir",
                                 str(tmp_path / "tfds"), "--schedule", "joint", "--steps", "2", "--verbose", "0",
                                 "--out", str(out_dir)], capsys)
        assert code == 0, err
        assert sorted(set(requested)) == [("2007", "test"), ("2007", "train+validation"),
                                          ("2012", "train+validation")]
        assert "training on voc/2007 train+validation + voc/2012 train+validation (6 images); evaluating on " \
               "voc/2007 test (" in out
        config = json.loads((out_dir / "config.json").read_text())
        assert (config["dataset"], config["train_split"], config["test_split"]) == ("voc/2007+voc/2012",
                                                                                    "train+validation", "test")
        requested.clear()
        assert evaluate_main(["--model", str(out_dir / "model.keras"), "--data-dir", str(tmp_path / "tfds")]) == 0
        assert requested == [("2007", "test")] and "on voc/2007 test, 3 images" in capsys.readouterr().out


def test_an_image_tensorflow_refuses_after_the_check_passed_it_is_named_and_skipped_next_time(
        tmp_path, tiny_config_file, capsys, monkeypatch, caplog):
    """A way Pillow's and TensorFlow's decoders differ that the image check does not know (stood in
    for here by a check that passes one corrupt JPEG): the decoder's error inside the tf.data graph
    names no file; the run decodes the files it read to name it, remembers it as a bad image file,
    and the next run skips it with a counted warning."""
    from keras_frcnn.data import image_files

    monkeypatch.setenv("KERAS_FRCNN_CACHE", str(tmp_path / "cache"))
    entries = {f"i{i}": {"objects": [("dog", (5, 5, 40, 40), False)]} for i in range(5)}
    write_voc_folder(tmp_path / "voc", entries, {"trainval": ["i0", "i1", "i2", "i3"], "test": ["i4"]})
    bad = tmp_path / "voc" / "JPEGImages" / "i2.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG's data")
    check = image_files.check_image
    monkeypatch.setattr(image_files, "check_image", lambda path: image_files.CheckedImage(60, 80, 1)
                        if os.path.basename(path) == "i2.jpg" else check(path))
    argv = ["--voc-dir", str(tmp_path / "voc"), "--config", str(tiny_config_file), "--classes", "dog"]
    with caplog.at_level("WARNING", logger="keras_frcnn.data"):
        code, _, err = _train([*argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert f"error: {bad}: TensorFlow's image decoder refuses it (" in err
    assert "Invalid JPEG data" in err and "remembered as bad now" in err
    assert "decoding the images of the 5 files read to find it" in caplog.text  # (the training and the test split's)
    # The next run's check finds it remembered: skipped by name and counted, like any bad image.
    caplog.clear()
    with caplog.at_level("WARNING", logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path / "voc", "trainval", classes=("dog",))
    assert source.num_examples == 3 and source.problems == {"bad image file": 1}
    assert f"{bad}: TensorFlow does not decode it (" in caplog.text
    # The files of one command are not the next one's to search.
    assert cli.run(lambda: 0) == 0 and not image_files.FILES_READ
    # Decoded again and found whole (a file changed while the run read it): said so.
    from keras_frcnn.data.examples import decode_image

    def meets_a_refused_image():
        image_files.FILES_READ.add(str(tmp_path / "voc" / "JPEGImages" / "i0.jpg"))
        tf.function(lambda: decode_image(tf.constant(b"\xff\xd8\xff\xe0 not a JPEG's data")))()

    assert cli.run(meets_a_refused_image) == 2
    assert "Invalid JPEG data or crop window. (an image TensorFlow's decoder refused; decoded again, each image of the 1 " \
           "files read is whole" in capsys.readouterr().err


def test_a_diverging_run_stops_at_its_first_nan_and_checkpoints_nothing_of_it(tmp_path, tiny_config_file, capsys):
    """A learning rate far too high: the loss turns NaN within the first steps. The run stops at
    the end of that log window (exit status 1, one line saying what to do), and neither the
    step-interval checkpoint nor the stage's end checkpoints the diverged weights; it used to train
    NaN to the end, save that model and report mAP 0."""
    out_dir = tmp_path / "run"
    code, out, err = _train(["--config", str(tiny_config_file), "--shapes-images", "6,2", "--data-dir",
                             str(tmp_path / "tfds"), "--schedule", "joint", "--steps", "20", "--lr", "500",
                             "--log-every", "10", "--checkpoint-every", "5", "--verbose", "0", "--out", str(out_dir)],
                            capsys)
    assert code == 1, err
    last = err.rstrip("\n").split("\n")[-1].split("\r")[-1].strip()  # (after the shapes build's progress)
    assert last.startswith("error: the training loss became NaN (loss, ")
    # Found by the step-interval checkpoint (step 5) or the log window's end (10), whichever comes first.
    assert re.search(r"between steps 0 and (5|10) of joint \(learning rate 500\)", last) and "lower --lr" in last
    assert not (out_dir / "checkpoint").exists() and not (out_dir / "model.keras").exists()


def test_a_second_train_py_in_a_folder_in_use_is_refused(tmp_path, tiny_config_file, capsys):
    """The same command started twice: the second stops before touching the first's folder (the
    lock is the kernel's: here held by this process through another open file, as a second
    process would meet it)."""
    out = tmp_path / "run"
    with train.run_folder_lock(str(out)):
        (out / "marker").write_text("the first run's")
        code, stdout, err = _train(["--config", str(tiny_config_file), "--out", str(out), "--steps", "2"], capsys)
        assert code == 2 and stdout == ""
        assert err == f"error: {out} is in use by another train.py (process {os.getpid()}): wait for it to end, " \
                      "or give another --out\n"
        assert sorted(p.name for p in out.iterdir()) == [".train.lock", "marker"]
    # Released with the first run: the folder is usable again (here: the lock alone).
    with train.run_folder_lock(str(out)):
        pass


def test_an_unlabelled_split_is_refused_before_training(tmp_path, tiny_config_file, capsys):
    code, out, err = _train(["--config", str(tiny_config_file), "--dataset", "coco/2017", "--test-split", "test",
                             "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: coco/2017 split 'test' has no annotations") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_split_that_is_not_there_is_refused_before_training(tmp_path, tiny_config_file, capsys):
    load_shapes("train", data_dir=str(tmp_path / "tfds"), num_train=6, num_test=3)
    capsys.readouterr()  # the build's own lines
    common = ["--config", str(tiny_config_file), "--dataset", "shapes", "--shapes-images", "6,3",
              "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "run")]
    for flag, split, says in [("--train-split", "val", "Unknown split 'val'"),
                              ("--test-split", "test[:2", "Error parsing split 'test[:2'"),
                              ("--train-split", "train[4:2]", "selects no examples"),
                              ("--train-split", "train[:0]", "corresponds to no data")]:
        code, out, err = _train(common + [flag, split], capsys)
        assert code == 2 and out == ""
        assert err.startswith(f"error: TFDS shapes/train6_test3_seed0: split '{split}'") and says in err
        assert err.endswith("(its splits: test (3), train (6))\n") and err.count("\n") == 1
    assert not (tmp_path / "run" / "config.json").exists()


def test_weights_that_cannot_be_had_stop_the_run_before_its_data_is_read(tmp_path, tiny_config_file, capsys,
                                                                        monkeypatch):
    nowhere = ["--voc-dir", str(tmp_path / "not-read"), "--out", str(tmp_path / "run")]
    missing = str(tmp_path / "nope.h5")
    code, out, err = _train(["--config", str(tiny_config_file), "--weights", missing] + nowhere, capsys)
    assert code == 2 and out == "" and err == f"error: --weights {missing}: no such file\n"

    def offline(**kwargs):  # what Keras raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or "
                        "service not known")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    code, out, err = _train(["--preset", "voc"] + nowhere, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: could not load VGG-16 weights 'imagenet': URL fetch failure")
    assert "put Keras's vgg16_weights_tf_dim_ordering_tf_kernels.h5 in ~/.keras/models/" in err
    assert not (tmp_path / "run").exists()


def test_a_malformed_tf_config_is_one_line(tmp_path, tiny_config_file, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker"')
    code, out, err = _train(["--config", str(tiny_config_file), "--strategy", "multi-worker",
                             "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: TF_CONFIG is not valid JSON (")


def test_headline_of_a_split_without_labels():
    summary = {"evaluated_on": "x test", "mAP": None, "mAP_area": None, "num_images": 5,
               "num_positives": {"a": 0, "b": 0}}
    assert headline(summary) == "x test has no labelled objects: mAP undefined (5 images)"


def test_a_file_gone_while_fit_reads_it_is_one_line_naming_it(tmp_path, capsys):
    """An image removed after the data was listed fails inside Keras's compiled step: one line
    with the file, not "Graph execution error:" and where the node was defined."""
    missing = str(tmp_path / "gone.jpg")
    data = tf.data.Dataset.from_tensor_slices(([missing], [[0.0]])).map(
        lambda path, y: (tf.reshape(tf.cast(tf.strings.length(tf.io.read_file(path)), tf.float32), [1]), y))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    assert cli.run(lambda: model.fit(data.batch(1), verbose=0), resume_hint="add --resume") == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"error: {missing}; No such file or directory (reading the data; once it is whole again, add --resume)"


def test_stored_proposals_of_another_example_are_an_error_naming_it(tmp_path, capsys):
    entries = {name: {"objects": [("dog", (5, 5, 40, 30), False)]} for name in ("a", "b", "c")}
    write_voc_folder(tmp_path, entries, {"trainval": ["a", "b", "c"]})
    source = load_voc_folder(tmp_path)
    directory = tmp_path / "proposals"
    with ProposalWriter(directory, source) as writer:
        for batch in train_dataset(source, tiny_config(), 1, shuffle=False, drop_remainder=False):
            writer.write(int(batch["index"][0]), batch["key"].numpy()[0], np.array([[1.0, 2.0, 30.0, 40.0]]))

    # The split file is edited after the proposals were written: same name, same size, other order.
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("b\na\nc\n")
    reordered = load_voc_folder(tmp_path)
    with pytest.raises(DataError, match=r"\(3 examples; other image files or order of the same name\)"):
        ProposalStore(directory, reordered)
    # Proposals written before sources had identities: names compared; the graph's check of each
    # example's key then names the first one out of place.
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["identity"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    store = ProposalStore(directory, reordered)
    batches = train_dataset(reordered, tiny_config(), 1, shuffle=False, proposals=store)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(batches)
    message = cli.describe_tf_error(caught.value)
    assert "b.jpg#-1" in message and "00000000.tfexample" in message and "a.jpg#-1" in message

    def fail():
        raise caught.value

    assert cli.run(fail) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "b.jpg#-1" in err

    # Another size: refused when the stage opens its proposals, before anything is read.
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"proposals of .* \(3 examples\), but training reads .* \(2 examples\)"):
        ProposalStore(directory, load_voc_folder(tmp_path))


def test_user_errors_are_one_line_with_exit_status_2(tmp_path, monkeypatch, capsys):
    """Each command's user errors: one line on stderr, exit status 2, no traceback; one of each
    command run as a user's shell runs it (TensorFlow's own start-up lines included), the other
    train.py errors in this process."""
    bomb = tmp_path / "bomb"
    write_voc_folder(bomb, {"a": {"xml": '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>'
                                         "<annotation>&lol;</annotation>"}}, {"trainval": ["a"], "test": ["a"]})
    nothing = tmp_path / "nothing"  # images without objects, or with difficult ones only
    write_voc_folder(nothing, {"a": {}, "b": {"objects": [("dog", (1, 1, 9, 9), True)]},
                               "c": {"objects": [("dog", (1, 1, 9, 9), False)]}},
                     {"trainval": ["a", "b"], "test": ["b"], "labelled": ["c"]})
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("not a zip")
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    commands = {
        "no objects": ([str(ROOT / "train.py"), "--voc-dir", str(nothing), "--out", "run_a"],
                       "nothing (trainval) has no objects to learn from (none in its 2 image(s)"),
        "evaluate": (["-m", "keras_frcnn.evaluate", "--model", str(tmp_path / "none.keras")], "none.keras"),
        "export": ([str(ROOT / "export.py"), "--model", str(not_a_model), "--out", str(tmp_path / "e")],
                   "model.keras: not a .keras model: not a zip archive (a .keras file is one; a copy cut short"),
        "predict": (["-m", "keras_frcnn.predict", "--model", str(tmp_path / "none.keras"), str(image),
                     "--out", str(tmp_path / "p")], "none.keras: no such file"),
        "predict, no images": (["-m", "keras_frcnn.predict", "--model", str(not_a_model), str(bomb / "Annotations"),
                                "--out", str(tmp_path / "p")], "no image files in " + str(bomb / "Annotations")),
    }
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    running = {name: subprocess.Popen([sys.executable, *command], cwd=tmp_path, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, (command, _) in commands.items()}
    monkeypatch.chdir(tmp_path)
    for args, needle in (
            (["--voc-dir", str(tmp_path / "nowhere"), "--out", "run"], str(tmp_path / "nowhere") + ": no such folder"),
            (["--voc-dir", str(bomb), "--out", "run"], "a.xml: refused to parse XML"),
            (["--voc-dir", str(nothing), "--train-split", "labelled", "--out", "run_b"],
             "nothing (test) has no labelled objects (none in its 1 image(s)"),
            (["--anchor-scales", "8,x"], "--anchor-scales 8,x"),
            (["--out", str(image)], "x.jpg: a file, not a folder")):
        assert train.main(args) == 2, args
        stdout, stderr = capsys.readouterr()
        assert stderr.startswith("error: ") and stderr.count("\n") == 1 and needle in stderr, (args, stderr)
        assert stdout == "", (args, stdout)
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        needle = commands[name][1]
        assert process.returncode == 2, (name, stderr[-2000:])
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, (name, stderr)
        assert needle in stderr, (name, stderr)
        assert "Traceback" not in stderr and stdout == "", (name, stdout)


def test_a_ctrl_c_while_tensorflow_loads_ends_without_a_traceback(tmp_path):
    """Ctrl-C in a command's first seconds, while ``import keras_frcnn`` loads TensorFlow (~3 s on
    2 cores), printed Python's KeyboardInterrupt traceback: now the line "interrupted" and 130."""
    for script in ("train.py", "export.py"):
        process = subprocess.Popen([sys.executable, str(ROOT / script), "--out", str(tmp_path / "run")],
                                   cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)  # (past Python's own start, well inside TensorFlow's)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, (script, stderr[-2000:])
        assert "Traceback" not in stderr and stderr.splitlines()[-1] == "interrupted", (script, stderr[-2000:])
        assert not (tmp_path / "run").exists()


def test_options_out_of_range_or_of_another_source_are_refused(tmp_path, capsys):
    """Each command refuses, before loading anything, a value it cannot use (a seed NumPy would
    reject mid-start, a negative checkpoint interval that checkpointed every window, a score outside
    [0, 1], a folder where a file goes) and an option of another data source than the run's (it
    was ignored: --classes with the shapes set trained on every class)."""
    import export
    from keras_frcnn import predict

    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    loop = tmp_path / "loop.jpg"  # a link to itself ("no such file" before)
    loop.symlink_to(loop)
    refused = {
        "--checkpoint-minutes must be >= 0": lambda: train.parse_args(["--checkpoint-minutes", "-3"]),
        "--checkpoint-minutes must be >= 0 ": lambda: train.parse_args(["--checkpoint-minutes", "nan"]),
        "--coco-val-images goes with --coco-val-json": lambda: train.parse_args(["--coco-val-images", "v"]),
        "--min-score is a score in [0, 1], got 2.0": lambda: predict.main(["--model", "m.keras", "--out", "p",
                                                                            "--min-score", "2", "x.jpg"]),
        f"--out {a_file}: a file, not a folder": lambda: predict.main(["--model", "m.keras", "--out", str(a_file),
                                                                         "x.jpg"]),
        f"--out {a_file}: a file; --format saved_model": lambda: export.parse_args(["--model", "m.keras", "--out",
                                                                                      str(a_file)]),
        f"(e.g. --out {tmp_path / 'model.onnx'})": lambda: export.parse_args(["--model", "m.keras", "--format", "onnx",
                                                                              "--out", str(tmp_path)]),
        "--out rt/x.onnx: the suffix of --format onnx; --format litert writes rt/x.tflite": lambda: export.parse_args(
            ["--model", "m.keras", "--format", "litert", "--out", "rt/x.onnx"]),
        "--batch-size must be positive": lambda: evaluate_main(["--model", "m.keras", "--batch-size", "0"]),
        "--max-side 200 is below --min-side 256": lambda: evaluate_main(["--model", "m.keras", "--min-side", "256",
                                                                         "--max-side", "200"]),
        f"--plots {a_file}: a file": lambda: evaluate_main(["--model", "m.keras", "--plots", str(a_file)]),
        f"no such file or folder: {tmp_path / 'nowhere'}": lambda: predict.main(
            ["--model", "m.keras", "--out", str(tmp_path / "p"), str(a_file), str(tmp_path / "nowhere")]),
        f"a link to no file (or a loop of links): {loop}": lambda: predict.main(
            ["--model", "m.keras", "--out", str(tmp_path / "p"), str(a_file), str(loop)]),
        f"--version {2 ** 63}: a version is a positive integer below 2**63": lambda: export.parse_args(
            ["--model", "m.keras", "--out", "e", "--version", str(2 ** 63)]),
        "--version 0: a version is a positive integer": lambda: export.parse_args(["--model", "m.keras", "--out",
                                                                                  "e", "--version", "0"]),
        "--no-warmup: for --format saved_model only (not onnx)": lambda: export.parse_args(
            ["--model", "m.keras", "--format", "onnx", "--out", "m.onnx", "--no-warmup"]),
        # Values read as "not given" (the preset's used in silence): refused.
        "--lr must be positive, got 0.0": lambda: train.parse_args(["--lr", "0"]),
        "--lr must be a finite number, got inf": lambda: train.parse_args(["--lr", "inf"]),
        "--anchor-scales was given an empty value": lambda: train.parse_args(["--anchor-scales", ""]),
        "--out was given an empty value": lambda: train.parse_args(["--out", ""]),
        "--voc-dir was given an empty value": lambda: train.parse_args(["--voc-dir", "a", "--voc-dir", ""]),
        "give --preset or --config, not both": lambda: train.parse_args(["--preset", "voc", "--config", "c.json"]),
        # (a CLI fuzzing run: these reached a traceback far from the flag)
        "--steps-per-execution must be at most 2,147,483,647": lambda: train.parse_args(
            ["--steps-per-execution", str(2 ** 70)]),
        "--batch-size must be at most 2,147,483,647": lambda: evaluate_main(["--model", "m.keras", "--batch-size",
                                                                             str(10 ** 20)]),
        "--plots was given an empty value": lambda: evaluate_main(["--model", "m.keras", "--plots", ""]),
        "argument --steps: invalid int value: '1_0'": lambda: train.parse_args(["--steps", "1_0"]),  # (int(): 10)
        "--out /tmp/\\xffout: a name that is not UTF-8": lambda: train.parse_args(["--out", os.fsdecode(b"/tmp/\xffout")]),
    }
    for message, call in refused.items():
        with pytest.raises(SystemExit) as stop:
            call()
        assert stop.value.code == 2 and message.strip() in capsys.readouterr().err, message
    # evaluate's output folders, made before the model is read and the images detected (--plots was
    # made after the whole evaluation, which was lost; --out said "File exists").
    for flag, value in (("--plots", a_file / "plots"), ("--out", a_file / "m.json")):
        assert evaluate_main(["--model", str(tmp_path / "none.keras"), flag, str(value)]) == 2
        assert f"error: {flag} {value}: {a_file} is a file, not a folder\n" in capsys.readouterr().err
    for seed in ("-1", str(2**32)):  # named by the option typed, not only the config field
        with pytest.raises(ConfigError, match=rf"^--seed {seed}: config field train.seed must be an int in \[0, 2\*\*32\)"):
            train.build_config(train.parse_args(["--seed", seed]))
    with pytest.raises(ConfigError, match="^--min-side 4000: config field image.max_side must be >= image.min_side"):
        train.build_config(train.parse_args(["--min-side", "4000"]))
    with pytest.raises(cli.UsageError, match="--backbone vgg16 has no preset of the built-in set: train it with "
                                             "--preset voc"):
        train.build_config(train.parse_args(["--backbone", "vgg16"]))
    with pytest.raises(ConfigError, match="^--backbone resnet50-fpn: .*anchors.stride.* use one of its presets"):
        train.build_config(train.parse_args(["--preset", "voc", "--backbone", "resnet50-fpn"]))
    assert train.build_config(train.parse_args(["--seed", str(2**32 - 1)])).train.seed == 2**32 - 1

    def choose(*argv):
        parser = cli.ArgumentParser()
        cli.add_data_args(parser)
        return cli.choose_data(parser.parse_args(list(argv)), Config(dataset="shapes"))

    for argv, message in ((["--classes", "dog"], "--classes goes with --voc-dir, not with this run's data "
                                                  "(--dataset shapes)"),
                          (["--coco-json", "a.json", "--coco-images", "i", "--classes", "dog"], "(--coco-json)"),
                          (["--voc-dir", str(tmp_path), "--coco-images", "i"], "--coco-images goes with --coco-json"),
                          (["--voc-dir", str(tmp_path), "--data-dir", "d"], "--data-dir goes with --dataset"),
                          (["--dataset", "voc/2007", "--shapes-images", "9,9"], "--shapes-images goes with --dataset "
                                                                                "shapes"),
                          (["--voc-dir", str(tmp_path), "--classes", "cat,dog,"], "--classes cat,dog,: an empty "
                                                                                 "class name")):
        with pytest.raises(cli.UsageError) as error:
            choose(*argv)
        assert message in str(error.value), (argv, str(error.value))
    assert choose("--shapes-images", "9,9", "--data-dir", "d").name == "shapes"
    with pytest.raises(cli.UsageError, match="e.g. 480,576,688"):
        train.build_config(train.parse_args(["--train-min-sides", "480;576"]))


def test_a_backbone_alone_trains_that_base_on_the_shapes_set():
    """`python train.py --backbone B` takes B's shapes preset (its anchors' stride, RoI pooling,
    head and input scale come with the base); a named preset stays that preset."""
    for name, expected in (("resnet50-fpn", "shapes-fpn"), ("mobilenetv3-fpn", "shapes-mobilenet"),
                           ("resnet50", "shapes-resnet50"), ("resnet101", "shapes-resnet50"), ("zf", "shapes")):
        cfg = train.build_config(train.parse_args(["--backbone", name]))
        assert (cfg.name, cfg.backbone, cfg.dataset) == (expected, name, "shapes")
    assert train.build_config(train.parse_args([])).name == "shapes"
    cfg = train.build_config(train.parse_args(["--preset", "voc", "--backbone", "resnet50"]))
    assert (cfg.name, cfg.backbone) == ("voc", "resnet50")


def test_train_min_sides_flag():
    """--train-min-sides sets multi-scale training; --min-side alone is one scale for training and
    test (it clears a preset's training sides); the sides must be whole pixels."""
    cfg = train.build_config(train.parse_args(["--train-min-sides", "224,256,288"]))
    assert (cfg.image.train_min_sides, cfg.image.min_side) == ((224, 256, 288), 320)
    with_sides = dataclasses.replace(cfg.image, train_min_sides=(200, 300))
    assert Config.from_json(dataclasses.replace(cfg, image=with_sides).to_json()).image.train_min_sides == (200, 300)
    cfg = train.build_config(train.parse_args(["--preset", "voc", "--train-min-sides", "480,600",
                                               "--min-side", "500"]))
    assert (cfg.image.train_min_sides, cfg.image.min_side) == ((480, 600), 500)
    cfg = train.build_config(train.parse_args(["--min-side", "300"]))  # the shapes preset trains at 256
    assert (cfg.image.train_min_sides, cfg.image.min_side, cfg.image.proposal_side) == ((), 300, 300)
    with pytest.raises(cli.UsageError, match="--train-min-sides 256.5"):
        train.build_config(train.parse_args(["--train-min-sides", "256.5"]))
    with pytest.raises(ConfigError, match="image.train_min_sides"):
        Config.from_dict({"image": {"train_min_sides": [0]}})


def test_steps_flag_is_kept_in_the_config():
    """--steps sets every stage's steps (and joint training's) in the config the run writes, each
    learning-rate drop moved in proportion, so --resume continues the same schedule."""
    cfg = train.build_config(train.parse_args(["--steps", "100"])).train
    assert cfg.stage_steps == (100, 100, 100, 100)
    assert cfg.stage_lr_drop_steps == (75, 75, 75, 50)  # the preset's 525 / 700, ..., 250 / 500
    assert (cfg.joint_steps, cfg.joint_lr_drop_step) == (100, 75)
    # A preset's warm-up moves in proportion too (resnet50-fpn-coco: 8,000 steps of its joint schedule; left
    # as it was, a short run warmed up past its end and never reached its learning rate).
    fpn = train.build_config(train.parse_args(["--preset", "resnet50-fpn-coco"])).train
    short = train.build_config(train.parse_args(["--preset", "resnet50-fpn-coco", "--steps", "900"])).train
    assert short.warmup_steps == round(fpn.warmup_steps * 900 / fpn.joint_steps) < short.joint_lr_drop_step
    assert cfg.warmup_steps == 0
    assert train.differing_fields({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2, "d": 4}}) == ["b.d"]


def test_steps_per_execution_flag(capsys):
    """--steps-per-execution sets train.steps_per_execution (the preset's is 10); it must be >= 1."""
    assert train.build_config(train.parse_args([])).train.steps_per_execution == 10
    cfg = train.build_config(train.parse_args(["--steps-per-execution", "50"]))
    assert cfg.train.steps_per_execution == 50
    with pytest.raises(SystemExit):
        train.parse_args(["--steps-per-execution", "0"])
    assert "--steps-per-execution must be positive" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.steps_per_execution"):
        Config.from_dict({"train": {"steps_per_execution": 0}})


def test_a_full_disk_or_a_read_only_folder_is_one_line(tmp_path, capsys):
    """No space left, from Python (a write names no file) or from a TensorFlow op (a checkpoint):
    one line with what failed and how to continue; a proposals dump that fails leaves no part."""
    write_voc_folder(tmp_path / "voc", {"a": {"objects": [("dog", (5, 5, 40, 30), False)]}}, {"trainval": ["a"]})
    source = load_voc_folder(tmp_path / "voc")

    def dump():
        with ProposalWriter(tmp_path / "proposals", source):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert cli.run(dump, resume_hint="add --resume") == 2
    assert capsys.readouterr().err == f"error: [Errno {errno.ENOSPC}] No space left on device (make room on " \
                                      "that disk, then add --resume)\n"
    assert not (tmp_path / "proposals.partial").exists() and not (tmp_path / "proposals").exists()

    def checkpoint():
        raise tf.errors.ResourceExhaustedError(
            None, None, "run/checkpoint/ckpt-1_temp/part-0; No space left on device [Op:SaveV2]")

    assert cli.run(checkpoint) == 2
    assert capsys.readouterr().err == "error: run/checkpoint/ckpt-1_temp/part-0; No space left on device (make " \
                                      "room on that disk)\n"

    def read_only():  # --out or --data-dir on a read-only mount
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/data/run")

    assert cli.run(read_only, resume_hint="add --resume") == 2
    assert capsys.readouterr().err == "error: /mnt/data/run: Read-only file system\n"


@pytest.fixture
def terminal_sigint():
    """SIGINT as a terminal's Ctrl-C delivers it (a test run started in the background, with & or
    nohup, ignores SIGINT, and so does train.py then: test_a_signal_ignored_at_start_stays_ignored)."""
    at_start = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, at_start)


def test_a_signal_ignored_at_start_stays_ignored(terminal_sigint):
    import types

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sigterm = signal.getsignal(signal.SIGTERM)
    runner = types.SimpleNamespace(fitting=True, request_stop=lambda: None)
    with train.stop_gracefully(runner):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, sigterm)  # the graceful stop's
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is sigterm
    # Outside a stage's training (a proposals dump): SIGTERM stops at once as SIGTERM (143), not as Ctrl-C.
    runner.fitting = False
    with pytest.raises(cli.Terminated), train.stop_gracefully(runner):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # (the signal arrives here)


# ~25 s of the suite's budget: under -m slow; the runner's stop at a requested step and its resume
# stay in the default run (test_checkpoints), as does a kill -9 of train.py (test_training).
@pytest.mark.slow
def test_ctrl_c_while_training_writes_a_checkpoint_at_that_step(tmp_path, tiny_config_file, capsys, monkeypatch,
                                                                terminal_sigint):
    """The first Ctrl-C (or SIGTERM) while a stage trains: train.py stops after that step with a
    checkpoint there, exit status 130; --resume continues from it. The run starts from a trained
    model (--weights model.keras, fine-tuning) that is gone by the resume: the checkpoint holds
    every weight, so the resume neither needs nor reads it."""
    from keras_frcnn import training
    from keras_frcnn.models import build_models

    count = training._StageSteps.on_train_batch_end

    def ctrl_c_at_step_2(self, batch, logs=None):
        count(self, batch, logs)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at once, in this (the main) thread

    monkeypatch.setattr(training._StageSteps, "on_train_batch_end", ctrl_c_at_step_2)
    source = load_shapes("train", data_dir=str(tmp_path / "tfds"), num_train=6, num_test=3)
    start = tmp_path / "start.keras"
    build_models(tiny_config(), source.num_classes, weights=None, class_names=source.class_names).model.save(start)
    out = tmp_path / "run"
    args = ["--config", str(tiny_config_file), "--dataset", "shapes", "--shapes-images", "6,3", "--data-dir",
            str(tmp_path / "tfds"), "--schedule", "joint", "--steps", "6", "--steps-per-execution", "1",
            "--log-every", "6", "--verbose", "0", "--out", str(out), "--weights", str(start)]
    code, _, err = _train(args, capsys)
    assert code == 130
    start.unlink()
    assert err.endswith("SIGINT: stopping after this step to write a checkpoint (Ctrl-C again: stop at once)\n"
                        "interrupted: checkpoint written at joint step 3; add --resume to the same command to "
                        "continue from the last checkpoint\n")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    # A resume on other data is refused, and leaves the run's config.json as it was (it said the
    # refused data, and the right resume was refused after it).
    config = (out / "config.json").read_text()
    other = [token if token != "6,3" else "7,3" for token in args]
    code, _, err = _train(other + ["--resume"], capsys)
    assert code == 2 and "the run was trained on" in err and (out / "config.json").read_text() == config
    # A best model of steps after the checkpoint (killed before the next one) is not kept: those
    # steps are trained again (before, a lower figure of the retrained steps never replaced it).
    (out / "best.json").write_text(json.dumps({"stage": "joint", "step": 5, "metric": "VOC07 mAP", "value": 1.0}))
    (out / "best.keras").write_text("of weights the resume discards")
    code, stdout, _ = _train(args + ["--resume", "--eval-every", "6"], capsys)
    assert code == 0 and "joint at step 3" in stdout and (out / "model.keras").exists()
    assert "best.keras removed: it was of joint step 5, after the checkpoint" in stdout
    assert json.loads((out / "best.json").read_text())["step"] == 6 and zipfile.is_zipfile(out / "best.keras")
    assert json.loads((out / "metrics.json").read_text())["resumed_at"] == {"stage": "joint", "step": 3}
    # Killed after its last step, while saving or evaluating its model (no metrics.json yet): a new
    # run in the folder is refused; --resume saves and evaluates it.
    (out / "metrics.json").unlink()
    code, _, err = _train(args[:-2] + ["--weights", "none"], capsys)  # (the starting model is gone)
    assert code == 2 and "holds an unfinished run (every stage trained; its model and evaluation not yet written)" \
        in err
    # The run's config.json holds its TFDS folder and the built-in set's size: a plain --resume (and
    # evaluate without data options) reads the same data (it read the default 500,100 set in
    # ~/tensorflow_datasets, and was refused as other data).
    assert json.loads((out / "config.json").read_text())["data_paths"] == [str(tmp_path / "tfds"), "6,3"]
    code, stdout, _ = _train(["--out", str(out), "--resume", "--verbose", "0"], capsys)
    assert code == 0 and (out / "metrics.json").exists() and "shapes/train6_test3_seed0 train (6 images)" in stdout
    assert "resume: the run's own --log-every 6, --eval-every 6\n" in stdout  # (they were the defaults: 100, none)


def test_ctrl_c_before_a_run_begins_training_says_to_start_it_again(tiny_config_file, tmp_path, capsys, monkeypatch):
    """Ctrl-C while a run reads its data (before its config.json: nothing to resume) said "add
    --resume", which was then refused ("holds no run to continue"): it says to give the command again,
    and that command runs; once a run has begun, the advice is --resume again."""
    load_test_source = cli.load_test_source

    def ctrl_c_while_reading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # (the default handler: KeyboardInterrupt here)
        return load_test_source(*args, **kwargs)

    monkeypatch.setattr(cli, "load_test_source", ctrl_c_while_reading)
    out = tmp_path / "run"
    args = ["--config", str(tiny_config_file), "--dataset", "shapes", "--shapes-images", "6,3", "--data-dir",
            str(tmp_path / "tfds"), "--schedule", "joint", "--steps", "2", "--verbose", "0", "--out", str(out)]
    code, _, err = _train(args, capsys)
    assert code == 130 and re.split(r"[\r\n]", err.rstrip("\n"))[-1] == (  # (after TFDS's progress bars)
        "interrupted: give the same command again to start the run (it had not begun training: nothing to resume)"), err
    assert not (out / "config.json").exists()
    monkeypatch.setattr(cli, "load_test_source", load_test_source)
    code, _, err = _train(args, capsys)
    assert code == 0 and (out / "metrics.json").exists(), err


def test_ctrl_c_is_one_line_and_exit_status_130(capsys):
    """Ctrl-C in a command: its own line (train.py's says how to continue) and the shell's status."""
    def interrupted():
        raise KeyboardInterrupt

    assert cli.run(interrupted, interrupted="interrupted: add --resume") == 130
    assert capsys.readouterr().err == "interrupted: add --resume\n"


def test_sigterm_removes_the_file_being_written_and_is_one_line_and_exit_status_143(tmp_path, capsys):
    """``kill`` (SIGTERM) while predict / export / evaluate writes a file: the file being written is
    removed, not left as ``*.partial``, the earlier one kept; "terminated" and the shell's 143."""
    from keras_frcnn.files import write_atomically

    target = tmp_path / "drawing.png"
    target.write_text("the earlier one")

    def killed_while_writing():
        def content(partial):
            with open(partial, "w") as f:
                f.write("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the signal arrives here)
        write_atomically(str(target), content)
        return 0

    assert cli.run(killed_while_writing) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert os.listdir(tmp_path) == ["drawing.png"] and target.read_text() == "the earlier one"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (restored)


def test_class_lists_in_output_lines_stop_after_80_names():
    """An LVIS-sized model's 1,203 class names filled the data line and export's line."""
    assert cli.class_list(["a", "b"]) == "a, b"
    assert cli.class_list([f"c{i}" for i in range(80)]).endswith("c78, c79")
    assert cli.class_list([f"c{i}" for i in range(1203)]).endswith("c78, c79 and 1123 more")


def test_objects_per_class_line_names_the_classes_without_objects(capsys):
    """The data's objects by class (folder sources know them); a class with none cannot be learned:
    warned by name. Of LVIS's 1,203 classes the line gives the 40 fewest and the 40 most."""
    source = types.SimpleNamespace(class_names=("cat", "dog", "dgo"), objects_per_class=(3, 1204, 0),
                                   name="VOC folder pets (trainval)")
    assert cli.objects_per_class(source) == "cat 3, dog 1,204, dgo 0"
    assert capsys.readouterr().err == (
        "warning: 1 of the 3 classes have no object to train on in VOC folder pets (trainval): dgo; the model "
        "cannot learn them (check the class names and the annotations, or the split)\n")
    many = types.SimpleNamespace(class_names=tuple(f"c{i}" for i in range(1203)),
                                 objects_per_class=tuple(range(1, 1204)), name="LVIS")
    line = cli.objects_per_class(many)
    assert line.startswith("c0 1, c1 2, ") and "c39 40, ... 1123 more ..., c1163 1,164, " in line
    assert line.endswith("c1202 1,203") and not capsys.readouterr().err
    assert cli.objects_per_class(types.SimpleNamespace(objects_per_class=None)) == ""  # TFDS: not counted


def test_train_refuses_a_configs_inference_precision(tmp_path, capsys):
    """A config of precision "bfloat16" (an exported model's form: weights in 16 bits) is one error
    line naming the field and the precision to train with (before, a traceback from the model)."""
    path = tmp_path / "config.json"
    path.write_text(dataclasses.replace(tiny_config(), precision="bfloat16").to_json())
    code, _, err = _train(["--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "config field precision 'bfloat16' is the inference form of 'mixed_bfloat16'" in err


def test_a_model_folder_given_to_evaluate_or_export_is_named_as_a_folder(tmp_path):
    """An exported SavedModel folder as --model (predict reads it; evaluate and export take the
    .keras file): said so, not "no such file" of a folder that exists."""
    with pytest.raises(cli.UsageError, match=r"--model .*: a folder; give the trained \.keras model file"):
        cli.load_model(str(tmp_path))


def test_shapes_images_of_no_images_are_refused(tmp_path, capsys):
    """--shapes-images 0,2: one error line (before, TFDS's traceback writing an empty split)."""
    code, _, err = _train(["--shapes-images", "0,2", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--shapes-images 0,2: give two positive counts" in err


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path, capsys):
    """--resume where no run is (a mistyped --out, a run killed before it wrote its config, the
    default folder of a preset other than the run's): one error line (before, a new run of the
    default shapes preset trained for minutes)."""
    code, _, err = _train(["--resume", "--out", str(tmp_path / "nothing_here")], capsys)
    assert code == 2 and f"--resume: {tmp_path / 'nothing_here'} holds no run to continue (no config.json" in err
    assert not (tmp_path / "nothing_here").exists()


def test_a_signal_outside_training_stops_at_once_and_asks_a_stop_too(terminal_sigint):
    """Ctrl-C between stages raises at once, and asks the runner to stop as well: raised while
    Python ran a TensorFlow object's destructor, the exception is only printed, and the run then
    stops at its next step (before, that Ctrl-C was lost, and the next one taken as the first)."""
    runner = types.SimpleNamespace(fitting=False, stop_requested=False)
    runner.request_stop = lambda: setattr(runner, "stop_requested", True)
    with train.stop_gracefully(runner) as received:
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    assert runner.stop_requested and received == [signal.SIGINT]


def test_a_multi_worker_run_that_loses_a_worker_says_so_in_one_line(monkeypatch, capsys):
    """Another worker killed (or its machine lost) fails this worker's collective ops with
    TensorFlow's UnavailableError, its stack between blank lines: one error line with the tasks
    TensorFlow names and how to go on, exit status 1, not the traceback (the slow two-worker case:
    tests/test_distribute.py). In a single-process run the error is not one of these."""
    message = ("Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
               '  File "train.py", line 316, in main\n\n  File "trainer.py", line 154, in multi_step_on_iterator\n\n'
               "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are "
               "unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.\n"
               "\t [[{{node CollectiveReduceV2}}]] [Op:__inference_multi_step_on_iterator_14108]")

    def lost(args, held):
        raise tf.errors.UnavailableError(None, None, message)

    monkeypatch.setattr(train, "_train", lost)
    assert train.main(["--strategy", "multi-worker"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: the cluster lost a worker (Collective ops is aborted by: Error reported from /job:worker/"
                   "task:1: The following tasks are unhealthy (stopped sending heartbeats); tasks named: "
                   "/job:worker/task:1): start every worker again with --resume (they go on from the newest "
                   "checkpoint all of them hold)"), err
    with pytest.raises(tf.errors.UnavailableError):
        train.main([])


def test_a_run_config_written_before_aspect_grouping_resumes_in_stream_order(tmp_path, capsys):
    """A run's config.json without ``train.aspect_group`` (written before it existed) trained its
    batches in the stream's order: --resume keeps that order, not the field's default of 16."""
    from keras_frcnn.config import preset

    config = preset("voc").to_dict()
    assert config["train"]["aspect_group"] == 16
    (tmp_path / "now.json").write_text(json.dumps(config))
    assert train.run_config(tmp_path / "now.json").train.aspect_group == 16
    del config["train"]["aspect_group"]
    (tmp_path / "old.json").write_text(json.dumps(config))
    old = train.run_config(tmp_path / "old.json")
    assert old.train.aspect_group == 0 and old.train.stage_steps == preset("voc").train.stage_steps
    assert "was written before train.aspect_group: its batches stay in the stream's order" in capsys.readouterr().out
