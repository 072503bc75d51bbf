"""MobileNetV3-Large-FPN (issue 17), torchvision's fasterrcnn_mobilenet_v3_large_fpn: the base
equals keras.applications' MobileNetV3-Large with the same weights, anchors of every size on
levels that share a stride, per-level proposals that keep those levels apart; and (under -m slow,
the suite's budget) a tiny network trains under joint training, round-trips through .keras, runs
in bfloat16, serves from a SavedModel in a TensorFlow-only process and runs in ONNX Runtime,
OpenVINO and LiteRT without Keras. Padded batches and the pretrained freeze: test_resnet (with
ResNet-50-FPN); the alternating schedule: test_training and tf.distribute: test_distribute (both
-m slow)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from backbone_checks import (check_bfloat16_form, check_learns_and_round_trips, check_saved_model,
                             randomise_batch_norm, train_tiny)
from conftest import tiny_mobilenet_config
from keras_frcnn import backbone
from keras_frcnn.anchors import PyramidAnchors
from keras_frcnn.preprocessing import for_converters
from keras_frcnn.proposals import Proposals
from test_formats import RUNTIMES, check_runtime, with_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny MobileNetV3-FPN (width 0.25, from random weights), trained once per module (50
    steps: its loss falls and it detects; 125 took ~16 s more of the suite)."""
    return train_tiny(tiny_mobilenet_config(), tmp_path_factory.mktemp("mobilenet"), 2)


# (Its training, ~21 s of the suite: under -m slow for its budget; the same pyramid, RoIAlign and
# heads train and round-trip with ResNet-50-FPN in test_resnet; MobileNet's own base: below.)
@pytest.mark.slow
def test_joint_training_learns_and_the_keras_file_round_trips(trained):
    check_learns_and_round_trips(trained)


# (~6 s of the suite: under -m slow for its budget; the same for_inference form of the ResNet C4
# and FPN models, batch norm and pyramid included: test_resnet.)
@pytest.mark.slow
def test_bfloat16_inference_form_equals_the_mixed_model(trained):
    check_bfloat16_form(trained, "expanded_conv_6_expand", "expanded_conv_6_expand_bn")


# Tracing this ~300-layer graph into a SavedModel and loading it in a new process took ~30 s of
# the suite's budget: under -m slow, as the ResNets' (test_resnet); the tiny ZF model's SavedModel
# (test_export) stays in the default run.
@pytest.mark.slow
def test_saved_model_serves_the_keras_detections_with_gpu_kernels_only(trained):
    check_saved_model(trained)


# ONNX's, OpenVINO's and LiteRT's conversions of this ~300-layer graph take ~35, ~23 and ~24 s: under
# -m slow (the suite's budget); the tiny ZF models' and the ResNets' exports to the runtimes stay.
@pytest.mark.slow
@pytest.mark.parametrize("fmt", RUNTIMES)
def test_runtime_exports_give_the_keras_detections(trained, fmt):
    """Depthwise convolutions, squeeze-and-excitation, two levels of one stride, the RPN score
    threshold: in each runtime, in a process without keras_frcnn or Keras."""
    net, _, root = trained
    # Batch norm from scratch, 50 steps: it finds the objects of some test images only.
    check_runtime(with_images(net.model, root), fmt, every_image_detects=False)


def test_mobilenet_base_holds_keras_applications_mobilenetv3(rng):
    """Our MobileNetV3-Large with keras.applications' weights computes its final 1x1 conv's output
    exactly (its padding for unknown sizes; an even-sided image, where its stem's "same" padding
    is ours), and every weighted layer of it is ours by name; the pyramid adds its own."""
    reference = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(None, None, 3),
                                                    include_preprocessing=False)
    randomise_batch_norm(reference, rng)
    base = backbone.mobilenet_v3_fpn(weights=reference)
    top = keras.Model(base.inputs, base.get_layer("conv_1_hard_swish").output)
    x = rng.uniform(-1, 1, (1, 96, 128, 3)).astype("float32")
    np.testing.assert_allclose(top([x, np.array([[96, 128, 1.0]], "float32")]), reference(x), rtol=1e-5, atol=1e-5)
    ours = {layer.name for layer in base.layers if layer.weights}
    theirs = {layer.name for layer in reference.layers if layer.weights}
    assert ours - theirs == {"fpn_inner0", "fpn_inner1", "fpn_layer0", "fpn_layer1"} and theirs <= ours
    # The pyramid's inputs: block 12 (the last strided block, 160 channels) and conv_1 (960).
    assert [base.get_layer(n).output.shape[-1] for n in ("expanded_conv_12_project_bn", "conv_1")] == [160, 960]


def test_pyramid_anchors_of_given_sizes_on_levels_of_one_stride():
    """torchvision's MobileNetV3-FPN anchors: every size on every level, two levels sharing stride
    32, told apart by their level index."""
    features = [tf.zeros((1, 3, 4, 1)), tf.zeros((1, 3, 4, 1)), tf.zeros((1, 2, 2, 1))]
    layer = PyramidAnchors((32, 32, 64), (0.5, 1.0, 2.0), sizes=(32.0, 64.0, 128.0, 256.0, 512.0))
    anchors, levels = layer(features)
    assert layer.num_anchors == 15
    np.testing.assert_array_equal(levels, np.repeat([0, 1, 2], [12 * 15, 12 * 15, 4 * 15]))
    np.testing.assert_array_equal(anchors[:180], anchors[180:360])
    for start, stride in ((0, 32), (360, 64)):
        sides = np.sort(np.unique(np.round(anchors[start:start + 15, 2] - anchors[start:start + 15, 0])))
        squares = anchors[start + 5:start + 10]  # ratio 1
        np.testing.assert_array_equal(np.round(squares[:, 2] - squares[:, 0]), [32, 64, 128, 256, 512])
        assert float(squares[0, 0] + squares[0, 2]) / 2 == stride / 2 and len(sides) > 5


def test_proposals_of_two_levels_of_one_stride_do_not_suppress_each_other(rng):
    """The same boxes on two levels of stride 32 (MobileNetV3-FPN's): NMS runs per level, so each
    level keeps its own copy; ``score_threshold`` drops proposals under it."""
    features = [tf.zeros((1, 2, 2, 1)), tf.zeros((1, 2, 2, 1)), tf.zeros((1, 1, 1, 1))]
    anchors, levels = PyramidAnchors((32, 32, 64), (1.0,), sizes=(32.0,))(features)
    logits = np.log(np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.01, 0.2]], np.float32) / (
        1 - np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.01, 0.2]], np.float32)))
    deltas = np.zeros((1, 9, 4), np.float32)
    info = np.array([[64, 64, 1.0]], np.float32)
    layer = Proposals((10, 10), (20, 20), nms_iou=0.5, min_size=0, stride=32, feature_rounding="ceil",
                      level_strides=(32, 32, 64), score_threshold=0.05)
    boxes, scores, count = layer([logits, deltas, anchors, info, levels])
    assert int(count[0]) == 8  # all but the one scored 0.01
    np.testing.assert_allclose(np.sort(scores[0, :8]), np.sort([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]), atol=1e-6)
    with for_converters():
        converted = tf.function(lambda *x: layer(list(x)))(logits, deltas, anchors, info, levels)
    assert int(converted[2][0]) == 8


def test_top_down_of_equal_strides_is_a_sum():
    coarse, lateral = tf.ones((1, 3, 4, 2)), tf.fill((1, 3, 4, 2), 2.0)
    np.testing.assert_array_equal(backbone.TopDown(1)([coarse, lateral]), np.full((1, 3, 4, 2), 3.0))
    up = backbone.TopDown(2)([tf.reshape(tf.range(4.0), (1, 2, 2, 1)), tf.zeros((1, 3, 3, 1))])
    np.testing.assert_array_equal(up[0, :, :, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])
