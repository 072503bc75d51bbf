"""One configuration for the whole detector: a frozen dataclass tree.

Defaults are the paper's (Ren et al. 2015, py-faster-rcnn's VOC settings); see
``../shared/REFERENCE.md``. Train/test settings that differ come as ``(train, test)`` pairs.
The dataclasses stop at the builders: layers take plain keyword arguments.

    cfg = preset("shapes")
    cfg = dataclasses.replace(cfg, rpn=dataclasses.replace(cfg.rpn, nms_iou=0.6))
    Config.from_json(cfg.to_json()) == cfg
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field

BACKBONES = ("vgg16", "zf", "resnet50", "resnet101", "resnet50-fpn", "mobilenetv3-fpn")
# The feature strides each base can be built with (anchors.stride): ZF also at 8 (backbone.zf); a
# feature pyramid's finest level (its levels: PYRAMID_STRIDES).
BASE_STRIDES = {"vgg16": (16,), "zf": (8, 16), "resnet50": (16,), "resnet101": (16,), "resnet50-fpn": (4,),
                "mobilenetv3-fpn": (32,)}
# Feature pyramids: the strides of their levels, finest first. ResNet-50-FPN: P2..P6. MobileNetV3-
# Large-FPN as torchvision's fasterrcnn_mobilenet_v3_large_fpn: two maps at stride 32 (the pyramid
# on the last strided block's output and on the final 1x1 conv's) and their max-pooled stride 64.
PYRAMID_STRIDES = {"resnet50-fpn": (4, 8, 16, 32, 64), "mobilenetv3-fpn": (32, 32, 64)}
# How many of a pyramid's first levels RoIs pool from: P2..P5 (not the extra P6), as torchvision
# and Detectron; MobileNetV3-FPN's first map only (torchvision's MultiScaleRoIAlign, given two maps
# of one stride, assigns every RoI to the first).
PYRAMID_ROI_LEVELS = {"resnet50-fpn": 4, "mobilenetv3-fpn": 1}
# Bases whose detector head is their own last stage (ResNet's conv5 on 14 x 14 RoIAlign features,
# heads.Res5Head) rather than fc6 / fc7 (heads.DetectorHead).
RES5_HEAD_BACKBONES = ("resnet50", "resnet101")
SCHEDULES = ("alternating", "joint")
POOL_MODES = ("max", "align")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16", "float16", "bfloat16")
# The inference form of each mixed policy: the same arithmetic with the weights held in 16 bits
# (FasterRCNN.for_inference), so that no call casts them. Not trainable (no float32 master weights).
INFERENCE_PRECISIONS = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
MIXED_PRECISIONS = {form: mixed for mixed, form in INFERENCE_PRECISIONS.items()}  # and back


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(condition, name, value, requirement):
    if not condition:
        raise ConfigError(f"config field {name} must be {requirement}, got {value!r}")


_KINDS = {bool: "true or false", int: "an int", float: "a number", str: "a string", type(None): "null"}


def _of_kind(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _as_kind(value, kind):
    """``value`` as ``kind`` where it is one written otherwise: a whole float for an int (600.0)."""
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_types(config, prefix=""):
    """Each field of the dataclass tree ``config`` of its declared type, a tuple's items of the
    kind of its default's items (ints, numbers or strings), before the range checks compare them:
    a ConfigError naming the field (a config file's "16" for an int, or "false" for a bool, would
    otherwise fail later with TypeError, or pass as true). A list given for a tuple (Python's
    ``ImageConfig(train_min_sides=[600])``) is taken as the tuple, a whole float for an int as the int."""
    hints = typing.get_type_hints(type(config))
    for spec in dataclasses.fields(config):
        name, value, hint = prefix + spec.name, getattr(config, spec.name), hints[spec.name]
        if dataclasses.is_dataclass(hint):
            _check(isinstance(value, hint), name, value, f"an object of {hint.__name__}'s fields")
            _check_types(value, f"{name}.")
            continue
        if hint is tuple:
            _check(isinstance(value, (tuple, list)), name, value, "a list (a tuple in Python)")
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            kinds = {float if type(item) is int and float in map(type, default) else type(item) for item in default}
            if len(kinds) == 1:
                kind = kinds.pop()
                value = tuple(_as_kind(item, kind) for item in value)
                _check(all(_of_kind(item, kind) for item in value), name, value,
                       f"a list of {_KINDS[kind].split(' ', 1)[-1]}s" if kind is not bool else "a list of booleans")
            value = tuple(value)
        else:
            kinds = typing.get_args(hint) or (hint,)
            value = _as_kind(value, int) if int in kinds else value
            _check(any(_of_kind(value, kind) for kind in kinds), name, value, " or ".join(_KINDS[k] for k in kinds))
        for item in value if isinstance(value, tuple) else (value,):  # (a seed: its own range, below 2**32)
            _check(_in_range(item) or spec.name == "seed", name, value, f"finite, within ±{LARGEST:,}")
        if value is not getattr(config, spec.name):
            object.__setattr__(config, spec.name, value)  # (frozen: the checked value in place of the one given)


# The largest number a config field holds (an int32's): larger ones (JSON's 1e400 is Infinity, its
# 2**70 an int) would fail as tensors, or loop for ever, far from the field that gave them.
LARGEST = 2 ** 31 - 1


def _in_range(value) -> bool:
    """Whether ``value`` is no number, or a finite one within ±:data:`LARGEST` (NaN is neither)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return -LARGEST <= value <= LARGEST  # (NaN compares false)


def _known_initializer(name) -> bool:
    """Whether ``name`` names one of Keras's initializers (looked up, not made: making one draws a
    seed from Python's generator, which would change what a seeded run then draws)."""
    import keras

    return isinstance(name, str) and not name.startswith("_") and name not in ("deserialize", "get", "serialize",
                                                                                  "Initializer") \
        and name in dir(keras.initializers)


def _positive(name, value):
    _check(isinstance(value, (int, float)) and 0 < value < math.inf, name, value, "> 0 (and finite)")


def _fraction(name, value, low_open=False):
    ok = isinstance(value, (int, float)) and (0 < value <= 1 if low_open else 0 <= value <= 1)
    _check(ok, name, value, "in (0, 1]" if low_open else "in [0, 1]")


def _pair(name, value):
    _check(
        isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value),
        name, value, "a (train, test) pair of ints",
    )


@dataclass(frozen=True)
class ImageConfig:
    min_side: int = 600  # shorter side after resizing
    max_side: int = 1000  # cap on the longer side
    # Training at other scales than the test's min_side: a training batch's shorter sides are one
    # of these, drawn uniformly per batch (py-faster-rcnn's TRAIN.SCALES, Detectron's
    # MIN_SIZE_TRAIN, torchvision's min_size tuple draw per image; per batch the images pad to
    # about one size), still capped by max_side; empty: min_side. Evaluation and inference use
    # min_side; the detector stages' stored proposals are computed at proposal_side.
    train_min_sides: tuple = ()
    pixel_means: tuple = (102.9801, 115.9465, 122.7717)  # Caffe VGG-16 BGR means, 0-255 scale
    pixel_scale: float = 1.0  # times the mean-subtracted values (1: Caffe VGG-16 input)
    channel_order: str = "bgr"  # the base's input channels: "bgr" (Caffe's VGG-16, ResNet) or "rgb"
    flip: bool = True  # random horizontal flip in training

    @property
    def proposal_side(self) -> int:
        """The shorter side at which the detector stages' proposals are computed and stored: the
        training side when there is one (no rescaling), else min_side (py-faster-rcnn's dump runs
        at the test scale); each training batch rescales them to its own side."""
        return self.train_min_sides[0] if len(self.train_min_sides) == 1 else self.min_side

    def validate(self, prefix="image"):
        _positive(f"{prefix}.min_side", self.min_side)
        _positive(f"{prefix}.max_side", self.max_side)
        _check(self.max_side >= self.min_side, f"{prefix}.max_side", self.max_side,
               f">= image.min_side ({self.min_side})")
        _check(all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.train_min_sides),
               f"{prefix}.train_min_sides", self.train_min_sides, "empty or a tuple of positive ints")
        _check(len(self.pixel_means) == 3, f"{prefix}.pixel_means", self.pixel_means, "3 numbers (B, G, R)")
        _positive(f"{prefix}.pixel_scale", self.pixel_scale)
        _check(self.channel_order in ("bgr", "rgb"), f"{prefix}.channel_order", self.channel_order,
               '"bgr" or "rgb"')


@dataclass(frozen=True)
class AnchorConfig:
    stride: int = 16  # feature stride of the base
    base_size: int = 16  # side of the base anchor cell
    ratios: tuple = (0.5, 1.0, 2.0)  # h / w
    scales: tuple = (8.0, 16.0, 32.0)  # multiples of base_size: 128, 256, 512 px
    # A feature pyramid's anchor sides in pixels, all on every level (torchvision's MobileNetV3-
    # FPN: 32-512 on each); empty: one side per level, scales times the level's stride (FPN's).
    sizes: tuple = ()

    @property
    def num_anchors(self) -> int:
        return len(self.ratios) * len(self.sizes or self.scales)

    def validate(self, prefix="anchors"):
        _positive(f"{prefix}.stride", self.stride)
        _positive(f"{prefix}.base_size", self.base_size)
        _check(len(self.ratios) > 0 and all(r > 0 for r in self.ratios), f"{prefix}.ratios",
               self.ratios, "a non-empty tuple of positive numbers")
        _check(len(self.scales) > 0 and all(s > 0 for s in self.scales), f"{prefix}.scales",
               self.scales, "a non-empty tuple of positive numbers")
        _check(all(isinstance(s, (int, float)) and s > 0 for s in self.sizes), f"{prefix}.sizes",
               self.sizes, "empty or a tuple of positive numbers")


@dataclass(frozen=True)
class RPNConfig:
    channels: int = 512  # 3x3 conv width: 512 for VGG-16, 256 for ZF
    pre_nms_top_n: tuple = (12000, 6000)  # (train, test); <= 0 means no cut
    post_nms_top_n: tuple = (2000, 300)  # (train, test)
    nms_iou: float = 0.7
    min_size: int = 16  # minimum proposal side in original-image pixels (times the scale)
    # Proposals of lower objectness probability are dropped (torchvision's rpn_score_thresh: 0.05
    # for its MobileNetV3-FPN, 0 elsewhere and in the paper).
    score_threshold: float = 0.0
    positive_iou: float = 0.7
    negative_iou: float = 0.3
    batch_size: int = 256  # anchors sampled per image
    positive_fraction: float = 0.5
    allowed_border: int = 0  # anchors crossing the border by more are ignored in training
    sigma: float = 3.0  # smooth L1

    def validate(self, prefix="rpn"):
        _positive(f"{prefix}.channels", self.channels)
        _pair(f"{prefix}.pre_nms_top_n", self.pre_nms_top_n)
        _pair(f"{prefix}.post_nms_top_n", self.post_nms_top_n)
        _check(all(v > 0 for v in self.post_nms_top_n), f"{prefix}.post_nms_top_n",
               self.post_nms_top_n, "positive")
        _fraction(f"{prefix}.nms_iou", self.nms_iou, low_open=True)
        _check(self.min_size >= 0, f"{prefix}.min_size", self.min_size, ">= 0")
        _check(0 <= self.score_threshold < 1, f"{prefix}.score_threshold", self.score_threshold, "in [0, 1)")
        _fraction(f"{prefix}.positive_iou", self.positive_iou, low_open=True)
        _fraction(f"{prefix}.negative_iou", self.negative_iou)
        _check(self.negative_iou <= self.positive_iou, f"{prefix}.negative_iou", self.negative_iou,
               f"<= rpn.positive_iou ({self.positive_iou})")
        _positive(f"{prefix}.batch_size", self.batch_size)
        _fraction(f"{prefix}.positive_fraction", self.positive_fraction, low_open=True)
        _check(self.allowed_border >= 0, f"{prefix}.allowed_border", self.allowed_border, ">= 0")
        _positive(f"{prefix}.sigma", self.sigma)


@dataclass(frozen=True)
class DetectorConfig:
    pool_size: int = 7  # 7 for VGG-16, 6 for ZF
    pool_mode: str = "max"  # "max": Fast R-CNN RoI max pooling; "align": bilinear RoIAlign
    fc_units: int = 4096  # fc6 / fc7 width
    dropout: float = 0.5
    # RoIs sampled per training step (py-faster-rcnn's TRAIN.BATCH_SIZE), split evenly over the
    # step's images (per replica): 64 per image in the 2-image detector stages, 128 in 1-image
    # joint training.
    batch_rois: int = 128
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: tuple = (0.0, 0.5)  # background IoU range [low, high)
    box_stds: tuple = (0.1, 0.1, 0.2, 0.2)  # (dy, dx, dh, dw) target normalisation
    sigma: float = 1.0  # smooth L1
    score_threshold: float = 0.05
    nms_iou: float = 0.3  # per-class NMS at test time
    max_detections: int = 100

    def validate(self, prefix="detector"):
        _positive(f"{prefix}.pool_size", self.pool_size)
        _check(self.pool_mode in POOL_MODES, f"{prefix}.pool_mode", self.pool_mode, f"one of {POOL_MODES}")
        _positive(f"{prefix}.fc_units", self.fc_units)
        _check(0 <= self.dropout < 1, f"{prefix}.dropout", self.dropout, "in [0, 1)")
        _positive(f"{prefix}.batch_rois", self.batch_rois)
        _fraction(f"{prefix}.fg_fraction", self.fg_fraction, low_open=True)
        _fraction(f"{prefix}.fg_iou", self.fg_iou, low_open=True)
        _check(len(self.bg_iou) == 2 and 0 <= self.bg_iou[0] < self.bg_iou[1] <= 1,
               f"{prefix}.bg_iou", self.bg_iou, "a (low, high) pair with 0 <= low < high <= 1")
        _check(len(self.box_stds) == 4 and all(s > 0 for s in self.box_stds), f"{prefix}.box_stds",
               self.box_stds, "4 positive numbers")
        _positive(f"{prefix}.sigma", self.sigma)
        _fraction(f"{prefix}.score_threshold", self.score_threshold)
        _fraction(f"{prefix}.nms_iou", self.nms_iou, low_open=True)
        _positive(f"{prefix}.max_detections", self.max_detections)


@dataclass(frozen=True)
class TrainConfig:
    schedule: str = "alternating"  # the paper's 4-step schedule, or "joint" (approximate joint)
    # Steps per stage of the alternating schedule (1 RPN, 2 detector, 3 RPN, 4 detector), and the
    # step of each stage at which the learning rate drops by lr_drop.
    stage_steps: tuple = (80000, 40000, 80000, 40000)
    stage_lr_drop_steps: tuple = (60000, 30000, 60000, 30000)
    joint_steps: int = 70000
    joint_lr_drop_step: int = 50000
    lr: float = 1e-3
    lr_drop: float = 0.1
    # Linear warm-up over each stage's first steps, from warmup_factor x lr (0: none, the paper's
    # solvers; torchvision's and Detectron's FPN training warm up).
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    momentum: float = 0.9
    # Caffe's L2 decay through the momentum, biases at twice the learning rate and decayed as the
    # weights, as py-faster-rcnn's solvers and nets (``param { lr_mult: 2 }``: Caffe's default
    # ``decay_mult: 1``; keras_frcnn.optimizer). bias_decay_multiplier 0 leaves biases undecayed
    # (tf-faster-rcnn's BIAS_DECAY: False). True: decay decoupled from the momentum instead
    # (Keras's SGD(weight_decay=...)).
    weight_decay: float = 5e-4
    bias_lr_multiplier: float = 2.0
    bias_decay_multiplier: float = 1.0
    decoupled_weight_decay: bool = False
    # Stage 3 (RPN on the frozen shared base) starts its RPN head from the initialiser, as
    # py-faster-rcnn; True continues stage 1's head instead.
    stage3_rpn_from_stage1: bool = False
    rpn_batch_images: int = 1  # images per batch in RPN stages (and joint training)
    detector_batch_images: int = 2  # images per batch in detector stages
    seed: int = 0
    # XLA for the training steps: "auto" (Keras: on when a GPU is visible, off under a
    # tf.distribute strategy), "on" (refused under a strategy) or "off". On the
    # CPU it makes steps slower (BENCHMARKS.md). A compiled step is recompiled for every new input
    # shape, so compiled steps get batches padded to a few shapes: image sides to a multiple of
    # xla_pad_multiple pixels, ground truth to a multiple of 16 boxes, stored proposals to their
    # fixed count.
    jit_compile: str = "auto"
    xla_pad_multiple: int = 64
    # Steps that are not XLA-compiled get their images padded to a multiple of this many pixels
    # a side (1: to the batch's largest image only): oneDNN's (and cuDNN's) kernels are set up
    # anew for every input shape, and with images of many sizes nearly every batch has a new one
    # (the shapes preset's detector stage 83-86 -> 71-76 ms a step; BENCHMARKS.md). The model
    # masks the padding.
    image_pad_multiple: int = 16
    # Training images are paired by orientation (py-faster-rcnn's ASPECT_GROUPING, as Detectron2
    # and torchvision's references group): the shuffled stream is reordered in blocks of this many
    # examples by the batch's drawn side, then aspect ratio, so that a batch of landscape and
    # portrait images does not pad both to a square (data.train_dataset's aspect_group). 0 or 1:
    # the stream's order (the shapes presets).
    aspect_group: int = 16
    # Training steps per call of the compiled step (Keras's steps_per_execution): a loop of steps
    # inside one TensorFlow function, so Keras's per-step Python (the call, callbacks, progress
    # bar) runs once per this many steps. Each fit uses the largest count up to this one that
    # divides its window of logged steps, the steps left and the checkpoint interval, so
    # checkpoints, logs and a stage's end fall on the same steps as with 1. Under a tf.distribute
    # strategy (--strategy mirrored / multi-worker) steps run one per call (TF 2.21's step loop
    # fails there).
    steps_per_execution: int = 10

    def with_steps(self, steps: int) -> "TrainConfig":
        """Every stage, and joint training, ``steps`` long (``train.py --steps``), each
        learning-rate drop step and the warm-up moved in proportion (a preset's 8,000 warm-up
        steps would otherwise outlast a short run, its rate never reached). Kept in the run's
        config.json, so that ``--resume`` continues the same schedule."""
        def drop(n, at):
            return int(round(at * steps / n)) if n else steps

        longest = self.joint_steps if self.schedule == "joint" else max(self.stage_steps, default=0)
        return dataclasses.replace(
            self, stage_steps=(int(steps),) * len(self.stage_steps),
            stage_lr_drop_steps=tuple(drop(n, at) for n, at in zip(self.stage_steps, self.stage_lr_drop_steps)),
            joint_steps=int(steps), joint_lr_drop_step=drop(self.joint_steps, self.joint_lr_drop_step),
            warmup_steps=drop(longest, self.warmup_steps) if self.warmup_steps else 0)

    def validate(self, prefix="train"):
        _check(self.schedule in SCHEDULES, f"{prefix}.schedule", self.schedule, f"one of {SCHEDULES}")
        for name in ("stage_steps", "stage_lr_drop_steps"):
            value = getattr(self, name)
            _check(len(value) == 4 and all(isinstance(v, int) and v >= 0 for v in value),
                   f"{prefix}.{name}", value, "4 non-negative ints (one per stage)")
        _check(self.joint_steps >= 0, f"{prefix}.joint_steps", self.joint_steps, ">= 0")
        _check(self.joint_lr_drop_step >= 0, f"{prefix}.joint_lr_drop_step", self.joint_lr_drop_step, ">= 0")
        # The schedule that runs trains something (all zeros saved an untrained model as a success).
        if self.schedule == "joint":
            _check(self.joint_steps >= 1, f"{prefix}.joint_steps", self.joint_steps, ">= 1 for schedule \"joint\"")
        else:
            _check(sum(self.stage_steps) >= 1, f"{prefix}.stage_steps", self.stage_steps,
                   "at least one stage of steps for the alternating schedule")
        _positive(f"{prefix}.lr", self.lr)
        _check(0 < self.lr_drop <= 1, f"{prefix}.lr_drop", self.lr_drop, "in (0, 1]")
        _check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, f"{prefix}.warmup_steps",
               self.warmup_steps, "an int >= 0")
        _check(0 < self.warmup_factor <= 1, f"{prefix}.warmup_factor", self.warmup_factor, "in (0, 1]")
        _check(0 <= self.momentum < 1, f"{prefix}.momentum", self.momentum, "in [0, 1)")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, ">= 0")
        _positive(f"{prefix}.bias_lr_multiplier", self.bias_lr_multiplier)
        _check(isinstance(self.bias_decay_multiplier, (int, float)) and 0 <= self.bias_decay_multiplier < math.inf,
               f"{prefix}.bias_decay_multiplier", self.bias_decay_multiplier, ">= 0 (and finite)")
        _positive(f"{prefix}.rpn_batch_images", self.rpn_batch_images)
        _positive(f"{prefix}.detector_batch_images", self.detector_batch_images)
        _check(self.jit_compile in ("auto", "on", "off"), f"{prefix}.jit_compile", self.jit_compile,
               '"auto", "on" or "off"')
        _positive(f"{prefix}.xla_pad_multiple", self.xla_pad_multiple)
        _check(isinstance(self.image_pad_multiple, int) and self.image_pad_multiple >= 1,
               f"{prefix}.image_pad_multiple", self.image_pad_multiple, "an int >= 1")
        _check(isinstance(self.aspect_group, int) and self.aspect_group >= 0,
               f"{prefix}.aspect_group", self.aspect_group, "an int >= 0")
        _check(isinstance(self.steps_per_execution, int) and self.steps_per_execution >= 1,
               f"{prefix}.steps_per_execution", self.steps_per_execution, "an int >= 1")
        # NumPy's and TensorFlow's generators take an unsigned 32-bit seed.
        _check(isinstance(self.seed, int) and 0 <= self.seed < 2**32, f"{prefix}.seed", self.seed,
               "an int in [0, 2**32)")


@dataclass(frozen=True)
class Config:
    name: str = "voc"
    backbone: str = "vgg16"  # one of BACKBONES
    # Channel multiplier of the base (1.0 = the paper's net; MobileNetV3's alpha, to multiples of 8)
    backbone_width: float = 1.0
    weights: typing.Optional[str] = "imagenet"  # "imagenet", None (random) or a path
    base_initializer: str = "glorot_uniform"  # Keras initializer of a randomly initialised base
    base_batch_norm: bool = False  # batch normalisation after each conv of a ZF base trained from scratch
    # A ResNet's bottlenecks per stage conv2..conv5 (empty: the depth's, e.g. (3, 4, 6, 3) for
    # ResNet-50); fewer give a shallower net of the same design (the tests' tiny ResNets).
    backbone_blocks: tuple = ()
    # Keras dtype policy of the convolutions and fc layers: "mixed_float16" (GPU) or
    # "mixed_bfloat16" (CPUs with AVX-512 BF16 / AMX, TPUs) compute in 16 bits with float32
    # weights; preprocessing, anchors, proposals, targets, losses and postprocessing stay float32.
    # "auto" (resolved when the network is built, and stored so): mixed_bfloat16 on a CPU with
    # native bfloat16 (AVX512_BF16 or AMX), float32 elsewhere, GPUs included. "bfloat16" /
    # "float16": a mixed policy's inference form, weights held in 16 bits (for_inference, export).
    precision: str = "auto"
    # An inference form (for_inference, export): each batch norm folded into the convolution
    # before it (one convolution with a bias instead of a convolution and a pass over its
    # output). Such a model cannot be trained.
    fold_batch_norm: bool = False
    # A TFDS name ("voc/2007", several joined by +), "shapes" for the built-in set, or what a run
    # trained on otherwise: "voc-dir" (data_paths: the folders, the first one tests) or
    # "coco-json" (data_paths: the JSON file, its images, the held-out JSON, its images, then a JSON and
    # its images for each further file trained on; "" where not given), "yolo" (data_paths: the
    # data.yaml), "tfrecord" (data_paths: what --tfrecord named, the --label-map or ""), "csv"
    # (data_paths: what --csv named, --csv-images, --csv-classes; "" where not given), "labelme"
    # (data_paths: the folders), "via" or "cvat" (data_paths: the files or folders); a TFDS set's
    # data_paths: its --data-dir ("" for TFDS's default) and for "shapes" its --shapes-images, where
    # given. The data a later train.py --config, --resume or evaluate reads when given no data option.
    dataset: str = "voc/2007"
    data_paths: tuple = ()
    # A "voc-dir" run's class names where they were not the folder's own (--classes, or the names
    # of several folders), in label order; empty otherwise.
    classes: tuple = ()
    # A "voc-dir" run's evaluation folder (--voc-val-dir), evaluated on in place of the first
    # folder's test split; "" otherwise.
    voc_test_dir: str = ""
    train_split: str = "train+validation"
    test_split: str = "test"
    image: ImageConfig = field(default_factory=ImageConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.validate()

    def validate(self):
        _check_types(self)
        _check(self.backbone in BACKBONES, "backbone", self.backbone, f"one of {BACKBONES}")
        _check(isinstance(self.data_paths, tuple) and all(isinstance(p, str) for p in self.data_paths)
               and (len(self.data_paths) >= 1 if self.dataset == "voc-dir" else
                    len(self.data_paths) >= 4 and len(self.data_paths) % 2 == 0 if self.dataset == "coco-json" else
                    len(self.data_paths) == 1 if self.dataset == "yolo" else
                    len(self.data_paths) == 2 if self.dataset == "tfrecord" else
                    len(self.data_paths) == 3 if self.dataset == "csv" else
                    len(self.data_paths) >= 1 if self.dataset in ("labelme", "via", "cvat") else
                    len(self.data_paths) <= (2 if self.dataset == "shapes" else 1)),
               "data_paths", self.data_paths, 'the folders of dataset "voc-dir", the four paths of "coco-json" (and a '
               'JSON and its images for each further file), '
               'the data.yaml of "yolo", the records and label map of "tfrecord", the CSV, its images and classes '
               'of "csv", the folders of "labelme", the files or folders of "via" or "cvat"; for a TFDS set its '
               '--data-dir (or "") and for shapes its --shapes-images, or empty')
        _check(isinstance(self.voc_test_dir, str) and (not self.voc_test_dir or self.dataset == "voc-dir"),
               "voc_test_dir", self.voc_test_dir, 'a folder of dataset "voc-dir", or ""')
        _check(isinstance(self.classes, tuple) and all(isinstance(c, str) and c for c in self.classes)
               and len(set(self.classes)) == len(self.classes), "classes", self.classes,
               "distinct non-empty class names (or empty)")
        strides = BASE_STRIDES[self.backbone]
        _check(self.anchors.stride in strides, "anchors.stride", self.anchors.stride,
               f"the {self.backbone} base's feature stride: {' or '.join(map(str, strides))}")
        _positive("backbone_width", self.backbone_width)
        _check(self.weights is None or isinstance(self.weights, str), "weights", self.weights,
               '"imagenet", a path, or null')
        _check(self.weights != "imagenet" or self.backbone_width == 1.0, "weights", self.weights,
               "null or a path when backbone_width != 1")
        _check(self.weights != "imagenet" or not self.base_batch_norm, "base_batch_norm",
               self.base_batch_norm, "false with ImageNet weights (VGG-16 has no batch norm)")
        _check(not self.backbone_blocks or (
            self.backbone.startswith("resnet") and len(self.backbone_blocks) == 4
            and all(isinstance(b, int) and b > 0 for b in self.backbone_blocks)), "backbone_blocks",
            self.backbone_blocks, "empty, or 4 positive ints for a ResNet base")
        _check(not self.backbone_blocks or self.weights != "imagenet", "backbone_blocks", self.backbone_blocks,
               "empty with ImageNet weights (the real depth)")
        _check(self.backbone in ("vgg16", "zf") or not self.base_batch_norm, "base_batch_norm",
               self.base_batch_norm, f"false for {self.backbone} (it has its own batch norm)")
        _check(not self.anchors.sizes or self.backbone in PYRAMID_STRIDES, "anchors.sizes", self.anchors.sizes,
               f"empty for {self.backbone} (sizes are a feature pyramid's; use anchors.scales)")
        _check(self.backbone not in PYRAMID_STRIDES or self.detector.pool_mode == "align",
               "detector.pool_mode", self.detector.pool_mode, f'"align" for {self.backbone} (RoIAlign per level)')
        _check(self.precision in PRECISIONS, "precision", self.precision, f"one of {PRECISIONS}")
        _check(_known_initializer(self.base_initializer), "base_initializer", self.base_initializer,
               'the name of a Keras initializer, e.g. "glorot_uniform" or "he_normal"')
        for name in ("image", "anchors", "rpn", "detector", "train"):
            getattr(self, name).validate(name)

    # --- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent=2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        return _from_dict(cls, data, prefix="")

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            data = json.loads(text)
        except ValueError as error:  # (JSONDecodeError; also an integer of over 4,300 digits: Python's limit)
            raise ConfigError(f"config JSON is malformed: {error}") from None
        except RecursionError:
            raise ConfigError("config JSON is malformed: nested too deeply") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path) -> "Config":
        """``from_json`` of the file ``path`` (a run's ``config.json``, a ``--config``); its
        ``ConfigError`` names the file. ``OSError`` if it cannot be read."""
        with open(path, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8-sig")  # (JSON is UTF-8; a byte order mark, as some editors save, passed over)
        except UnicodeDecodeError as error:
            raise ConfigError(f"{os.fspath(path)}: not UTF-8 text, as JSON is ({error.reason} at byte "
                              f"{error.start})") from None
        try:
            return cls.from_json(text)
        except ConfigError as error:
            raise ConfigError(f"{os.fspath(path)}: {error}") from None


def _from_dict(cls, data, prefix):
    if not isinstance(data, dict):
        raise ConfigError(f"config field {prefix or '<root>'} must be an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config field {prefix}{unknown[0]}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value, prefix=f"{prefix}{name}.")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _shapes() -> Config:
    # The built-in synthetic set: ~256 px images (224-288 a side), objects of 24-128 px (8 px for
    # the border-cut ones), at their own scale. A ZF base at half width trained from scratch (no
    # ImageNet ZF exists in Keras), so: unit-scale inputs, He init and batch normalisation in the
    # base, and narrow heads, so that the full 4-step schedule runs in minutes on a CPU. Its
    # second pool has stride 1 (feature stride 8, anchors of 32-128 px): at stride 16 the smallest
    # objects span under two cells and were the ones missed (issue 14); the 1.5x upscale that
    # stride 16 needed cost as much as stride 8 at 1x. It trains at the images' own scale (short
    # side 256) and tests at 1.25x (320): the small shapes over more cells at test time; on 500
    # held-out training-distribution images that scored 0.005-0.008 VOC07 mAP above testing at
    # 256 (3 models), on the test set 0.013-0.041 (BENCHMARKS.md, issue 14).
    return Config(
        name="shapes",
        backbone="zf",
        backbone_width=0.5,
        weights=None,
        base_initializer="he_normal",
        base_batch_norm=True,
        dataset="shapes",
        train_split="train",
        test_split="test",
        image=ImageConfig(min_side=320, max_side=480, train_min_sides=(256,), pixel_scale=1 / 64),
        anchors=AnchorConfig(stride=8, base_size=8, ratios=(0.5, 1.0, 2.0), scales=(4.0, 8.0, 16.0)),
        # Test top-N as the paper (6000 / 300); 300 stored training proposals per image suffice for
        # ~3 objects (2000 cost 20 % more time and did not help).
        rpn=RPNConfig(channels=128, pre_nms_top_n=(2000, 6000), post_nms_top_n=(300, 300), min_size=8,
                      batch_size=128),
        # RoIAlign, not the paper's RoI max pooling (the voc preset keeps it): max pooling rounds
        # a RoI to whole cells, 8 px here, and the smallest shapes are 24-40 px, so near misses
        # (IoU 0.46-0.49) were half the objects missed; RoIAlign scored 0.893-0.919 VOC07 mAP
        # against 0.871-0.875 (3 seeds each) in about the same time (BENCHMARKS.md, issue 14).
        # 128 RoIs per image (256 a step of 2 images): 64 made the detector stage's step 14 %
        # faster and gave 0.844 mAP against 0.865 (one run each, max pooling then). Two fc layers
        # of 1024 without dropout (torchvision's two-fc box head; the paper's dropout 0.5 is for
        # VGG-16's 4096-unit layers): the 512-unit head with dropout 0.5 missed more objects (500
        # held-out images: area mAP 0.948-0.961 over seeds 0-2 against 0.968-0.977 over seeds 0-4;
        # triangles' recall on the test split 94.5 % in each against 95.9-97.3 %; BENCHMARKS.md).
        detector=DetectorConfig(pool_size=6, pool_mode="align", fc_units=1024, dropout=0.0, batch_rois=256),
        # Steps sized for ~6 minutes on 2 CPU cores (issue 14): 5 min 12 s - 5 min 54 s over
        # thirteen runs of five seeds (AVX-512 BF16, alone on the machine; its speed moves by ~25 %
        # from hour to hour); with the 1024-unit head 4 min 51 s - 6 min 2 s (eighteen runs, Zen 5;
        # over 5:30 only in one slow afternoon); with images padded to a few shapes 4:31-5:16 (four
        # runs; interleaved 5:05 against 5:39 before).
        # The detector stages longer than the 700 / 1800 / 400 / 500 shipped before (4:41-4:51 in
        # the same hour): held-out VOC07 mAP 0.897-0.904 against 0.874-0.885,
        # test split 0.926-0.943 against 0.888-0.919 (seeds 0-2); the last stage alone at 1000
        # steps gained under half of that (BENCHMARKS.md, "The detector stages longer"; five seeds
        # of today's code: "Anchor targets, box coding and frozen batch norm").
        # Batches in the stream's order (aspect_group 0): with orientation pairs (16) the main job's
        # held-out VOC07 mAP stayed (0.9050-0.9065 against 0.9057-0.9073, seeds 0-2), but the test
        # split's triangles were found at 94.5 / 93.2 % in two of three seeds (BENCHMARKS.md,
        # "Batches paired by orientation"); the built-in images are near square (6 % fewer pixels).
        train=TrainConfig(stage_steps=(700, 2400, 400, 700), stage_lr_drop_steps=(525, 1800, 300, 350),
                          joint_steps=4000, joint_lr_drop_step=3000, lr=1e-2,
                          rpn_batch_images=2, detector_batch_images=2, aspect_group=0),
    )


# The other bases' presets on the built-in set keep the schedule their figures were measured with
# (README, BENCHMARKS.md "From scratch on the built-in set"): the shapes preset's before its
# detector stages grew (2026-12-02).
_SHAPES_BASES_STEPS = dict(stage_steps=(700, 1800, 400, 500), stage_lr_drop_steps=(525, 1350, 300, 250))


def _shapes_resnet50() -> Config:
    # ResNet-50 C4 from scratch on the built-in set (issue 17): the shapes preset's data, its
    # earlier schedule (_SHAPES_BASES_STEPS) and from-scratch input scale, a quarter-width
    # ResNet-50 (batch norm trained: nothing is frozen without ImageNet weights) at stride 16 on
    # 1.5x images (the smallest shapes span two cells otherwise), RoIAlign 14 x 14 into conv5.
    cfg = _shapes()
    return dataclasses.replace(
        cfg, name="shapes-resnet50", backbone="resnet50", backbone_width=0.25, base_batch_norm=False,
        image=dataclasses.replace(cfg.image, min_side=384, max_side=576, train_min_sides=()),
        anchors=AnchorConfig(stride=16, base_size=16, scales=(2.0, 4.0, 8.0)),
        rpn=dataclasses.replace(cfg.rpn, min_size=16),
        detector=DetectorConfig(pool_size=14, pool_mode="align", batch_rois=128),
        train=dataclasses.replace(cfg.train, **_SHAPES_BASES_STEPS),
    )


def _resnet50_fpn_coco() -> Config:
    # torchvision's fasterrcnn_resnet50_fpn (models/detection/faster_rcnn.py and the detection
    # reference's train.py; 37.0 COCO box AP): images 800 / 1333, anchors 32-512 px (one size per
    # level P2-P6, 3 ratios), RPN 256 channels, 2000 / 1000 pre-NMS proposals per level and
    # 2000 / 1000 after NMS (train / test), RPN batch 256 per image, RoIAlign 7 x 7 per level,
    # two fc layers of 1024 (no dropout), 512 RoIs per image, test NMS 0.5, box coder weights
    # 10, 10, 5, 5 (stds 0.1, 0.1, 0.2, 0.2), min proposal size 0.001 (none). Its schedule: 26
    # epochs of coco/2017 train (~118k images) at 16 images a step on 8 GPUs, lr 0.02 dropping
    # x0.1 at epochs 16 and 22 (the second drop is not modelled), weight decay 1e-4, a linear
    # warm-up from 0.001 x over its first 1000 steps: on one device with 2 images a step that is 8x
    # the steps at lr 0.02 / 8 (the linear scaling rule), end to end (joint). Keras's ImageNet
    # ResNet input (BGR, Caffe means) instead of torchvision's RGB normalisation: the weights'.
    # Where it departs from py-faster-rcnn: every anchor is matched, those across the image's
    # border too (its Matcher; allowed_border of any distance), and the box head's smooth L1 has
    # beta 1/9 (sigma 3) as the RPN's (roi_heads.fastrcnn_loss), not Fast R-CNN's sigma 1.
    steps_per_epoch = 118_287 // 2
    return Config(
        name="resnet50-fpn-coco", backbone="resnet50-fpn", weights="imagenet",
        dataset="coco/2017", train_split="train", test_split="validation",
        image=ImageConfig(min_side=800, max_side=1333, pixel_means=RESNET_PIXEL_MEANS),
        anchors=AnchorConfig(stride=4, base_size=4, scales=(8.0,)),
        rpn=RPNConfig(channels=256, pre_nms_top_n=(2000, 1000), post_nms_top_n=(2000, 1000), min_size=0,
                      allowed_border=1_000_000),
        detector=DetectorConfig(pool_size=7, pool_mode="align", fc_units=1024, dropout=0.0, batch_rois=1024,
                                nms_iou=0.5, sigma=3.0),
        train=TrainConfig(schedule="joint", joint_steps=26 * steps_per_epoch,
                          joint_lr_drop_step=16 * steps_per_epoch, lr=0.02 / 8, weight_decay=1e-4,
                          bias_lr_multiplier=1.0,  # torchvision: one rate and decay for every parameter
                          warmup_steps=8000, warmup_factor=0.001,  # its 1000 steps of 16 images
                          rpn_batch_images=2, detector_batch_images=2),
    )


def _shapes_fpn() -> Config:
    # ResNet-50-FPN at quarter width from scratch on the built-in set (issue 17): the shapes
    # preset's data, earlier schedule (_SHAPES_BASES_STEPS) and input scale, images at their own
    # size (P2 has stride 4), anchors of 6 x each level's stride (24-384 px), 128 RoIs per image
    # into two fc of 256, and torchvision's learning rate per image (0.02 for 16 images: 0.0025 for
    # 2): at the shapes preset's 0.01 the detector stages diverged to NaN within their first 100
    # steps (no warm-up).
    cfg = _shapes()
    return dataclasses.replace(
        cfg, name="shapes-fpn", backbone="resnet50-fpn", backbone_width=0.25, base_batch_norm=False,
        image=dataclasses.replace(cfg.image, min_side=256, max_side=384, train_min_sides=()),
        anchors=AnchorConfig(stride=4, base_size=4, scales=(6.0,)),
        rpn=dataclasses.replace(cfg.rpn, channels=64, pre_nms_top_n=(1000, 1000), post_nms_top_n=(300, 300)),
        detector=DetectorConfig(pool_size=7, pool_mode="align", fc_units=256, dropout=0.0, batch_rois=256),
        train=dataclasses.replace(cfg.train, lr=0.0025, **_SHAPES_BASES_STEPS),
    )


# keras.applications' MobileNetV3 input: RGB, x / 127.5 - 1.
MOBILENET_IMAGE = dict(pixel_means=(127.5, 127.5, 127.5), pixel_scale=1 / 127.5, channel_order="rgb")


def _mobilenetv3_fpn_coco() -> Config:
    # torchvision's fasterrcnn_mobilenet_v3_large_fpn (models/detection/faster_rcnn.py; 32.8 COCO
    # box AP): MobileNetV3-Large, the pyramid on its last two stride-32 outputs plus a max-pooled
    # stride-64 map, every level with anchors of 32-512 px x 3 ratios (15 per position), RPN
    # score threshold 0.05, and otherwise resnet50-fpn-coco's heads and reference schedule (its
    # README trains both 26 epochs dropping at 16 and 22, lr 0.02 for 16 images). Keras's
    # ImageNet MobileNetV3 input instead of torchvision's normalisation: the weights'.
    cfg = _resnet50_fpn_coco()
    return dataclasses.replace(
        cfg, name="mobilenetv3-fpn-coco", backbone="mobilenetv3-fpn",
        image=ImageConfig(min_side=800, max_side=1333, **MOBILENET_IMAGE),
        anchors=AnchorConfig(stride=32, base_size=32, scales=(1.0,), sizes=(32.0, 64.0, 128.0, 256.0, 512.0)),
        rpn=dataclasses.replace(cfg.rpn, score_threshold=0.05),
    )


def _shapes_mobilenet() -> Config:
    # MobileNetV3-Large-FPN (full width) from scratch on the built-in set (issue 17): the shapes
    # preset's data and earlier schedule (_SHAPES_BASES_STEPS), images at 1.5x (the pyramid's
    # finest stride is 32: at 1x the smallest shapes are under a cell; 2x made a step 1.8x slower),
    # anchors of 32-256 px on every level, torchvision's learning rate per image (0.0025 for 2
    # images; shapes-fpn diverged at 0.01).
    cfg = _shapes()
    return dataclasses.replace(
        cfg, name="shapes-mobilenet", backbone="mobilenetv3-fpn", backbone_width=1.0, base_batch_norm=False,
        image=dataclasses.replace(cfg.image, min_side=384, max_side=576, train_min_sides=(), **MOBILENET_IMAGE),
        anchors=AnchorConfig(stride=32, base_size=32, scales=(1.0,), sizes=(32.0, 64.0, 128.0, 256.0)),
        rpn=dataclasses.replace(cfg.rpn, channels=128, pre_nms_top_n=(1000, 1000), post_nms_top_n=(300, 300),
                                min_size=16),
        detector=DetectorConfig(pool_size=7, pool_mode="align", fc_units=256, dropout=0.0, batch_rois=256),
        train=dataclasses.replace(cfg.train, lr=0.0025, **_SHAPES_BASES_STEPS),
    )


def _coco() -> Config:
    # The paper's MS COCO settings (Faster R-CNN, TPAMI 2017, "Experiments on MS COCO"; see
    # REFERENCE.md): VGG-16 from ImageNet; anchors of 3 ratios x 4 scales, 64^2 added (4, 8, 16, 32
    # times the 16 px cell); Fast R-CNN negatives IoU [0, 0.5) (the default); trained on train,
    # evaluated on val (TFDS coco/2017: train2017 -> val2017; the paper: 80k train -> 40k val,
    # 41.5 mAP@0.5 / 21.2 mAP@[.5:.95]). Its schedule, on 8 GPUs: 8 images per RPN step and 16 per
    # Fast R-CNN step, 240k iterations at lr 0.003 then 80k at 0.0003, both steps. Scaled to the
    # images seen on one device with VOC's 1 (RPN) and 2 (detector) images per step: 8x the
    # iterations, the learning rate / 8 (the linear scaling rule, Goyal et al. 2017). Joint
    # training takes the RPN step's budget. With N GPUs (--strategy mirrored, N x the images per
    # step): --lr x N and the steps / N give the paper's schedule back at N = 8.
    scale = 8
    return Config(
        name="coco",
        dataset="coco/2017",
        train_split="train",
        test_split="validation",
        anchors=AnchorConfig(scales=(4.0, 8.0, 16.0, 32.0)),
        train=TrainConfig(
            stage_steps=(320_000 * scale,) * 4,
            stage_lr_drop_steps=(240_000 * scale,) * 4,
            joint_steps=320_000 * scale,
            joint_lr_drop_step=240_000 * scale,
            lr=0.003 / scale,
        ),
    )


# keras.applications' ResNet input ("caffe" mode): BGR, these means subtracted, 0-255 scale.
RESNET_PIXEL_MEANS = (103.939, 116.779, 123.68)


def _resnet_voc(depth) -> Config:
    # tf-faster-rcnn's ResNet VOC07 settings (experiments/cfgs/res101.yml, lib/model/config.py,
    # experiments/scripts/train_faster_rcnn.sh; 75.7 VOC07 mAP for ResNet-101 on VOC07 trainval):
    # end-to-end (approximate joint) training, 1 image a step, 256 anchors and 256 RoIs per image,
    # lr 0.001 for 70k steps with a drop at 50k, weight decay 1e-4, 600 / 1000 px, anchors
    # 128-512 px, RPN 512 channels, 300 test proposals. With the C4 head as Detectron's R-50-C4
    # (and the issue): RoIAlign 14 x 14, conv5 with stride 2, global average pooling (tf-faster-rcnn
    # crops 14 x 14, max pools to 7 x 7 and runs conv5 at stride 1). The alternating schedule keeps
    # the paper's steps (--schedule alternating).
    return Config(
        name=f"resnet{depth}-voc", backbone=f"resnet{depth}", weights="imagenet",
        image=ImageConfig(pixel_means=RESNET_PIXEL_MEANS),
        detector=DetectorConfig(pool_size=14, pool_mode="align", batch_rois=256),
        train=TrainConfig(schedule="joint", joint_steps=70000, joint_lr_drop_step=50000, lr=1e-3,
                          weight_decay=1e-4, bias_decay_multiplier=0.0),  # DOUBLE_BIAS, BIAS_DECAY: False
    )


def _resnet101_coco() -> Config:
    # tf-faster-rcnn's ResNet-101 COCO run (train_faster_rcnn.sh, coco: 490k steps, drop at 350k,
    # anchors 4-32 x 16 px), on coco/2017 train -> validation.
    cfg = _resnet_voc(101)
    return dataclasses.replace(
        cfg, name="resnet101-coco", dataset="coco/2017", train_split="train", test_split="validation",
        anchors=AnchorConfig(scales=(4.0, 8.0, 16.0, 32.0)),
        train=dataclasses.replace(cfg.train, joint_steps=490_000, joint_lr_drop_step=350_000))


PRESETS = {
    "voc": lambda: Config(),
    "resnet50-voc": lambda: _resnet_voc(50),
    "resnet101-voc": lambda: _resnet_voc(101),
    "resnet101-coco": _resnet101_coco,
    "coco": _coco,
    # The paper's ZF net (VOC07 59.9 mAP), which starts from ImageNet ZF weights. Keras has none:
    # the preset asks for them (--weights PATH) and says so when they are missing.
    "zf-voc": lambda: Config(
        name="zf-voc", backbone="zf", weights="imagenet",
        rpn=RPNConfig(channels=256), detector=DetectorConfig(pool_size=6),
    ),
    "shapes": _shapes,
    "shapes-resnet50": _shapes_resnet50,
    "resnet50-fpn-coco": _resnet50_fpn_coco,
    "shapes-fpn": _shapes_fpn,
    "mobilenetv3-fpn-coco": _mobilenetv3_fpn_coco,
    "shapes-mobilenet": _shapes_mobilenet,
}


def preset(name: str) -> Config:
    """The named preset: "voc" (VGG-16, paper settings), "coco" (VGG-16, the paper's COCO
    settings), "zf-voc" (ZF), "resnet50-voc", "resnet101-voc", "resnet101-coco" (ResNet C4,
    tf-faster-rcnn's settings), "resnet50-fpn-coco", "mobilenetv3-fpn-coco" (torchvision's),
    "shapes" (built-in set; "shapes-resnet50", "shapes-fpn", "shapes-mobilenet" for the other
    bases)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def native_bfloat16_cpu() -> typing.Optional[str]:
    """The CPU flag that gives native bfloat16 arithmetic ("amx_bf16", "avx512_bf16"), if any
    (Linux's /proc/cpuinfo; None elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return next((flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags), None)


def resolve_precision(precision: str) -> tuple:
    """``precision`` with "auto" resolved -> (policy, the reason in words)."""
    if precision != "auto":
        return precision, "as configured"
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32", "auto: a GPU is visible (mixed_float16 is one flag away)"
    flag = native_bfloat16_cpu()
    if flag:
        return "mixed_bfloat16", f"auto: the CPU has {flag.upper()}"
    return "float32", "auto: no native bfloat16 on this CPU"


def feature_rounding(backbone: str) -> str:
    """How the base maps an image side n to a feature side: floor(n / stride) (MobileNetV3's
    padding) or ceil (VGG-16's ceil-mode pools, ZF, ResNet)."""
    return "floor" if backbone == "mobilenetv3-fpn" else "ceil"


__all__ = ["Config", "ConfigError", "PRECISIONS", "INFERENCE_PRECISIONS", "MIXED_PRECISIONS",
           "resolve_precision", "ImageConfig", "AnchorConfig", "RPNConfig", "DetectorConfig",
           "TrainConfig", "preset", "PRESETS", "feature_rounding"]
