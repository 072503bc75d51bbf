"""TFRecord files in the TF Object Detection API's layout (``--tfrecord``; keras_frcnn.data.tfrecord_files):
the layouts the TF OD API, its pipeline.config and Roboflow write, label maps, the records' faults,
the training stream's order, and a run trained and evaluated on them."""

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_data_fixtures import LABEL_MAP, examples, tf_example, write_records

from conftest import tiny_config

from keras_frcnn.data import DataError, load_tfrecord, pipeline
from keras_frcnn.data import tfrecord_files
from keras_frcnn.data.image_files import CheckedImage
from keras_frcnn.data.tfrecord_files import default_splits, read_tfrecord_data
from keras_frcnn.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402  (the repository's train.py)

A = tf_example("a.jpg", [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], ["cat", "dog"], [1, 3], seed=1,
               image__object__difficult=[0, 1], image__object__area=[12.5, 4800.0])
B = tf_example("b.jpg", [[0.2, 0.2, 0.4, 0.9]], None, [3], seed=2, fmt="JPEG")  # an id alone
C = tf_example("000000397133", [], [], [], seed=3, image__object__is_crowd=[])  # COCO's numeric id; a negative
D = tf_example("d.jpg", [[0.5, 0.5, 0.75, 0.75]], ["Dog"], None, seed=4)  # a display name alone


def _objects(source):
    return {e["image/filename"].decode(): (e["objects/bbox"].astype(np.float64).round(4).tolist(), e["objects/label"].tolist(),
                                           e["objects/is_difficult"].tolist(), e["objects/area"].tolist(),
                                           int(e["image/id"]), e["image"].shape)
            for e in examples(source)}


EXPECTED = {
    "a.jpg": ([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], [0, 1], [False, True], [12.5, 4800.0], -1, (60, 80, 3)),
    "b.jpg": ([[0.2, 0.2, 0.4, 0.9]], [1], [False], [-1.0], -1, (60, 80, 3)),
    "000000397133": ([], [], [], [], 397133, (60, 80, 3)),
    "d.jpg": ([[0.5, 0.5, 0.75, 0.75]], [1], [False], [-1.0], -1, (60, 80, 3)),
}


@pytest.mark.parametrize("layout", ["od_api", "pipeline_config", "roboflow"])
def test_the_layouts_the_tf_od_api_its_pipeline_config_and_roboflow_write(tmp_path, layout):
    """Sharded ``*_train.record-*`` files beside ``*_val.record`` and a label map; the same named by a
    pipeline.config (a glob, paths as written or beside it); Roboflow's train/ valid/ folders with
    a label map in each. Classes by the label map's ids (gap kept out), named by display name;
    texts looked up by name or display name, ids without texts; difficult, crowd and area kept."""
    if layout == "roboflow":
        write_records(tmp_path / "set" / "train" / "cells.tfrecord", [A, B, C])
        write_records(tmp_path / "set" / "valid" / "cells.tfrecord", [D])
        for split in ("train", "valid"):  # as Roboflow writes it: commas between the fields
            (tmp_path / "set" / split / "cells_label_map.pbtxt").write_text(
                'item {\n    name: "cat",\n    id: 1,\n    display_name: "cat"\n}\n'
                'item {\n    name: "dog",\n    id: 3,\n    display_name: "Dog"\n}\n')
        path = tmp_path / "set"
    else:
        write_records(tmp_path / "set" / "pets_train.record-00000-of-00002", [A, B])
        write_records(tmp_path / "set" / "pets_train.record-00001-of-00002", [C])
        write_records(tmp_path / "set" / "pets_val.record", [D])
        (tmp_path / "set" / "pet_label_map.pbtxt").write_text("item { id: 0 name: 'background' }\n" + LABEL_MAP)
        path = tmp_path / "set"
        if layout == "pipeline_config":
            (tmp_path / "set" / "pipeline.config").write_text(
                "model { faster_rcnn { num_classes: 2 } }\ntrain_config { batch_size: 1 }\n"
                'train_input_reader: {\n  tf_record_input_reader { input_path: "pets_train.record-?????-of-00002" }\n'
                '  label_map_path: "pet_label_map.pbtxt"\n}\neval_config { metrics_set: "coco_detection_metrics" }\n'
                'eval_input_reader: {\n  tf_record_input_reader { input_path: "' + str(tmp_path / "set" / "pets_val.record")
                + '" }\n  label_map_path: "pet_label_map.pbtxt"\n  shuffle: false\n}\n')
            (tmp_path / "set" / "other.pbtxt").write_text(LABEL_MAP)  # the config names its own
            path = tmp_path / "set" / "pipeline.config"
    assert default_splits(path) == ("train", "val")
    train_source = load_tfrecord(path, "train", decode_images=True)
    assert train_source.class_names == ("cat", "Dog")
    assert (train_source.num_examples, train_source.num_objects, train_source.problems) == (3, 2, {})
    val_source = load_tfrecord(path, "val")
    assert _objects(train_source) | _objects(val_source) == EXPECTED
    encoded = load_tfrecord(path, "train+val", decode_images=False)
    assert [type(e["image"]) for e in examples(encoded)] == [bytes] * 4
    assert load_tfrecord(path, "train[1:]").num_examples == 2


def test_one_file_without_a_label_map_and_splits_by_part(tmp_path, caplog):
    """A single record file (or a glob) is one split, ``all``: trained on all[:90%], tested on
    all[90%:] (under ten records: on the last one); without a label map the records' ids name the classes by their texts, ordered by
    id, or, where some object has no id, the texts sorted."""
    records = [tf_example(f"{n}.jpg", [[0.1, 0.1, 0.9, 0.9]], [["zebra", "ant"][n % 2]], [[7, 2][n % 2]], seed=n)
               for n in range(20)]
    path = write_records(tmp_path / "all.tfrecord", records)
    assert read_tfrecord_data(path).splits == {"all": (path,)}
    assert default_splits(path) == ("all[:90%]", "all[90%:]")
    assert read_tfrecord_data(str(tmp_path / "*.tfrecord")).splits == {"all": (path,)}
    shards = [write_records(tmp_path / "bare" / name, [A]) for name in ("train-00000-of-00002", "train-00001-of-00002",
                                                                       "val-00000-of-00001")]
    assert read_tfrecord_data(tmp_path / "bare").splits == {"train": tuple(shards[:2]), "val": (shards[2],)}
    # A glob of several splits' files is split by their names (before: all one split, val trained on).
    assert read_tfrecord_data(str(tmp_path / "bare" / "*-0000*")).splits == {"train": tuple(shards[:2]),
                                                                           "val": (shards[2],)}
    assert read_tfrecord_data(str(tmp_path / "bare" / "train-*")).splits == {"all": tuple(shards[:2])}
    # A shard of the set not there (a copy that did not finish): read without it, said so.
    os.remove(shards[1])
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        assert read_tfrecord_data(tmp_path / "bare").splits == {"train": (shards[0],), "val": (shards[2],)}
    assert f"split 'train' has 1 of the 2 shards of {tmp_path / 'bare' / 'train'} (missing: number 1)" in caplog.text
    source = load_tfrecord(path, "all[90%:]")
    assert not source.files & load_tfrecord(path, "all[:90%]").files  # records told apart: none shared
    assert len(source.files & load_tfrecord(path, "all[-5:]").files) == 2
    assert source.class_names == ("ant", "zebra")  # ids 2, 7
    assert [e["image/filename"] for e in examples(source)] == [b"18.jpg", b"19.jpg"]
    assert [e["objects/label"].tolist() for e in examples(source)] == [[1], [0]]
    texts_only = write_records(tmp_path / "texts" / "x.record", [tf_example("t.jpg", [[0, 0, 1, 1]] * 2, ["b", "a"])])
    assert load_tfrecord(texts_only, "all").class_names == ("a", "b")
    ids_only = write_records(tmp_path / "ids" / "x.record", [tf_example("i.jpg", [[0, 0, 1, 1]] * 2, None, [5, 2])])
    assert load_tfrecord(ids_only, "all").class_names == ("class_2", "class_5")
    few = write_records(tmp_path / "few" / "x.record", records[:3])
    assert default_splits(few) == ("all[:-1]", "all[-1:]")  # (a tenth of three: none) the last one held out
    with pytest.raises(DataError, match="split 'train': not one of its splits"):
        load_tfrecord(path, "train")


def _turned_jpeg(height, width):
    """A JPEG of ``height`` x ``width`` stored pixels that viewers show turned (EXIF orientation 6)."""
    import io

    from PIL import Image

    image = Image.fromarray(np.zeros((height, width, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def _cut(path, keep_bytes):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep_bytes])


def test_records_that_cannot_be_used_are_skipped_named_and_counted(tmp_path, caplog):
    """Each fault a record can hold skips it with a warning naming the file, the record and its
    image; a file cut short gives the records before the cut; boxes reaching
    out are clipped, degenerate ones dropped; strict stops at the first."""
    good = [tf_example(f"ok{n}.jpg", [[0.1, 0.1, 0.6, 0.6]], ["cat"], [1], seed=n) for n in range(3)]
    faults = {
        "not a tf.train.Example record": b"\x07\x07\x07",
        "no image/encoded: not the TF Object Detection API's layout": tf.train.Example().SerializeToString(),
        "box coordinates are not normalised": tf_example("pixels.jpg", [[10, 20, 50, 60]], ["cat"], [1]),
        "the box lists differ in length": tf_example("short.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1],
                                                     image__object__bbox__xmax=[0.5, 0.6]),
        "1 boxes but 2 image/object/class/label values": tf_example("ids.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1, 1]),
        "class 'cow' is not in the label map": tf_example("cow.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cow"], [9]),
        "class id 2 is not in the label map": tf_example("two.jpg", [[0.1, 0.1, 0.5, 0.5]], None, [2]),
        # A text not in the map, its id another class's (1, cat): no class (it trained as a cat, unwarned).
        "class 'bird' is not in the label map": tf_example("bird.jpg", [[0.1, 0.1, 0.5, 0.5]], ["bird"], [1]),
        "a box with ymin > ymax": tf_example("order.jpg", [[0.5, 0.1, 0.1, 0.5]], ["cat"], [1]),
        "bad image: image file is corrupt": tf_example("broken.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1],
                                                       encoded=b"\xff\xd8\xff\xe0 not a jpeg"),
        "image/object/bbox/xmin is an int64_list feature, not a float_list one": tf_example(
            "kind.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1], image__object__bbox__xmin=[0]),
        "image/source_id holds 2 values, not one": tf_example("ids2.jpg", [], [], [], image__source_id=[b"1", b"2"]),
    }
    lesser = [tf_example("out.jpg", [[-0.005, 0.1, 0.5, 1.005]], ["cat"], [1]),
              tf_example("flat.jpg", [[0.3, 0.1, 0.3, 0.5], [0.1, 0.1, 0.5, 0.5]], ["cat", "Dog"], [1, 3]),
              # Phone photos (EXIF 6: shown turned): read on the stored pixels as the TF OD API reads them,
              # warned; the more so where image/height and image/width are the size as shown.
              tf_example("turned.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1], encoded=_turned_jpeg(60, 80),
                         size=(80, 60)),
              tf_example("phone.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1], encoded=_turned_jpeg(60, 80))]
    folder = tmp_path / "set"
    write_records(folder / "a_train.record", good[:1] + list(faults.values()) + lesser)
    cut = write_records(folder / "b_train.record", good[1:] + [tf_example("lost.jpg", [], [], [])])
    _cut(cut, os.path.getsize(cut) - 20)  # the last record cut short: a copy that did not finish
    (folder / "label_map.pbtxt").write_text(LABEL_MAP)
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_tfrecord(folder, "train")
    assert sorted(e["image/filename"].decode() for e in examples(source)) == [
        "flat.jpg", "ok0.jpg", "ok1.jpg", "ok2.jpg", "out.jpg", "phone.jpg", "turned.jpg"]
    assert [source.example_at(tf.constant(i, tf.int64))["image/filename"].numpy() for i in range(7)] == [
        e["image/filename"] for e in examples(source)]  # each at its offset, past the skipped ones
    assert source.problems == {"bad record": len(faults), "unreadable record": 1, "box clipped": 1,
                               "degenerate box": 1, "EXIF orientation as shown": 1, "EXIF orientation": 1}
    assert "(turned.jpg): an EXIF-turned photo whose image/height and image/width are its size as shown" in \
        caplog.text and "(phone.jpg): an image with an EXIF orientation" in caplog.text
    messages = caplog.text
    for number, message in enumerate(faults, 1):
        assert f"a_train.record: record {number}" in messages and message in messages, message
    assert "(pixels.jpg): box coordinates are not normalised to the image (e.g. 60" in messages
    assert f"{cut}: record 2 cannot be read (DataLossError: truncated record at" in messages
    flat = next(e for e in examples(source) if e["image/filename"] == b"flat.jpg")
    assert flat["objects/label"].tolist() == [0, 1]  # kept here; the pipelines drop the degenerate one
    out = next(e for e in examples(source) if e["image/filename"] == b"out.jpg")
    assert out["objects/bbox"].tolist() == [[0.0, 0.10000000149011612, 0.5, 1.0]]
    with pytest.raises(DataError, match="record 1: not a tf.train.Example record"):
        load_tfrecord(folder, "train", strict=True)
    tfds_like = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"..."])),
        "objects/bbox": tf.train.Feature(float_list=tf.train.FloatList(value=[0.1, 0.1, 0.5, 0.5]))}))
    with pytest.raises(DataError, match="no usable example .*a TFDS set's record: read it with --dataset NAME"):
        load_tfrecord(write_records(tmp_path / "x-train.tfrecord-00000-of-00001", [tfds_like.SerializeToString()]), "all")
    with pytest.raises(DataError, match="no usable example"):
        load_tfrecord(write_records(tmp_path / "bad.record", [faults["box coordinates are not normalised"]]),
                      "all", label_map=folder / "label_map.pbtxt")


def test_what_cannot_be_read_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="no such file, folder or files matching it"):
        read_tfrecord_data(tmp_path / "none.record")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no record files"):
        read_tfrecord_data(tmp_path / "empty")
    write_records(tmp_path / "two" / "x.record", [A])
    (tmp_path / "two" / "a.pbtxt").write_text(LABEL_MAP)
    (tmp_path / "two" / "b.pbtxt").write_text(LABEL_MAP)
    with pytest.raises(DataError, match="several label maps .*name one with --label-map"):
        read_tfrecord_data(tmp_path / "two")
    for text, message in [("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "id 1 is given twice"),
                          ("item { id: 1 name: 'a' } item { id: 2 name: 'a' }", "class name 'a' is given twice"),
                          ("item { id: 1 name: 'a' ", "not a label map"), ("", "no item"),
                          ("item { id: 0 name: 'a' }", "item 'a' has id 0: label map ids start at 1")]:
        (tmp_path / "map.pbtxt").write_text(text)
        with pytest.raises(DataError, match=message):
            load_tfrecord(tmp_path / "two" / "x.record", "all", label_map=tmp_path / "map.pbtxt")
    config = tmp_path / "pipeline.config"
    config.write_text('train_input_reader { tf_record_input_reader { input_path: "nowhere-*.record" } }')
    with pytest.raises(DataError, match="input_path 'nowhere-\\*.record' matches no file"):
        read_tfrecord_data(config)
    config.write_text('train_input_reader { label_map_path: "x" } eval_input_reader { tf_record_input_reader {')
    with pytest.raises(DataError, match="not a TF Object Detection API pipeline config"):
        read_tfrecord_data(config)


# ZLIB reads as GZIP does (a compressed file from its start): under -m slow, the suite's budget.
@pytest.mark.parametrize("compression", [None, "GZIP", pytest.param("ZLIB", marks=pytest.mark.slow)])
def test_each_pass_of_the_stream_visits_every_record_once_in_an_order_of_its_own_and_resumes_exactly(
        tmp_path, monkeypatch, caplog, compression):
    """Uncompressed files are read at each record's byte offset: random access, a permutation per
    pass. GZIP files are read from their start: each pass the files in a seeded order of its own,
    read in turns, then the shuffle buffer. Either way each pass visits every record once, passes
    differ, and a stream started mid-pass continues exactly as the uninterrupted one. A file's
    check is remembered (not read again) until the file changes; GZIP records grouped by class are
    reported."""
    for shard in range(4):
        write_records(tmp_path / "set" / f"x_train.record-{shard:05d}-of-00004",
                      [tf_example(f"{shard}-{n}.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1], size=(8, 8))
                       for n in range(5)], compression)
    (tmp_path / "set" / "label_map.pbtxt").write_text(LABEL_MAP)
    source = load_tfrecord(tmp_path / "set", "train", decode_images=False)
    assert (source.example_at is None, source.shuffled_records is None) == (bool(compression), not compression)
    names = [e["image/filename"] for e in examples(source)]
    stream = pipeline.example_stream(source, seed=3)
    positions = [(int(e["index"]), e["example"]["image/filename"].numpy()) for e in stream.take(60)]
    for number in range(3):
        one_pass = positions[20 * number:20 * number + 20]
        assert sorted(index for index, _ in one_pass) == list(range(20))
        assert all(names[index] == name for index, name in one_pass)
    assert positions[:20] != positions[20:40]
    resumed = [(int(e["index"]), e["example"]["image/filename"].numpy())
               for e in pipeline.example_stream(source, seed=3, start=27).take(20)]
    assert resumed == positions[27:47]
    if compression:  # before the shuffle buffer: the four files in turns, in an order of the seed's
        orders = []
        for seed in (0, 1):
            read = [e["image/filename"].numpy().split(b"-")[0]
                    for _, e in source.shuffled_records(tf.constant(seed, tf.int64))]
            assert sorted(read[:4]) == [b"0", b"1", b"2", b"3"] and read[4:8] == read[:4]
            orders.append(read[:4])
        assert orders[0] != orders[1]
    else:
        assert [source.example_at(tf.constant(i, tf.int64))["image/filename"].numpy() for i in range(20)] == names

    monkeypatch.setattr(tfrecord_files, "record_facts", lambda _: pytest.fail("a record read again"))
    assert load_tfrecord(tmp_path / "set", "train").num_examples == 20
    monkeypatch.undo()
    changed = write_records(tmp_path / "set" / "x_train.record-00003-of-00004", [A, B], compression)
    os.utime(changed, ns=(1, 1))
    monkeypatch.setattr(tfrecord_files, "LONG_CHECK", 0)  # said before a long check: here the changed file's
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        changed_source = load_tfrecord(tmp_path / "set", "train")
    assert "checking 0.0 GB of records in 1 files, once" in caplog.text
    monkeypatch.undo()
    assert [e["image/filename"] for e in examples(changed_source)][-3:] == [b"2-4.jpg", b"a.jpg", b"b.jpg"]

    monkeypatch.setattr(pipeline, "SHUFFLE_BUFFER", 2)
    grouped = write_records(tmp_path / "grouped.record", [
        tf_example(f"{n}.jpg", [[0.1, 0.1, 0.5, 0.5]], [name], [1 if name == "cat" else 3], size=(8, 8))
        for name in ("cat", "dog") for n in range(10)], compression)
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        load_tfrecord(grouped, "all", label_map=tmp_path / "set" / "label_map.pbtxt")
    assert ("records are stored grouped by class (95% of neighbours share their first class, 50% in a random"
            " order) in 1 file(s)" in caplog.text) == bool(compression)


def test_records_on_another_file_system_are_read_through_gfile():
    """Paths go through tf.io.gfile as TensorFlow's readers do: gs:// (where the TF OD API's guides
    keep records), s3:// ...; TensorFlow's in-memory ram:// file system stands in for them here:
    the folder's splits and label map, a glob, the check, random access at byte offsets."""
    for shard in range(2):
        with tf.io.TFRecordWriter(f"ram://tfr/x_train.record-{shard:05d}-of-00002") as writer:
            for n in range(3):
                writer.write(tf_example(f"{shard}-{n}.jpg", [[0.1, 0.1, 0.5, 0.5]], ["cat"], [1], size=(8, 8)))
    with tf.io.TFRecordWriter("ram://tfr/x_val.record") as writer:
        writer.write(D)
    with tf.io.gfile.GFile("ram://tfr/label_map.pbtxt", "w") as f:
        f.write(LABEL_MAP)
    assert read_tfrecord_data("ram://tfr") == (
        "ram://tfr", {"train": ("ram://tfr/x_train.record-00000-of-00002", "ram://tfr/x_train.record-00001-of-00002"),
                      "val": ("ram://tfr/x_val.record",)}, "ram://tfr/label_map.pbtxt")
    source = load_tfrecord("ram://tfr", "train")
    assert (source.num_examples, source.class_names, source.example_at is not None) == (6, ("cat", "Dog"), True)
    names = [e["image/filename"] for e in examples(source)]
    one_pass = [(int(e["index"]), e["example"]["image/filename"].numpy())
                for e in pipeline.example_stream(source, seed=0, repeat=False)]
    assert sorted(one_pass) == sorted(enumerate(names))
    assert load_tfrecord("ram://tfr/x_train.record-*", "all").num_examples == 6
    assert _objects(load_tfrecord("ram://tfr", "val")) == {"d.jpg": EXPECTED["d.jpg"]}


# (~16 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); which records each split
# holds is tested above, and train.py's run on a file source, evaluated on its held-out split and
# evaluated again from config.json, by default in test_data_csv and test_data_combined.)
@pytest.mark.slow
def test_a_run_trains_on_train_evaluates_on_val_and_evaluate_reads_it_again(tmp_path, capsys):
    """``train.py --tfrecord pipeline.config``: trained on the train records, evaluated on the val
    records with COCO AP (the TF OD API's default metrics) as the headline; config.json keeps the
    config, so evaluate without data options evaluates val again; evaluate on one record file
    evaluates all of it; --label-map goes with --tfrecord only."""
    rng = np.random.default_rng(0)

    def records(count, stem):
        out = []
        for n in range(count):
            y, x = rng.uniform(0.1, 0.5, 2)
            out.append(tf_example(f"{stem}{n}.jpg", [[y, x, y + 0.4, x + 0.4]], [("cat", "dog")[n % 2]],
                                  [(1, 3)[n % 2]], seed=n, size=(96, 128)))
        return out

    write_records(tmp_path / "data" / "shapes_train.record-00000-of-00002", records(4, "a"))
    write_records(tmp_path / "data" / "shapes_train.record-00001-of-00002", records(3, "b"))
    val = write_records(tmp_path / "data" / "shapes_val.record", records(3, "v"))
    (tmp_path / "data" / "label_map.pbtxt").write_text(LABEL_MAP)
    config = tmp_path / "data" / "pipeline.config"
    config.write_text('train_input_reader { tf_record_input_reader { input_path: "shapes_train.record-*" }\n'
                      '  label_map_path: "label_map.pbtxt" }\n'
                      'eval_input_reader { tf_record_input_reader { input_path: "shapes_val.record" } }\n')
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    args = ["--config", str(tmp_path / "tiny.json"), "--tfrecord", str(config), "--out", str(tmp_path / "run"),
            "--schedule", "joint", "--steps", "3", "--verbose", "0"]
    assert train.main(args + ["--classes", "a,b"]) == 2
    assert "--classes goes with --voc-dir, not with this run's data (--tfrecord)" in capsys.readouterr().err
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert (f"data: training on TFRecord {config} train (7 images); evaluating on TFRecord {config} val "
            "(3 images); 2 classes: cat, Dog") in out
    assert "COCO AP@[.5:.95]" in out
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (run_config["dataset"], run_config["data_paths"], run_config["train_split"],
            run_config["test_split"]) == ("tfrecord", [str(config), ""], "train", "val")
    model = str(tmp_path / "run" / "model.keras")
    assert evaluate_main(["--model", model]) == 0
    assert f"on TFRecord {config} val, 3 images" in capsys.readouterr().out
    assert evaluate_main(["--model", model, "--tfrecord", val]) == 0
    assert f"on TFRecord {val} all, 3 images" in capsys.readouterr().out
    assert evaluate_main(["--model", model, "--dataset", "shapes", "--label-map", "x.pbtxt"]) == 2
    assert "--label-map goes with --tfrecord" in capsys.readouterr().err


def test_a_pipeline_config_s_relative_paths_are_found_from_another_folder(tmp_path, monkeypatch):
    """The TF2 Object Detection API guide's workspace: models/<name>/pipeline.config naming
    annotations/train.record relative to the workspace, where the OD API runs. A run trained there
    and evaluated or resumed from another folder found no record (the paths were the working
    directory's only); the folders above the config are looked in too."""
    from keras_frcnn.data.tfrecord_files import read_tfrecord_data

    workspace = tmp_path / "workspace"
    train = write_records(workspace / "annotations" / "train.record", [tf_example("a.jpg", [[0.1, 0.1, 0.5, 0.5]],
                                                                                  ["cat"], [1])])
    (workspace / "annotations" / "label_map.pbtxt").write_text(LABEL_MAP)
    config = workspace / "models" / "m1" / "pipeline.config"
    config.parent.mkdir(parents=True)
    config.write_text('train_input_reader: {\n  label_map_path: "annotations/label_map.pbtxt"\n'
                      '  tf_record_input_reader { input_path: "annotations/train.record" }\n}\n')
    monkeypatch.chdir(workspace)  # where the OD API (and a training run) is started: as written
    assert read_tfrecord_data(str(config)).splits == {"train": ("annotations/train.record",)}
    monkeypatch.chdir(tmp_path)  # evaluate, or --resume, from elsewhere
    data = read_tfrecord_data(str(config))
    assert data.splits == {"train": (str(train),)}
    assert data.label_map == str(workspace / "annotations" / "label_map.pbtxt")


def test_a_record_whose_image_tensorflow_refuses_after_the_check_passed_it_is_named_and_skipped_next_time(
        tmp_path, capsys, monkeypatch, caplog):
    """A way Pillow's and TensorFlow's decoders differ that the check does not know (stood in for
    by a check that passes one record's corrupt JPEG): the run decodes the images of the record
    files it read to name the record, marks it bad in its file's cached facts, and the next run
    skips it with a counted warning (test_cli has the image-file case)."""
    monkeypatch.setenv("KERAS_FRCNN_CACHE", str(tmp_path / "cache"))
    corrupt = b"\xff\xd8\xff\xe0 not a JPEG's data"
    records = [tf_example(f"a{n}.jpg", [[0.1, 0.1, 0.6, 0.6]], ["cat"], [1], seed=n, size=(96, 128),
                          encoded=corrupt if n == 2 else None) for n in range(4)]
    path = write_records(tmp_path / "data" / "train.record", records, compression="GZIP")
    (tmp_path / "data" / "label_map.pbtxt").write_text(LABEL_MAP)
    check = tfrecord_files.check_image
    monkeypatch.setattr(tfrecord_files, "check_image", lambda file: CheckedImage(96, 128, 1)
                        if file.getvalue() == corrupt else check(file))
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    args = ["--config", str(tmp_path / "tiny.json"), "--tfrecord", path, "--out", str(tmp_path / "run"),
            "--schedule", "joint", "--steps", "3", "--verbose", "0"]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: record 2 (a2.jpg): TensorFlow's image decoder refuses it (" in err
    assert "remembered as bad now" in err
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_tfrecord(path, "all")
    assert source.num_examples == 3 and source.problems == {"bad record": 1}
    assert f"{path}: record 2 (a2.jpg): bad image: TensorFlow does not decode it (" in caplog.text
