"""The built-in shapes set: deterministic, local, in the TFDS detection layout."""

import errno
import importlib.util
import os
import pathlib
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_data_fixtures import examples

from keras_frcnn.config import preset
from keras_frcnn.data import SHAPE_CLASSES, load_shapes, train_dataset
from keras_frcnn.data import shapes
from keras_frcnn.data.shapes import render_example, shapes_builder
from keras_frcnn.data.tfds_sources import build_lock


def _build(data_dir, split):
    return load_shapes(split, data_dir=str(data_dir), num_train=6, num_test=3, seed=7)


def test_builds_are_identical(tmp_path):
    first = [examples(_build(tmp_path / "one", split)) for split in ("train", "test")]
    second = [examples(_build(tmp_path / "two", split)) for split in ("train", "test")]
    assert [len(s) for s in first] == [6, 3]
    for a_split, b_split in zip(first, second, strict=True):
        for a, b in zip(a_split, b_split, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    # Another seed gives other images.
    other = examples(load_shapes("test", data_dir=str(tmp_path / "three"), num_train=6, num_test=3, seed=8))
    assert not np.array_equal(other[0]["image"], first[1][0]["image"])


def test_layout_and_pipeline(tmp_path):
    source = _build(tmp_path, "train")
    assert source.class_names == SHAPE_CLASSES and source.num_examples == 6
    for example in examples(source):
        assert example["image"].dtype == np.uint8 and example["image"].shape[2] == 3
        assert 224 <= example["image"].shape[0] <= 288 and 224 <= example["image"].shape[1] <= 288
        boxes = example["objects/bbox"]
        assert boxes.dtype == np.float32 and ((boxes >= 0) & (boxes <= 1)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert not example["objects/is_difficult"].any()
    batch = next(iter(train_dataset(source, preset("shapes"), batch_size=2, seed=0)))
    assert batch["images"].shape[0] == 2 and batch["images"].shape[1] >= 256


def test_rendered_objects_vary():
    classes, sides, cut, counts = set(), [], 0, []
    for index in range(80):
        image, boxes, labels = render_example(np.random.default_rng([0, 1, index]))
        height, width = image.shape[:2]
        counts.append(len(boxes))
        classes.update(labels)
        for ymin, xmin, ymax, xmax in boxes:
            sides.append(max(ymax - ymin, xmax - xmin))
            cut += ymin == 0 or xmin == 0 or ymax == height or xmax == width
        # Every object's colour stands out: its box is not just background.
        assert image.std() > 10
    assert classes == set(range(len(SHAPE_CLASSES)))
    assert min(sides) < 24 and max(sides) > 100
    assert cut > 3  # some objects touch or are cut by the border
    assert 0 in counts and max(counts) >= 5  # image 71 of this seed has no objects: a negative
    a, _, _ = render_example(np.random.default_rng([0, 1, 5]))
    b, _, _ = render_example(np.random.default_rng([0, 1, 5]))
    np.testing.assert_array_equal(a, b)


def test_a_box_is_the_extent_of_what_is_visible_of_its_object():
    # As VOC and COCO annotate: a square whose right end a later square covers ends where the
    # later one starts; its other sides stay exact; one that would hide most of it is refused.
    def square(ymin, xmin, ymax, xmax):
        corners = np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]], np.float64)
        parts = [("poly", corners)]
        extent = shapes._extent(parts)
        return shapes._Drawn(extent, shapes._samples(parts, extent))

    first = square(40.3, 40.6, 100.2, 100.7)
    np.testing.assert_allclose(first.visible_box(), [40.3, 40.6, 100.2, 100.7])
    second = square(30.0, 76.0, 110.0, 130.0)  # covers x 76-100.7 of it: 41 % of its area
    assert shapes._still_visible(first, second)
    first.cover(second)
    np.testing.assert_allclose(first.visible_box(), [40.3, 40.6, 100.2, 76.0])
    np.testing.assert_allclose(second.visible_box(), [30.0, 76.0, 110.0, 130.0])
    assert not shapes._still_visible(first, square(20.0, 60.0, 120.0, 120.0))  # 32 % left
    assert not shapes._still_visible(first, square(20.0, 20.0, 95.0, 120.0))  # 5.2 px of height left
    # A shape past the border is boxed to its part inside the image: a diamond and a disc centred
    # 5 px left of the image reach 15 px into it, over +-15 / +-19.4 px at x = 0 (not +-20).
    diamond = [("poly", np.array([[-25.0, 50.0], [-5.0, 30.0], [15.0, 50.0], [-5.0, 70.0]]))]
    np.testing.assert_allclose(shapes._extent_in_image(diamond, 100, 100), [35.0, 0.0, 65.0, 15.0])
    half_chord = np.sqrt(20.0 ** 2 - 5.0 ** 2)
    np.testing.assert_allclose(shapes._extent_in_image([("circle", (-5.0, 50.0, 20.0))], 100, 100),
                               [50.0 - half_chord, 0.0, 50.0 + half_chord, 15.0])
    assert shapes._extent_in_image([("circle", (-25.0, 50.0, 20.0))], 100, 100) is None
    # In the rendered set: every box within half a pixel of the edges of its object's visible
    # supersamples (1/4 px apart), and inside the extent of its geometry in the image, which
    # some later objects cut short; the same images as boxing those extents.
    drawn, shrunk, visible_box = [], 0, shapes._Drawn.visible_box
    for index in range(40):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(shapes._Drawn, "visible_box", lambda obj, visible=None: (
                drawn.append(obj) if visible is None else None) or visible_box(obj, visible))
            drawn.clear()
            image, boxes, labels = render_example(np.random.default_rng([0, 1, index]))
        for obj, box in zip(drawn, boxes, strict=True):
            rows, cols = np.nonzero(obj.visible.any(axis=1))[0], np.nonzero(obj.visible.any(axis=0))[0]
            y0, x0, n = *obj.origin, shapes._SUPERSAMPLE
            edges = [y0 + rows[0] / n, x0 + cols[0] / n, y0 + (rows[-1] + 1) / n, x0 + (cols[-1] + 1) / n]
            np.testing.assert_allclose(box, edges, atol=0.5)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(shapes._Drawn, "visible_box", lambda obj, visible=None: (
                np.array(obj.extent) if visible is None else visible_box(obj, visible)))
            whole_image, extents, whole_labels = render_example(np.random.default_rng([0, 1, index]))
        np.testing.assert_array_equal(image, whole_image)
        assert labels == whole_labels
        for box, extent in zip(boxes, extents, strict=True):
            assert np.all(box[:2] >= extent[:2]) and np.all(box[2:] <= extent[2:])
            assert box[2] - box[0] >= 8 and box[3] - box[1] >= 8
            shrunk += np.abs(box - extent).max() > 2
    assert shrunk >= 2


def test_a_run_started_while_another_builds_the_set_waits_and_reads_it(tmp_path):
    """Two ``train.py`` runs started together on a new machine: TFDS's second build failed to
    rename its folder into place. Here one build holds the lock while a second load starts (it makes
    its builder on the empty folder, then waits); once the first is done, the second reads it."""
    loaded = {}

    def second_run():
        loaded["source"] = load_shapes("train", data_dir=tmp_path, num_train=6, num_test=2)

    first = shapes_builder(tmp_path, num_train=6, num_test=2)
    with build_lock(first):
        waiting = threading.Thread(target=second_run)
        waiting.start()
        waiting.join(timeout=3)
        assert waiting.is_alive()  # at the lock, not building beside the first
        first.download_and_prepare(download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
    waiting.join(timeout=120)
    assert loaded["source"].num_examples == 6
    assert len(examples(loaded["source"])) == 6


def test_a_set_built_already_is_read_without_its_lock(tmp_path, monkeypatch):
    """A prebuilt data directory may be read-only (shared, or in a container image): a built set
    is read without creating the lock file beside it; only a build takes the lock."""
    from keras_frcnn.data import tfds_sources

    _build(tmp_path, "train")

    def read_only(path, wait=True):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    monkeypatch.setattr(tfds_sources, "file_lock", read_only)
    assert len(examples(_build(tmp_path, "test"))) == 3
    with pytest.raises(OSError, match="Read-only file system"):
        _build(tmp_path / "unbuilt", "test")


def test_a_build_killed_midway_leaves_nothing_behind_the_next(tmp_path):
    """TFDS builds into ``incomplete.XXXXXX_<version>/`` and renames it when done; a build killed
    with -9 left that folder (as large as what it wrote) for ever, beside the set the next run
    built. The next build, holding the build lock, removes it."""
    config_dir = tmp_path / "shapes" / "train6_test2_seed0"
    dead = config_dir / f"incomplete.9FOIL6_{shapes.Shapes.VERSION}"
    dead.mkdir(parents=True)
    (dead / "shapes-train.tfrecord-00000-of-00001").write_bytes(b"x" * 1000)
    source = load_shapes("train", data_dir=tmp_path, num_train=6, num_test=2)
    assert len(examples(source)) == 6
    assert sorted(p.name for p in config_dir.iterdir()) == [str(shapes.Shapes.VERSION)]


def test_the_benchmarks_held_out_images_are_not_training_images(tmp_path):
    # benchmarks/missed_objects.py --heldout N: the images after the training set's, by index;
    # TFDS stores a split shuffled by key, so "the rest of the bigger build" would not be those.
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "missed_objects.py"
    spec = importlib.util.spec_from_file_location("missed_objects", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    heldout = module.heldout_source(6, num_train=10, data_dir=str(tmp_path))
    held = examples(heldout)
    assert heldout.num_examples == 6 and sorted(int(e["image/id"]) for e in held) == list(range(10, 16))
    training = examples(load_shapes("train", data_dir=str(tmp_path), num_train=10, num_test=1))
    assert sorted(int(e["image/id"]) for e in training) == list(range(10))
    trained_on = {e["image"].tobytes() for e in training}
    assert not any(e["image"].tobytes() in trained_on for e in held)
