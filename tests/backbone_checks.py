"""What every base's tiny network must do, shared by test_resnet.py and test_mobilenet.py: train
under joint training, round-trip through .keras, run in bfloat16 exactly as its mixed policy,
and serve from a SavedModel in a TensorFlow-only process with GPU-kernel ops only (the other
runtimes: test_formats.check_runtime)."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

from conftest import synthetic_batch
from keras_frcnn import export
from keras_frcnn.models import build_models


def train_tiny(cfg, root, epochs):
    """``cfg``'s network trained ``epochs`` x 25 joint steps on the synthetic batch, saved to
    ``root/model.keras`` -> ``(networks, history, root)``."""
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 2, weights=None, class_names=["square", "wide"])
    joint = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    history = joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(4)).repeat(), steps_per_epoch=25,
                        epochs=epochs, verbose=0).history
    net.model.save(root / "model.keras")
    return net, history, root


def check_learns_and_round_trips(trained):
    net, history, root = trained
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


def check_bfloat16_form(trained, conv, norm):
    """The bfloat16 inference form unfolded holds ``conv``'s kernel in bfloat16 and ``norm``'s
    statistics in float32, and detects exactly as the mixed_bfloat16 model; the default form
    folds ``norm`` into ``conv`` (a bfloat16 kernel and bias) and computes the base's features of
    the float32 model to bfloat16's rounding, the float32 folded form to 1e-5 of their scale."""
    from keras_frcnn.backbone import FoldedBatchNorm

    net, _, _ = trained
    mixed = net.model.with_precision("mixed_bfloat16")
    form = mixed.for_inference(fold_batch_norm=False)
    assert form.base.get_layer(conv).kernel.dtype == "bfloat16"
    assert form.base.get_layer(norm).moving_mean.dtype == "float32"
    images = synthetic_batch(2)["images"]
    for key, value in mixed(images).items():
        np.testing.assert_array_equal(form(images)[key], value)
    processed, info = net.model.layers_.preprocess(images)
    expected = [np.asarray(level, np.float32) for level in tf.nest.flatten(net.model.base([processed, info]))]
    for folded, tolerance in [(mixed.for_inference(), 5e-2), (net.model.for_inference(), 1e-5)]:
        assert isinstance(folded.base.get_layer(norm), FoldedBatchNorm)
        assert not [v.path for v in folded.weights if "_bn/" in v.path]  # (a C4 head's conv5 too)
        assert folded.base.get_layer(conv).bias.dtype == folded.frcnn_config.precision
        levels = tf.nest.flatten(folded.base([processed, info]))
        for got, level in zip(levels, expected):
            assert np.abs(np.asarray(got, np.float32) - level).max() <= tolerance * np.abs(level).max()


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


def check_saved_model(trained):
    net, _, root = trained
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


def randomise_batch_norm(model, rng):
    """Batch norm statistics and affine terms far from the identity, so that a layer mixed up
    between two networks shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])


def weights_of(layer):
    return [w.numpy().copy() for w in layer.weights]
