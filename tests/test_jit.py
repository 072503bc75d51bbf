"""Which layers compile with XLA (``jit_compile=True``), checked on the CPU.

Every layer of the model is XLA-compatible except RoI pooling in ``mode="align"``
(``CropAndResize`` has no XLA kernel), which declares ``supports_jit = False`` so that Keras's
``jit_compile="auto"`` leaves XLA off for a model that holds it.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn import layers
from keras_frcnn.anchors import Anchors

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(2, 6, 8, 4)).astype(np.float32)
INFO = np.array([[96.0, 128.0, 1.0], [80.0, 100.0, 1.0]], np.float32)
ANCHORS = Anchors()(FEATURES)
A = ANCHORS.shape[0]
ROIS = np.array([[[0, 0, 40, 60], [10, 20, 90, 120]]] * 2, np.float32)


def cases():
    yield "Preprocess", layers.Preprocess(64, 96), (RNG.integers(0, 256, (2, 50, 70, 3)).astype(np.uint8),), True
    yield "PaddingMask", layers.PaddingMask(16, "floor"), ([FEATURES, INFO],), True
    yield "RPNHead", layers.RPNHead(8, 9), (FEATURES,), True
    yield "Anchors", layers.Anchors(), (FEATURES,), True
    yield "Proposals", layers.Proposals((100, 100), (20, 20), min_size=1), (
        [RNG.normal(size=(2, A)).astype(np.float32), (RNG.normal(size=(2, A, 4)) * 0.1).astype(np.float32),
         ANCHORS, INFO],), True
    yield "RoIPooling max", layers.RoIPooling(3, 1 / 16, "max"), ([FEATURES, ROIS],), True
    yield "RoIPooling align", layers.RoIPooling(3, 1 / 16, "align"), ([FEATURES, ROIS],), False
    gt_boxes = np.array([[[4, 6, 50, 70], [30, 40, 90, 120]], [[10, 10, 60, 60], [0, 0, 0, 0]]], np.float32)
    gt_classes, seeds = np.array([[1, 2], [2, 0]], np.int32), np.array([7, 8], np.int64)
    yield "AnchorTargets", layers.AnchorTargets(batch_size=32, seed=0), (
        ANCHORS, gt_boxes, gt_classes, INFO, seeds), True
    yield "ProposalTargets", layers.ProposalTargets(batch_rois=8, seed=0), (
        np.tile(ROIS, (1, 2, 1)) + RNG.uniform(-5, 5, (2, 4, 4)).astype(np.float32), np.array([4, 3], np.int32),
        gt_boxes, gt_classes, seeds), True
    yield "DetectorHead", layers.DetectorHead(3, 16), (RNG.normal(size=(2, 5, 3, 3, 4)).astype(np.float32),), True
    yield "Detections", layers.Detections(), ([
        RNG.normal(size=(2, 5, 4)).astype(np.float32), RNG.normal(size=(2, 5, 4, 4)).astype(np.float32),
        np.tile(ROIS, (1, 3, 1))[:, :5], np.array([5, 4], np.int32), INFO, np.array([[96, 128], [80, 100]])],), True


@pytest.mark.parametrize("name,layer,args,compiles", list(cases()), ids=[c[0] for c in cases()])
def test_layer_xla_support_is_declared_and_true(name, layer, args, compiles):
    eager = layer(*args)
    assert layer.supports_jit == compiles
    fn = tf.function(lambda *a: layer(*a), jit_compile=True)
    if compiles:
        compiled = fn(*args)
        for x, y in zip(tf.nest.flatten(compiled), tf.nest.flatten(eager)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-3)
    else:
        with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.UnimplementedError)):
            fn(*args)


def test_the_inference_model_leaves_xla_off_and_the_training_views_compile():
    """Compiled whole by XLA, the inference model ran a batch of two images for minutes on the CPU
    (one: 0.1 s): it declares ``supports_jit = False``, so ``jit_compile`` "auto" (XLA with a GPU)
    or True leaves its predict uncompiled; the training views still compile."""
    import keras

    from conftest import tiny_config
    from keras_frcnn.models import build_models

    net = build_models(tiny_config(), 2, weights=None)
    with pytest.warns(UserWarning, match="doesn't support `jit_compile=True`"):
        net.model.compile(jit_compile=True)
    assert net.model.jit_compile is False
    assert net.prepare("joint", keras.optimizers.SGD(0.01), jit_compile=True).jit_compile is True


def test_jit_on_names_the_layers_a_stage_trains_without_xla(tmp_path, recwarn):
    """``--jit on`` for a model that pools with RoIAlign (the shapes preset's): XLA cannot compile
    ``CropAndResize``, and Keras only warned "Model doesn't support `jit_compile=True`". The run
    says which stage trains without XLA and which layer keeps it out."""
    import dataclasses

    from conftest import tiny_config
    from keras_frcnn import data
    from keras_frcnn.models import build_models
    from keras_frcnn.training import ScheduleRunner, layers_without_xla

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, pool_mode="align"),
                              train=dataclasses.replace(cfg.train, schedule="joint", jit_compile="on"))
    net = build_models(cfg, 4, weights=None)
    assert layers_without_xla(net.view("rpn")) == []
    assert layers_without_xla(net.view("joint")) == ["roi_pooling"]
    source = data.load_shapes("train", data_dir=str(tmp_path / "tfds"), num_train=4, num_test=2, decode_images=False)
    said = []
    ScheduleRunner(net, source, cfg, str(tmp_path / "run"), steps=1, verbose=0, log=said.append).run()
    assert "   --jit on: joint trains without XLA: roi_pooling cannot be compiled (RoIAlign's CropAndResize " \
           "has no XLA kernel)" in said
    assert not [w for w in recwarn if "jit_compile" in str(w.message)]
