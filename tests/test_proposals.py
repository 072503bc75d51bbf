import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn.anchors import Anchors
from keras_frcnn.proposals import Proposals
from keras_frcnn import boxes as box_ops


def make_inputs(rng, batch=1, h=8, w=12, k=9, image_info=None):
    anchors = Anchors()(np.zeros((batch, h, w, 1), np.float32))
    a = anchors.shape[0]
    logits = rng.normal(size=(batch, a)).astype(np.float32)
    deltas = (rng.normal(size=(batch, a, 4)) * 0.2).astype(np.float32)
    if image_info is None:
        image_info = np.tile([[h * 16.0, w * 16.0, 1.0]], (batch, 1)).astype(np.float32)
    return logits, deltas, anchors, image_info


@pytest.mark.parametrize("training,n", [(False, 50), (True, 80)])
def test_proposals_inside_image_sorted_fixed_shape(rng, training, n):
    logits, deltas, anchors, info = make_inputs(rng, batch=2)
    info[1, :2] = [100.0, 150.0]  # the second image is smaller inside the padded batch
    layer = Proposals(pre_nms_top_n=(400, 300), post_nms_top_n=(80, 50), min_size=4, nms_iou=0.7)
    proposals, scores, count = [t.numpy() for t in layer([logits, deltas, anchors, info], training=training)]
    assert proposals.shape == (2, n, 4) and scores.shape == (2, n) and count.shape == (2,)
    for b in range(2):
        c = count[b]
        assert 0 < c <= n
        p = proposals[b, :c]
        assert (p[:, 0] >= 0).all() and (p[:, 1] >= 0).all()
        assert (p[:, 2] <= info[b, 0]).all() and (p[:, 3] <= info[b, 1]).all()
        assert (p[:, 2] - p[:, 0] >= 4).all() and (p[:, 3] - p[:, 1] >= 4).all()
        assert np.all(np.diff(scores[b, :c]) <= 0)
        assert not proposals[b, c:].any() and not scores[b, c:].any()
        # NMS: no two kept proposals overlap more than the threshold.
        iou = box_ops.iou(p, p).numpy() - np.eye(c)
        assert iou.max() < 0.7 + 1e-6


def test_nms_keeps_one_of_duplicates_and_the_best():
    anchors = np.array([[0, 0, 32, 32], [0, 0, 32, 32], [1, 1, 33, 33], [64, 64, 96, 96]], np.float32)
    logits = np.array([[1.0, 3.0, 2.0, 0.5]], np.float32)
    deltas = np.zeros((1, 4, 4), np.float32)
    info = np.array([[128.0, 128.0, 1.0]], np.float32)
    layer = Proposals(pre_nms_top_n=(10, 10), post_nms_top_n=(10, 10), min_size=0, stride=16,
                      feature_rounding="ceil")
    proposals, scores, count = layer([logits, deltas, anchors, info])
    assert count.numpy()[0] == 2
    np.testing.assert_allclose(proposals.numpy()[0, :2], [[0, 0, 32, 32], [64, 64, 96, 96]])
    np.testing.assert_allclose(scores.numpy()[0, :2], 1 / (1 + np.exp([-3.0, -0.5])), rtol=1e-6)


def test_small_boxes_are_dropped_with_the_scale():
    anchors = np.array([[0, 0, 20, 20], [40, 40, 80, 80]], np.float32)
    logits = np.array([[5.0, 1.0]], np.float32)
    deltas = np.zeros((1, 2, 4), np.float32)
    layer = Proposals(pre_nms_top_n=(10, 10), post_nms_top_n=(5, 5), min_size=16, feature_rounding="ceil")
    # scale 1.5: the minimum side is 24 px, so the 20 px box goes.
    proposals, _, count = layer([logits, deltas, anchors, np.array([[100.0, 100.0, 1.5]], np.float32)])
    assert count.numpy()[0] == 1
    np.testing.assert_allclose(proposals.numpy()[0, 0], [40, 40, 80, 80])


def test_padded_batch_gives_each_image_its_own_proposals(rng):
    # Image 0 is 70 x 90 px inside a padded 8 x 12 feature map (128 x 192 px); its own map is
    # floor(70 / 16) x floor(90 / 16) = 4 x 5. Alone, its RPN outputs are the top-left corner.
    h, w, k = 8, 12, 9
    logits, deltas, anchors, info = make_inputs(rng, batch=2, h=h, w=w)
    info[0] = [70.0, 90.0, 1.0]
    layer = Proposals(pre_nms_top_n=(500, 500), post_nms_top_n=(40, 40), min_size=2)
    batched = [t.numpy() for t in layer([logits, deltas, anchors, info])]
    own = lambda x: x.reshape(h, w, k, -1)[:4, :5].reshape(4 * 5 * k, -1)  # noqa: E731
    alone_anchors = Anchors()(np.zeros((1, 4, 5, 1), np.float32))
    alone = [t.numpy() for t in layer([own(logits[0])[:, 0][None], own(deltas[0])[None],
                                        alone_anchors, info[:1]])]
    assert batched[2][0] == alone[2][0]
    np.testing.assert_allclose(batched[0][0], alone[0][0], atol=1e-5)
    np.testing.assert_allclose(batched[1][0], alone[1][0], atol=1e-6)


def test_no_pre_nms_cut_and_get_config(rng):
    logits, deltas, anchors, info = make_inputs(rng)
    layer = Proposals(pre_nms_top_n=(0, 0), post_nms_top_n=(30, 30), min_size=1)
    clone = Proposals.from_config(layer.get_config())
    a = layer([logits, deltas, anchors, info])
    b = clone([logits, deltas, anchors, info])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_no_cpu_only_nms_ops_in_the_graph(rng):
    inputs = make_inputs(rng)
    layer = Proposals(pre_nms_top_n=(100, 100), post_nms_top_n=(20, 20), min_size=1)
    graph = tf.function(lambda *x: layer(list(x))).get_concrete_function(*inputs).graph
    op_types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        op_types |= {node.op for node in function.node_def}
    assert not op_types & {"CombinedNonMaxSuppression", "NonMaxSuppressionV5", "PyFunc", "EagerPyFunc"}


def test_no_pre_nms_cut_keeps_every_box_above_the_minimum_size(rng):
    """The alternating schedule's proposal dump (no cut before NMS): with NMS unable to suppress
    anything (IoU > 1 never happens) and room for every anchor, every decoded, clipped box of
    both sides >= min_size comes out, and a cut before NMS keeps only its top-N."""
    logits, deltas, anchors, info = make_inputs(rng, h=10, w=14)
    deltas = deltas * 5.0  # many boxes far from their anchors: some shrink below the minimum
    a = anchors.shape[0]
    boxes = box_ops.clip(box_ops.decode(deltas, anchors[None]), info[:, :2])
    expected = int(tf.reduce_sum(tf.cast(box_ops.min_side_mask(boxes, 24.0), tf.int32)))
    assert 0.2 * a < expected < a
    uncut = Proposals(pre_nms_top_n=(0, 0), post_nms_top_n=(a, a), nms_iou=1.0, min_size=24)
    _, scores, count = uncut([logits, deltas, anchors, info])
    assert int(count[0]) == expected and int(tf.reduce_sum(tf.cast(scores[0] > 0, tf.int32))) == expected
    cut = Proposals(pre_nms_top_n=(100, 100), post_nms_top_n=(a, a), nms_iou=1.0, min_size=24)
    assert int(cut([logits, deltas, anchors, info])[2][0]) == 100


@pytest.mark.parametrize("rounding", ["floor", "ceil"])
def test_feature_position_mask_is_exact_in_a_graph_of_constant_shapes(rounding):
    """Per-anchor strides (a pyramid's levels, [A]) and sizes known when the graph is built: the
    mask equals NumPy's whole-number rule (before, a graph's h / s became h * (1 / s), 128 / 32
    = 3.9999998, and the last row and column of every level were dropped)."""
    from keras_frcnn.proposals import feature_position_mask

    strides = np.repeat([4.0, 8.0, 16.0, 32.0, 64.0], 40).astype(np.float32)
    cells = np.tile(np.arange(40), 5).astype(np.float32)
    centres = (cells + 0.5) * strides
    anchors = tf.constant(np.stack([centres - 8, centres - 8, centres + 8, centres + 8], axis=1))
    info = tf.constant([[128.0, 128.0, 1.0], [100.0, 70.0, 1.0]])
    mask = tf.function(lambda: feature_position_mask(anchors, info, tf.constant(strides), rounding))()
    sides = np.floor if rounding == "floor" else np.ceil
    expected = cells[None] < sides(info.numpy()[:, :1] / strides[None])
    np.testing.assert_array_equal(mask.numpy(), expected & (cells[None] < sides(info.numpy()[:, 1:2] / strides[None])))
    np.testing.assert_array_equal(feature_position_mask(anchors, info, strides, rounding).numpy(), mask.numpy())
