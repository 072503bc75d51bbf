"""ResNet-50 / 101 C4, ResNet-50-FPN and MobileNetV3-Large-FPN (issue 17): the bases and conv5
head equal keras.applications' ResNet / MobileNetV3 with the same weights, pretrained layers
freeze as Detectron / tf-faster-rcnn / torchvision do, a padded batch equals each image alone
(every pyramid level), FPN's level rules (anchors, per-level proposals, RoI levels), and a tiny
network of each kind trains under joint training, round-trips through .keras, runs in bfloat16,
serves from a SavedModel in a TensorFlow-only process and runs in ONNX Runtime, OpenVINO and
LiteRT without Keras. The alternating schedule: test_training."""

import dataclasses
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_batch, tiny_fpn_config, tiny_mobilenet_config, tiny_resnet_config
from keras_frcnn import backbone, config as C, export
from keras_frcnn.anchors import PyramidAnchors, base_anchors
from keras_frcnn.heads import Res5Head
from keras_frcnn.models import build_models
from keras_frcnn.preprocessing import for_converters
from keras_frcnn.proposals import Proposals
from keras_frcnn.roi_pooling import PyramidRoIAlign, RoIPooling
from test_formats import RUNTIMES, check_runtime, with_images

KINDS = {"c4": tiny_resnet_config, "fpn": tiny_fpn_config, "mobilenet": tiny_mobilenet_config}


def _randomise_batch_norm(model, rng):
    """Batch norm statistics and affine terms far from the identity, so that a layer mixed up
    between two networks shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])


def test_base_and_conv5_head_equal_keras_applications_resnet(rng):
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    _randomise_batch_norm(reference, rng)
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
    _randomise_batch_norm(base, rng)
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


def _weights(layer):
    return [w.numpy().copy() for w in layer.weights]


def test_pretrained_resnet_freezes_stem_conv2_and_every_batch_norm(tmp_path, rng):
    """A full-width ResNet-50 from a weights file (Keras's ImageNet file has this format): the
    weights land in the base and the conv5 head, and a training step moves conv3, conv4, conv5
    and the heads but neither conv1 / conv2 nor any batch norm statistic or affine term."""
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    _randomise_batch_norm(reference, rng)
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)
    cfg = tiny_resnet_config(backbone_width=1.0, backbone_blocks=(), weights=path,
                             detector=dataclasses.replace(tiny_resnet_config().detector, batch_rois=16))
    net = build_models(cfg, 2)
    for name in ("conv1_conv", "conv2_block1_1_bn", "conv4_block6_3_conv"):
        assert all(np.array_equal(a, b) for a, b in zip(_weights(net.base.get_layer(name)),
                                                         reference.get_layer(name).get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(_weights(net.detector_head.res5.get_layer("conv5_block3_3_bn")),
                                                     reference.get_layer("conv5_block3_3_bn").get_weights()))
    layers = net.base.layers + net.detector_head.res5.layers
    frozen = [layer for layer in layers if layer.weights and not layer.trainable]
    assert {layer.name for layer in frozen} == {
        layer.name for layer in layers if layer.weights and (
            layer.name.startswith(("conv1_", "conv2_")) or isinstance(layer, keras.layers.BatchNormalization))}
    before = {layer.name: _weights(layer) for layer in layers if layer.weights}
    joint = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(1)).repeat(2), verbose=0)
    moved = {layer.name for layer in layers if layer.weights and not all(
        np.array_equal(a, b) for a, b in zip(before[layer.name], _weights(layer)))}
    assert moved and not moved & {layer.name for layer in frozen}
    assert {"conv3_block1_1_conv", "conv4_block6_3_conv", "conv5_block3_3_conv"} <= moved


def _trained(kind, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"resnet_{kind}")
    keras.utils.set_random_seed(0)
    net = build_models(KINDS[kind](), 2, weights=None, class_names=["square", "wide"])
    joint = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    history = joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(4)).repeat(), steps_per_epoch=25,
                        epochs=4 if kind == "c4" else 8, verbose=0).history
    net.model.save(root / "model.keras")
    return net, history, root


@pytest.fixture(scope="module")
def trained_c4(tmp_path_factory):
    return _trained("c4", tmp_path_factory)


@pytest.fixture(scope="module")
def trained_fpn(tmp_path_factory):
    return _trained("fpn", tmp_path_factory)


@pytest.fixture(scope="module")
def trained_mobilenet(tmp_path_factory):
    return _trained("mobilenet", tmp_path_factory)


@pytest.fixture(params=list(KINDS))
def trained_resnet(request):
    """Each tiny kind, trained once per module (``trained_c4``, ``trained_fpn``,
    ``trained_mobilenet``)."""
    return request.getfixturevalue(f"trained_{request.param}")


def test_joint_training_learns_and_the_keras_file_round_trips(trained_resnet):
    net, history, root = trained_resnet
    assert all(np.isfinite(v).all() for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    images = synthetic_batch(2)["images"]
    expected = net.model(images)
    assert int(tf.reduce_sum(expected["num_detections"])) > 0
    loaded = keras.models.load_model(root / "model.keras")
    assert loaded.frcnn_config.backbone == net.config.backbone
    for key in ("boxes", "confidence", "labels", "num_detections"):
        np.testing.assert_array_equal(loaded(images)[key], expected[key])
    # Its training views come back too (and keep their trainable flags' rules).
    assert loaded.networks().detector_model is not None


def test_bfloat16_inference_form_equals_the_mixed_model(trained_resnet):
    net, _, _ = trained_resnet
    mixed = net.model.with_precision("mixed_bfloat16")
    form = mixed.for_inference()
    conv, norm = ("expanded_conv_6_expand", "expanded_conv_6_expand_bn") if net.config.backbone == "mobilenetv3-fpn" \
        else ("conv4_block1_1_conv", "conv4_block1_1_bn")
    assert form.base.get_layer(conv).kernel.dtype == "bfloat16"
    assert form.base.get_layer(norm).moving_mean.dtype == "float32"
    images = synthetic_batch(2)["images"]
    for key, value in mixed(images).items():
        np.testing.assert_array_equal(form(images)[key], value)


SERVE_CHILD = textwrap.dedent(r"""
    import sys
    sys.modules["keras_frcnn"] = None
    sys.modules["keras"] = None
    import numpy as np, tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    images = np.load(sys.argv[2])["images"]
    out = model.signatures["serving_default"](input_tensor=tf.constant(images))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
""")


def test_saved_model_serves_the_keras_detections_with_gpu_kernels_only(trained_resnet):
    net, _, root = trained_resnet
    path = export.export_saved_model(net.model, root / "serving", version=1, warmup=False)
    images = synthetic_batch(2)["images"]
    np.savez(root / "serve_images.npz", images=images)
    subprocess.run([sys.executable, "-c", SERVE_CHILD, str(path), str(root / "serve_images.npz"),
                    str(root / "out.npz")], check=True, timeout=300)
    out, expected = np.load(root / "out.npz"), net.model(images)
    np.testing.assert_array_equal(out["num_detections"], expected["num_detections"])
    np.testing.assert_allclose(out["detection_scores"], expected["confidence"], atol=1e-5)
    np.testing.assert_allclose(out["detection_boxes"] * 128, expected["boxes"], atol=1e-3)
    assert export.ops_without_gpu_kernels(path, "serving_default") == {}


@pytest.mark.parametrize("fmt", RUNTIMES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_runtime_exports_give_the_keras_detections(request, kind, fmt):
    """ONNX Runtime, OpenVINO and LiteRT, each in a process without keras_frcnn or Keras (C4:
    RoIAlign by gathers into conv5; FPN: five levels, per-level proposals and RoI levels;
    MobileNetV3: depthwise convolutions, squeeze-and-excitation, two levels of one stride)."""
    net, _, root = request.getfixturevalue(f"trained_{kind}")
    # The tiny FPN (batch norm from scratch, 200 steps) finds the objects of some test images only.
    check_runtime(with_images(net.model, root), fmt, every_image_detects=kind == "c4")


@pytest.mark.parametrize("name", ["resnet50-fpn", "mobilenetv3-fpn"])
def test_fpn_levels_sizes_and_padded_batch(rng, name):
    base = backbone.resnet_fpn(50, width=1 / 16) if name == "resnet50-fpn" else backbone.mobilenet_v3_fpn(width=0.25)
    _randomise_batch_norm(base, rng)
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
    _randomise_batch_norm(reference, rng)
    base = backbone.resnet_fpn(50, weights=reference)
    c5 = keras.Model(base.inputs, base.get_layer("conv5_block3_out").output)
    x = rng.normal(0, 50, (1, 96, 128, 3)).astype("float32")
    np.testing.assert_allclose(c5([x, np.array([[96, 128, 1.0]], "float32")]), reference(x), rtol=1e-5, atol=1e-4)
    assert {layer.name for layer in base.layers if layer.name.startswith("fpn_") and layer.weights} == {
        f"fpn_{kind}{stage}" for kind in ("inner", "layer") for stage in (2, 3, 4, 5)}


def test_mobilenet_base_holds_keras_applications_mobilenetv3(rng):
    """Our MobileNetV3-Large with keras.applications' weights computes its final 1x1 conv's output
    exactly (its padding for unknown sizes; an even-sided image, where its stem's "same" padding
    is ours), and every weighted layer of it is ours by name; the pyramid adds its own."""
    reference = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(None, None, 3),
                                                    include_preprocessing=False)
    _randomise_batch_norm(reference, rng)
    base = backbone.mobilenet_v3_fpn(weights=reference)
    top = keras.Model(base.inputs, base.get_layer("conv_1_hard_swish").output)
    x = rng.uniform(-1, 1, (1, 96, 128, 3)).astype("float32")
    np.testing.assert_allclose(top([x, np.array([[96, 128, 1.0]], "float32")]), reference(x), rtol=1e-5, atol=1e-5)
    ours = {layer.name for layer in base.layers if layer.weights}
    theirs = {layer.name for layer in reference.layers if layer.weights}
    assert ours - theirs == {"fpn_inner0", "fpn_inner1", "fpn_layer0", "fpn_layer1"} and theirs <= ours
    # The pyramid's inputs: block 12 (the last strided block, 160 channels) and conv_1 (960).
    assert [base.get_layer(n).output.shape[-1] for n in ("expanded_conv_12_project_bn", "conv_1")] == [160, 960]


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
    _randomise_batch_norm(reference, rng)
    path = str(tmp_path / f"{name}.weights.h5")
    reference.save_weights(path)
    net = build_models(dataclasses.replace(cfg, weights=path), 2)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(net.base.get_layer(probe)),
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


def test_fpn_proposals_take_the_top_k_of_every_level(rng):
    """All the high scores on one level: a global top-k would propose that level only; per level
    each level gives its k best, and the converters' graph keeps the same boxes."""
    features = [tf.zeros((1, -(-64 // s), -(-64 // s), 1)) for s in (4, 8, 16, 32, 64)]
    anchors, levels = PyramidAnchors((4, 8, 16, 32, 64), (1.0,), (1.0,))(features)  # one cell each
    a = anchors.shape[0]
    logits = np.where(levels.numpy() == 0, 5.0, -5.0)[None] + rng.normal(0, 0.1, (1, a))
    deltas = np.zeros((1, a, 4), np.float32)
    info = np.array([[64, 64, 1.0]], np.float32)
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
