"""ResNet-50 / 101 C4 and ResNet-50-FPN (issue 17): the bases and conv5 head equal
keras.applications' ResNet with the same weights, pretrained layers freeze as Detectron /
tf-faster-rcnn / torchvision do (MobileNetV3-FPN's too), a padded batch equals each image alone
(every pyramid level, both FPN bases), FPN's level rules (anchors, per-level proposals, RoI
levels), and a tiny network of each kind trains under joint training, round-trips through
.keras, runs in bfloat16, serves from a SavedModel in a TensorFlow-only process and runs in ONNX
Runtime (-m slow), OpenVINO and LiteRT without Keras. MobileNetV3-FPN's own: test_mobilenet. The
alternating schedule: test_training."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from backbone_checks import (check_bfloat16_form, check_learns_and_round_trips, check_saved_model,
                             randomise_batch_norm, train_tiny, weights_of)
from conftest import synthetic_batch, tiny_fpn_config, tiny_mobilenet_config, tiny_resnet_config
from keras_frcnn import backbone, config as C
from keras_frcnn.anchors import PyramidAnchors, base_anchors
from keras_frcnn.heads import Res5Head
from keras_frcnn.models import build_models
from keras_frcnn.preprocessing import for_converters
from keras_frcnn.proposals import Proposals
from keras_frcnn.roi_pooling import PyramidRoIAlign, RoIPooling
from test_formats import RUNTIMES, check_runtime, with_images

def test_base_and_conv5_head_equal_keras_applications_resnet(rng):
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    randomise_batch_norm(reference, rng)
    base = backbone.resnet(50, weights=reference)
    head = Res5Head(3, 1024)
    backbone.copy_weights_by_name(head.res5, reference)
    x = rng.normal(0, 50, (1, 100, 130, 3)).astype("float32")
    features = base([x, np.array([[100, 130, 1.0]], "float32")])
    assert features.shape == (1, 7, 9, 1024)  # ceil(n / 16)
    np.testing.assert_allclose(head.res5(features), reference(x), rtol=1e-5, atol=1e-4)
    # ResNet-101: the same layers and weight shapes as Keras's, conv1..conv4 in the base.
    ours = backbone.resnet(101)
    theirs = keras.applications.ResNet101(include_top=False, weights=None, input_shape=(None, None, 3))
    shapes = {layer.name: [w.shape for w in layer.weights] for layer in ours.layers if layer.weights}
    assert len(shapes) == 2 + (3 + 4 + 23) * 3 * 2 + 3 * 2  # stem, blocks, projection shortcuts
    assert all(shapes[name] == [w.shape for w in theirs.get_layer(name).weights] for name in shapes)


def test_padded_batch_equals_each_image_alone(rng):
    base = backbone.resnet(50, width=1 / 16)
    randomise_batch_norm(base, rng)
    sizes = [(97, 130), (64, 50)]
    images = [rng.normal(0, 1, (h, w, 3)).astype("float32") for h, w in sizes]
    batch = np.zeros((2, 97, 130, 3), np.float32)
    for i, image in enumerate(images):
        batch[i, :image.shape[0], :image.shape[1]] = image
    info = np.array([[h, w, 1.0] for h, w in sizes], np.float32)
    padded = base([batch, info]).numpy()
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        alone = base([image[None], info[i:i + 1]]).numpy()[0]
        fh, fw = -(-h // 16), -(-w // 16)
        assert alone.shape[:2] == (fh, fw)
        np.testing.assert_allclose(padded[i, :fh, :fw], alone, rtol=1e-4, atol=1e-4)
        assert not padded[i, fh:].any() and not padded[i, :, fw:].any()


# A full-width ResNet-50 built and stepped (~17 s of the suite): under -m slow for its budget. The
# same freeze of the same ResNet body from a weights file: test_pretrained_pyramid_bases_load_...;
# the conv5 head's weights: test_base_and_conv5_head_equal_keras_applications_resnet; a frozen
# batch norm in a training call: test_backbone's test_fused_batch_norm_computes_as_keras_batch_norm.
@pytest.mark.slow
def test_pretrained_resnet_freezes_stem_conv2_and_every_batch_norm(tmp_path, rng):
    """A full-width ResNet-50 from a weights file (Keras's ImageNet file has this format): the
    weights land in the base and the conv5 head, and a training step moves conv3, conv4, conv5
    and the heads but neither conv1 / conv2 nor any batch norm statistic or affine term."""
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    randomise_batch_norm(reference, rng)
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)
    cfg = tiny_resnet_config(backbone_width=1.0, backbone_blocks=(), weights=path,
                             detector=dataclasses.replace(tiny_resnet_config().detector, batch_rois=16))
    net = build_models(cfg, 2)
    for name in ("conv1_conv", "conv2_block1_1_bn", "conv4_block6_3_conv"):
        assert all(np.array_equal(a, b) for a, b in zip(weights_of(net.base.get_layer(name)),
                                                         reference.get_layer(name).get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(weights_of(net.detector_head.res5.get_layer("conv5_block3_3_bn")),
                                                     reference.get_layer("conv5_block3_3_bn").get_weights()))
    layers = net.base.layers + net.detector_head.res5.layers
    frozen = [layer for layer in layers if layer.weights and not layer.trainable]
    assert {layer.name for layer in frozen} == {
        layer.name for layer in layers if layer.weights and (
            layer.name.startswith(("conv1_", "conv2_")) or isinstance(layer, keras.layers.BatchNormalization))}
    before = {layer.name: weights_of(layer) for layer in layers if layer.weights}
    joint = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(1)).repeat(2), verbose=0)
    moved = {layer.name for layer in layers if layer.weights and not all(
        np.array_equal(a, b) for a, b in zip(before[layer.name], weights_of(layer)))}
    assert moved and not moved & {layer.name for layer in frozen}
    assert {"conv3_block1_1_conv", "conv4_block6_3_conv", "conv5_block3_3_conv"} <= moved


# The FPN model's training (~33 s) and what uses it under -m slow: the suite's budget, 598 s on a
# 2-core Ice Lake Xeon (2026-12-03); its levels, per-level proposals and RoI levels, padded batches
# and pretrained bases are tested by default below, the same heads train with C4.
@pytest.fixture(scope="module", params=["c4", pytest.param("fpn", marks=pytest.mark.slow)])
def trained(request, tmp_path_factory):
    """Each tiny kind (C4, FPN: 1/16 width, one bottleneck per stage), trained once per module."""
    cfg = tiny_resnet_config() if request.param == "c4" else tiny_fpn_config()
    return train_tiny(cfg, tmp_path_factory.mktemp(f"resnet_{request.param}"), 4 if request.param == "c4" else 8)


def test_joint_training_learns_and_the_keras_file_round_trips(trained):
    check_learns_and_round_trips(trained)


def test_bfloat16_inference_form_equals_the_mixed_model(trained):
    check_bfloat16_form(trained, "conv4_block1_1_conv", "conv4_block1_1_bn")


# The ResNets' SavedModels (~40 s for FPN's: an export and a fresh process) under -m slow: the
# suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03). The ZF models' SavedModel, its GPU
# kernels and its serving contract run by default (test_export); the FPN's pooling and proposal
# layers by default here.
@pytest.mark.slow
@pytest.mark.parametrize("trained", ["c4", "fpn"], indirect=True)
def test_saved_model_serves_the_keras_detections_with_gpu_kernels_only(trained):
    check_saved_model(trained)


# ONNX's and OpenVINO's conversions of the ResNets take 10-33 s each: under -m slow (the suite's
# budget); C4's LiteRT (~9 s) stays, the default suite's one LiteRT conversion that folds batch
# norm, and the tiny ZF models' exports to every runtime (test_formats).
@pytest.mark.parametrize("trained", ["c4", pytest.param("fpn", marks=pytest.mark.slow)], indirect=True)
@pytest.mark.parametrize("fmt", [f if f == "litert" else pytest.param(f, marks=pytest.mark.slow) for f in RUNTIMES])
def test_runtime_exports_give_the_keras_detections(trained, fmt):
    """ONNX Runtime (-m slow), OpenVINO and LiteRT, each in a process without keras_frcnn or Keras
    (C4: RoIAlign by gathers into conv5; FPN: five levels, per-level proposals and RoI levels)."""
    net, _, root = trained
    # The tiny FPN (batch norm from scratch, 200 steps) finds the objects of some test images only.
    check_runtime(with_images(net.model, root), fmt, every_image_detects=net.config.backbone == "resnet50")


@pytest.mark.parametrize("name", ["resnet50-fpn", "mobilenetv3-fpn"])
def test_fpn_levels_sizes_and_padded_batch(rng, name):
    base = backbone.resnet_fpn(50, width=1 / 16) if name == "resnet50-fpn" else backbone.mobilenet_v3_fpn(width=0.25)
    randomise_batch_norm(base, rng)
    strides = C.PYRAMID_STRIDES[name]
    sizes = [(97, 130), (64, 50)] if name == "resnet50-fpn" else [(161, 222), (64, 50)]
    batch = np.zeros((2, *sizes[0], 3), np.float32)
    images = [rng.normal(0, 1, (h, w, 3)).astype("float32") for h, w in sizes]
    for i, image in enumerate(images):
        batch[i, :image.shape[0], :image.shape[1]] = image
    info = np.array([[h, w, 1.0] for h, w in sizes], np.float32)
    padded = [p.numpy() for p in base([batch, info])]
    rounding = {"ceil": lambda n, s: -(-n // s), "floor": lambda n, s: n // s}[C.feature_rounding(name)]
    assert [p.shape[1:3] for p in padded[:-1]] == [(rounding(sizes[0][0], s), rounding(sizes[0][1], s))
                                                   for s in strides[:-1]]
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        alone = base([image[None], info[i:i + 1]])
        for level, (p, stride) in enumerate(zip(padded, strides)):
            fh, fw = rounding(h, stride), rounding(w, stride)
            own = alone[level].numpy()[0]
            # The extra level subsamples the last: ceil(side / 2) cells, beyond its valid ones zero.
            assert not own[fh:].any() and not own[:, fw:].any()
            own = own[:fh, :fw]
            np.testing.assert_allclose(p[i, :fh, :fw], own, rtol=1e-4, atol=1e-4)
            assert not p[i, fh:].any() and not p[i, :, fw:].any()


def test_fpn_base_holds_keras_applications_resnet50(rng):
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    randomise_batch_norm(reference, rng)
    base = backbone.resnet_fpn(50, weights=reference)
    c5 = keras.Model(base.inputs, base.get_layer("conv5_block3_out").output)
    x = rng.normal(0, 50, (1, 96, 128, 3)).astype("float32")
    np.testing.assert_allclose(c5([x, np.array([[96, 128, 1.0]], "float32")]), reference(x), rtol=1e-5, atol=1e-4)
    assert {layer.name for layer in base.layers if layer.name.startswith("fpn_") and layer.weights} == {
        f"fpn_{kind}{stage}" for kind in ("inner", "layer") for stage in (2, 3, 4, 5)}


@pytest.mark.parametrize("name", ["resnet50-fpn", "mobilenetv3-fpn"])
def test_pretrained_pyramid_bases_load_by_name_and_freeze_as_torchvision(tmp_path, rng, name):
    """A full-width FPN base from a weights file of Keras's format (its ImageNet file's): the
    weights land in the base, the pyramid keeps its initialisation, and what freezes is
    torchvision's trainable_backbone_layers=3 with frozen batch norm (ResNet: conv1, conv2;
    MobileNetV3: the stem and blocks 0..5, up to stride 8)."""
    if name == "resnet50-fpn":
        reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
        cfg = tiny_fpn_config(backbone_width=1.0, backbone_blocks=())
        probe, first_trained = "conv4_block6_3_conv", "conv3_block1_1_conv"
        frozen_prefixes = ("conv1_", "conv2_")
    else:
        reference = backbone.load_mobilenet_reference(None)
        cfg = tiny_mobilenet_config(backbone_width=1.0)
        probe, first_trained = "expanded_conv_14_project", "expanded_conv_6_expand"
        frozen_prefixes = ("expanded_conv_depthwise", "expanded_conv_project") + tuple(
            f"expanded_conv_{i}_" for i in range(1, 6))
    randomise_batch_norm(reference, rng)
    path = str(tmp_path / f"{name}.weights.h5")
    reference.save_weights(path)
    net = build_models(dataclasses.replace(cfg, weights=path), 2)
    assert all(np.array_equal(a, b) for a, b in zip(weights_of(net.base.get_layer(probe)),
                                                     reference.get_layer(probe).get_weights()))
    frozen = {layer.name for layer in net.base.layers if layer.weights and not layer.trainable}
    assert frozen == {layer.name for layer in net.base.layers if layer.weights and (
        layer.name.startswith(frozen_prefixes) or layer.name in ("conv", "conv_bn")
        or isinstance(layer, keras.layers.BatchNormalization))}
    assert first_trained not in frozen and "fpn_inner1" not in frozen


def test_pyramid_anchors_one_size_per_level():
    features = [tf.zeros((1, -(-64 // s), -(-96 // s), 1)) for s in (4, 8, 16, 32, 64)]
    anchors, levels = PyramidAnchors((4, 8, 16, 32, 64), (0.5, 1.0, 2.0), (8.0,))(features)
    counts = [f.shape[1] * f.shape[2] * 3 for f in features]
    assert anchors.shape == (sum(counts), 4)
    np.testing.assert_array_equal(levels, np.repeat([0, 1, 2, 3, 4], counts))
    start = 0
    for stride, count in zip((4, 8, 16, 32, 64), counts):
        np.testing.assert_array_equal(anchors[start:start + 3], base_anchors(stride, (0.5, 1, 2), (8,)))
        square = anchors[start + 1]  # ratio 1
        assert float(square[2] - square[0]) == 8 * stride
        start += count


def test_fpn_proposals_take_the_top_k_of_every_level(rng):
    """All the high scores on one level: a global top-k would propose that level only; per level
    each level gives its k best, and the converters' graph keeps the same boxes."""
    features = [tf.zeros((1, -(-64 // s), -(-64 // s), 1)) for s in (4, 8, 16, 32, 64)]
    anchors, levels = PyramidAnchors((4, 8, 16, 32, 64), (1.0,), (1.0,))(features)  # one cell each
    a = anchors.shape[0]
    logits = np.where(levels.numpy() == 0, 5.0, -5.0)[None] + rng.normal(0, 0.1, (1, a))
    deltas = np.zeros((1, a, 4), np.float32)
    info_wide = np.array([[1024, 1024, 1.0]], np.float32)  # no box clipped: each keeps its level's side
    layer = Proposals((3, 3), (100, 100), nms_iou=1.0, min_size=0, stride=4, feature_rounding="ceil",
                      level_strides=(4, 8, 16, 32, 64))
    boxes, scores, count = layer([logits.astype("float32"), deltas, anchors, info_wide, levels])
    n = int(count[0])
    assert n == 3 * 4 + 1  # 3 per level; P6 of a 64 px map has one position
    sides = np.round(boxes[0, :n, 2] - boxes[0, :n, 0])
    np.testing.assert_array_equal(np.sort(sides), np.repeat([4, 8, 16, 32, 64], [3, 3, 3, 3, 1]))
    # A 32 px image in the 64 px batch: its P5 and P6 have one position each; the rest is padding.
    small = layer([logits.astype("float32"), deltas, anchors, np.array([[32, 32, 1.0]], np.float32), levels])
    assert int(small[2][0]) == 3 * 3 + 2 and float(tf.reduce_max(small[0])) <= 32
    with for_converters():
        converted = tf.function(lambda *x: layer(list(x)))(logits.astype("float32"), deltas, anchors, info_wide,
                                                           levels)
    assert int(converted[2][0]) == n
    np.testing.assert_array_equal(np.sort(converted[0][0, :n].numpy(), axis=0), np.sort(boxes[0, :n].numpy(), axis=0))


def test_rois_pool_from_the_fpn_paper_level(rng):
    strides = (4, 8, 16, 32)
    features = [rng.normal(0, 1, (1, -(-512 // s), -(-512 // s), 3)).astype("float32") for s in strides]
    # Sides 50 (k = floor(4 + log2(50 / 224)) = 1 -> 2), 112 (3), 224 (4), 500 (5), 1000 (6 -> 5).
    rois = np.array([[[10, 10, 60, 60], [0, 0, 112, 112], [100, 50, 324, 274], [0, 0, 500, 500],
                      [0, 0, 512, 1000 ** 2 / 512]]], np.float32)
    pooled = PyramidRoIAlign(7, strides)([features, rois]).numpy()
    for i, level in enumerate([2, 3, 4, 5, 5]):
        stride = 2 ** level
        expected = RoIPooling(7, 1 / stride, "align")([features[strides.index(stride)], rois[:, i:i + 1]])
        np.testing.assert_allclose(pooled[:, i:i + 1], expected, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_per_level_pooling_equals_every_level_pooling_every_roi(rng, dtype):
    """PyramidRoIAlign crops each level's RoIs only and stitches them back in order: the same
    values and feature gradients as every level pooling every RoI with each RoI
    keeping its level's (the FPN paper's), over a batch of two images with zero (padding) RoIs."""
    from keras_frcnn.roi_pooling import roi_align

    strides = (4, 8, 16, 32)
    features = [tf.cast(rng.normal(0, 1, (2, -(-300 // s), -(-400 // s), 4)), dtype) for s in strides]
    corner = rng.uniform(0, 280, (2, 40, 2))
    rois = np.concatenate([corner, corner + np.exp(rng.uniform(np.log(4), np.log(500), (2, 40, 2)))], -1)
    rois[:, -5:] = 0.0  # padding
    rois[:, 0] = [20, 10, 620, 610]  # side 600: P5
    sides = np.sqrt((rois[..., 2] - rois[..., 0]) * (rois[..., 3] - rois[..., 1]))
    levels = np.clip(np.floor(4 + np.log2(sides / 224 + 1e-12) + 1e-6), 2, 5)
    assert set(np.unique(levels)) == {2, 3, 4, 5}
    rois = tf.constant(rois.astype(np.float32))

    def pooled_and_gradients(pool):
        with tf.GradientTape() as tape:
            tape.watch(features)
            pooled = pool()
            total = tf.reduce_sum(tf.cast(pooled, tf.float32) * tf.range(7.0)[:, None, None])
        return [pooled] + tape.gradient(total, features)

    def every_level():
        pooled = [roi_align(f, rois, 7, 1 / s) for f, s in zip(features, strides)]
        return tf.gather(tf.stack(pooled, 2), levels.astype(np.int32) - 2, axis=2, batch_dims=2)

    per_level = pooled_and_gradients(lambda: PyramidRoIAlign(7, strides, dtype=dtype)([features, rois]))
    expected = pooled_and_gradients(every_level)
    assert per_level[0].shape == (2, 40, 7, 7, 4) and per_level[0].dtype == dtype
    np.testing.assert_array_equal(tf.cast(per_level[0], tf.float32).numpy(), tf.cast(expected[0], tf.float32).numpy())
    # The gradients too, bit for bit: each level's sparse product adds its RoIs' shares in the
    # same order either way (the other levels' RoIs add zeros). (With TensorFlow's CPU
    # CropAndResizeGradImage, whose threads race on shared cells, a run now and then lost or
    # doubled one sample's share of a cell.)
    for a, b in zip(per_level[1:], expected[1:]):
        a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
        np.testing.assert_array_equal(a, b)
        assert np.abs(a).sum() > 0


def test_resnet_presets():
    for name, depth in (("resnet50-voc", 50), ("resnet101-voc", 101), ("resnet101-coco", 101)):
        cfg = C.preset(name)
        assert cfg.backbone == f"resnet{depth}" and cfg.weights == "imagenet"
        assert (cfg.detector.pool_size, cfg.detector.pool_mode) == (14, "align")
        assert cfg.image.pixel_means == C.RESNET_PIXEL_MEANS and cfg.train.weight_decay == 1e-4
    assert C.preset("resnet101-coco").dataset == "coco/2017"
    fpn = C.preset("resnet50-fpn-coco")
    assert (fpn.backbone, fpn.image.min_side, fpn.image.max_side, fpn.rpn.post_nms_top_n) == (
        "resnet50-fpn", 800, 1333, (2000, 1000))
    assert (fpn.detector.fc_units, fpn.detector.dropout, fpn.detector.nms_iou) == (1024, 0.0, 0.5)
    # torchvision's losses and matching: smooth L1 beta 1/9 in both heads, no anchor ignored at the border.
    assert (fpn.rpn.sigma, fpn.detector.sigma, fpn.rpn.allowed_border) == (3.0, 3.0, 1_000_000)
    assert C.preset("shapes-fpn").backbone == "resnet50-fpn"
    mobile = C.preset("mobilenetv3-fpn-coco")
    assert (mobile.backbone, mobile.anchors.sizes, mobile.anchors.num_anchors, mobile.rpn.score_threshold) == (
        "mobilenetv3-fpn", (32.0, 64.0, 128.0, 256.0, 512.0), 15, 0.05)
    assert (mobile.image.channel_order, mobile.image.pixel_scale) == ("rgb", 1 / 127.5)
    assert C.preset("shapes-mobilenet").backbone == "mobilenetv3-fpn"
    with pytest.raises(C.ConfigError, match="anchors.sizes"):
        dataclasses.replace(C.preset("shapes"), anchors=C.AnchorConfig(stride=8, sizes=(32.0,)))
    with pytest.raises(C.ConfigError, match="backbone_blocks"):
        dataclasses.replace(C.preset("resnet50-voc"), backbone_blocks=(1, 1, 1, 1))  # ImageNet: the real depth
    with pytest.raises(C.ConfigError, match="backbone_blocks"):
        dataclasses.replace(C.preset("voc"), weights=None, backbone_blocks=(1, 1, 1, 1))  # not a ResNet
    with pytest.raises(C.ConfigError, match="backbone_blocks"):
        dataclasses.replace(C.preset("shapes-fpn"), backbone_blocks=(1, 1, 1))
    assert C.Config.from_json(tiny_fpn_config().to_json()).backbone_blocks == (1, 1, 1, 1)
    with pytest.raises(C.ConfigError, match="pool_mode"):
        dataclasses.replace(fpn, detector=dataclasses.replace(fpn.detector, pool_mode="max"))
    with pytest.raises(C.ConfigError, match="base_batch_norm"):
        dataclasses.replace(C.preset("resnet50-voc"), weights=None, base_batch_norm=True)
    with pytest.raises(C.ConfigError, match="anchors.stride"):
        dataclasses.replace(C.preset("resnet50-voc"), anchors=C.AnchorConfig(stride=8))
