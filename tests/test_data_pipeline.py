"""The tf.data pipeline: resize rule, exact box round trips (flip included), padded batches."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_data_fixtures import voc_xml, write_voc_folder

from keras_frcnn.config import ImageConfig, preset
from keras_frcnn.data import eval_dataset, load_voc_folder, train_dataset
from keras_frcnn.preprocessing import scaled_size

VOC = preset("voc")  # shorter side 600, longer at most 1000

# A 333 x 500 (h x w) image, as many VOC images are; its box in VOC XML numbers.
HEIGHT, WIDTH = 333, 500
BOX_XYXY = (48, 40, 301, 222)


@pytest.fixture
def painted_folder(tmp_path):
    """One PNG image: black, with the pixels of BOX_XYXY white. VOC numbers pixels from 1 and
    names the first and the last pixel inside: columns 48..301 are 0-based 47..300, the
    continuous [47, 301)."""
    os.makedirs(tmp_path / "JPEGImages")
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    xmin, ymin, xmax, ymax = BOX_XYXY
    pixels[ymin - 1:ymax, xmin - 1:xmax] = 255
    Image.fromarray(pixels).save(tmp_path / "JPEGImages" / "a.png")
    xml = voc_xml("a.png", WIDTH, HEIGHT, [("dog", BOX_XYXY, False)])
    write_voc_folder(tmp_path, {"a": {"xml": xml, "image": False}}, {"trainval": ["a"]})
    return tmp_path


def _one_batch(folder, flip_probability):
    source = load_voc_folder(folder)
    return next(iter(train_dataset(source, VOC, batch_size=1, shuffle=False, flip_probability=flip_probability)))


def test_box_round_trip_through_resize_and_flip(painted_folder):
    plain = _one_batch(painted_folder, 0.0)
    mirrored = _one_batch(painted_folder, 1.0)
    scale = 600 / HEIGHT
    assert plain["image_info"].numpy()[0].tolist() == pytest.approx([600, 901, scale])  # round(500 * 1.8018)
    assert plain["images"].shape == (1, 600, 901, 3)
    assert not plain["flipped"].numpy()[0] and mirrored["flipped"].numpy()[0]

    xmin, ymin, xmax, ymax = BOX_XYXY
    continuous = np.array([ymin - 1, xmin - 1, ymax, xmax], np.float64)  # the painted pixels' extent
    box = plain["gt_boxes"].numpy()[0, 0]
    np.testing.assert_allclose(box, continuous * scale, rtol=1e-6)
    # Undoing the resize gives back the painted extent.
    np.testing.assert_allclose(box / plain["image_info"].numpy()[0, 2], continuous, rtol=1e-6)

    # Flipped: x -> W - x in continuous coordinates, exactly, and the image is the exact mirror.
    flipped_box = mirrored["gt_boxes"].numpy()[0, 0]
    np.testing.assert_array_equal(flipped_box, [box[0], 901 - box[3], box[2], 901 - box[1]])
    unflipped = np.array([flipped_box[0], 901 - flipped_box[3], flipped_box[2], 901 - flipped_box[1]])
    np.testing.assert_allclose(unflipped / scale, continuous, rtol=1e-6)
    np.testing.assert_array_equal(mirrored["images"].numpy()[0], plain["images"].numpy()[0, :, ::-1])

    # The box sits on the painted pixels in both frames.
    for batch in (plain, mirrored):
        image = batch["images"].numpy()[0, ..., 0].astype(float)
        y0, x0, y1, x1 = batch["gt_boxes"].numpy()[0, 0]
        inside = image[int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1]
        assert inside.min() == 255
        assert image[:int(y0) - 1].max() == 0 and image[:, :int(x0) - 1].max() == 0
        assert image[int(np.ceil(y1)) + 1:].max() == 0 and image[:, int(np.ceil(x1)) + 1:].max() == 0


def test_resize_rule():
    # The pipeline resizes with keras_frcnn.preprocessing.scaled_size, the inference model's rule.
    cases = {(333, 500): ((600, 901), 600 / 333), (600, 1000): ((600, 1000), 1.0),
             (100, 2000): ((50, 1000), 0.5), (1000, 1000): ((600, 600), 0.6), (480, 640): ((600, 800), 1.25)}
    for (h, w), (expected_size, expected_scale) in cases.items():
        size, scale = scaled_size([h, w], 600, 1000)
        assert tuple(size.numpy()) == expected_size and scale.numpy() == pytest.approx(expected_scale)


@pytest.fixture
def mixed_folder(tmp_path):
    entries = {
        "a": {"size": (60, 80), "objects": [("dog", (10, 5, 40, 30), False), ("cat", (1, 1, 80, 60), True)]},
        "b": {"size": (80, 40), "objects": [("car", (5, 6, 25, 26), False), ("car", (1, 2, 30, 70), False),
                                           ("bus", (3, 3, 9, 9), False)]},
        "c": {"size": (50, 50), "objects": []},
        "d": {"size": (50, 50), "objects": [("cow", (2, 2, 20, 20), True)]},  # difficult only
        "e": {"size": (64, 64), "image": "L", "objects": [("cow", (2, 2, 20, 20), False)]},
    }
    write_voc_folder(tmp_path, entries, {"trainval": list(entries)})
    return tmp_path


SMALL = dataclasses.replace(VOC, image=ImageConfig(min_side=64, max_side=100))


def test_padded_batch_shapes_and_dtypes(mixed_folder):
    source = load_voc_folder(mixed_folder)
    batch = next(iter(train_dataset(source, SMALL, batch_size=2, shuffle=False, flip_probability=0.0)))
    assert set(batch) == {"images", "image_info", "gt_boxes", "gt_classes", "num_gt", "index", "key",
                          "position", "flipped", "sample_seed"}
    dtypes = {k: v.dtype for k, v in batch.items()}
    assert dtypes == {"images": tf.uint8, "image_info": tf.float32, "gt_boxes": tf.float32,
                      "gt_classes": tf.int32, "num_gt": tf.int32, "index": tf.int64, "flipped": tf.bool,
                      "sample_seed": tf.int64, "key": tf.string, "position": tf.int64}
    # a: 60 x 80 -> 64 x 85 (scale 64/60); b: 80 x 40 -> 128 x 64 is too long -> 100 x 50 (scale 1.25)
    np.testing.assert_allclose(batch["image_info"].numpy(), [[64, 85, 64 / 60], [100, 50, 1.25]], rtol=1e-6)
    assert batch["images"].shape == (2, 100, 85, 3)
    images = batch["images"].numpy()
    assert images[0, 64:].max() == 0 and images[1, :, 50:].max() == 0  # zero padding bottom / right
    assert batch["num_gt"].numpy().tolist() == [1, 3]  # a's difficult cat is not a target
    assert batch["gt_boxes"].shape == (2, 3, 4)
    assert batch["gt_classes"].numpy().tolist() == [[12, 0, 0], [7, 7, 6]]  # dog, car, bus: label + 1
    np.testing.assert_array_equal(batch["gt_boxes"].numpy()[0, 1:], 0)
    assert batch["index"].numpy().tolist() == [0, 1]


def test_drop_remainder_and_negatives(mixed_folder):
    source = load_voc_folder(mixed_folder)
    kept = list(train_dataset(source, SMALL, batch_size=2, shuffle=False))
    assert [b["images"].shape[0] for b in kept] == [2, 2]  # 5 images: the fifth is dropped
    everything = list(train_dataset(source, SMALL, batch_size=2, shuffle=False, drop_remainder=False))
    assert [b["images"].shape[0] for b in everything] == [2, 2, 1]
    num_gt = np.concatenate([b["num_gt"].numpy() for b in everything])
    assert num_gt.tolist() == [1, 3, 0, 0, 1]  # the empty and the difficult-only image are negatives
    assert everything[2]["images"].shape[-1] == 3  # a grayscale file decodes to 3 channels


def test_index_is_stable_under_shuffle_and_seeded(mixed_folder):
    source = load_voc_folder(mixed_folder)
    expected_num_gt = {0: 1, 1: 3, 2: 0, 3: 0, 4: 1}

    def epoch(seed):
        batches = list(train_dataset(source, SMALL, batch_size=1, seed=seed, drop_remainder=False))
        return ([int(b["index"][0]) for b in batches], [bool(b["flipped"][0]) for b in batches],
                {int(b["index"][0]): int(b["num_gt"][0]) for b in batches})

    order, flips, num_gt = epoch(3)
    assert sorted(order) == [0, 1, 2, 3, 4] and num_gt == expected_num_gt
    assert epoch(3)[:2] == (order, flips)  # a seed makes shuffling and flipping reproducible

    repeated = train_dataset(source, SMALL, batch_size=1, seed=1, repeat=True)
    indices = [int(b["index"][0]) for b in repeated.take(50)]
    flipped = [bool(b["flipped"][0]) for b in repeated.take(50)]
    assert all(sorted(indices[i:i + 5]) == [0, 1, 2, 3, 4] for i in range(0, 50, 5))
    assert 10 < sum(flipped) < 40  # config.image.flip: about half


def test_encoded_and_decoded_sources_agree(mixed_folder):
    decoded = train_dataset(load_voc_folder(mixed_folder), SMALL, batch_size=2, seed=5)
    encoded = train_dataset(load_voc_folder(mixed_folder, decode_images=False), SMALL, batch_size=2, seed=5)
    for a, b in zip(decoded, encoded, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_eval_dataset_keeps_originals_and_difficult(mixed_folder):
    batches = list(eval_dataset(load_voc_folder(mixed_folder), batch_size=2))
    assert [b["images"].shape[0] for b in batches] == [2, 2, 1]  # nothing dropped
    first = batches[0]
    assert first["image_size"].numpy().tolist() == [[60, 80], [80, 40]]
    assert first["images"].shape == (2, 80, 80, 3) and first["images"].dtype == tf.uint8
    assert first["num_gt"].numpy().tolist() == [2, 3]
    # VOC pixel numbers (5, 10)..(30, 40) are the continuous [4, 9]..[30, 40].
    np.testing.assert_allclose(first["gt_boxes"].numpy()[0], [[4, 9, 30, 40], [0, 0, 60, 80], [0, 0, 0, 0]])
    assert first["gt_difficult"].numpy()[0].tolist() == [False, True, False]
    assert first["gt_classes"].numpy()[0].tolist() == [12, 8, 0]
    assert first["image/filename"].numpy().tolist() == [b"a.jpg", b"b.jpg"]
    assert first["index"].numpy().tolist() == [0, 1]
    assert batches[1]["gt_difficult"].numpy()[1].tolist() == [True]


def test_stored_proposals_travel_with_the_image(painted_folder):
    """Proposals stored per example (resized pixels, unflipped) are flipped with their image."""
    source = load_voc_folder(painted_folder)
    stored = tf.constant([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 600.0, 901.0]])
    with_proposals = source.dataset.map(lambda example: {**example, "proposals": stored})
    plain = next(iter(train_dataset(with_proposals, VOC, batch_size=1, shuffle=False, flip_probability=0.0)))
    mirrored = next(iter(train_dataset(with_proposals, VOC, batch_size=1, shuffle=False, flip_probability=1.0)))
    assert plain["num_proposals"].numpy().tolist() == [2]
    np.testing.assert_array_equal(plain["proposals"].numpy()[0], stored.numpy())
    np.testing.assert_array_equal(mirrored["proposals"].numpy()[0],
                                  [[10, 901 - 220, 110, 901 - 20], [0, 0, 600, 901]])


def _assert_images_padded(plain, padded, multiple):
    """``padded`` is ``plain`` with zeros below and right up to sides that are multiples of ``multiple``."""
    h, w = plain.shape[1:3]
    assert padded.shape[1:3] == (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
    np.testing.assert_array_equal(padded[:, :h, :w], plain)
    assert not padded[:, h:].numpy().any() and not padded[:, :, w:].numpy().any()


def test_xla_batches_are_padded_to_few_shapes(mixed_folder):
    """pad_multiple (for XLA-compiled steps): image sides to a multiple of it, ground truth to a
    multiple of 16 boxes; the valid sizes, boxes and classes themselves do not change."""
    source = load_voc_folder(mixed_folder)
    plain = list(train_dataset(source, SMALL, batch_size=2, shuffle=False, flip_probability=0.0))
    padded = list(train_dataset(source, SMALL, batch_size=2, shuffle=False, flip_probability=0.0,
                                pad_multiple=64))
    for a, b in zip(plain, padded):
        _assert_images_padded(a["images"], b["images"], 64)
        g = a["gt_boxes"].shape[1]
        assert b["gt_boxes"].shape[1] == 16 and b["gt_classes"].shape[1] == 16
        np.testing.assert_array_equal(b["gt_boxes"][:, :g], a["gt_boxes"])
        assert not b["gt_classes"][:, g:].numpy().any()
        np.testing.assert_array_equal(b["image_info"], a["image_info"])


def test_image_multiple_pads_the_images_only(mixed_folder):
    """image_multiple (``train.image_pad_multiple``, steps not compiled by XLA): image sides to a
    multiple of it, zeros below and right; ground truth, its count and the valid sizes unchanged."""
    source = load_voc_folder(mixed_folder)
    plain = list(train_dataset(source, SMALL, batch_size=2, shuffle=False, seed=0))
    padded = list(train_dataset(source, SMALL, batch_size=2, shuffle=False, seed=0, image_multiple=48))
    assert len(plain) == len(padded) > 0
    for a, b in zip(plain, padded):
        _assert_images_padded(a["images"], b["images"], 48)
        assert b["images"].shape != a["images"].shape and set(a) == set(b)
        for key in set(a) - {"images"}:
            np.testing.assert_array_equal(b[key], a[key], key)


def test_multi_scale_training_draws_a_side_per_batch(painted_folder):
    """image.train_min_sides: each batch's images get one of the sides (seeded, per batch), the
    ground truth and stored proposals (kept at min_side's scale, the proposal side of several
    training sides) follow it; the proposal dump's batches (at_proposal_side) and evaluation stay
    at min_side. With one training side, proposals are stored at it and not rescaled."""
    source = load_voc_folder(painted_folder)
    sides = (300, 450, 600)
    config = dataclasses.replace(VOC, image=dataclasses.replace(VOC.image, train_min_sides=sides))
    stored = tf.constant([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 600.0, 901.0]])
    with_proposals = source.dataset.map(lambda example: {**example, "proposals": stored})

    def batches(seed, **kwargs):
        dataset = train_dataset(with_proposals, config, batch_size=2, seed=seed, repeat=True,
                                flip_probability=0.0, **kwargs)
        return list(dataset.take(12))

    drawn = batches(0)
    heights = [b["image_info"].numpy()[:, 0].tolist() for b in drawn]
    assert all(h[0] == h[1] for h in heights)  # one side per batch
    assert {h[0] for h in heights} == set(sides)  # every side drawn in 12 batches
    assert [b["image_info"].numpy().tolist() for b in batches(0)] == [b["image_info"].numpy().tolist() for b in drawn]
    assert heights != [b["image_info"].numpy()[:, 0].tolist() for b in batches(1)]
    for batch in drawn:
        height, width, scale = batch["image_info"].numpy()[0]
        assert scale == pytest.approx(height / HEIGHT) and width == round(WIDTH * height / HEIGHT)
        assert tuple(batch["images"].shape[1:3]) == (int(height), int(width))
        # (the mapped dataset is not a DetectionSource: its VOC numbers are taken as continuous)
        box = np.array([BOX_XYXY[1], BOX_XYXY[0], BOX_XYXY[3], BOX_XYXY[2]], np.float64)
        np.testing.assert_allclose(batch["gt_boxes"].numpy()[0, 0], box * scale, rtol=1e-6)
        ratio = scale / (600 / HEIGHT)
        expected = np.minimum(stored.numpy() * ratio, [height, width, height, width])
        np.testing.assert_allclose(batch["proposals"].numpy()[0], expected, rtol=1e-6)

    assert config.image.proposal_side == 600
    fixed = batches(0, at_proposal_side=True)
    assert {b["image_info"].numpy()[0, 0] for b in fixed} == {600}
    np.testing.assert_array_equal(fixed[0]["proposals"].numpy()[0], stored.numpy())
    assert next(iter(eval_dataset(source)))["images"].shape[1:3] == (HEIGHT, WIDTH)

    config = dataclasses.replace(VOC, image=dataclasses.replace(VOC.image, train_min_sides=(450,)))
    assert config.image.proposal_side == 450
    for at_proposal_side in (False, True):
        batch = next(iter(train_dataset(with_proposals, config, batch_size=1, shuffle=False,
                                        flip_probability=0.0, at_proposal_side=at_proposal_side)))
        assert batch["image_info"].numpy()[0, 0] == 450
        np.testing.assert_array_equal(batch["proposals"].numpy()[0], stored.numpy())


def test_pipelines_run_without_tf_data_autotuning(mixed_folder):
    """Freeing an autotuned iterator blocked for the autotune thread's timed wait (9-60 s stalls
    at random points of a run, BENCHMARKS.md): the package's pipelines turn autotuning off, and
    training streams keep the DATA auto-shard policy."""
    source = load_voc_folder(mixed_folder)
    train = train_dataset(source, SMALL, batch_size=2, shuffle=False)
    assert train.options().autotune.enabled is False
    assert train.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert eval_dataset(source).options().autotune.enabled is False


@pytest.fixture
def two_orientations(tmp_path):
    """Eight images, four landscape and four portrait, each with one object (and stored proposals
    of different counts): a stream in which pairs of either orientation can form."""
    sizes = [(40, 60), (60, 40), (48, 64), (64, 48), (40, 70), (70, 40), (44, 66), (66, 44)]
    entries = {f"i{n}": {"size": size, "objects": [("dog", (3, 4, 3 + n + 10, 4 + n + 12), False)]}
               for n, size in enumerate(sizes)}
    write_voc_folder(tmp_path, entries, {"trainval": list(entries)})
    return load_voc_folder(tmp_path)


def test_aspect_grouping_pairs_orientations_and_keeps_the_stream(two_orientations):
    """train.aspect_group: batches pair images of one orientation; each position is read once
    and holds the same example, flip, sampling seed and proposals as the stream in its order;
    a stream started mid-block continues as the uninterrupted one."""
    proposals = tf.constant([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 20.0, 25.0], [0.0, 0.0, 9.0, 9.0]])
    source = dataclasses.replace(two_orientations, dataset=two_orientations.dataset.map(
        lambda example: {**example, "proposals": proposals[:1 + tf.strings.length(example["image/filename"]) % 3]}))
    source = dataclasses.replace(source, example_at=None)

    def batches(aspect_group, start=0, count=16):
        dataset = train_dataset(source, SMALL, batch_size=2, seed=4, start=start, repeat=True,
                                aspect_group=aspect_group)
        return [{k: v.numpy() for k, v in b.items()} for b in dataset.take(count)]

    plain, grouped = batches(0), batches(8)
    landscape = [b["image_info"][:, 0] < b["image_info"][:, 1] for b in grouped]
    assert all(pair[0] == pair[1] for pair in landscape)  # every batch one orientation
    assert sum(pair[0] != pair[1] for pair in (b["image_info"][:, 0] < b["image_info"][:, 1] for b in plain)) > 0

    def by_position(stream):
        examples = {}
        for b in stream:
            for i, position in enumerate(b["position"]):
                h, w = b["image_info"][i, :2].astype(int)
                examples[int(position)] = (b["index"][i], b["flipped"][i], b["sample_seed"][i], b["images"][i, :h, :w],
                                           b["gt_boxes"][i, :b["num_gt"][i]], b["proposals"][i, :b["num_proposals"][i]])
        return examples

    plain_examples, grouped_examples = by_position(plain), by_position(grouped)
    assert sorted(grouped_examples) == list(range(32))  # four blocks of 8: each position once
    for position, example in grouped_examples.items():
        for got, expected in zip(example, plain_examples[position], strict=True):
            np.testing.assert_array_equal(got, expected)
    assert [b["position"].tolist() for b in grouped] != [b["position"].tolist() for b in plain]
    for start in (6, 10):  # mid-block: the same batches as the uninterrupted stream from there on
        resumed = batches(8, start=start, count=16 - start // 2)
        for got, expected in zip(resumed, grouped[start // 2:], strict=True):
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key], key)


def test_aspect_grouping_keeps_one_drawn_side_per_batch(two_orientations):
    """Multi-scale training with aspect grouping: a batch's images still share the side drawn for
    it; batches of one image and unshuffled streams are not reordered."""
    config = dataclasses.replace(SMALL, image=dataclasses.replace(SMALL.image, max_side=1000, train_min_sides=(40, 64)))
    dataset = train_dataset(two_orientations, config, batch_size=2, seed=1, repeat=True, aspect_group=8)
    sides = [np.min(b["image_info"].numpy()[:, :2], axis=1) for b in dataset.take(16)]
    assert all(s[0] == s[1] for s in sides) and {float(s[0]) for s in sides} == {40.0, 64.0}
    for kwargs in ({"batch_size": 1}, {"batch_size": 2, "shuffle": False}):
        plain = train_dataset(two_orientations, SMALL, seed=1, repeat=True, **kwargs)
        grouped = train_dataset(two_orientations, SMALL, seed=1, repeat=True, aspect_group=8, **kwargs)
        assert ([b["position"].numpy().tolist() for b in plain.take(8)]
                == [b["position"].numpy().tolist() for b in grouped.take(8)])


def test_aspect_grouping_reads_images_without_objects(tmp_path):
    """A block whose images have no objects (and no stored proposals): TF 2.21's unbatch crashes
    the process on a component of zero length in every example of a batch, so the blocks carry a
    row more; the batches come out as in the stream's order, with no boxes."""
    entries = {f"n{k}": {"size": size, "objects": []} for k, size in enumerate([(40, 60), (60, 40)] * 3)}
    write_voc_folder(tmp_path, entries, {"trainval": list(entries)})
    source = load_voc_folder(tmp_path)
    empty = source.dataset.map(lambda example: {**example, "proposals": tf.zeros([0, 4])})
    for aspect_group in (0, 2, 6):
        batches = list(train_dataset(empty, SMALL, batch_size=2, seed=2, repeat=True,
                                     aspect_group=aspect_group).take(9))
        assert sorted(int(p) for b in batches for p in b["position"]) == list(range(18))
        assert all(b["gt_boxes"].shape[1] == 0 and b["proposals"].shape[1] == 0 for b in batches)
        assert all(int(b["num_gt"].numpy().sum()) == 0 for b in batches)
