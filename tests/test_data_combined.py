"""Several data sets trained on together: ``--dataset voc/2007+voc/2012`` (the paper's 07+12) and
``--voc-dir A --voc-dir B`` (keras_frcnn.data.combined, keras_frcnn.cli)."""

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_data_fixtures import examples, write_voc_folder

from conftest import tiny_config

from keras_frcnn import cli
from keras_frcnn.config import Config
from keras_frcnn.data import VOC_CLASSES, load_voc_folder
from keras_frcnn.data.combined import combine_sources, interleaving_order
from keras_frcnn.data.pipeline import example_stream
from keras_frcnn.data.problems import DataError
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)


def _folder(root, prefix, count, names, splits, extra_ids=()):
    """A VOC folder of ``count`` images named ``prefix0000`` ..., one object each (of ``names`` in
    turn); ``splits``: name -> slice of the ids; ``extra_ids``: annotated images in no split."""
    ids = [f"{prefix}{i:04d}" for i in range(count)]
    entries = {i: {"size": (40, 50), "objects": [(names[n % len(names)], (3, 4, 30, 35), False)]}
               for n, i in enumerate(ids + list(extra_ids))}
    write_voc_folder(root, entries, {name: ids[part] for name, part in splits.items()})
    return ids


def _flat_folder(root, prefix, count, names):
    """A folder as LabelImg and Roboflow's "Pascal VOC" export keep it: each XML beside its image."""
    _folder(root, prefix, count, names, {})
    for sub in ("Annotations", "JPEGImages"):
        for name in os.listdir(root / sub):
            os.replace(root / sub / name, root / name)
    for sub in ("Annotations", "JPEGImages", "ImageSets"):
        shutil.rmtree(root / sub)


def _choose(*argv, cfg=Config(dataset="shapes")):
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    parser.add_argument("--train-split")
    args = parser.parse_args(list(argv))
    return args, cli.choose_data(args, cfg, args.train_split)


def test_interleaving_keeps_each_sets_share_in_every_stretch():
    for counts in ((5011, 11540), (3, 7, 1), (0, 4), (1, 1)):
        order = interleaving_order(counts)
        assert np.bincount(order, minlength=len(counts)).tolist() == list(counts)
        total = sum(counts)
        for k, count in enumerate(counts):
            seen = np.cumsum(order == k)
            expected = np.arange(1, total + 1) * count / total
            assert np.abs(seen - expected).max() <= 1.0, (counts, k)


def test_sources_combine_in_order_with_random_access_and_interleaved_without(tmp_path, caplog):
    a_ids = _folder(tmp_path / "a", "a", 6, ["dog"], {"trainval": slice(None)})
    b_ids = _folder(tmp_path / "b", "b", 12, ["dog", "cat"], {"trainval": slice(None)})
    a, b = load_voc_folder(tmp_path / "a", "trainval"), load_voc_folder(tmp_path / "b", "trainval")
    both = combine_sources([a, b])
    assert (both.num_examples, both.num_objects, both.class_names) == (18, 18, VOC_CLASSES)
    per_class = dict(zip(VOC_CLASSES, both.objects_per_class))
    assert (per_class["dog"], per_class["cat"], sum(both.objects_per_class)) == (12, 6, 18)
    assert tuple(np.add(a.objects_per_class, b.objects_per_class)) == both.objects_per_class
    assert both.files == a.files | b.files and both.voc_pixel_numbers
    assert both.name == f"VOC folder {tmp_path / 'a'} (trainval) + VOC folder {tmp_path / 'b'} (trainval)"
    names = [e["image/filename"].decode()[:-4] for e in examples(both)]
    assert names == a_ids + b_ids
    at = [both.example_at(tf.constant(i, tf.int64))["image/filename"].numpy().decode()[:-4] for i in range(18)]
    assert at == names
    # One shuffled pass of the training stream visits every image of both once.
    stream = example_stream(both, seed=3, repeat=False)
    assert sorted(int(e["index"]) for e in stream) == list(range(18))

    # A source read through a shuffle buffer (TFDS): interleaved, so that a buffer far smaller than
    # the sets mixes them from the first batch on.
    unindexed = [dataclasses.replace(s, example_at=None) for s in (a, b)]
    mixed = combine_sources(unindexed)
    assert mixed.example_at is None
    names = [e["image/filename"].decode()[:-4] for e in examples(mixed)]
    assert sorted(names) == sorted(a_ids + b_ids)
    assert names[:3] == ["b0000", "a0000", "b0001"]
    first_half = [str(e["example"]["image/filename"].numpy()) for e in
                  example_stream(mixed, seed=3, repeat=False, shuffle_buffer=2).take(9)]
    assert 2 <= sum("a0" in n for n in first_half) <= 4  # a third of them from a (appended: 6 of 9)

    # Other class lists are matched by name: the first set's classes, then those only later sets
    # have (two COCO files each listing the categories it uses); a set lacking some is warned of.
    cat_dog = load_voc_folder(tmp_path / "b", "trainval", classes=["cat", "dog"])
    with caplog.at_level(logging.WARNING, logger="keras_frcnn"):
        joined = combine_sources([a, cat_dog])
    assert joined.class_names == VOC_CLASSES and joined.objects_per_class == both.objects_per_class
    labels = [e["objects/label"].tolist() for e in examples(joined)]
    assert labels == [e["objects/label"].tolist() for e in examples(both)]  # cat 7, dog 11 of VOC's
    assert f"{cat_dog.name} has no class aeroplane, bicycle," in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_frcnn"):
        zebra = combine_sources([cat_dog, load_voc_folder(tmp_path / "b", "trainval", classes=["zebra", "dog"])])
    assert zebra.class_names == ("cat", "dog", "zebra") and zebra.objects_per_class == (6, 12, 0)
    assert [e["objects/label"].tolist() for e in examples(zebra)][-2:] == [[1], []]  # dog, a cat (not read)
    assert f"{cat_dog.name} has no class zebra of the data sets trained with it" in caplog.text
    with caplog.at_level(logging.WARNING, logger="keras_frcnn"):  # (two files' "cat" and "Cat")
        combine_sources([cat_dog, dataclasses.replace(cat_dog, class_names=("Cat", "dog"))])
    assert "have class names that differ only in case: cat / Cat; they are 3 classes" in caplog.text
    with pytest.raises(DataError, match="other conventions"):
        combine_sources([a, dataclasses.replace(b, voc_pixel_numbers=False)])


def test_voc_folders_given_twice_train_on_both_and_test_on_the_first(tmp_path):
    # A VOC 2007-style folder, and a VOC 2012-style one: train / val / trainval, annotations of
    # other tasks in no split, and the test archive's unlabelled test.txt.
    _folder(tmp_path / "VOC2007", "07_", 10, ["dog"], {"trainval": slice(0, 6), "test": slice(6, None)})
    ids12 = _folder(tmp_path / "VOC2012", "12_", 9, ["cat"], {"train": slice(0, 4), "val": slice(4, 8),
                                                              "trainval": slice(0, 8)}, extra_ids=["action"])
    (tmp_path / "VOC2012" / "ImageSets" / "Main" / "test.txt").write_text("unlabelled\n")
    args, choice = _choose("--voc-dir", str(tmp_path / "VOC2007"), "--voc-dir", str(tmp_path / "VOC2012"))
    assert (choice.train_split, choice.test_split) == ("trainval", "test")
    assert choice.more == ((str(tmp_path / "VOC2012"), "train+val"),) and choice.classes is None
    train_source = cli.load_training_source(args, choice)
    test_source = cli.load_source(args, choice, choice.test_split)
    assert train_source.num_examples == 6 + 8 and test_source.num_examples == 4
    assert not train_source.files & test_source.files and train_source.class_names == VOC_CLASSES
    for left_out in (ids12[8], "action"):  # annotated, in no Main split
        assert os.path.realpath(tmp_path / "VOC2012" / "JPEGImages" / f"{left_out}.jpg") not in train_source.files
    # The other way round: VOC 2012's val tests, VOC 2007's trainval and test train (07++12).
    _, choice = _choose("--voc-dir", str(tmp_path / "VOC2012"), "--voc-dir", str(tmp_path / "VOC2007"))
    assert (choice.train_split, choice.test_split, choice.more) == ("train", "val", ((str(tmp_path / "VOC2007"),
                                                                                         "trainval+test"),))
    # --train-split names each folder's part; a folder of one tool's export (no VOC splits) gives
    # every annotation file.
    _folder(tmp_path / "export", "x", 3, ["dog"], {"default": slice(None)})
    _, choice = _choose("--voc-dir", str(tmp_path / "VOC2007"), "--voc-dir", str(tmp_path / "export"))
    assert choice.more == ((str(tmp_path / "export"), None),)
    _, choice = _choose("--voc-dir", str(tmp_path / "VOC2007"), "--voc-dir", str(tmp_path / "export"),
                        "--train-split", "trainval[:50%]")
    assert choice.train_split == "trainval[:50%]" and choice.more == ((str(tmp_path / "export"), "trainval[:50%]"),)
    with pytest.raises(cli.UsageError, match="the same folder as --voc-dir"):
        _choose("--voc-dir", str(tmp_path / "VOC2007"), "--voc-dir", str(tmp_path / "VOC2007" / "."))


def test_folders_of_other_names_get_every_name_of_all_of_them(tmp_path):
    """Each folder alone would number its own names; together every folder's examples carry the
    labels of all names found (sorted), so that a class seen in one folder only is still one class."""
    _folder(tmp_path / "a", "a", 4, ["widget", "gadget"], {"trainval": slice(0, 3), "test": slice(3, None)})
    _folder(tmp_path / "b", "b", 4, ["widget", "gizmo"], {"trainval": slice(None)})
    args, choice = _choose("--voc-dir", str(tmp_path / "a"), "--voc-dir", str(tmp_path / "b"))
    assert choice.classes == ("gadget", "gizmo", "widget")
    train_source = cli.load_training_source(args, choice)
    test_source = cli.load_source(args, choice, choice.test_split)
    assert train_source.class_names == test_source.class_names == ("gadget", "gizmo", "widget")
    labels = {e["image/filename"].decode(): e["objects/label"].tolist() for e in examples(train_source)}
    assert labels["a0000.jpg"] == [2] and labels["a0001.jpg"] == [0] and labels["b0001.jpg"] == [1]
    args, choice = _choose("--voc-dir", str(tmp_path / "a"), "--voc-dir", str(tmp_path / "b"),
                           "--classes", "widget,gizmo")
    assert choice.classes == ("widget", "gizmo")


def test_tfds_sets_joined_by_plus():
    _, choice = _choose("--dataset", "voc+voc/2012")
    assert (choice.name, choice.train_split, choice.test_split) == ("voc/2007", "train+validation", "test")
    assert choice.more == (("voc/2012", "train+validation"),) and choice.full_name == "voc/2007+voc/2012"
    _, choice = _choose("--dataset", "voc/2012+voc/2007")  # 07++12: VOC 2007's test trains too
    assert (choice.train_split, choice.test_split, choice.more) == ("train", "validation",
                                                                    (("voc/2007", "train+validation+test"),))
    # A run's config holds the joined name: evaluate and --resume read the same sets.
    _, again = _choose(cfg=Config(dataset="voc/2007+voc/2012", train_split="train+validation", test_split="test"))
    assert (again.name, again.test_split, again.more) == ("voc/2007", "test", (("voc/2012", "train+validation"),))
    for dataset, message in (("voc/2007+voc", "a set named twice"), ("voc+voc/2007:5.0.0", "a set named twice"),
                             ("coco/2014+coco/2017", "hold the same images"),
                             ("shapes+voc/2007", "trained on alone"), ("voc/2007+", "joined by +")):
        with pytest.raises(cli.UsageError, match=message):
            _choose("--dataset", dataset)


def test_a_run_on_two_folders_records_them_for_evaluate_and_config(tmp_path, capsys):
    """train.py --voc-dir A --voc-dir B: config.json says so (it said the preset's "shapes"), and
    metrics.json what was trained on; evaluate.py without data options evaluates on A's test split
    as the run did, and train.py --config of that run reads the same folders."""
    _folder(tmp_path / "A", "a", 6, ["widget", "gadget"], {"trainval": slice(0, 4), "test": slice(4, None)})
    _folder(tmp_path / "B", "b", 4, ["widget", "gizmo"], {"train": slice(0, 2), "val": slice(2, None),
                                                          "trainval": slice(None)})
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    common = ["--schedule", "joint", "--steps", "2", "--verbose", "0"]
    assert train.main(["--config", str(tmp_path / "tiny.json"), "--voc-dir", str(tmp_path / "A"), "--voc-dir",
                       str(tmp_path / "B"), "--out", str(tmp_path / "run"), *common]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["data_paths"], config["train_split"], config["test_split"]) == (
        "voc-dir", [str(tmp_path / "A"), str(tmp_path / "B")], "trainval", "test")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trained_on"] == f"VOC folder {tmp_path / 'A'} (trainval) + VOC folder {tmp_path / 'B'} (train+val)"
    # Each class's objects, as detectron2 tables them (A's 4 training images: widget, gadget in turn;
    # B's: widget, gizmo).
    assert "objects to train on, by class (8): gadget 2, gizmo 2, widget 4\n" in capsys.readouterr().out
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras")]) == 0
    assert f"on VOC folder {tmp_path / 'A'} (test), 2 images" in capsys.readouterr().out
    # train.py --config of the run (or a plain --resume) without data options: the same folders, the
    # first with the run's splits, the others with their own (B's train+val, not A's trainval).
    args = train.parse_args(["--config", str(tmp_path / "run" / "config.json")])
    choice = cli.choose_data(args, train.build_config(args))
    assert (choice.name, choice.train_split, choice.test_split) == (str(tmp_path / "A"), "trainval", "test")
    assert choice.more == ((str(tmp_path / "B"), "train+val"),)


# (~15 s of the suite: under -m slow for its budget; a resume refused on other data and one on
# the same data: test_checkpoints; a run's folders read again from config.json: the tests above.)
@pytest.mark.slow
def test_a_run_resumes_from_another_directory_with_its_classes(tmp_path, monkeypatch, capsys):
    """A run on a folder named relatively (--voc-dir flat) with --classes: a plain --resume read the
    folder from config.json by its absolute path and was refused ("the run was trained on 'VOC
    folder flat (...)', not 'VOC folder /.../flat (...)'"), and without the classes it would have
    read the folder's own names. Checkpoints now tell data by its files, config.json keeps the
    classes, and only the options given on the command line are named as not applied."""
    _flat_folder(tmp_path / "data" / "flat", "f", 6, ["widget", "gadget", "gizmo"])
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    monkeypatch.chdir(tmp_path / "data")
    assert train.main(["--config", str(tmp_path / "tiny.json"), "--voc-dir", "flat", "--classes", "widget,gizmo",
                       "--out", str(tmp_path / "run"), "--schedule", "joint", "--steps", "2", "--verbose", "0"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["classes"], config["train_split"], config["test_split"]) == (["widget", "gizmo"], "all[:-1]",
                                                                                 "all[-1:]")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert train.main(["--out", "run", "--resume", "--verbose", "0", "--lr", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "resuming: completed ['joint']" in out
    assert "; not applied (the run's values stay): --lr (train.lr)\n" in out
    assert f"data: training on VOC folder {tmp_path / 'data' / 'flat'} (all[:-1]) (5 images)" in out
    assert "2 classes: widget, gizmo" in out
    # An option set back to its preset's value is named too (the preset's alternating schedule
    # on this joint run was passed over without a word), by the option that sets the fields.
    assert train.main(["--out", "run", "--resume", "--verbose", "0", "--schedule", "alternating"]) == 0
    assert "; not applied (the run's values stay): --schedule (train.schedule)\n" in capsys.readouterr().out


# (~15 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); --coco-val-json's
# run, the same rule for COCO files, by default in test_cli.)
@pytest.mark.slow
def test_a_voc_val_dir_is_evaluated_on_whole_and_the_folders_train_on_all_theirs(tmp_path, capsys):
    """Roboflow's "Pascal VOC" export: train/, valid/ and test/, each a flat folder. --voc-dir
    train --voc-val-dir valid trains on all of train/ and evaluates on all of valid/ (as
    --coco-json / --coco-val-json do); config.json keeps it, evaluate without data options
    evaluates valid/ again, and test/ is evaluated with --split all."""
    for name, count in (("train", 6), ("valid", 3), ("test", 2)):
        _flat_folder(tmp_path / name, name[0], count, ["widget", "gadget"])
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    args = ["--config", str(tmp_path / "tiny.json"), "--voc-dir", str(tmp_path / "train"), "--out", str(tmp_path / "run"),
            "--schedule", "joint", "--steps", "2", "--verbose", "0"]
    for extra, message in ((["--voc-val-dir", str(tmp_path / "train")], "the same folder as --voc-dir"),
                           (["--voc-dir", str(tmp_path / "valid"), "--voc-val-dir", str(tmp_path / "valid")],
                            "the same folder as --voc-dir")):
        assert train.main(args + extra) == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--voc-val-dir", str(tmp_path / "valid")])
    assert "--voc-val-dir goes with --voc-dir" in capsys.readouterr().err
    assert train.main(args + ["--voc-val-dir", str(tmp_path / "valid")]) == 0
    out = capsys.readouterr().out
    assert (f"data: training on VOC folder {tmp_path / 'train'} (all) (6 images); evaluating on VOC folder "
            f"{tmp_path / 'valid'} (all) (3 images)") in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["voc_test_dir"], config["train_split"], config["test_split"]) == (str(tmp_path / "valid"), "all",
                                                                                    "all")
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras")]) == 0
    assert f"on VOC folder {tmp_path / 'valid'} (all), 3 images" in capsys.readouterr().out
    assert evaluate_main(["--model", str(tmp_path / "run" / "model.keras"), "--voc-dir", str(tmp_path / "test"),
                          "--split", "all"]) == 0
    assert f"on VOC folder {tmp_path / 'test'} (all), 2 images" in capsys.readouterr().out


def test_a_folder_source_is_told_by_its_image_names_and_sizes(tmp_path):
    """What a checkpoint compares to tell its data (``DetectionSource.identity``): the same folder
    moved or named otherwise is the same data; another set exported alike (the same file names,
    other images) is not (it was: a resume trained on it with the first set's stored proposals)."""
    _flat_folder(tmp_path / "a", "x", 4, ["widget"])
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    _flat_folder(tmp_path / "b", "x", 4, ["widget"])
    first = load_voc_folder(tmp_path / "a", "all").identity
    assert load_voc_folder(tmp_path / "moved", "all").identity == first
    image = next(p for p in sorted((tmp_path / "b").iterdir()) if p.suffix == ".jpg")
    image.write_bytes(image.read_bytes() + b"\0" * 64)  # another image of that name (and size)
    assert load_voc_folder(tmp_path / "b", "all").identity != first
