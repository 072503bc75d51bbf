"""The networks: one set of layers, several Keras models over it.

``build_models(config, num_classes, weights)`` returns a ``Networks``: ``.model``, the inference
``FasterRCNN`` (a ``keras.Model``, uint8 images in, detections out) that owns every layer, and
the training views that reuse those very layer objects:

- ``rpn_model``: base + RPN head, trained with ``loss_objectness`` and ``loss_rpn_box_reg``;
- ``detector_model``: base + RoI pooling + detector head on given proposals, trained with
  ``loss_classifier`` and ``loss_box_reg``;
- ``joint_model``: approximate joint training, the four losses summed, the RPN's proposals
  treated as constants.

So ``rpn_model`` and ``detector_model`` hold the same base variables, and what one stage trains
the next one sees. ``prepare(...)`` sets the trainable flags of a stage and compiles a view with a
fresh optimizer (Keras silently keeps training the old variable set otherwise).

Training views take the batches of ``keras_frcnn.data.pipeline``: ``images`` uint8 ``[B, H, W, 3]``
already resized and zero padded, ``image_info`` ``[B, 3]`` (valid h, w, scale), ``gt_boxes``
``[B, G, 4]`` resized pixels, ``gt_classes`` ``[B, G]`` (1..N, 0 padding), and for the detector
view ``proposals`` ``[B, P, 4]`` with ``num_proposals`` ``[B]``.

A ``.keras`` file of the inference model holds the whole network once;
``keras.models.load_model`` rebuilds it from the stored config, and ``model.networks()`` gives
its training views again.
"""

import contextlib
import dataclasses
import math
import weakref

import keras
import tensorflow as tf

from keras_frcnn import losses
from keras_frcnn.anchors import Anchors, PyramidAnchors
from keras_frcnn.backbone import (batch_norm_pairs, build_base, check_weights, copy_weights_by_name, folded_model,
                                  folded_weights, frozen_layers, load_mobilenet_reference, load_resnet_reference,
                                  load_vgg16_reference)
from keras_frcnn.config import (INFERENCE_PRECISIONS, MIXED_PRECISIONS, PYRAMID_ROI_LEVELS, PYRAMID_STRIDES,
                                RES5_HEAD_BACKBONES, Config, feature_rounding, resolve_precision)
from keras_frcnn.heads import DetectorHead, Res5Head
from keras_frcnn.postprocess import Detections
from keras_frcnn.preprocessing import ImageSizes, Preprocess
from keras_frcnn.proposals import Proposals
from keras_frcnn.roi_pooling import PyramidRoIAlign, RoIPooling
from keras_frcnn.rpn import RPNHead
from keras_frcnn.targets import AnchorTargets, ProposalTargets

VIEWS = ("rpn", "detector", "joint")


@contextlib.contextmanager
def dtype_policy(name):
    """Layers built inside take the Keras dtype policy ``name`` (unless they fix their own)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _as_config(config):
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config.from_dict(config)
    raise TypeError(f"config must be a keras_frcnn.Config or its dict, got {type(config).__name__}")


class _Layers:
    """Every layer of the network, built once from the config."""

    def __init__(self, cfg: Config, num_classes: int):
        self.preprocess = Preprocess(cfg.image.min_side, cfg.image.max_side, cfg.image.pixel_means,
                                     pixel_scale=cfg.image.pixel_scale,
                                     channel_order=cfg.image.channel_order, name="preprocess")
        self.image_sizes = ImageSizes(name="image_sizes")
        self.base = build_base(cfg.backbone, weights=None, width=cfg.backbone_width,
                               kernel_initializer=cfg.base_initializer,
                               batch_norm=cfg.base_batch_norm, stride=cfg.anchors.stride,
                               blocks=cfg.backbone_blocks)
        if cfg.fold_batch_norm:  # the inference form (FasterRCNN.for_inference)
            self.base = folded_model(self.base)
        self.rpn_head = RPNHead(cfg.rpn.channels, cfg.anchors.num_anchors, name="rpn_head")
        pyramid = PYRAMID_STRIDES.get(cfg.backbone, ())
        self.pyramid = pyramid
        if pyramid:
            self.anchors = PyramidAnchors(pyramid, cfg.anchors.ratios, cfg.anchors.scales, cfg.anchors.sizes,
                                          name="anchors")
        else:
            self.anchors = Anchors(cfg.anchors.stride, cfg.anchors.base_size, cfg.anchors.ratios,
                                   cfg.anchors.scales, name="anchors")
        self.proposals = proposal_layer(cfg, cfg.rpn.pre_nms_top_n, cfg.rpn.post_nms_top_n, name="proposals")
        if pyramid:  # RoIs pool from the first levels (config.PYRAMID_ROI_LEVELS: P2..P5 of P2..P6)
            self.roi_levels = PYRAMID_ROI_LEVELS[cfg.backbone]
            self.roi_pooling = PyramidRoIAlign(cfg.detector.pool_size, pyramid[:self.roi_levels],
                                               rounding=feature_rounding(cfg.backbone), name="roi_pooling")
        else:
            self.roi_pooling = RoIPooling(cfg.detector.pool_size, 1.0 / cfg.anchors.stride,
                                          cfg.detector.pool_mode, max_levels=roi_table_levels(cfg),
                                          rounding=feature_rounding(cfg.backbone), name="roi_pooling")
        if cfg.backbone in RES5_HEAD_BACKBONES:
            self.detector_head = Res5Head(num_classes, self.base.output.shape[-1], cfg.backbone_width,
                                          blocks=cfg.backbone_blocks[3] if cfg.backbone_blocks else 3,
                                          fold_batch_norm=cfg.fold_batch_norm, name="detector_head")
        else:
            self.detector_head = DetectorHead(num_classes, cfg.detector.fc_units, cfg.detector.dropout,
                                              name="detector_head")
        self.detections = Detections(cfg.detector.score_threshold, cfg.detector.nms_iou,
                                     cfg.detector.max_detections, cfg.detector.box_stds,
                                     name="detections")

    # The network's stages, shared by the inference model, the training views and the proposal
    # dump of the alternating schedule.

    def rpn(self, features):
        """features ``[B, H, W, C]`` (or a pyramid's list) -> ``(objectness_logits [B, A],
        rpn_deltas [B, A, 4], anchors [A, 4], anchor_levels [A] or None)``, A = H * W * k
        (summed over a pyramid's levels, whose anchors each carry their level's index)."""
        objectness_logits, rpn_deltas = self.rpn_head(features)
        if self.pyramid:
            anchors, levels = self.anchors(features)
            return objectness_logits, rpn_deltas, anchors, levels
        return objectness_logits, rpn_deltas, self.anchors(features), None

    def propose(self, layer, objectness_logits, rpn_deltas, anchors, levels, image_info, training=False):
        """``layer`` (a ``Proposals``) on the RPN's outputs."""
        inputs = [objectness_logits, rpn_deltas, anchors, image_info] + ([] if levels is None else [levels])
        return layer(inputs, training=training)

    def detector(self, features, rois, image_info=None, training=False, feature_gradient=False, image_seeds=None):
        """features and RoIs ``[B, R, 4]`` (input pixels) -> ``(class_logits [B, R, K],
        box_deltas [B, R, K, 4])``. With ``image_info`` (inference) each image's RoIs pool from its
        valid region only, so a padded batch's images are pooled as each alone (``RoIPooling``);
        the training views pool from the padded batch's map as it is (see ``detector_outputs``).
        ``feature_gradient``: the features are trained through the RoI pooling (not at inference,
        not on a frozen base). ``image_seeds``: per-image seeds of the training draws (the head's
        dropout)."""
        if self.pyramid:
            features = list(features[:self.roi_levels])
        inputs = [features, rois] if image_info is None else [features, rois, image_info]
        roi_features = self.roi_pooling(inputs, feature_gradient=feature_gradient)
        return self.detector_head(roi_features, training=training, image_seeds=image_seeds)


def unnamed_classes(count) -> list:
    """The class names of a model built with a count of classes alone."""
    return [f"class_{i}" for i in range(count)]


def proposal_layer(cfg: Config, pre_nms_top_n, post_nms_top_n, name=None):
    """The ``Proposals`` layer of ``cfg``'s network with these top-N pairs."""
    return Proposals(pre_nms_top_n, post_nms_top_n, cfg.rpn.nms_iou, cfg.rpn.min_size, cfg.anchors.stride,
                     feature_rounding(cfg.backbone), level_strides=PYRAMID_STRIDES.get(cfg.backbone, ()),
                     score_threshold=cfg.rpn.score_threshold, name=name)


def roi_table_levels(cfg: Config) -> int:
    """Sparse-table levels that make RoI max pooling exact for every RoI inside a resized image:
    a bin spans at most ceil((S + 2) / P) + 1 cells for a feature side of S cells."""
    side = math.ceil(cfg.image.max_side / cfg.anchors.stride)
    longest_bin = math.ceil((side + 2) / cfg.detector.pool_size) + 1
    return max(1, longest_bin.bit_length())


def forward(layers, images, image_sizes=None, original_sizes=None):
    """The inference data path: uint8 images ``[B, H, W, 3]`` (with optional valid ``image_sizes``
    ``[B, 2]`` of a padded batch) -> the detection dict. Used to build the Keras model and, with
    sizes, for padded batches and the exported signatures. ``original_sizes`` ``[B, 2]``: the
    images come resized (``layers.preprocess`` with ``resize=False``, ``image_sizes`` their
    ``[B, 3]`` (h', w', scale)), the detections are of images of those sizes."""
    if image_sizes is None:
        processed, image_info = layers.preprocess(images)
        original_sizes = layers.image_sizes(images)
    else:
        processed, image_info = layers.preprocess([images, image_sizes])
        original_sizes = image_sizes if original_sizes is None else original_sizes
    features = layers.base([processed, image_info])
    objectness_logits, rpn_deltas, anchors, levels = layers.rpn(features)
    proposals, _, num_proposals = layers.propose(layers.proposals, objectness_logits, rpn_deltas, anchors,
                                                 levels, image_info)
    class_logits, box_deltas = layers.detector(features, proposals, image_info)
    return layers.detections([class_logits, box_deltas, proposals, num_proposals, image_info,
                              original_sizes])


@keras.saving.register_keras_serializable(package="keras_frcnn")
class FasterRCNN(keras.Model):
    """The inference model: uint8 ``images [B, H, W, 3]`` of any size -> ``{"boxes",
    "confidence", "labels", "num_detections"}`` (see ``postprocess.Detections``).

    Also the owner of the training views (``rpn_model``, ``detector_model``, ``joint_model``) and
    of the trainable toggles. ``class_names`` travel with the model into ``.keras`` files and
    exported SavedModels.
    """

    def __init__(self, config, num_classes, class_names=None, **kwargs):
        cfg = _as_config(config)
        if cfg.precision == "auto":  # stored resolved: the model computes alike wherever it loads
            # Keras's global policy, where the user set a mixed one (keras.mixed_precision.set_global_policy),
            # else the CPU's choice.
            chosen = keras.config.dtype_policy().name
            cfg = dataclasses.replace(cfg, precision=chosen if chosen in ("mixed_float16", "mixed_bfloat16")
                                      else resolve_precision("auto")[0])
        num_classes = int(num_classes)
        if class_names is None:
            class_names = unnamed_classes(num_classes)
        # data.examples.class_name's rule, as every data source gives names (a model saved before they did,
        # holding "person ", matches its data, checkpoints and label files again); written out here, as
        # importing keras_frcnn.data would add its loaders to `import keras_frcnn` (~0.2 s).
        class_names = [str(n).strip() for n in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        with dtype_policy(cfg.precision):
            layers = _Layers(cfg, num_classes)
            images = keras.Input((None, None, 3), dtype="uint8", name="images")
            super().__init__(inputs=images, outputs=forward(layers, images), **kwargs)
        self.frcnn_config = cfg
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.base = layers.base
        self.rpn_head = layers.rpn_head
        self.detector_head = layers.detector_head
        # Plain Python objects, which Keras neither tracks nor saves: the layers are this model's
        # own already, and the training views are never saved.
        self.layers_ = layers
        self._networks = None
        # Keras's jit_compile="auto" (XLA where a GPU is) leaves predict / evaluate uncompiled: XLA
        # compiles this network, but a batch of two ran for minutes on the CPU (TF 2.21, in the
        # NMS loop of XLA's NonMaxSuppressionV4 inside the batch's loop; one image: 0.1 s). The
        # training views compile (``train.jit_compile``); export.py --jit compiles it per image.
        self.supports_jit = False

    def networks(self):
        """The training views over this model's layers (built once): a ``Networks``."""
        if self.frcnn_config.fold_batch_norm:
            raise ValueError("this model's batch norms are folded into its convolutions (an inference form, "
                             "see for_inference()): train the model it was made from")
        precision = self.frcnn_config.precision
        if precision in MIXED_PRECISIONS:
            mixed = MIXED_PRECISIONS[precision]
            raise ValueError(f"this model holds its weights in {precision} (an inference form, see "
                             f"for_inference()): train its {mixed} or float32 form "
                             f"(with_precision({mixed!r}))")
        if self._networks is None:
            with dtype_policy(self.frcnn_config.precision):
                self._networks = Networks(self)
        return self._networks

    def with_precision(self, precision):
        """This network with another dtype policy ("float32", "mixed_float16",
        "mixed_bfloat16", or the 16-bit inference forms "float16", "bfloat16"): a new
        ``FasterRCNN`` holding copies of these weights, rounded to the policy's variable dtype."""
        return self._with_config(dataclasses.replace(self.frcnn_config, precision=precision))

    def at_scale(self, min_side, max_side=None):
        """This network resizing its inputs to another test scale (shorter side ``min_side``,
        longer at most ``max_side``, default unchanged or 1.5x ``min_side`` if that is larger):
        a new ``FasterRCNN`` holding copies of these weights."""
        image = self.frcnn_config.image
        if max_side is None:
            max_side = max(image.max_side, int(round(1.5 * min_side)))
        image = dataclasses.replace(image, min_side=int(min_side), max_side=int(max_side))
        return self._with_config(dataclasses.replace(self.frcnn_config, image=image))

    def _with_config(self, cfg):
        if self.frcnn_config.fold_batch_norm and not cfg.fold_batch_norm:
            raise ValueError("this model's batch norms are folded into its convolutions (an inference form, see "
                             "for_inference()): they cannot be taken out again; use the model it was made from")
        other = FasterRCNN(cfg, self.num_classes, self.class_names, name=self.name)
        if cfg.fold_batch_norm and not self.frcnn_config.fold_batch_norm:
            self._copy_folded(other)
        else:
            other.set_weights(self.get_weights())
        return other

    def _copy_folded(self, other):
        """``other`` (this network with ``fold_batch_norm``) takes these weights, each folded
        convolution its convolution's and batch norm's (``backbone.folded_weights``). Variables
        pair by path: layer names are unique in the network."""
        folds = {}
        for model in (layer for layer in self._flatten_layers(include_self=False) if isinstance(layer, keras.Model)):
            for norm, conv in batch_norm_pairs(model).items():
                conv = model.get_layer(conv)
                folds[conv.kernel.path.rsplit("/", 1)[0]] = folded_weights(conv, model.get_layer(norm))
        sources = {variable.path: variable for variable in self.weights}
        for variable in other.weights:
            layer, name = variable.path.rsplit("/", 1)
            if layer in folds:
                variable.assign(folds[layer][0 if name == "kernel" else 1])
            else:
                variable.assign(keras.ops.convert_to_numpy(sources[variable.path]))

    def for_inference(self, fold_batch_norm=True):
        """This network as inference needs it, a copy where that differs from this model:
        - under a mixed policy, the weights held in the compute dtype ("mixed_bfloat16" ->
          "bfloat16", "mixed_float16" -> "float16"), so that no call casts them (fc6 alone is
          103 M weights in VGG-16) and the model is half the size; batch norm statistics stay
          float32; the arithmetic, and so the detections, are the mixed policy's;
        - with ``fold_batch_norm`` (the default), each batch norm folded into the convolution
          before it (``Config.fold_batch_norm``; ResNet / MobileNet bases and heads, a ZF or
          VGG-16 base with batch norm): one convolution instead of a convolution and a pass over
          its output (ResNet-50-FPN's base 11 % faster in float32, 21 % in bfloat16, MobileNetV3's
          35 / 61 %); the same function, its outputs rounded otherwise (float32: ~1e-5 of the
          features; bfloat16: the folded kernel is rounded where the output of the convolution was).
        A float32 model without batch norm is returned as it is. The copy cannot be trained
        (``networks()`` refuses): train this model and call this again."""
        cfg = self.frcnn_config
        precision = INFERENCE_PRECISIONS.get(cfg.precision, cfg.precision)
        fold = cfg.fold_batch_norm or (fold_batch_norm and any(
            isinstance(layer, keras.layers.BatchNormalization) for layer in self._flatten_layers(include_self=False)))
        if (precision, fold) == (cfg.precision, cfg.fold_batch_norm):
            return self
        return self._with_config(dataclasses.replace(cfg, precision=precision, fold_batch_norm=fold))

    def call(self, inputs, training=None, mask=None, **kwargs):
        """The inference model always infers: ``training=True`` (a mistake, or Keras passing it
        along) would otherwise run batch norm on batch statistics and update its moving ones. A
        batch known to be empty gives empty outputs (TensorFlow's convolutions fail on it)."""
        if getattr(inputs, "shape", None) is not None and inputs.shape[:1] == (0,):
            return self._empty_outputs()
        return super().call(inputs, training=False, mask=mask, **kwargs)

    def _empty_outputs(self) -> dict:
        return {name: tf.zeros([0, *output.shape[1:]], output.dtype) for name, output in self.output.items()}

    def detect(self, images, image_sizes=None):
        """Detections for a padded batch: ``image_sizes [B, 2]`` gives each image's valid (h, w);
        each image's detections equal those of the image run alone. Sizes not one positive (h, w)
        within the padded batch per image: ``InvalidArgumentError`` naming ``image_sizes``."""
        images = tf.convert_to_tensor(images, tf.uint8)
        if images.shape[:1] == (0,):
            return self._empty_outputs()
        if image_sizes is None:
            return forward(self.layers_, images)
        sizes = tf.convert_to_tensor(image_sizes, tf.int32)
        padded = tf.shape(images)
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(sizes), tf.stack([padded[0], 2]),
                message="image_sizes: one (height, width) per image of the batch, shape [B, 2]")]):
            checks = [tf.debugging.assert_positive(sizes, message="image_sizes: each image's (height, width) >= 1"),
                      tf.debugging.assert_less_equal(
                          sizes, padded[None, 1:3],
                          message="image_sizes: each image's (height, width) within the padded batch's [H, W]")]
        with tf.control_dependencies(checks):
            return forward(self.layers_, images, tf.identity(sizes))

    def get_config(self):
        return {"config": self.frcnn_config.to_dict(), "num_classes": self.num_classes,
                "class_names": list(self.class_names), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class Networks:
    """The inference ``model`` and its training views, all over one set of layers.

    ``base``, ``model`` (the ``FasterRCNN``), ``rpn_model``, ``detector_model``, ``joint_model``,
    and the trainable toggles: ``set_trainable`` and ``prepare``.
    """

    def __init__(self, model):
        self.model = model
        self.config = model.frcnn_config
        self.base = model.base
        self.rpn_head = model.rpn_head
        self.detector_head = model.detector_head
        layers = model.layers_
        self.rpn_model = RPNTrainer(layers, self.config, name="rpn_model")
        self.detector_model = DetectorTrainer(layers, self.config, name="detector_model")
        self.joint_model = JointTrainer(layers, self.config, name="joint_model")
        for view in (self.rpn_model, self.detector_model, self.joint_model):
            view._network = weakref.ref(model)  # what the view's save() writes (a weak reference: not tracked)
        self._used_optimizers = weakref.WeakSet()

    def view(self, name):
        if name not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {name!r}")
        return getattr(self, f"{name}_model")

    def detect(self, images, image_sizes=None):
        return self.model.detect(images, image_sizes)

    def set_trainable(self, base=True, rpn_head=True, detector_head=True):
        """Which parts train. The always-frozen layers stay frozen (VGG-16 conv1_1..conv2_2; an
        ImageNet ResNet's conv1, conv2 and batch norms, ``backbone.frozen_layers``). Views
        compiled before must be compiled again: use ``prepare``."""
        self.base.trainable = True
        for layer in self.base.layers:
            layer.trainable = bool(base)
        self.rpn_head.trainable = bool(rpn_head)
        self.detector_head.trainable = bool(detector_head)
        head_layers = getattr(self.detector_head, "res5", None)
        for layer in frozen_layers(self.base.layers + (head_layers.layers if head_layers else []),
                                   self.config.backbone, self.config.weights is not None):
            layer.trainable = False

    def frozen_by_hand(self) -> list:
        """Names of the layers frozen by hand (``trainable = False``, Keras's way) that the schedule
        would train: ``set_trainable`` (each stage's ``prepare``) makes them trainable again."""
        head_layers = getattr(self.detector_head, "res5", None)
        by_design = {id(layer) for layer in frozen_layers(self.base.layers + (head_layers.layers if head_layers else []),
                                                           self.config.backbone, self.config.weights is not None)}
        parts = [self.model, self.base, *self.base.layers, self.rpn_head, self.detector_head]
        return [part.name for part in parts if part.weights and not part.trainable and id(part) not in by_design]

    def prepare(self, view, optimizer, base=True, rpn_head=True, detector_head=True, **compile_kwargs):
        """Set a stage's trainable flags and compile the ``view`` ("rpn", "detector", "joint")
        with ``optimizer``, which must be new (an optimizer carries its variable set)."""
        model = self.view(view)
        if getattr(optimizer, "built", False) or optimizer in self._used_optimizers:
            raise ValueError("prepare() needs a fresh optimizer: this one already belongs to a "
                             "compiled model")
        self.set_trainable(base=base, rpn_head=rpn_head, detector_head=detector_head)
        model.compile(optimizer=optimizer, **compile_kwargs)
        # Built here, under the caller's strategy scope (see _Trainer._maybe_symbolic_build).
        model.optimizer.build(model.trainable_variables)
        self._used_optimizers.add(optimizer)
        model.compiled_variables = _variable_ids(model.trainable_variables)
        return model


def _variable_ids(variables):
    return frozenset(id(v) for v in variables)


class _Trainer(keras.Model):
    """A training view: shares the network's layers, computes targets in ``call`` and the losses
    in ``compute_loss``. Its Keras metrics are the named losses."""

    loss_names = ()

    def __init__(self, layers, cfg, **kwargs):
        # Under a mixed policy Keras casts a model's floating inputs to its compute dtype: the
        # batch's ground-truth boxes, image sizes and stored proposals would reach the targets in
        # bfloat16 (2 px steps from 256 px, 4 from 512; a width of 277 read as 276). The layers
        # cast what they compute on themselves.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.cfg = cfg
        # The training pipeline resizes in tf.data; here only the colour conversion and mask.
        self.to_input = Preprocess(pixel_means=cfg.image.pixel_means, resize=False,
                                   pixel_scale=cfg.image.pixel_scale, channel_order=cfg.image.channel_order,
                                   name="to_input")
        self.base = layers.base
        self.layers_ = layers  # the network's stages (the layers themselves are tracked one by one)
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in self.loss_names]
        self.compiled_variables = None

    def features(self, batch):
        processed, image_info = self.to_input([batch["images"], batch["image_info"]])
        return self.base([processed, image_info]), image_info

    def save(self, filepath, *args, **kwargs):
        """The network's ``FasterRCNN`` (every weight of every view, reloadable with
        ``keras.models.load_model``): what Keras's ``ModelCheckpoint`` saves of a training view."""
        return (self._saved() or super()).save(filepath, *args, **kwargs)

    def save_weights(self, filepath, *args, **kwargs):
        """The ``FasterRCNN``'s weights (``FasterRCNN.load_weights`` reads them), as ``save``."""
        return (self._saved() or super()).save_weights(filepath, *args, **kwargs)

    def _saved(self):
        """The ``FasterRCNN`` a view of ``Networks`` saves in its place (None for a view alone)."""
        network = getattr(self, "_network", None)
        return network() if network is not None else None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        named = self.losses_from(y_pred)
        for tracker, value in zip(self.loss_trackers, named):
            tracker.update_state(value)
        total = tf.add_n(list(named))
        # Keras sums the replicas' gradients: each replica contributes its share of the mean.
        return total / tf.distribute.get_strategy().num_replicas_in_sync

    def train_step(self, data):
        logs = super().train_step(data)
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 averages a multi-worker step's outputs with reduce(axis=0), which fails on
            # scalars (tensorflow/tensorflow#72388): hand it one-element vectors.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # For a model made under a tf.distribute scope, Keras builds it before fit() from the
        # first batch averaged over the replicas, which fails on bool inputs and, under
        # MultiWorkerMirroredStrategy, on dict inputs. A prepared view needs no such build: its
        # layers are the inference model's and prepare() built its optimizer.
        if self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def fit(self, *args, **kwargs):
        if self.compiled_variables is not None and self.compiled_variables != _variable_ids(
                self.trainable_variables):
            raise RuntimeError(
                f"{self.name}: the trainable flags changed since it was compiled; call prepare(view, optimizer) "
                "again (of FasterRCNN.networks()) with a new optimizer")
        return super().fit(*args, **kwargs)


class RPNTrainer(_Trainer):
    loss_names = ("loss_objectness", "loss_rpn_box_reg")

    def __init__(self, layers, cfg, **kwargs):
        super().__init__(layers, cfg, **kwargs)
        self.rpn_head = layers.rpn_head
        self.anchors = layers.anchors
        self.anchor_targets = _anchor_targets(cfg)

    def call(self, batch, training=False):
        features, image_info = self.features(batch)
        return rpn_outputs(self, features, image_info, batch)

    def losses_from(self, y_pred):
        return losses.rpn_losses(y_pred["objectness_logits"], y_pred["rpn_deltas"],
                                 y_pred["anchor_labels"], y_pred["anchor_deltas"], self.cfg.rpn.sigma)


class DetectorTrainer(_Trainer):
    loss_names = ("loss_classifier", "loss_box_reg")

    def __init__(self, layers, cfg, **kwargs):
        super().__init__(layers, cfg, **kwargs)
        self.roi_pooling = layers.roi_pooling
        self.detector_head = layers.detector_head
        self.proposal_targets = _proposal_targets(cfg, cfg.train.detector_batch_images)

    def call(self, batch, training=False):
        features, _ = self.features(batch)
        return detector_outputs(self, features, batch["proposals"], batch["num_proposals"], batch,
                                training)

    def losses_from(self, y_pred):
        return losses.detector_losses(y_pred["class_logits"], y_pred["box_deltas"], y_pred["roi_labels"],
                                      y_pred["roi_deltas"], y_pred["roi_valid"], self.cfg.detector.sigma)


class JointTrainer(_Trainer):
    """Approximate joint training: one forward pass, four losses, proposals as constants."""

    loss_names = RPNTrainer.loss_names + DetectorTrainer.loss_names

    def __init__(self, layers, cfg, **kwargs):
        super().__init__(layers, cfg, **kwargs)
        self.rpn_head = layers.rpn_head
        self.anchors = layers.anchors
        self.proposals = layers.proposals
        self.roi_pooling = layers.roi_pooling
        self.detector_head = layers.detector_head
        self.anchor_targets = _anchor_targets(cfg)
        self.proposal_targets = _proposal_targets(cfg, cfg.train.rpn_batch_images)

    def call(self, batch, training=False):
        features, image_info = self.features(batch)
        outputs = rpn_outputs(self, features, image_info, batch)
        proposals, _, num_proposals = self.layers_.propose(
            self.proposals, outputs["objectness_logits"], outputs["rpn_deltas"], outputs["anchors"],
            outputs.get("anchor_levels"), image_info, training=True)
        outputs.update(detector_outputs(self, features, tf.stop_gradient(proposals), num_proposals,
                                        batch, training))
        return outputs

    def losses_from(self, y_pred):
        return (RPNTrainer.losses_from(self, y_pred) + DetectorTrainer.losses_from(self, y_pred))


def _anchor_targets(cfg):
    r = cfg.rpn
    return AnchorTargets(r.positive_iou, r.negative_iou, r.batch_size, r.positive_fraction,
                         r.allowed_border, cfg.anchors.stride, feature_rounding(cfg.backbone),
                         seed=cfg.train.seed, level_strides=PYRAMID_STRIDES.get(cfg.backbone, ()),
                         name="anchor_targets")


def _proposal_targets(cfg, images_per_step):
    """RoI sampling of a view whose steps hold ``images_per_step`` images (per replica):
    ``detector.batch_rois`` RoIs a step, split evenly over them (py-faster-rcnn's
    ``TRAIN.BATCH_SIZE / IMS_PER_BATCH``: 64 per image in the 2-image detector stages)."""
    d = cfg.detector
    return ProposalTargets(rois_per_image(cfg, images_per_step), d.fg_fraction, d.fg_iou, d.bg_iou,
                           d.box_stds, seed=cfg.train.seed + 1, name="proposal_targets")


def rois_per_image(cfg, images_per_step) -> int:
    return max(1, cfg.detector.batch_rois // int(images_per_step))


def rpn_outputs(view, features, image_info, batch):
    """RPN predictions and their anchor targets."""
    objectness_logits, rpn_deltas, anchors, levels = view.layers_.rpn(features)
    labels, targets = view.anchor_targets(anchors, batch["gt_boxes"], batch["gt_classes"], image_info,
                                          batch.get("sample_seed"), anchor_levels=levels)
    outputs = {"objectness_logits": objectness_logits, "rpn_deltas": rpn_deltas, "anchors": anchors,
               "anchor_labels": labels, "anchor_deltas": targets}
    if levels is not None:  # a feature pyramid's
        outputs["anchor_levels"] = levels
    return outputs


def detector_outputs(view, features, proposals, num_proposals, batch, training):
    """Sampled RoIs, their pooled features, the detector's predictions and targets.

    RoIs pool from the padded batch's map as it is (as torchvision's and Detectron2's training
    does): past the last valid cell of a smaller image, RoIAlign reads the padding's zeros, not the
    cell. Pooling each image as its valid region alone (inference's way) trained the shapes main
    job to a lower held-out VOC07 mAP in each of three seeds (0.8811 / 0.8701 / 0.8690 against
    0.8853 / 0.8780 / 0.8735; BENCHMARKS.md, "A padded batch's RoIAlign")."""
    rois, labels, targets, valid = view.proposal_targets(proposals, num_proposals, batch["gt_boxes"],
                                                         batch["gt_classes"], batch.get("sample_seed"))
    # The base's trainable flags are set before the view is compiled and traced.
    class_logits, box_deltas = view.layers_.detector(features, rois, training=training,
                                                     feature_gradient=bool(view.base.trainable_weights),
                                                     image_seeds=batch.get("sample_seed"))
    return {"class_logits": class_logits, "box_deltas": box_deltas, "rois": rois,
            "roi_labels": labels, "roi_deltas": targets, "roi_valid": valid}


def build_models(config, num_classes, weights="config", class_names=None):
    """The network for ``config``: a ``Networks`` with ``.base``, ``.rpn_model``,
    ``.detector_model``, ``.joint_model`` and ``.model`` (the inference ``FasterRCNN``), all
    sharing one set of layers.

    ``weights``: "config" takes ``config.weights``; None keeps the random initialisation;
    "imagenet" or a path loads VGG-16 weights into the base and, as the paper, VGG-16's fc1 / fc2
    into fc6 / fc7; a ResNet's into conv1..conv4 and its conv5 into the detector head; an FPN
    base takes Keras's ResNet-50 / MobileNetV3-Large weights by layer name (its pyramid keeps
    its initialisation); a ZF base takes a path to its own weights file.
    """
    cfg = _as_config(config)
    if weights == "config":
        weights = cfg.weights
    check_weights(cfg.backbone, weights)
    net = FasterRCNN(cfg, num_classes, class_names).networks()
    if weights is not None:
        if str(weights).endswith(".keras"):
            _load_detector(net, weights)
        elif cfg.backbone == "vgg16":
            _load_vgg16(net, weights)
        elif cfg.backbone in RES5_HEAD_BACKBONES:
            reference = load_resnet_reference(cfg.backbone, weights)
            copy_weights_by_name(net.base, reference)
            copy_weights_by_name(net.detector_head.res5, reference)
        elif cfg.backbone == "resnet50-fpn":  # the pyramid's layers keep their initialisation
            copy_weights_by_name(net.base, load_resnet_reference("resnet50", weights))
        elif cfg.backbone == "mobilenetv3-fpn":
            copy_weights_by_name(net.base, load_mobilenet_reference(weights))
        else:
            net.base.load_weights(weights)
    net.set_trainable()
    return net


def _load_detector(net, path):
    """Start from a trained keras_frcnn model (``model.keras``), e.g. to fine-tune a detector on
    other data: every weight of the same path and shape is copied (base, RPN, detector head). The
    class score and box layers are copied class by class, by name (background too): a class the
    model does not know starts anew; the layers whose shapes differ otherwise (the RPN's for other
    anchors) keep their initialisation. What starts anew is named in a warning."""
    import logging

    from keras_frcnn.config import ConfigError

    try:
        source = keras.models.load_model(path)
        theirs = {variable.path: variable for variable in source.weights}
        source_backbone, source_classes = source.frcnn_config.backbone, list(source.class_names)
    except Exception as error:  # not a zip, another Keras model ...
        raise ConfigError(f"--weights {path}: not a keras_frcnn .keras model ({type(error).__name__}: "
                          f"{str(error)[:200]})") from None
    # Column c of cls_score (c = 0: background) and columns 4c..4c+3 of bbox_pred, by class name.
    columns = [0] + [source_classes.index(name) + 1 if name in source_classes else -1
                     for name in net.model.class_names]
    base = {id(variable) for variable in net.base.weights}
    copied, left = set(), []
    for variable in net.model.weights:
        other = theirs.get(variable.path)
        layer = variable.path.split("/")[-2]
        if other is not None and layer in ("cls_score", "bbox_pred") and other.shape[:-1] == variable.shape[:-1]:
            width = 1 if layer == "cls_score" else 4
            value, given = variable.numpy(), keras.ops.convert_to_numpy(other).astype(variable.dtype)
            for mine, its in enumerate(columns):
                if its >= 0 and (its + 1) * width <= given.shape[-1]:
                    value[..., mine * width:(mine + 1) * width] = given[..., its * width:(its + 1) * width]
            variable.assign(value)
            copied.add(id(variable))
        elif other is not None and tuple(other.shape) == tuple(variable.shape):
            variable.assign(keras.ops.cast(other, variable.dtype))
            copied.add(id(variable))
        else:
            left.append(variable.path)
    if not base & copied:
        raise ConfigError(f"--weights {path}: its base ({source_backbone}) has none of this run's base's "
                          f"weights ({net.model.frcnn_config.backbone}, {net.model.frcnn_config.backbone_width}x "
                          "width): give the same --backbone and width, or another starting point")
    log = logging.getLogger("keras_frcnn")
    if left:
        layers = sorted({name.rsplit("/", 1)[0] for name in left})
        log.warning("--weights %s: these layers start anew (other shapes here): %s", path, ", ".join(layers))
    new = [name for name, its in zip(net.model.class_names, columns[1:]) if its < 0]
    if len(new) == len(net.model.class_names):
        log.warning("--weights %s: none of its classes is one of this run's %d: the class score and box layers "
                    "start anew", path, len(new))
    elif new:
        log.warning("--weights %s: classes it does not know start anew in the class score and box layers: %s%s",
                    path, ", ".join(new[:20]), f" and {len(new) - 20} more" if len(new) > 20 else "")


def _load_vgg16(net, weights):
    reference = load_vgg16_reference(weights)
    for layer in net.base.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    head = net.detector_head
    if head.fc6.kernel.shape == reference.get_layer("fc1").kernel.shape:
        head.fc6.set_weights(reference.get_layer("fc1").get_weights())
        head.fc7.set_weights(reference.get_layer("fc2").get_weights())
