"""The shared convolutional bases: VGG-16 (conv1_1..conv5_3), ZF (conv1..conv5) and ResNet-50 /
101 (conv1..conv4, the "C4" base), stride 16; and two feature pyramids, ResNet-50-FPN (P2..P6)
and MobileNetV3-Large-FPN (torchvision's: two stride-32 levels and a pooled stride-64 one).

A base is a ``keras.Model`` ``[images, image_info] -> features``: images ``[B, H, W, 3]``
preprocessed (``Preprocess``), ``image_info`` ``[B, 3]`` (valid h, valid w, scale) of each image of
a padded batch, features ``[B, H', W', C]`` (a pyramid: a list of levels, finest first). Before
every layer that mixes neighbouring positions the activations outside each image's valid region
are set to zero (``PaddingMask``; a squeeze-and-excitation mean leaves them out, ``MaskedMean``),
so an image's features are the same alone or padded in a batch with larger images: the zero
padding of the next convolution sees zeros either way.

Feature sizes: VGG-16's 2x2 / 2 max pools round up as Caffe's pooling does (ceil mode: a
600 x 1000 image gives a 38 x 63 conv5 map, as py-faster-rcnn's), ZF's and ResNet's padded
stride-2 layers too: an image side n gives ceil(n / stride); MobileNetV3's padding
(keras.applications') floor(n / stride) (``config.feature_rounding``).

Departures from the paper, on purpose: ZF's local response normalisation layers are left out
(Keras has no within-channel LRN, and they add little); ZF's 3x3 / 2 pools give ceil(n / 2)
outputs where Caffe's (pad 1, ceil mode) give floor(n / 2) + 1: for an even side Caffe's last
window starts on the padding row and its conv5 map has one more row or column of cells centred
past the image (39 x 64 for 600 x 1000, here 38 x 63; every cell here covers the image);
``width`` scales the channel counts for small CPU presets (1.0 is the paper's net).
"""

import functools
import os

import keras
import tensorflow as tf

from keras_frcnn.config import BASE_STRIDES, ConfigError
from keras_frcnn.preprocessing import check_rounding, converting, valid_feature_sizes, valid_mask

# conv1_1..conv2_2 of VGG-16 stay frozen in every stage of the paper's training.
ALWAYS_FROZEN = {
    "vgg16": ("block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"),
    "zf": (),
    "resnet50": (),
    "resnet101": (),
    "resnet50-fpn": (),
    "mobilenetv3-fpn": (),
}
# An ImageNet ResNet keeps its stem and first stage (conv1, conv2_x) and every batch norm frozen:
# Detectron's RESNETS.FREEZE_AT 2 with frozen (affine) batch norm, tf-faster-rcnn's
# RESNET.FIXED_BLOCKS 1 with its batch norm in inference mode. A detector's batch of one or two
# images cannot estimate batch statistics. From random weights nothing is frozen.
RESNET_FROZEN_PREFIXES = ("conv1_", "conv2_")
RESNET_STAGES = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet50-fpn": (3, 4, 6, 3)}
RESNET_EPSILON = 1.001e-5  # keras.applications' ResNet batch norm

_VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@keras.saving.register_keras_serializable(package="keras_frcnn")
class PaddingMask(keras.layers.Layer):
    """``[x, image_info]`` -> x with zeros outside each image's valid region at this stride.

    The valid feature size of an image side n is floor(n / stride) or ceil(n / stride)
    (``rounding``), which composes exactly through floor-pooling or padded stride-2 layers.
    """

    def __init__(self, stride=1, rounding="floor", **kwargs):
        # x keeps the base's compute dtype and image_info its float32 pixel sizes.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        check_rounding(rounding)
        self.stride = int(stride)
        self.rounding = rounding

    def valid_sizes(self, image_info):
        """``[B, 2]`` float32: each image's valid feature size (rows, columns) at this stride."""
        return valid_feature_sizes(image_info, self.stride, self.rounding)

    def call(self, inputs):
        x, image_info = inputs
        sizes = self.valid_sizes(image_info)
        shape = tf.shape(x)
        # Every image filling the map (one image, or a batch of one size): nothing to zero, and
        # the multiply, a full pass over the activations, is skipped (~7% of VGG-16's time).
        masked = lambda: x * tf.cast(valid_mask(sizes, shape[1], shape[2]), x.dtype)  # noqa: E731
        if converting():
            return masked()
        padded = tf.reduce_any(sizes < tf.cast(shape[1:3], sizes.dtype))
        return tf.cond(padded, masked, lambda: tf.identity(x))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "rounding": self.rounding}


@keras.saving.register_keras_serializable(package="keras_frcnn")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras's ``BatchNormalization`` whose training step is TensorFlow's fused kernel
    (``FusedBatchNormV3``: statistics, normalisation and their gradients in one pass each; Keras 3
    writes them as a dozen element-wise ops, ~12 % of a shapes training step). Same arithmetic:
    batch statistics over N, H, W, the moving averages updated with the population variance as
    Keras does. Frozen or at inference, the same kernel normalises by the moving statistics in
    one pass (Keras's casts a 16-bit input to float32 and back around a multiply and an add; the
    ReLU after it fuses into it). The synchronised variant, other ranks and the converters' trace
    are Keras's own code."""

    def call(self, inputs, training=None, mask=None):
        if self.synchronized or self.renorm or mask is not None or len(inputs.shape) != 4 \
                or self.axis not in (-1, 3) or not (self.center and self.scale):
            return super().call(inputs, training=training, mask=mask)
        frozen = not (training and self.trainable)
        if frozen and converting():
            return super().call(inputs, training=training, mask=mask)
        dtype = inputs.dtype if inputs.dtype in (tf.float16, tf.bfloat16) else tf.float32
        normalise = functools.partial(
            tf.compat.v1.nn.fused_batch_norm, tf.cast(inputs, dtype), scale=tf.cast(self.gamma, tf.float32),
            offset=tf.cast(self.beta, tf.float32), epsilon=self.epsilon, data_format="NHWC")
        if frozen:
            outputs, _, _ = normalise(mean=tf.cast(self.moving_mean, tf.float32),
                                      variance=tf.cast(self.moving_variance, tf.float32), is_training=False)
            return tf.cast(outputs, self.compute_dtype)
        outputs, mean, variance = normalise(is_training=True)
        # The kernel's variance is the sample variance (n - 1); Keras averages the population's.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


def _batch_norm(name, epsilon=1e-3):
    # Built under a multi-replica tf.distribute strategy, synchronised over the replicas: a
    # detector's per-replica batch is one or two images, and the statistics of the global batch
    # make a split batch train as it would on one device. Otherwise the fused layer: the
    # synchronised one computes E[x^2] - E[x]^2 unfused, slower and less exact on one device.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync if tf.distribute.has_strategy() else 1
    # Its few statistics stay float32 under a 16-bit inference policy (FasterRCNN.for_inference):
    # the same arithmetic as the mixed policy the network was trained under.
    policy = keras.config.dtype_policy()
    dtype = f"mixed_{policy.name}" if policy.variable_dtype in ("bfloat16", "float16") else None
    return FusedBatchNorm(synchronized=replicas > 1, epsilon=epsilon, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_frcnn")
class FoldedBatchNorm(keras.layers.Layer):
    """The place of a batch norm that ``folded_model`` folded into the convolution before it:
    passes its input on (the inference form's graph keeps the batch norm's name)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _history_names(node_args):
    """The names of the layers whose outputs a functional config's node arguments hold."""
    if isinstance(node_args, dict):
        if node_args.get("class_name") == "__keras_tensor__":
            return [node_args["config"]["keras_history"][0]]
        node_args = list(node_args.values())
    if isinstance(node_args, (list, tuple)):
        return [name for value in node_args for name in _history_names(value)]
    return []


def _output_names(outputs):
    """The names of the layers whose outputs a functional config's ``output_layers`` (a
    ``[name, node, tensor]`` entry, or a list or dict of them) names."""
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)) and outputs and isinstance(outputs[0], str):
        return [outputs[0]]
    return [name for value in outputs for name in _output_names(value)]


def batch_norm_pairs(model):
    """``{batch norm name: convolution name}`` of the functional ``model``: each batch norm (on
    the last axis) whose input is the output of a convolution without an activation that nothing
    else reads, the pairs a fold can merge (read from the model's functional config)."""
    config = model.get_config()
    inputs = {layer["name"]: _history_names(layer["inbound_nodes"]) for layer in config["layers"]}
    readers = {}
    for reader, names in inputs.items():
        for name in names:
            readers.setdefault(name, []).append(reader)
    outputs = set(_output_names(config["output_layers"]))
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or \
                layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        names = inputs[layer.name]
        if len(names) != 1 or names[0] in outputs or readers.get(names[0]) != [layer.name]:
            continue
        conv = model.get_layer(names[0])
        if isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and \
                conv.get_config().get("activation") == "linear":
            pairs[layer.name] = conv.name
    return pairs


def folded_model(model):
    """The functional ``model``'s inference form: each batch norm of ``batch_norm_pairs`` replaced
    by a ``FoldedBatchNorm`` and its convolution given a bias, to take the normalisation's scale
    and shift (``folded_weights``): one convolution (with its bias and activation fused by
    grappler) instead of a convolution and a pass over its output. New layers, unset weights."""
    pairs = batch_norm_pairs(model)
    convs = set(pairs.values())

    def clone(layer):
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def folded_weights(conv, norm):
    """``(kernel, bias)`` (numpy float32) of convolution ``conv`` followed by batch norm ``norm``
    at inference as one convolution: ``s = gamma / sqrt(moving_variance + epsilon)`` scales each
    output channel's kernel, ``bias = (conv bias - moving_mean) * s + beta``."""
    import numpy as np

    def value(variable):
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32")), np.float64)

    scale = value(norm.moving_variance) + norm.epsilon
    scale = (value(norm.gamma) if norm.scale else 1.0) / np.sqrt(scale)
    kernel = value(conv.kernel)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # [h, w, in, multiplier]: output in * m + j
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    bias = value(conv.bias) if conv.use_bias else 0.0
    bias = (bias - value(norm.moving_mean)) * scale + (value(norm.beta) if norm.center else 0.0)
    return kernel.astype(np.float32), np.broadcast_to(bias, scale.shape).astype(np.float32)


def _channels(n, width):
    return max(1, int(round(n * width)))


def _inputs():
    images = keras.Input((None, None, 3), name="images")
    image_info = keras.Input((3,), name="image_info")
    return images, image_info


def load_vgg16_reference(weights):
    """``keras.applications.VGG16`` with its fc layers, holding ``weights``.

    ``weights="imagenet"`` uses Keras's file ``vgg16_weights_tf_dim_ordering_tf_kernels.h5``
    (downloaded to, or placed by hand in, ``~/.keras/models/``); a path loads that file.
    """
    return _keras_application(keras.applications.VGG16, "VGG-16", "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                              weights, include_top=True)


def _keras_application(builder, label, filename, weights, **kwargs):
    """``builder(weights=weights, **kwargs)``, a ``keras.applications`` model; a failed download
    or file read says which file to put where."""
    try:
        return builder(weights=weights, **kwargs)
    except Exception as error:  # the download or the file: say which and how to fix it
        raise ConfigError(
            f"could not load {label} weights {weights!r}: {error}. Offline, put Keras's {filename} in "
            "~/.keras/models/ or pass a path with --weights."
        ) from None


def vgg16(weights=None, width=1.0, name="vgg16", kernel_initializer="glorot_uniform", batch_norm=False,
          stride=16):
    """VGG-16 conv1_1..conv5_3 (13 convs, 4 pools), stride 16, 512 channels.

    ``batch_norm`` adds batch normalisation after each conv (for training from scratch only).
    ``weights``: None (random init), "imagenet", a path to a Keras VGG-16 weights
    file (with the fc layers), or a ``keras.applications.VGG16`` model to copy from. Layer names
    follow Keras's VGG16 (``block1_conv1`` ... ``block5_conv3``). ``stride``: 16 only.
    """
    _check_stride("vgg16", stride)
    images, image_info = _inputs()
    x = images
    at_stride = 1  # of the layer being built
    for block, (filters, convs) in enumerate(_VGG16_BLOCKS, start=1):
        if block > 1:
            # Caffe's ceil mode: an odd side's last window holds its last row (or column) alone.
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"block{block - 1}_pool")(x)
            at_stride *= 2
            x = PaddingMask(at_stride, "ceil", name=f"block{block - 1}_pool_mask")([x, image_info])
        for i in range(1, convs + 1):
            x = keras.layers.Conv2D(_channels(filters, width), 3, padding="same",
                                    activation=None if batch_norm else "relu",
                                    kernel_initializer=kernel_initializer, name=f"block{block}_conv{i}")(x)
            if batch_norm:
                x = _batch_norm(f"block{block}_conv{i}_bn")(x)
                x = keras.layers.ReLU(name=f"block{block}_conv{i}_relu")(x)
            x = PaddingMask(at_stride, "ceil", name=f"block{block}_conv{i}_mask")([x, image_info])
    base = keras.Model([images, image_info], x, name=name)

    if weights is not None:
        reference = weights if isinstance(weights, keras.Model) else load_vgg16_reference(weights)
        for layer in base.layers:
            if isinstance(layer, keras.layers.Conv2D):
                layer.set_weights(reference.get_layer(layer.name).get_weights())
    return base


def zf(weights=None, width=1.0, name="zf", kernel_initializer="glorot_uniform", batch_norm=False,
       stride=16):
    """ZF net's five convs as in the paper: 96 7x7/2, 256 5x5/2, 384, 384, 256 3x3, with 3x3/2
    max pools after conv1 and conv2 (Caffe's padding), stride 16, 256 channels.

    ``stride`` 8 makes the second pool 3x3/1 (a departure for small objects: conv3..conv5 and the
    heads then see twice the resolution, at four times their cost).

    ``weights``: None (random) or a path to a weights file of this model (Keras ships no ZF).
    ``batch_norm`` adds batch normalisation after each conv (a departure for training from scratch).
    """
    _check_stride("zf", stride)
    images, image_info = _inputs()

    def conv(x, filters, size, stride_, pad, name, at_stride):
        if pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        x = keras.layers.Conv2D(_channels(filters, width), size, strides=stride_,
                                activation=None if batch_norm else "relu", padding="valid",
                                kernel_initializer=kernel_initializer, name=name)(x)
        if batch_norm:
            x = _batch_norm(f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        return PaddingMask(at_stride, "ceil", name=f"{name}_mask")([x, image_info])

    def pool(x, name, at_stride, step=2):
        # Caffe's 3x3/2 pool with pad 1: zero padding (inputs are >= 0 after ReLU) + a valid pool,
        # windows aligned as Caffe's; ceil(n / 2) outputs, Caffe's ceil mode floor(n / 2) + 1 (one
        # more for an even n: the module docstring) (n outputs with step 1, as Caffe's).
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        x = keras.layers.MaxPooling2D(3, step, name=name)(x)
        return PaddingMask(at_stride, "ceil", name=f"{name}_mask")([x, image_info])

    x = conv(images, 96, 7, 2, 3, "conv1", 2)
    x = pool(x, "pool1", 4)
    x = conv(x, 256, 5, 2, 2, "conv2", 8)
    x = pool(x, "pool2", 16) if stride == 16 else pool(x, "pool2", 8, step=1)
    x = conv(x, 384, 3, 1, 1, "conv3", stride)
    x = conv(x, 384, 3, 1, 1, "conv4", stride)
    x = conv(x, 256, 3, 1, 1, "conv5", stride)
    base = keras.Model([images, image_info], x, name=name)
    if weights is not None:
        check_weights("zf", weights)
        base.load_weights(weights)
    return base


def bottleneck(x, filters, stride, conv_shortcut, name, width=1.0, kernel_initializer="he_normal",
               mask=None):
    """One ResNet v1 bottleneck block as ``keras.applications``' ResNet builds it (its layer names,
    so its ImageNet weights copy in by name): 1x1 (``stride``) -> 3x3 -> 1x1 (4 x ``filters``),
    batch norm after each, a 1x1 projection shortcut (``stride``) when ``conv_shortcut``, ReLU
    after the sum. The stride sits on the 1x1 convolutions, as in the original (Caffe) ResNet.
    ``mask(x, stride)`` zeroes a padded batch's padding before the 3x3 convolution, the only
    layer that mixes neighbouring positions."""
    def conv(y, n, size, strides, suffix):
        y = keras.layers.Conv2D(_channels(n, width), size, strides=strides, padding="same" if size > 1 else "valid",
                                kernel_initializer=kernel_initializer, name=f"{name}_{suffix}_conv")(y)
        return _batch_norm(f"{name}_{suffix}_bn", RESNET_EPSILON)(y)

    shortcut = conv(x, 4 * filters, 1, stride, "0") if conv_shortcut else x
    x = keras.layers.ReLU(name=f"{name}_1_relu")(conv(x, filters, 1, stride, "1"))
    if mask is not None:
        x = mask(x, f"{name}_1_mask")
    x = keras.layers.ReLU(name=f"{name}_2_relu")(conv(x, filters, 3, 1, "2"))
    x = keras.layers.Add(name=f"{name}_add")([shortcut, conv(x, 4 * filters, 1, 1, "3")])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet_stage(x, stage, blocks, stride, width=1.0, kernel_initializer="he_normal", mask=None):
    """ResNet stage ``conv{stage}`` (2..5): ``blocks`` bottlenecks of 64 * 2**(stage - 2) filters,
    the first with a projection shortcut and ``stride``."""
    filters = 64 * 2 ** (stage - 2)
    for i in range(1, blocks + 1):
        x = bottleneck(x, filters, stride if i == 1 else 1, i == 1, f"conv{stage}_block{i}", width,
                       kernel_initializer, mask)
    return x


def load_resnet_reference(name, weights):
    """``keras.applications.ResNet50`` / ``ResNet101`` without its classifier, holding ``weights``
    ("imagenet": Keras's ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, downloaded to
    or placed in ``~/.keras/models/``; or a path)."""
    builder = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101}[name]
    return _keras_application(builder, name, f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5", weights,
                              include_top=False, input_shape=(None, None, 3))


def resnet(depth=50, weights=None, width=1.0, name=None, kernel_initializer="he_normal", batch_norm=False,
           stride=16, blocks=None):
    """ResNet-50 / 101 v1 conv1..conv4 (the "C4" base of Faster R-CNN with ResNets, He et al.
    2016, Detectron's R-50-C4): stride 16, 1024 channels; conv5 is the detector head
    (``heads.Res5Head``). ``keras.applications``' layers and names, with ``width`` scaling the
    channels (1.0 = the real net). ``weights``: None (random), "imagenet" or a path (Keras's
    ResNet weights file without the top), or a ``keras.applications`` ResNet to copy from.
    ``batch_norm``: ResNets always have it (accepted for the builders' common signature).
    ``stride``: 16 only. ``blocks``: bottlenecks per stage conv2..conv5 (default the depth's,
    e.g. (3, 4, 6, 3); fewer make a shallower net of the same design, for tests).
    """
    del batch_norm
    name = name or f"resnet{depth}"
    _check_stride(name, stride)
    images, image_info = _inputs()
    x = _resnet_stages(images, image_info, depth, (2, 3, 4), width, kernel_initializer, blocks)[4]
    x = PaddingMask(16, "ceil", name="conv4_mask")([x, image_info])
    base = keras.Model([images, image_info], x, name=name)
    if weights is not None:
        reference = weights if isinstance(weights, keras.Model) else load_resnet_reference(name, weights)
        copy_weights_by_name(base, reference)
    return base


def _resnet_stages(images, image_info, depth, stages, width, kernel_initializer, blocks=None):
    """ResNet's stem and ``stages`` (2..5) -> ``{stage: its output}`` (padding not yet zeroed)."""
    def mask(at_stride):
        return lambda x, layer: PaddingMask(at_stride, "ceil", name=layer)([x, image_info])

    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(images)
    x = keras.layers.Conv2D(_channels(64, width), 7, strides=2, kernel_initializer=kernel_initializer,
                            name="conv1_conv")(x)
    x = _batch_norm("conv1_bn", RESNET_EPSILON)(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = mask(2)(x, "conv1_mask")
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)  # >= 0 after ReLU: zeros pad a max pool
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    blocks = blocks or RESNET_STAGES[f"resnet{depth}"]
    outputs = {}
    for stage in stages:
        x = resnet_stage(x, stage, blocks[stage - 2], 1 if stage == 2 else 2, width, kernel_initializer,
                         mask(2 ** stage))
        outputs[stage] = x
    return outputs


@keras.saving.register_keras_serializable(package="keras_frcnn")
class TopDown(keras.layers.Layer):
    """FPN's top-down step: ``[coarse, lateral]`` -> ``lateral`` + ``coarse`` upsampled ``factor``
    x by nearest neighbour (each cell repeated), cropped to ``lateral``'s size. Cell i reads
    coarse cell i // factor whatever the map sizes, so a padded batch equals each image alone.
    ``factor`` 1: two maps of one stride (MobileNetV3-FPN's), summed."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, inputs):
        coarse, lateral = inputs
        if self.factor > 1:  # each cell broadcast to factor x factor (tf.repeat's gradient logs a oneDNN error)
            f, (n, h, w, c) = self.factor, tf.unstack(tf.shape(coarse))
            cells = tf.reshape(coarse, [n, h, 1, w, 1, c])  # (not coarse[:, :, None]: LiteRT has no such slice)
            coarse = tf.reshape(tf.broadcast_to(cells, [n, h, f, w, f, c]), [n, h * f, w * f, coarse.shape[-1] or c])
        shape = tf.shape(lateral)
        return lateral + coarse[:, :shape[1], :shape[2], :]

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="keras_frcnn")
class MaskedMean(PaddingMask):
    """``[x, image_info]`` -> ``[B, 1, 1, C]``: the mean of each image's valid region at this
    stride (a squeeze-and-excitation block's global average pooling, unchanged by a padded batch's
    padding). The sum runs in float32."""

    def call(self, inputs):
        x, image_info = inputs
        shape = tf.shape(x)
        sizes = tf.minimum(self.valid_sizes(image_info), tf.cast(shape[1:3], tf.float32))
        mask = valid_mask(sizes, shape[1], shape[2])
        total = tf.reduce_sum(tf.cast(x, tf.float32) * mask, axis=[1, 2], keepdims=True)
        count = tf.maximum(sizes[:, 0] * sizes[:, 1], 1.0)
        return tf.cast(total / count[:, None, None, None], x.dtype)

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[0], 1, 1, shape[-1])


def resnet_fpn(depth=50, weights=None, width=1.0, name=None, kernel_initializer="he_normal",
               batch_norm=False, stride=4, channels=256, blocks=None):
    """ResNet-50 with a feature pyramid (Lin et al. 2017; torchvision's
    ``fasterrcnn_resnet50_fpn``): conv1..conv5 (``keras.applications``' layers and names), 1x1
    laterals on C2..C5 (``channels`` x ``width``), the top-down pathway (nearest 2x + sum), 3x3
    outputs P2..P5, and P6 = P5 subsampled (1x1 max pool, stride 2). Output: ``[P2, ..., P6]``,
    strides 4..64, each side ceil(n / stride), zero outside each image of a padded batch.
    ``weights``, ``blocks`` as ``resnet`` (the pyramid's layers start random). ``stride``: the
    finest, 4."""
    del batch_norm
    name = name or f"resnet{depth}-fpn"
    _check_stride(name, stride)
    images, image_info = _inputs()
    c = _resnet_stages(images, image_info, depth, (2, 3, 4, 5), width, kernel_initializer, blocks)
    levels = feature_pyramid([(c[stage], 2 ** stage, str(stage)) for stage in (2, 3, 4, 5)], image_info,
                             _channels(channels, width), kernel_initializer, extra_name="fpn_p6")
    base = keras.Model([images, image_info], levels, name=name)
    if weights is not None:
        reference = weights if isinstance(weights, keras.Model) else load_resnet_reference(f"resnet{depth}", weights)
        copy_weights_by_name(base, reference)
    return base


def feature_pyramid(features, image_info, units, kernel_initializer="he_normal", extra_name="fpn_pool",
                    rounding="ceil"):
    """FPN's pathways (Lin et al. 2017; torchvision's ``FeaturePyramidNetwork`` and
    ``LastLevelMaxPool``) on ``features``, ``[(tensor, stride, tag), ...]`` finest first: a 1x1
    lateral (``units`` channels) on each, the top-down sums (``TopDown``), a 3x3 output conv on
    each, and one more level, the coarsest output subsampled (1x1 max pool, stride 2). Returns the
    levels finest first, zero outside each image of a padded batch (valid sides ``rounding`` of
    n / stride: the extra level's floor(n / 2s) drops the odd last cell of a floor-rounded base,
    so that a padded batch equals each image alone there too). Layers ``fpn_inner{tag}``,
    ``fpn_layer{tag}``, ``extra_name``."""
    levels, top, top_stride = [], None, None
    for c, stride, tag in reversed(features):
        lateral = keras.layers.Conv2D(units, 1, kernel_initializer=kernel_initializer, name=f"fpn_inner{tag}")(c)
        merged = lateral if top is None else TopDown(top_stride // stride, name=f"fpn_topdown{tag}")([top, lateral])
        top = PaddingMask(stride, rounding, name=f"fpn_inner{tag}_mask")([merged, image_info])
        output = keras.layers.Conv2D(units, 3, padding="same", kernel_initializer=kernel_initializer,
                                     name=f"fpn_layer{tag}")(top)
        levels.insert(0, PaddingMask(stride, rounding, name=f"fpn_layer{tag}_mask")([output, image_info]))
        top_stride = stride
    extra = keras.layers.MaxPooling2D(1, strides=2, name=extra_name)(levels[-1])  # zeros stay zeros
    if rounding == "floor":
        extra = PaddingMask(2 * top_stride, rounding, name=f"{extra_name}_mask")([extra, image_info])
    return levels + [extra]


# MobileNetV3-Large's inverted residual blocks as keras.applications builds them (block_id 0..14):
# (expansion, output channels, depthwise kernel, stride, squeeze-and-excite, activation).
MOBILENET_V3_LARGE = (
    (1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"), (3, 24, 3, 1, False, "relu"),
    (3, 40, 5, 2, True, "relu"), (3, 40, 5, 1, True, "relu"), (3, 40, 5, 1, True, "relu"),
    (6, 80, 3, 2, False, "hard_swish"), (2.5, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"), (2.3, 80, 3, 1, False, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"), (6, 112, 3, 1, True, "hard_swish"),
    (6, 160, 5, 2, True, "hard_swish"), (6, 160, 5, 1, True, "hard_swish"), (6, 160, 5, 1, True, "hard_swish"),
)
MOBILENET_EPSILON = 1e-3  # keras.applications' MobileNetV3 batch norm
# With ImageNet weights the stem and blocks 0..5 (up to stride 8) never train, nor any batch norm:
# torchvision's trainable_backbone_layers=3 for MobileNetV3 (its features[:7] frozen) with
# FrozenBatchNorm2d.
MOBILENET_FROZEN_BLOCKS = 6


def _divisible(v, divisor=8):
    """keras.applications' (and TF-slim's) channel rounding: the nearest multiple of 8, at least
    8 and no less than 90 % of ``v``."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _mobilenet_block_prefix(block_id):
    return f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"


def _inverted_residual(x, image_info, block_id, spec, at_stride, width, kernel_initializer):
    """One MobileNetV3 block (``keras.applications``' layers and names): 1x1 expansion, k x k
    depthwise (``stride``), squeeze-and-excitation, 1x1 projection, the residual sum when shapes
    allow. The padding is zeroed before the depthwise convolution and left out of the squeeze's
    mean, the layers that mix positions. ``at_stride``: the block input's stride."""
    expansion, filters, kernel, stride, excite, activation = spec
    prefix = _mobilenet_block_prefix(block_id)
    filters = _divisible(filters * width)
    channels = x.shape[-1]

    def act(y, kind, name):
        if kind == "relu":
            return keras.layers.ReLU(name=name)(y)
        return keras.layers.Activation(kind, name=name)(y)

    shortcut = y = x
    if block_id:
        y = keras.layers.Conv2D(_divisible(channels * expansion), 1, use_bias=False,
                                kernel_initializer=kernel_initializer, name=f"{prefix}expand")(y)
        y = _batch_norm(f"{prefix}expand_bn", MOBILENET_EPSILON)(y)
        y = act(y, activation, f"{prefix}expand_{activation}")
    y = PaddingMask(at_stride, "floor", name=f"{prefix}depthwise_mask")([y, image_info])
    if stride == 2:  # keras.applications' padding for unknown sizes: floor(n / 2) outputs
        y = keras.layers.ZeroPadding2D(((kernel // 2 - 1, kernel // 2),) * 2, name=f"{prefix}depthwise_pad")(y)
    y = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same" if stride == 1 else "valid",
                                     use_bias=False, depthwise_initializer=kernel_initializer,
                                     name=f"{prefix}depthwise")(y)
    y = _batch_norm(f"{prefix}depthwise_bn", MOBILENET_EPSILON)(y)
    y = act(y, activation, f"{prefix}depthwise_{activation}")
    if excite:
        expanded = y.shape[-1]
        squeeze = MaskedMean(at_stride * stride, "floor", name=f"{prefix}squeeze_excite_avg_pool")([y, image_info])
        squeeze = keras.layers.Conv2D(_divisible(expanded * 0.25), 1, kernel_initializer=kernel_initializer,
                                      name=f"{prefix}squeeze_excite_conv")(squeeze)
        squeeze = keras.layers.ReLU(name=f"{prefix}squeeze_excite_relu")(squeeze)
        squeeze = keras.layers.Conv2D(expanded, 1, kernel_initializer=kernel_initializer,
                                      name=f"{prefix}squeeze_excite_conv_1")(squeeze)
        squeeze = keras.layers.Activation("hard_sigmoid", name=f"{prefix}squeeze_excite_hard_sigmoid")(squeeze)
        y = keras.layers.Multiply(name=f"{prefix}squeeze_excite_mul")([y, squeeze])
    y = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=kernel_initializer,
                            name=f"{prefix}project")(y)
    y = _batch_norm(f"{prefix}project_bn", MOBILENET_EPSILON)(y)
    if stride == 1 and channels == filters:
        y = keras.layers.Add(name=f"{prefix}add")([shortcut, y])
    return y


def load_mobilenet_reference(weights):
    """``keras.applications.MobileNetV3Large`` without its classifier, holding ``weights``
    ("imagenet": Keras's ``weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5``, downloaded to
    or placed in ``~/.keras/models/``; or a path)."""
    return _keras_application(keras.applications.MobileNetV3Large, "MobileNetV3-Large",
                              "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", weights,
                              include_top=False, input_shape=(None, None, 3), include_preprocessing=False)


def mobilenet_v3_fpn(weights=None, width=1.0, name="mobilenetv3-fpn", kernel_initializer="he_normal",
                     batch_norm=False, stride=32, channels=256):
    """MobileNetV3-Large (Howard et al. 2019; ``keras.applications``' layers and names, ``width``
    its alpha) with torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` pyramid: FPN on the last
    strided block's output (block 12, stride 32) and on the final 1x1 conv's (960 channels, stride
    32), plus their max-pooled stride-64 level. Output ``[P_a, P_b, P_pool]`` (``channels`` x
    ``width``), each side floor(n / stride), zero outside each image of a padded batch. The stem
    and strided depthwise convolutions pad as keras.applications' does for unknown sizes (k // 2
    - 1 rows / columns before, k // 2 after: floor(n / 2) outputs, every input read), fixed
    whatever the image size, so its ImageNet weights compute as in Keras. ``weights``: None,
    "imagenet", a path (Keras's MobileNetV3-Large file without the top) or a keras.applications
    MobileNetV3Large to copy from; the pyramid's layers start random. ``stride``: 32 only."""
    del batch_norm
    _check_stride("mobilenetv3-fpn", stride)
    images, image_info = _inputs()
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="conv_pad")(images)
    x = keras.layers.Conv2D(16, 3, strides=2, use_bias=False, kernel_initializer=kernel_initializer,
                            name="conv")(x)
    x = _batch_norm("conv_bn", MOBILENET_EPSILON)(x)
    x = keras.layers.Activation("hard_swish", name="conv_hard_swish")(x)
    at_stride, outputs = 2, {}
    for block_id, spec in enumerate(MOBILENET_V3_LARGE):
        x = _inverted_residual(x, image_info, block_id, spec, at_stride, width, kernel_initializer)
        at_stride *= spec[3]
        outputs[block_id] = x
    x = keras.layers.Conv2D(_divisible(x.shape[-1] * 6), 1, use_bias=False, kernel_initializer=kernel_initializer,
                            name="conv_1")(x)
    x = _batch_norm("conv_1_bn", MOBILENET_EPSILON)(x)
    x = keras.layers.Activation("hard_swish", name="conv_1_hard_swish")(x)
    levels = feature_pyramid([(outputs[12], 32, "0"), (x, 32, "1")], image_info, _channels(channels, width),
                             kernel_initializer, extra_name="fpn_pool", rounding="floor")
    base = keras.Model([images, image_info], levels, name=name)
    if weights is not None:
        reference = weights if isinstance(weights, keras.Model) else load_mobilenet_reference(weights)
        copy_weights_by_name(base, reference)
    return base


def copy_weights_by_name(model, reference):
    """Every layer of ``model`` with weights takes those of ``reference``'s layer of its name
    (layers ``reference`` lacks, a feature pyramid's, keep theirs)."""
    names = {layer.name for layer in reference.layers}
    for layer in model.layers:
        if layer.weights and layer.name in names:
            layer.set_weights(reference.get_layer(layer.name).get_weights())


BACKBONES = {"vgg16": vgg16, "zf": zf,
             "resnet50": lambda **kw: resnet(50, **kw), "resnet101": lambda **kw: resnet(101, **kw),
             "resnet50-fpn": lambda **kw: resnet_fpn(50, **kw), "mobilenetv3-fpn": mobilenet_v3_fpn}

ZF_IMAGENET = (
    "ImageNet weights for ZF are not in Keras (it ships VGG-16's): pass --weights PATH, a weights "
    "file of this package's ZF base (e.g. converted from the paper's ZF caffemodel), or --weights "
    "none to train ZF from random weights, which will stay far below the paper's 59.9 mAP (the "
    "shapes preset shows what training from scratch needs: batch norm, He init, unit-scale input)")


def check_weights(backbone, weights, fetch=False):
    """``ConfigError`` when ``weights`` cannot be had for ``backbone``: ImageNet weights for ZF, a
    weights file that is not there; with ``fetch``, ImageNet weights Keras can neither find in its
    cache nor download (they are fetched now, once, so that a run stops before its data is read,
    not after)."""
    if backbone == "zf" and weights == "imagenet":
        raise ConfigError(ZF_IMAGENET)
    if isinstance(weights, str) and weights != "imagenet" and not os.path.isfile(weights):
        raise ConfigError(f"--weights {weights}: no such file")
    if fetch and weights == "imagenet":
        IMAGENET_REFERENCES[backbone]("imagenet")


# The keras.applications model whose ImageNet weights each base starts from.
IMAGENET_REFERENCES = {
    "vgg16": load_vgg16_reference,
    "resnet50": functools.partial(load_resnet_reference, "resnet50"),
    "resnet101": functools.partial(load_resnet_reference, "resnet101"),
    "resnet50-fpn": functools.partial(load_resnet_reference, "resnet50"),
    "mobilenetv3-fpn": load_mobilenet_reference,
}


def build_base(name, weights=None, width=1.0, kernel_initializer="glorot_uniform", batch_norm=False,
               stride=16, blocks=()):
    """The base named ``name`` ("vgg16", "zf", "resnet50", "resnet101", "resnet50-fpn") at
    feature ``stride`` (``config.BASE_STRIDES``); ``kernel_initializer`` for random weights;
    ``blocks``: a ResNet's bottlenecks per stage (empty: its depth's)."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    extra = {"blocks": tuple(blocks)} if blocks else {}
    return builder(weights=weights, width=width, kernel_initializer=kernel_initializer,
                   batch_norm=batch_norm, stride=stride, **extra)


def _check_stride(name, stride):
    if stride not in BASE_STRIDES[name]:
        raise ValueError(f"the {name} base has stride {' or '.join(map(str, BASE_STRIDES[name]))}, "
                         f"not {stride}")


def always_frozen_layers(base, name):
    """The layers of ``base`` that the paper never trains (VGG-16 conv1_1..conv2_2)."""
    return [base.get_layer(layer_name) for layer_name in ALWAYS_FROZEN[name]]


def frozen_layers(layers, name, pretrained):
    """Of ``layers`` (a base's or a head's), those that never train for backbone ``name``:
    VGG-16's conv1_1..conv2_2 always; with pretrained weights, an ImageNet ResNet's stem and
    conv2 stage and all its batch norms (``RESNET_FROZEN_PREFIXES``), an ImageNet MobileNetV3's
    stem, blocks 0..5 and all its batch norms (``MOBILENET_FROZEN_BLOCKS``)."""
    if name not in RESNET_STAGES and name != "mobilenetv3-fpn":
        return [layer for layer in layers if layer.name in ALWAYS_FROZEN[name]]
    if not pretrained:
        return []
    if name == "mobilenetv3-fpn":
        prefixes = ("conv_bn", "expanded_conv_depthwise", "expanded_conv_project") + tuple(
            _mobilenet_block_prefix(i) for i in range(1, MOBILENET_FROZEN_BLOCKS))
        return [layer for layer in layers if layer.name == "conv" or layer.name.startswith(prefixes)
                or isinstance(layer, keras.layers.BatchNormalization)]
    return [layer for layer in layers if layer.name.startswith(RESNET_FROZEN_PREFIXES)
            or isinstance(layer, keras.layers.BatchNormalization)]
