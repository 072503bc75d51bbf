"""Training schedules, in one place: the paper's 4-step alternating schedule and approximate joint
training, with checkpoints that make ``--resume`` exact.

Alternating (REFERENCE.md, py-faster-rcnn alt-opt):

1. RPN: base (above the always-frozen layers) + RPN head, from the initial base weights.
2. Detector: base + detector head on stage-1 proposals (unflipped images, no pre-NMS cut, the
   training post-NMS count, flipped along with the image), the base reset to the initial weights
   first, so that stage 2 is independent of stage 1.
3. RPN: RPN head only, the shared base (stage 2's) frozen. The RPN head continues from its
   stage-1 weights (a warm start; the paper's code does not say otherwise once the base is shared).
4. Detector: detector head only, base frozen, on stage-3 proposals.

After stage 4 the RPN and the detector share one base: one network, the inference model.

Joint: one model, the four losses summed, proposals as constants (``JointTrainer``).

Each stage is ``prepare`` (trainable flags + a fresh SGD) and Keras ``fit`` in chunks of
``checkpoint_every`` steps. A checkpoint (weights, optimizer state, stage, step) is written
atomically after every chunk; the data and the samplers' random streams of chunk k of a stage are
seeded by (seed, stage, k), so a resumed run trains exactly as an uninterrupted one.

Under ``tf.distribute`` (the runner's ``strategy``) the batch of a step is the per-replica batch
times the replicas, split by Keras; the losses are per-image means, divided by the replica count,
so the summed gradients are those of the whole batch on one device.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from keras_frcnn.config import Config, feature_rounding
from keras_frcnn.data.examples import DetectionSource
from keras_frcnn.data.pipeline import train_dataset
from keras_frcnn.proposals import Proposals
from keras_frcnn.tensorboard import LearningRateLogger


@dataclasses.dataclass(frozen=True)
class Stage:
    """One ``fit`` of a schedule."""

    name: str  # "stage1_rpn", ..., or "joint"
    view: str  # "rpn", "detector" or "joint"
    train_base: bool
    train_rpn_head: bool
    train_detector_head: bool
    steps: int
    lr_drop_step: int
    batch_images: int
    proposals_from: typing.Optional[str] = None  # the stage whose RPN makes this stage's proposals
    reset_base: bool = False  # start from the initial base weights


def stages(cfg: Config, steps: typing.Optional[int] = None) -> list:
    """The stages of ``cfg.train.schedule``; ``steps`` overrides the steps of every stage (the
    total for joint training), scaling the learning-rate drop step alike."""
    t = cfg.train

    def scaled(n, drop):
        if steps is None:
            return n, drop
        return steps, int(round(drop * steps / n)) if n else steps

    if t.schedule == "joint":
        n, drop = scaled(t.joint_steps, t.joint_lr_drop_step)
        return [Stage("joint", "joint", True, True, True, n, drop, t.rpn_batch_images)]
    plan = []
    specs = [
        ("stage1_rpn", "rpn", True, True, False, t.rpn_batch_images, None, False),
        ("stage2_detector", "detector", True, False, True, t.detector_batch_images, "stage1_rpn", True),
        ("stage3_rpn", "rpn", False, True, False, t.rpn_batch_images, None, False),
        ("stage4_detector", "detector", False, False, True, t.detector_batch_images, "stage3_rpn", False),
    ]
    for (name, view, base, rpn, det, batch, source, reset), n, drop in zip(
            specs, t.stage_steps, t.stage_lr_drop_steps):
        n, drop = scaled(n, drop)
        plan.append(Stage(name, view, base, rpn, det, n, drop, batch, source, reset))
    return plan


# config.train.jit_compile -> Keras's compile(jit_compile=...).
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


def make_optimizer(cfg: Config, stage: Stage) -> keras.optimizers.Optimizer:
    """SGD, momentum 0.9, weight decay 5e-4 on the trainable weights (not the biases, as the
    paper's Caffe nets), learning rate ``lr`` dropping by ``lr_drop`` at the stage's drop step."""
    t = cfg.train
    drop = max(1, stage.lr_drop_step)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([drop], [t.lr, t.lr * t.lr_drop])
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=t.momentum,
                                     weight_decay=t.weight_decay or None)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


# --- proposals for the detector stages --------------------------------------------------------


def write_proposals(net, source: DetectionSource, cfg: Config, path: str, batch_size: int = 2):
    """Run the current RPN over ``source`` in order (resized as for training, unflipped) and write
    each example's proposals (resized-image pixels, ``[n, 4]`` float32) as one TFRecord, in source
    order. No pre-NMS cut; ``cfg.rpn.post_nms_top_n[0]`` after NMS, as the original's dump."""
    layers = net.model.layers_
    post = cfg.rpn.post_nms_top_n[0]
    proposal_layer = Proposals((0, 0), (post, post), cfg.rpn.nms_iou, cfg.rpn.min_size,
                               cfg.anchors.stride, feature_rounding(cfg.backbone))
    to_input = net.rpn_model.to_input

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, 3], tf.float32)])
    def run(images, image_info):
        processed, info = to_input([images, image_info])
        features = layers.base([processed, info])
        logits, deltas = layers.rpn_head(features)
        anchors = layers.anchors(features)
        return proposal_layer([logits, deltas, anchors, info])

    dataset = train_dataset(source, cfg, batch_size, shuffle=False, flip_probability=0.0,
                            drop_remainder=False)
    tmp = path + ".partial"
    expected = 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for batch in dataset:
            boxes, _, counts = run(batch["images"], batch["image_info"])
            for i, index in enumerate(batch["index"].numpy()):
                if index != expected:
                    raise RuntimeError(f"proposals out of order: example {index}, expected {expected}")
                expected += 1
                writer.write(tf.io.serialize_tensor(boxes[i, :counts[i]]).numpy())
    os.replace(tmp, path)
    return expected


def with_proposals(source: DetectionSource, path: str) -> DetectionSource:
    """``source`` whose examples carry ``proposals`` ``[n, 4]`` (resized pixels) from ``path``."""
    stored = tf.data.TFRecordDataset(path).map(
        lambda record: tf.ensure_shape(tf.io.parse_tensor(record, tf.float32), [None, 4]))
    dataset = tf.data.Dataset.zip(source.dataset, stored).map(
        lambda example, proposals: {**example, "proposals": proposals})
    return dataclasses.replace(source, dataset=dataset)


def reseed(model, seed):
    """Restart every random stream of ``model`` (the anchor and RoI samplers', dropout's) from
    ``seed``, so a chunk draws the same samples whether or not the run was interrupted before it."""
    states = [v for v in model.variables if "seed_generator_state" in v.path]
    for i, state in enumerate(states):
        state.assign(tf.constant([seed, i], dtype=state.dtype))


def model_inputs(batch):
    """The keys of a training batch the training views read (not the bookkeeping ``index`` and
    ``flipped``), so no replica receives tensors it never uses."""
    return {k: v for k, v in batch.items() if k not in ("index", "flipped")}


# --- checkpoints ----------------------------------------------------------------------------------


class Checkpoint:
    """The whole training state in ``run_dir/checkpoint``, replaced atomically.

    state.json: completed stages, the current stage and its step; ``network.weights.h5``: every
    weight of the network; ``optimizer.npz``: the current stage's optimizer variables.
    """

    def __init__(self, run_dir):
        self.dir = os.path.join(run_dir, "checkpoint")

    def exists(self):
        return os.path.exists(os.path.join(self.dir, "state.json"))

    def save(self, net, optimizer, state: dict):
        tmp = self.dir + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        net.model.save_weights(os.path.join(tmp, "network.weights.h5"))
        if optimizer is not None:
            np.savez(os.path.join(tmp, "optimizer.npz"),
                     *[np.asarray(v.numpy()) for v in optimizer.variables])
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(state, f, indent=2)
        old = self.dir + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(self.dir):
            os.replace(self.dir, old)
        os.replace(tmp, self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def state(self) -> dict:
        with open(os.path.join(self.dir, "state.json")) as f:
            return json.load(f)

    def restore_network(self, net):
        net.model.load_weights(os.path.join(self.dir, "network.weights.h5"))

    def restore_optimizer(self, optimizer, variables):
        path = os.path.join(self.dir, "optimizer.npz")
        if not os.path.exists(path):
            return False
        if not optimizer.built:
            optimizer.build(variables)
        saved = np.load(path)
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise RuntimeError(f"{path}: {len(values)} optimizer variables, expected "
                               f"{len(optimizer.variables)}: the checkpoint is from another setup")
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)
        return True


class _ChunkCheckpoint(keras.callbacks.Callback):
    def __init__(self, save):
        super().__init__()
        self.save = save

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, logs or {})


# --- the schedule runner ------------------------------------------------------------------------


class ScheduleRunner:
    """Runs a schedule on ``net`` (a ``Networks``) with ``source`` as training data.

    ``run_dir`` receives the checkpoint, the stored proposals, ``initial_base.weights.h5`` and
    TensorBoard logs (``logs/<stage>``). ``log`` prints the stage-by-stage lines.
    """

    def __init__(self, net, source: DetectionSource, cfg: Config, run_dir: str,
                 steps: typing.Optional[int] = None, checkpoint_every: int = 100, verbose="auto",
                 log=print, callbacks=(), strategy=None, stop_after_chunks=None, stage_hooks=()):
        self.net, self.source, self.cfg, self.run_dir = net, source, cfg, run_dir
        self.plan = stages(cfg, steps)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.verbose, self.log, self.callbacks = verbose, log, list(callbacks)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.checkpoint = Checkpoint(run_dir)
        self.stop_after_chunks = stop_after_chunks  # for tests: simulate an interruption
        self.stage_hooks = list(stage_hooks)  # fn(event, stage, runner), event "start" or "end"
        self.stage_seconds = {}
        self.history = []  # (stage name, chunk) of every chunk run by this runner
        os.makedirs(run_dir, exist_ok=True)

    def _path(self, name):
        return os.path.join(self.run_dir, name)

    def run(self, resume=False):
        state = {"completed": [], "stage": None, "chunk": 0, "step": 0}
        if resume and self.checkpoint.exists():
            state = self.checkpoint.state()
            self.checkpoint.restore_network(self.net)
            self.log(f"resuming: completed {state['completed'] or 'nothing'}; "
                     f"{state['stage'] or 'next stage'} at step {state['step']}")
        elif resume:
            self.log(f"no checkpoint in {self.run_dir}: starting from the beginning")
        initial_base = self._path("initial_base.weights.h5")
        if not os.path.exists(initial_base):
            self.net.base.save_weights(initial_base)

        chunks_run = 0
        for index, stage in enumerate(self.plan, start=1):
            if stage.name in state["completed"]:
                continue
            resuming_this = state["stage"] == stage.name
            start_chunk = state["chunk"] if resuming_this else 0
            ran = self._run_stage(index, stage, start_chunk, resuming_this, state, chunks_run)
            if ran is None:
                return False  # interrupted (tests)
            chunks_run = ran
            state = {"completed": state["completed"] + [stage.name], "stage": None, "chunk": 0,
                     "step": 0}
            self.checkpoint.save(self.net, None, state)
        self.net.set_trainable()
        return True

    def _run_stage(self, index, stage, start_chunk, resuming, state, chunks_run):
        cfg = self.cfg
        self.log(f"== stage {index}/{len(self.plan)} {stage.name}: trains "
                 + ", ".join(n for n, on in (("base", stage.train_base), ("RPN head", stage.train_rpn_head),
                                             ("detector head", stage.train_detector_head)) if on)
                 + f"; {stage.steps} steps, {stage.batch_images} images/batch"
                 + (f" per replica x {self.strategy.num_replicas_in_sync} replicas"
                    if self.strategy.num_replicas_in_sync > 1 else "")
                 + f", lr {cfg.train.lr:g} "
                 f"(x{cfg.train.lr_drop:g} at step {stage.lr_drop_step})")
        began = time.perf_counter()
        source = self.source
        if stage.proposals_from:
            path = self._path(f"proposals_{stage.name}.tfrecord")
            if not os.path.exists(path):
                count = write_proposals(self.net, self.source, cfg, path)
                self.log(f"   proposals of the {stage.proposals_from} RPN for {count} images -> {path}")
            source = with_proposals(self.source, path)
        if stage.reset_base and not resuming:
            self.net.base.load_weights(self._path("initial_base.weights.h5"))
            self.log("   base reset to the initial weights")

        with self.strategy.scope():
            model = self.net.prepare(stage.view, make_optimizer(cfg, stage), base=stage.train_base,
                                     rpn_head=stage.train_rpn_head,
                                     detector_head=stage.train_detector_head,
                                     jit_compile=JIT_COMPILE[cfg.train.jit_compile])
            # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16: keep the wrapper.
            optimizer = model.optimizer
            if resuming and self.checkpoint.restore_optimizer(optimizer, model.trainable_variables):
                self.log(f"   optimizer state restored at step {int(optimizer.iterations.numpy())}")
        # A compiled step is recompiled for every new input shape: give it a few shapes only.
        pad_multiple = cfg.train.xla_pad_multiple if model.jit_compile else None

        for hook in self.stage_hooks:
            hook("start", stage, self)
        num_chunks = math.ceil(stage.steps / self.checkpoint_every)
        done_steps = min(start_chunk * self.checkpoint_every, stage.steps)
        tensorboard = keras.callbacks.TensorBoard(os.path.join(self.run_dir, "logs", stage.name))
        for chunk in range(start_chunk, num_chunks):
            n = min(self.checkpoint_every, stage.steps - chunk * self.checkpoint_every)
            chunk_seed = cfg.train.seed * 1000003 + index * 10007 + chunk
            dataset = train_dataset(source, cfg, stage.batch_images * self.strategy.num_replicas_in_sync,
                                    seed=chunk_seed, repeat=True, pad_multiple=pad_multiple).map(model_inputs)
            reseed(model, chunk_seed)

            def save(_, logs, chunk=chunk, n=n):
                self.checkpoint.save(self.net, optimizer, {
                    "completed": state["completed"], "stage": stage.name, "chunk": chunk + 1,
                    "step": done_steps + n})

            model.fit(dataset, epochs=chunk + 1, initial_epoch=chunk, steps_per_epoch=n, shuffle=False,
                      verbose=self.verbose, callbacks=[LearningRateLogger(), tensorboard, _ChunkCheckpoint(save),
                                 *self.callbacks])
            done_steps += n
            chunks_run += 1
            self.history.append((stage.name, chunk))
            if self.stop_after_chunks is not None and chunks_run >= self.stop_after_chunks:
                return None
        for hook in self.stage_hooks:
            hook("end", stage, self)
        seconds = time.perf_counter() - began
        self.stage_seconds[stage.name] = self.stage_seconds.get(stage.name, 0.0) + seconds
        self.log(f"   {stage.name} done: {done_steps} steps in {seconds:.0f} s")
        return chunks_run
