import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn.preprocessing import Preprocess, scaled_size

MEANS = np.array([102.9801, 115.9465, 122.7717], np.float32)


def caffe(image):
    return image[..., ::-1].astype(np.float32) - MEANS


def test_scaled_size_rule():
    sizes, scales = scaled_size([[375, 500], [500, 2000], [600, 1000]], 600, 1000)
    np.testing.assert_array_equal(sizes.numpy(), [[600, 800], [250, 1000], [600, 1000]])
    np.testing.assert_allclose(scales.numpy(), [1.6, 0.5, 1.0])


def test_single_image_equals_tf_image_resize(rng):
    image = rng.integers(0, 256, (1, 75, 100, 3)).astype(np.uint8)
    processed, info = Preprocess(min_side=120, max_side=1000)(image)
    expected = caffe(tf.image.resize(image.astype(np.float32), (120, 160)).numpy())
    np.testing.assert_allclose(processed.numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(info.numpy(), [[120, 160, 1.6]])


def test_padded_batch_matches_each_image_alone(rng):
    layer = Preprocess(min_side=64, max_side=96)
    a = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (30, 90, 3)).astype(np.uint8)
    batch = np.zeros((2, 40, 90, 3), np.uint8)
    batch[0, :40, :50] = a
    batch[1, :30, :90] = b
    processed, info = layer([batch, np.array([[40, 50], [30, 90]])])
    for i, image in enumerate([a, b]):
        alone, alone_info = layer(image[None])
        np.testing.assert_allclose(info.numpy()[i], alone_info.numpy()[0], rtol=1e-6)
        h, w = alone.shape[1:3]
        np.testing.assert_allclose(processed.numpy()[i, :h, :w], alone.numpy()[0], atol=1e-3)
        # Outside the valid region everything is zero (the mean colour).
        assert not processed.numpy()[i, h:].any() and not processed.numpy()[i, :, w:].any()


def test_without_resize_only_converts(rng):
    image = rng.integers(0, 256, (1, 20, 30, 3)).astype(np.uint8)
    processed, info = Preprocess(resize=False)([image, np.array([[20.0, 30.0, 1.5]])])
    assert processed.shape == (1, 64, 64, 3)  # padded to MIN_INPUT_SIDE with zeros
    np.testing.assert_allclose(processed.numpy()[:, :20, :30], caffe(image), atol=1e-4)
    assert not processed.numpy()[:, 20:].any() and not processed.numpy()[:, :, 30:].any()
    np.testing.assert_allclose(info.numpy(), [[20, 30, 1.5]])


def test_get_config_round_trip_and_xla(rng):
    layer = Preprocess(min_side=32, max_side=48, pixel_means=(1.0, 2.0, 3.0))
    clone = Preprocess.from_config(layer.get_config())
    image = rng.integers(0, 256, (2, 20, 25, 3)).astype(np.uint8)
    np.testing.assert_array_equal(layer(image)[0].numpy(), clone(image)[0].numpy())
    compiled = tf.function(lambda x: layer(x), jit_compile=True)(image)
    np.testing.assert_allclose(compiled[0].numpy(), layer(image)[0].numpy(), atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3, 4, 5])
@pytest.mark.parametrize("width", [5, 8])  # rows of 5 * C bytes (padded unless C = 4) and 8 * C (in place)
def test_uint8_rows_move_as_int32_words_and_equal_a_gather(channels, width, tmp_path):
    from keras_frcnn import export
    from keras_frcnn.preprocessing import _gather_rows

    images = tf.constant(np.random.default_rng(channels).integers(0, 256, (2, 7, width, channels)), tf.uint8)
    rows = tf.constant([[6, 0, 3], [1, 1, 5]], tf.int32), tf.constant([[2, 2, 0], [4, 6, 6]], tf.int32)
    for got, r in zip(_gather_rows(images, *rows), rows, strict=True):
        np.testing.assert_array_equal(got.numpy(), tf.gather(images, r, axis=1, batch_dims=1).numpy())
    # Saved with dynamic shapes: every gather has a GPU kernel.
    module = tf.Module()
    module.f = tf.function(lambda x, a, b: _gather_rows(x, a, b), input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.uint8), tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None, None], tf.int32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    assert "GatherV2" in export.graph_op_types(tmp_path)
    missing = export.ops_without_gpu_kernels(tmp_path, "serving_default")
    assert missing == {}
