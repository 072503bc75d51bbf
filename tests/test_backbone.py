import keras
import numpy as np
import pytest

from keras_frcnn import backbone
from keras_frcnn.config import ConfigError
from keras_frcnn.models import dtype_policy
from keras_frcnn.preprocessing import Preprocess


def run(base, images, sizes=None):
    inputs = images if sizes is None else [images, sizes]
    processed, info = Preprocess(resize=False)(inputs)
    return base([processed, info]).numpy(), info.numpy()


@pytest.mark.parametrize("name,stride,size,expected", [
    ("vgg16", 16, (70, 100), (5, 7)),  # ceil(n / 16): Caffe's ceil-mode pools
    ("vgg16", 16, (600, 1000), (38, 63)),  # py-faster-rcnn's conv5_3 of a 600 x 1000 image
    ("zf", 16, (70, 100), (5, 7)),  # ceil(n / 16)
    ("zf", 8, (70, 100), (9, 13)),  # ceil(n / 8)
])
def test_feature_sizes(name, stride, size, expected):
    base = backbone.build_base(name, width=0.125, stride=stride)
    features, _ = run(base, np.zeros((1, *size, 3), np.uint8))
    assert features.shape[1:3] == expected


def test_a_stride_the_base_cannot_have_is_refused():
    with pytest.raises(ValueError, match="vgg16 base has stride 16, not 8"):
        backbone.build_base("vgg16", width=0.125, stride=8)
    from keras_frcnn.config import ConfigError, preset
    import dataclasses
    cfg = preset("voc")
    with pytest.raises(ConfigError, match="anchors.stride"):
        dataclasses.replace(cfg, anchors=dataclasses.replace(cfg.anchors, stride=8))


def test_vgg16_layers_and_always_frozen():
    base = backbone.vgg16(width=0.125)
    convs = [layer.name for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13 and convs[0] == "block1_conv1" and convs[-1] == "block5_conv3"
    assert [layer.name for layer in backbone.always_frozen_layers(base, "vgg16")] == [
        "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]
    assert backbone.always_frozen_layers(backbone.zf(width=0.125), "zf") == []


def test_zf_matches_the_paper_layout():
    base = backbone.zf()
    convs = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs] == [
        (96, 7, 2), (256, 5, 2), (384, 3, 1), (384, 3, 1), (256, 3, 1)]


@pytest.mark.parametrize("name,stride", [("vgg16", 16), ("zf", 16), ("zf", 8)])
def test_padded_batch_features_equal_each_image_alone(name, stride, rng):
    base = backbone.build_base(name, width=0.125, stride=stride)
    a = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)  # odd sizes: floor / ceil both matter
    b = rng.integers(0, 256, (70, 81, 3)).astype(np.uint8)
    batch = np.zeros((2, 70, 81, 3), np.uint8)
    batch[0, :37, :53] = a
    batch[1] = b
    features, _ = run(base, batch, np.array([[37, 53], [70, 81]]))
    for i, image in enumerate([a, b]):
        alone, _ = run(base, image[None])
        h, w = alone.shape[1:3]
        np.testing.assert_allclose(features[i, :h, :w], alone[0], rtol=1e-4, atol=1e-3)
        assert not features[i, h:].any() and not features[i, :, w:].any()


def test_vgg16_copies_weights_from_a_reference_model(tmp_path):
    reference = keras.applications.VGG16(include_top=True, weights=None)
    path = tmp_path / "vgg16.weights.h5"
    reference.save_weights(path)
    base = backbone.vgg16(weights=str(path))
    for layer_name in ("block1_conv1", "block5_conv3"):
        for ours, theirs in zip(base.get_layer(layer_name).get_weights(),
                                reference.get_layer(layer_name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="could not load VGG-16 weights"):
        backbone.vgg16(weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ConfigError, match="nope.h5: no such file"):
        backbone.check_weights("vgg16", str(tmp_path / "nope.h5"))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_computes_as_keras_batch_norm(policy):
    """backbone.FusedBatchNorm (TensorFlow's fused kernel) against Keras's BatchNormalization with
    the same weights: training outputs, input and weight gradients and moving averages; inference
    outputs; and a frozen layer (trainable False) in a training call, which normalises with the
    moving statistics as Keras does."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (2, 5, 7, 6)).astype(np.float32))
    weights = [rng.uniform(0.5, 1.5, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2.0, 6)]
    layers = []
    with dtype_policy(policy):
        for cls in (backbone.FusedBatchNorm, keras.layers.BatchNormalization):
            layer = cls(epsilon=1e-3, momentum=0.9)
            layer.build(x.shape)
            layer.set_weights([w.astype(np.float32) for w in weights])
            layers.append(layer)
    upstream = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    tolerance = dict(rtol=1e-5, atol=1e-5) if policy == "float32" else dict(rtol=2e-2, atol=5e-2)

    def forward(layer, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

    for training in (True, False):
        fused, reference = forward(layers[0], training), forward(layers[1], training)
        assert fused[0].dtype == reference[0].dtype
        for a, b in zip(fused, reference):
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), **tolerance)
    for a, b in zip(layers[0].get_weights(), layers[1].get_weights()):  # moving averages moved alike
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for layer in layers:
        layer.trainable = False
    np.testing.assert_allclose(np.asarray(layers[0](x, training=True), np.float32),
                               np.asarray(layers[1](x, training=True), np.float32), **tolerance)
    np.testing.assert_array_equal(np.asarray(layers[0](x, training=True), np.float32),
                                  np.asarray(layers[0](x, training=False), np.float32))


def test_folding_batch_norm_keeps_the_function_and_folds_only_what_it_can():
    """backbone.folded_model / folded_weights: a convolution (with or without a bias) and a
    depthwise convolution (multiplier 2) each followed by a batch norm fold into one convolution
    with a bias, computing the same outputs; a batch norm after an activated convolution, after a
    convolution whose output is read elsewhere too or is an output of the model, and one after a
    non-convolution stay."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    inputs = keras.Input((None, None, 3))
    a = keras.layers.BatchNormalization(name="a_bn")(keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs))
    b = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)  # 8 channels: in * 2 + j
    c = keras.layers.Conv2D(8, 1, activation="relu", name="c")(b)
    c = keras.layers.BatchNormalization(name="c_bn")(c)  # after an activation: stays
    d = keras.layers.Conv2D(8, 1, use_bias=False, name="d")(c)
    d_bn = keras.layers.BatchNormalization(name="d_bn")(d)  # d is read by the sum too: stays
    e = keras.layers.BatchNormalization(name="e_bn")(keras.layers.Add(name="sum")([d, d_bn]))  # not a conv
    f = keras.layers.Conv2D(8, 1, name="f")(e)
    f_bn = keras.layers.BatchNormalization(name="f_bn")(f)  # f is an output of the model too: stays
    model = keras.Model(inputs, [f_bn, f])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n),
                               rng.uniform(0.5, 2.0, n)])
    assert backbone.batch_norm_pairs(model) == {"a_bn": "a", "b_bn": "b"}
    folded = backbone.folded_model(model)
    assert isinstance(folded.get_layer("a_bn"), backbone.FoldedBatchNorm)
    assert isinstance(folded.get_layer("c_bn"), keras.layers.BatchNormalization)
    assert folded.get_layer("b").use_bias and not folded.get_layer("d").use_bias
    pairs = backbone.batch_norm_pairs(model)
    for layer in folded.layers:
        if layer.name in pairs.values():
            layer.set_weights(backbone.folded_weights(model.get_layer(layer.name),
                                                      model.get_layer(f"{layer.name}_bn")))
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    x = tf.constant(rng.normal(size=(2, 9, 11, 3)), tf.float32)
    for got, expected in zip(folded(x), model(x, training=False)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
