import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn import boxes as box_ops
from keras_frcnn import losses
from keras_frcnn.models import build_models
from conftest import synthetic_batch, tiny_config


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(0)
    return build_models(tiny_config(), 2, weights=None, class_names=["square", "wide"])


def ids(variables):
    return {id(v) for v in variables}


def test_views_share_the_very_same_base_variables(net):
    batch = synthetic_batch(2)
    net.rpn_model(batch)
    net.detector_model({**batch, "proposals": batch["gt_boxes"], "num_proposals": np.array([2, 2])})
    base = ids(net.base.weights)
    assert base <= ids(net.rpn_model.weights)
    assert base <= ids(net.detector_model.weights)
    assert base <= ids(net.joint_model.weights) and base <= ids(net.model.weights)
    # The detector view holds no RPN head, the RPN view no detector head.
    assert not ids(net.rpn_head.weights) & ids(net.detector_model.weights)
    assert not ids(net.detector_head.weights) & ids(net.rpn_model.weights)


def test_toggles_change_exactly_the_intended_trainable_sets(net):
    rpn = net.prepare("rpn", keras.optimizers.SGD(0.001), base=False)
    assert ids(rpn.trainable_variables) == ids(net.rpn_head.trainable_variables)
    det = net.prepare("detector", keras.optimizers.SGD(0.001), base=False, rpn_head=False)
    assert ids(det.trainable_variables) == ids(net.detector_head.trainable_variables)
    joint = net.prepare("joint", keras.optimizers.SGD(0.001))
    # Everything but the base's batch-norm statistics, which are never trained by gradient.
    assert ids(joint.trainable_variables) == ids(net.base.trainable_weights) | ids(net.rpn_head.weights) | ids(
        net.detector_head.weights)
    assert len(net.base.trainable_weights) == len([w for w in net.base.weights if "moving" not in w.path])
    # A stale compilation is refused instead of silently training the old variable set.
    net.set_trainable(base=False)
    with pytest.raises(RuntimeError, match="prepare"):
        joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(2)), verbose=0)
    with pytest.raises(ValueError, match="fresh optimizer"):
        net.prepare("joint", joint.optimizer)
    net.set_trainable()


def test_vgg16_always_frozen_layers_stay_frozen():
    cfg = dataclasses.replace(tiny_config(), backbone="vgg16", backbone_width=0.125)
    vgg = build_models(cfg, 2, weights=None)
    vgg.set_trainable(base=True)
    frozen = {"block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}
    trainable = {layer.name for layer in vgg.base.layers if layer.trainable and layer.weights}
    assert not trainable & frozen and "block3_conv1" in trainable
    assert ids(vgg.base.trainable_variables).isdisjoint(
        ids(w for name in frozen for w in vgg.base.get_layer(name).weights))


def test_box_losses_are_exactly_zero_without_objects(net):
    batch = synthetic_batch(2)
    batch["gt_classes"][:] = 0
    batch["gt_boxes"][:] = 0
    batch["num_gt"][:] = 0
    y = net.joint_model(batch, training=True)
    loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg = [
        float(v) for v in net.joint_model.losses_from(y)]
    assert loss_rpn_box_reg == 0.0 and loss_box_reg == 0.0
    assert loss_objectness > 0 and loss_classifier > 0
    assert (y["anchor_labels"].numpy() <= 0).all() and not y["roi_labels"].numpy().any()


def test_smooth_l1_and_loss_normalisation():
    x = tf.constant([0.05, -0.5, 2.0])
    # sigma 3: |x| < 1/9 -> 4.5 x^2; else |x| - 1/18.
    np.testing.assert_allclose(losses.smooth_l1(x, 3.0).numpy(), [4.5 * 0.0025, 0.5 - 1 / 18, 2 - 1 / 18],
                               rtol=1e-6)
    labels = tf.constant([[1, 0, -1, -1]])
    logits = tf.zeros([1, 4])
    deltas = tf.constant([[[1.0, 0, 0, 0], [5.0, 0, 0, 0], [9.0, 0, 0, 0], [9.0, 0, 0, 0]]])
    obj, box = losses.rpn_losses(logits, deltas, labels, tf.zeros_like(deltas), sigma=3.0)
    np.testing.assert_allclose(obj.numpy(), np.log(2.0), rtol=1e-6)  # two sampled anchors
    np.testing.assert_allclose(box.numpy(), (1 - 1 / 18) / 2, rtol=1e-6)  # one positive over two
    # Two images: each normalised by its own sampled count (2 and 4), then the mean over images.
    labels = tf.constant([[1, 0, -1, -1], [1, 0, 0, 0]])
    obj, box = losses.rpn_losses(tf.zeros([2, 4]), tf.concat([deltas, deltas], 0), labels,
                                 tf.zeros([2, 4, 4]), sigma=3.0)
    np.testing.assert_allclose(obj.numpy(), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(box.numpy(), ((1 - 1 / 18) / 2 + (1 - 1 / 18) / 4) / 2, rtol=1e-6)


@pytest.mark.parametrize("pool_mode", ["max", "align"])
def test_padded_batch_detections_equal_each_image_alone(net, pool_mode):
    """The first image's sides (96 x 120 px, resized to 128 x 160: 8 x 10 cells at stride 16) end on
    a cell's edge: RoIAlign's samples past its last cell read that cell alone, and read the padding
    of the batch unless RoI pooling is given the images' sizes (before: other detections)."""
    if pool_mode == "align":
        keras.utils.set_random_seed(0)
        cfg = tiny_config()
        net = build_models(dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, pool_mode="align")),
                           2, weights=None, class_names=["square", "wide"])
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (96, 120, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (130, 100, 3)).astype(np.uint8)
    padded = np.zeros((2, 130, 120, 3), np.uint8)
    padded[0, :96, :120] = a
    padded[1, :130, :100] = b
    together = net.detect(padded, [[96, 120], [130, 100]])
    for i, image in enumerate([a, b]):
        alone = net.model(image[None])
        n = int(alone["num_detections"][0])
        assert int(together["num_detections"][i]) == n and n > 0
        np.testing.assert_allclose(together["boxes"][i, :n].numpy(), alone["boxes"][0, :n].numpy(), atol=0.05)
        np.testing.assert_allclose(together["confidence"][i].numpy(), alone["confidence"][0].numpy(), atol=1e-4)
        np.testing.assert_array_equal(together["labels"][i].numpy(), alone["labels"][0].numpy())
    # Sizes that do not fit the batch: an error naming image_sizes (before, a gather's index error).
    if pool_mode == "align":
        return
    for sizes, what in (([[96, 120], [131, 100]], "within the padded batch"), ([[96, 120]], "one .* per image"),
                        ([[120, 96], [100, 130]], "within the padded batch"), ([[0, 120], [130, 100]], ">= 1")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"image_sizes: .*{what}"):
            net.detect(padded, sizes)


def test_inference_outputs_follow_the_design(net):
    out = net.model(np.zeros((2, 90, 110, 3), np.uint8))
    assert out["boxes"].shape == (2, 100, 4) and out["confidence"].shape == (2, 100)
    assert out["labels"].dtype == tf.int32 and out["num_detections"].shape == (2,)
    for i in range(2):
        n = int(out["num_detections"][i])
        assert (out["labels"][i, n:].numpy() == -1).all()
        boxes = out["boxes"][i, :n].numpy()
        assert (boxes >= 0).all() and (boxes[:, 2] <= 90 + 1e-3).all() and (boxes[:, 3] <= 110 + 1e-3).all()
    # The symbolic outputs say the dtypes the model gives; an empty batch gives empty outputs of them
    # (before, TensorFlow's convolution failed on it).
    assert {name: t.dtype for name, t in net.model.output.items()} == {name: t.dtype.name for name, t in out.items()}
    for empty in (net.model(np.zeros((0, 90, 110, 3), np.uint8)), net.detect(np.zeros((0, 90, 110, 3), np.uint8))):
        assert {name: (t.shape, t.dtype) for name, t in empty.items()} == {
            name: ((0, *t.shape[1:]), t.dtype) for name, t in out.items()}


# (~17 s of the suite: under -m slow for its budget; test_training's test_short_shapes_run_learns
# fails on a broken target, loss or box coding too, through the runner and evaluation.)
@pytest.mark.slow
def test_tiny_model_overfits_and_detects_every_object():
    """A broken target, loss or box coding fails this: 200 joint steps on four images, then every
    object's best-scoring overlapping detection (IoU > 0.5) has the right class."""
    keras.utils.set_random_seed(0)
    net = build_models(tiny_config(), 2, weights=None)
    batch = synthetic_batch(4)
    model = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(200), verbose=0)
    out = net.model(batch["images"])
    for i in range(4):
        n = int(out["num_detections"][i])
        boxes, labels = out["boxes"][i, :n].numpy(), out["labels"][i, :n].numpy()
        scores = out["confidence"][i, :n].numpy()
        for gt, cls in zip(batch["gt_boxes"][i], batch["gt_classes"][i]):
            overlapping = box_ops.iou(gt[None], boxes).numpy()[0] > 0.5
            assert overlapping.any(), f"image {i}: nothing found at {gt}"
            best = np.argmax(np.where(overlapping, scores, -1.0))
            assert labels[best] == cls - 1 and scores[best] > 0.3, (i, labels[best], scores[best])


# XLA compiling a whole training step takes ~37 s of a 2-core CPU for the joint view (it holds both
# heads' targets and losses), so every view runs under -m slow (the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03));
# each layer's own XLA support is compiled by default (test_jit).
@pytest.mark.slow
@pytest.mark.parametrize("view", ["rpn", "detector", "joint"])
def test_training_views_compile_with_xla(view):
    keras.utils.set_random_seed(0)
    net = build_models(tiny_config(), 2, weights=None)
    batch = synthetic_batch(2)
    if view == "detector":
        batch = {**batch, "proposals": batch["gt_boxes"] + 2.0, "num_proposals": np.array([2, 2], np.int32)}
    model = net.prepare(view, keras.optimizers.SGD(0.001), jit_compile=True)
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_sensitive_parts_float32_and_trains(precision, tmp_path):
    keras.utils.set_random_seed(0)
    net = build_models(dataclasses.replace(tiny_config(), precision=precision), 2, weights=None)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    compute = {layer.name: layer.compute_dtype for layer in net.model.layers}
    half = precision.split("_")[1]
    assert compute["rpn_head"] == compute["detector_head"] == compute["roi_pooling"] == half
    assert {l.compute_dtype for l in net.base.layers if isinstance(l, keras.layers.Conv2D)} == {half}
    for name in ("preprocess", "anchors", "proposals", "detections"):
        assert compute[name] == "float32", name
    assert all(v.dtype == "float32" for v in net.model.weights)
    model = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    # The targets see the batch's boxes and sizes as given (Keras cast the view's inputs to the
    # compute dtype: 100.3 read as 100.5 in bfloat16, a width of 277 as 276).
    batch = synthetic_batch(2)
    batch["gt_boxes"] = batch["gt_boxes"] + np.float32(0.3)
    seen, call = [], model.anchor_targets.call
    model.anchor_targets.call = lambda anchors, gt_boxes, gt_classes, image_info, *a, **k: (
        seen.append((gt_boxes.numpy(), image_info.numpy())) or call(anchors, gt_boxes, gt_classes, image_info, *a, **k))
    model.run_eagerly = True
    model.fit(tf.data.Dataset.from_tensors(batch), verbose=0)
    model.anchor_targets.call, model.run_eagerly = call, False
    np.testing.assert_array_equal(seen[0][0], batch["gt_boxes"])
    np.testing.assert_array_equal(seen[0][1], batch["image_info"])
    history = model.fit(tf.data.Dataset.from_tensors(synthetic_batch(2)).repeat(3), verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    out = net.model(synthetic_batch(1)["images"])
    assert out["boxes"].dtype == tf.float32 and out["confidence"].dtype == tf.float32
    # The precision travels with the .keras file; with_precision converts with the same weights.
    net.model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").frcnn_config.precision == precision
    full = net.model.with_precision("float32")
    assert full.frcnn_config.precision == "float32"
    for a, b in zip(full.weights, net.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_inference_form_holds_16_bit_weights_and_detects_alike(precision, tmp_path):
    """for_inference(fold_batch_norm=False): the weights in the compute dtype (batch norm
    statistics float32), the very detections of the mixed model (its arithmetic, without the
    per-call casts), through ``model(x)`` and a padded ``detect``, kept by a .keras round trip,
    and not trainable. (The default folded form: the next test.)"""
    cfg = dataclasses.replace(tiny_config(), precision=precision, base_batch_norm=True)
    keras.utils.set_random_seed(0)
    mixed = build_models(cfg, 2, weights=None).model
    inference = mixed.for_inference(fold_batch_norm=False)
    half = precision.split("_")[1]
    assert inference.frcnn_config.precision == half
    dtypes = {v.path: v.dtype for v in inference.weights}
    assert dtypes["detector_head/fc6/kernel"] == dtypes["rpn_head/rpn_conv/kernel"] == half
    assert {d for p, d in dtypes.items() if "_bn/" in p} == {"float32"}
    assert {d for p, d in dtypes.items() if "_bn/" not in p} == {half}
    images = synthetic_batch(2)["images"]
    padded = np.zeros((2, 140, 150, 3), np.uint8)
    padded[0, :128, :128] = images[0]
    padded[1, :128, :128] = images[1]
    sizes = np.array([[128, 128], [128, 128]], np.int32)
    for a, b in [(mixed(images), inference(images)),
                 (mixed.detect(padded, sizes), inference.detect(padded, sizes))]:
        assert int(np.sum(a["num_detections"])) > 0
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    inference.save(tmp_path / "inference.keras")
    loaded = keras.models.load_model(tmp_path / "inference.keras")
    assert loaded.frcnn_config.precision == half
    assert loaded.get_layer("detector_head").fc6.kernel.dtype == half
    with pytest.raises(ValueError, match=f"{precision}"):
        inference.networks()
    assert inference.with_precision(precision).networks().joint_model is not None  # trainable again
    float32 = build_models(tiny_config(), 2, weights=None).model
    assert float32.for_inference() is float32  # no batch norm to fold


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_inference_form_folds_batch_norm_into_the_convolutions(precision, tmp_path):
    """for_inference()'s default: each batch norm of a ZF base with batch norm folded into its
    convolution (``Config.fold_batch_norm``): no batch norm left, the convolutions hold a bias,
    the features of the model it was made from (float32 to 1e-5 of their scale, bfloat16 to its
    rounding) and, in float32, its detections; kept by a .keras round trip; not trainable."""
    from backbone_checks import randomise_batch_norm

    cfg = dataclasses.replace(tiny_config(), precision=precision, base_batch_norm=True)
    keras.utils.set_random_seed(0)
    model = build_models(cfg, 2, weights=None).model
    randomise_batch_norm(model.base, np.random.default_rng(0))
    folded = model.for_inference()
    assert folded.frcnn_config.fold_batch_norm
    assert folded.frcnn_config.precision == {"float32": "float32", "mixed_bfloat16": "bfloat16"}[precision]
    assert not [layer for layer in folded.base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert folded.base.get_layer("conv1").use_bias
    images = synthetic_batch(2)["images"]
    processed, info = model.layers_.preprocess(images)
    expected = np.asarray(model.base([processed, info]), np.float32)
    got = np.asarray(folded.base([processed, info]), np.float32)
    scale = np.abs(expected).max()
    tolerance = 1e-5 if precision == "float32" else 2e-2
    assert np.abs(got - expected).max() <= tolerance * scale
    outputs = folded(images)
    if precision == "float32":
        reference = model(images)
        np.testing.assert_array_equal(outputs["num_detections"], reference["num_detections"])
        np.testing.assert_allclose(outputs["boxes"], reference["boxes"], atol=1e-3)
        np.testing.assert_allclose(outputs["confidence"], reference["confidence"], atol=1e-5)
    folded.save(tmp_path / "folded.keras")
    loaded = keras.models.load_model(tmp_path / "folded.keras")
    assert loaded.frcnn_config.fold_batch_norm
    for key, value in loaded(images).items():
        np.testing.assert_array_equal(value, outputs[key], err_msg=key)
    assert folded.for_inference() is folded
    for form in (folded, loaded):
        with pytest.raises(ValueError, match="folded into its convolutions"):
            form.networks()


def test_stride_8_zf_trains_and_detects():
    """The shapes preset's base: ZF with a stride-1 second pool. Anchors, proposals, targets and
    RoI pooling follow anchors.stride; a joint step trains and the inference model detects."""
    from keras_frcnn import config as C

    cfg = dataclasses.replace(tiny_config(), anchors=C.AnchorConfig(stride=8, base_size=8, scales=(3.0, 6.0)))
    keras.utils.set_random_seed(0)
    net8 = build_models(cfg, 2, weights=None, class_names=["square", "wide"])
    batch = synthetic_batch(2)
    features, _ = net8.joint_model.features(batch)
    assert features.shape[1:3] == (16, 16)  # 128 px / 8
    _, _, anchors, strides = net8.model.layers_.rpn(features)
    assert strides is None  # one level
    assert anchors.shape[0] == 16 * 16 * 6
    joint = net8.prepare("joint", keras.optimizers.SGD(0.001))
    history = joint.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    out = net8.model.detect(batch["images"])
    assert out["boxes"].shape[0] == 2 and out["num_detections"].shape == (2,)


def test_strips_too_thin_for_a_base_are_padded_not_aborted(tmp_path):
    """A 12 x 3000 strip scaled by the max-side rule is a few pixels high: VGG-16's fourth pooling
    met an empty row and oneDNN aborted (AbortedError; MobileNetV3: a ValueError), in inference,
    serving and training alike. Inputs are now padded to MIN_INPUT_SIDE; detections stay inside
    the image, and a VGG-16 model trains on a data set of such strips."""
    from conftest import tiny_mobilenet_config
    from test_data_fixtures import write_voc_folder

    from keras_frcnn.data import load_voc_folder
    from keras_frcnn.training import ScheduleRunner

    vgg = dataclasses.replace(tiny_config(), backbone="vgg16", weights=None,
                              anchors=dataclasses.replace(tiny_config().anchors, stride=16))
    for cfg in (vgg, tiny_mobilenet_config()):
        model = build_models(cfg, 2, weights=None).model
        for height, width in ((12, 3000), (3000, 12), (1, 1)):
            out = model(np.full((1, height, width, 3), 128, np.uint8))
            n = int(out["num_detections"][0])
            boxes = out["boxes"][0, :n].numpy()
            assert np.isfinite(out["boxes"].numpy()).all()
            assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= height).all() and (boxes[:, [1, 3]] <= width).all()

    entries = {f"s{i}": {"size": (6, 900), "objects": [("dog", (10, 1, 200, 6), False)]} for i in range(4)}
    write_voc_folder(tmp_path / "strips", entries, {"trainval": list(entries)})
    source = load_voc_folder(tmp_path / "strips", "trainval", decode_images=False)
    vgg = dataclasses.replace(vgg, train=dataclasses.replace(vgg.train, schedule="joint"))
    net = build_models(vgg, source.num_classes, weights=None)
    runner = ScheduleRunner(net, source, vgg, str(tmp_path / "run"), steps=2, verbose=0, log=lambda *a: None)
    assert runner.run()


def test_detections_of_many_classes_take_memory_linear_in_the_classes():
    """The log-odds NMS ranks by were computed through a [B, R, K, K] table: 5.9 GB and 0.5 s for
    one image of an LVIS-sized model (1,204 classes), 20 GB at batch 4. No tensor of the layer's
    graph may now hold more than a few [B, R, K] of values, and the log-odds stay exact."""
    from keras_frcnn import postprocess

    rng = np.random.default_rng(0)
    b, r, k = 1, 300, 1204
    inputs = [rng.normal(size=(b, r, k)).astype(np.float32), rng.normal(size=(b, r, k, 4)).astype(np.float32),
              np.tile([[[10.0, 10.0, 50.0, 60.0]]], (b, r, 1)).astype(np.float32), np.array([r], np.int32),
              np.array([[96.0, 128.0, 1.0]], np.float32), np.array([[96, 128]], np.int32)]
    layer = postprocess.Detections()
    graph = tf.function(lambda *x: layer(list(x))).get_concrete_function(*inputs).graph
    largest = max(output.shape.num_elements() or 0 for op in graph.get_operations() for output in op.outputs)
    assert largest <= 4 * b * r * k * 4
    assert int(layer(inputs)["num_detections"][0]) > 0
    # Log-odds against float64 (k = 0 the top class, whose probability rounds to 1.0 in float32).
    logits = np.concatenate([rng.normal(0, 20, (200, 81)), [[40.0] + [0.0] * 80]]).astype(np.float32)
    others = np.where(np.eye(81, dtype=bool), -np.inf, logits[:, None, :].astype(np.float64))
    exact = logits - np.log(np.exp(others).sum(-1))
    np.testing.assert_allclose(postprocess._log_odds(tf.constant(logits)).numpy(), exact, rtol=1e-5, atol=1e-4)


def test_detector_dropout_is_drawn_per_image_from_its_seed():
    """With the pipeline's per-image seeds the head's dropout masks depend on each image's seed
    alone: an image drops the same units alone as in a batch (so replicas of a strategy, which
    Keras's Dropout would give one shared mask, train as one device), other seeds other masks,
    at the rate, kept units scaled by 1 / (1 - rate); without training nothing is dropped."""
    from keras_frcnn.heads import DetectorHead

    head = DetectorHead(2, fc_units=256, dropout=0.5)
    features = tf.random.stateless_uniform([3, 40, 2, 2, 8], seed=[1, 2])
    head(features)
    ones = tf.ones([3 * 40, 256])
    seeds = tf.constant([7, -123456789012, 7], tf.int64)
    masks = head._dropout(ones, True, seeds, 1).numpy().reshape(3, 40, 256)
    alone = head._dropout(ones[40:80], True, seeds[1:2], 1).numpy()
    np.testing.assert_array_equal(masks[1], alone.reshape(40, 256))
    np.testing.assert_array_equal(masks[0], masks[2])  # one seed, one mask
    assert (masks[0] != masks[1]).mean() > 0.4
    assert set(np.unique(masks)) == {0.0, 2.0} and abs((masks == 0).mean() - 0.5) < 0.02
    assert (head._dropout(ones, True, seeds, 1).numpy() != head._dropout(ones, True, seeds, 2).numpy()).any()
    np.testing.assert_array_equal(head._dropout(ones, False, seeds, 1), ones)
    logits, _ = head(features, training=True, image_seeds=seeds)
    again, _ = head(features, training=True, image_seeds=seeds)
    np.testing.assert_array_equal(logits, again)
