"""Training schedules, in one place: the paper's 4-step alternating schedule and approximate joint
training, with checkpoints that make ``--resume`` exact.

Alternating (REFERENCE.md, py-faster-rcnn alt-opt):

1. RPN: base (above the always-frozen layers) + RPN head, from the initial base weights.
2. Detector: base + detector head on stage-1 proposals (unflipped images, no pre-NMS cut, the
   training post-NMS count, flipped along with the image), the base reset to the initial weights
   first, so that stage 2 is independent of stage 1.
3. RPN: RPN head only, the shared base (stage 2's) frozen, the RPN head from its initial weights
   again (py-faster-rcnn initialises this net from the stage-2 Fast R-CNN model, which has no RPN
   layers; ``train.stage3_rpn_from_stage1`` continues stage 1's head instead).
4. Detector: detector head only, base frozen, on stage-3 proposals.

After stage 4 the RPN and the detector share one base: one network, the inference model.

Joint: one model, the four losses summed, proposals as constants (``JointTrainer``).

Each stage is ``prepare`` (trainable flags + a fresh SGD) and one Keras ``fit`` over one data
stream (``data.pipeline.example_stream``): every pass over the training set visits each example
once, in a new order, and the stream is never rebuilt while the stage runs. Keras "epochs" are only
windows of ``log_every`` steps for the progress bar and TensorBoard.

Checkpoints (:class:`TrainingCheckpoint`, TensorFlow's ``tf.train.Checkpoint`` and
``CheckpointManager``) hold every network variable and the optimizer's, each keyed by its
variable path, and the schedule's state: stage, step and the stream position. One is written at
the end of every stage, every ``checkpoint_minutes`` (checked at the end of each window) and, if
asked, every ``checkpoint_every`` steps. The stream, the flips and the samplers' seeds are
stateless functions of (seed, stage, stream position), and the random streams of the layers
(dropout) are in the checkpoint, so a run killed at any point and resumed trains exactly as an
uninterrupted one from its last checkpoint on.

Under ``tf.distribute`` (the runner's ``strategy``) the batch of a step is the per-replica batch
times the replicas, split by Keras; the losses are per-image means, divided by the replica count,
so the summed gradients are those of the whole batch on one device.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import numbers
import os
import time
import typing

import keras
import tensorflow as tf

from keras_frcnn.config import Config, ConfigError
from keras_frcnn.data.examples import DetectionSource, class_name
from keras_frcnn.data.pipeline import as_source, train_dataset
from keras_frcnn.data.problems import DataError
from keras_frcnn.data.stored_proposals import ProposalStore, ProposalWriter
from keras_frcnn.files import remove_path, write_atomically
from keras_frcnn.optimizer import CaffeSGD, StepWithWarmup
from keras_frcnn.models import proposal_layer, unnamed_classes
from keras_frcnn.tensorboard import StageLog, StepCounting, rewind_logs


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
    reset_rpn_head: bool = False  # start from the initial RPN head weights


def stages(cfg: Config, steps: typing.Optional[int] = None) -> list:
    """The stages of ``cfg.train.schedule``; ``steps`` overrides the steps of every stage (the
    total for joint training), scaling the learning-rate drop step alike (``TrainConfig.with_steps``)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1):
        raise ValueError(f"steps must be a positive int (every stage's steps), got {steps!r}")
    t = cfg.train if steps is None else cfg.train.with_steps(steps)
    if t.schedule == "joint":
        return [Stage("joint", "joint", True, True, True, t.joint_steps, t.joint_lr_drop_step, t.rpn_batch_images)]
    plan = []
    # Stage 3's RPN starts from the initialiser again, as py-faster-rcnn's (its net is initialised
    # from the stage-2 Fast R-CNN model, which has no RPN layers), unless told to continue stage 1's.
    fresh_rpn = not t.stage3_rpn_from_stage1
    specs = [
        ("stage1_rpn", "rpn", True, True, False, t.rpn_batch_images, None, False, False),
        ("stage2_detector", "detector", True, False, True, t.detector_batch_images, "stage1_rpn", True, False),
        ("stage3_rpn", "rpn", False, True, False, t.rpn_batch_images, None, False, fresh_rpn),
        ("stage4_detector", "detector", False, False, True, t.detector_batch_images, "stage3_rpn", False, False),
    ]
    for (name, view, base, rpn, det, batch, source, reset, reset_rpn), n, drop in zip(
            specs, t.stage_steps, t.stage_lr_drop_steps):
        plan.append(Stage(name, view, base, rpn, det, n, drop, batch, source, reset, reset_rpn))
    return plan


# config.train.jit_compile -> Keras's compile(jit_compile=...).
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


def layers_without_xla(model) -> list:
    """The names of ``model``'s layers that declare ``supports_jit = False`` (Keras then trains
    the whole model without XLA)."""
    return [layer.name for layer in model._flatten_layers() if not layer.supports_jit]


def is_default_strategy(strategy) -> bool:
    """No tf.distribute strategy: TensorFlow's default one, outside any other's scope."""
    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def check_jit_under(strategy, cfg: Config):
    """``ConfigError`` for ``jit_compile: "on"`` under a tf.distribute strategy: XLA cannot
    compile a step whose mirrored variables live on other devices (TensorFlow's XLA known
    issues: a ``tf.Variable`` on a different device), and Keras's own ``"auto"`` turns XLA off
    under tf.distribute for that reason."""
    if cfg.train.jit_compile == "on" and not is_default_strategy(strategy):
        raise ConfigError(f"train.jit_compile \"on\" (--jit on) cannot run under a tf.distribute strategy "
                          f"({type(strategy).__name__}): XLA cannot compile a step over mirrored variables; "
                          "use \"auto\" (Keras then trains without XLA under a strategy) or \"off\"")


def make_optimizer(cfg: Config, stage: Stage) -> keras.optimizers.Optimizer:
    """The paper's solver (``optimizer.CaffeSGD``): momentum 0.9, L2 weight decay 5e-4 through
    the momentum on the weights and biases, biases at twice the learning rate; the learning
    rate ``lr`` drops by ``lr_drop`` at the stage's drop step, after a linear warm-up over the
    stage's first ``warmup_steps`` (each stage starts a new optimizer, so each warms up)."""
    t = cfg.train
    schedule = StepWithWarmup(t.lr, max(1, stage.lr_drop_step), t.lr_drop, t.warmup_steps, t.warmup_factor)
    return CaffeSGD(learning_rate=schedule, momentum=t.momentum, l2=t.weight_decay,
                    bias_lr_multiplier=t.bias_lr_multiplier, bias_decay_multiplier=t.bias_decay_multiplier,
                    decoupled=t.decoupled_weight_decay)


# --- proposals for the detector stages --------------------------------------------------------


def write_proposals(net, source: DetectionSource, cfg: Config, directory: str, batch_size: int = 2,
                    made_from: str = "", should_stop=lambda: False, log=print):
    """Run the current RPN over ``source`` in order (resized to ``image.proposal_side``, unflipped)
    and store each example's proposals (resized-image pixels, ``[n, 4]`` float32) in ``directory``
    (``data.stored_proposals``). No pre-NMS cut; ``cfg.rpn.post_nms_top_n[0]`` after NMS, as the
    original's dump. ``made_from`` names the weights (a pass of the same killed or stopped part way
    continues: ``ProposalWriter``); ``should_stop()`` is asked after each batch (True: the part
    written is kept and ``_Interrupted`` raised). Returns the number of examples."""
    layers = net.model.layers_
    post = cfg.rpn.post_nms_top_n[0]
    dump = proposal_layer(cfg, (0, 0), (post, post))
    to_input = net.rpn_model.to_input

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, 3], tf.float32)])
    def run(images, image_info):
        processed, info = to_input([images, image_info])
        logits, deltas, anchors, levels = layers.rpn(layers.base([processed, info]))
        return layers.propose(dump, logits, deltas, anchors, levels, info)

    with ProposalWriter(directory, source, made_from) as writer:
        expected = writer.start
        if expected:
            log(f"   proposals: an earlier process's pass continued from image {expected} of {source.num_examples}")
        dataset = train_dataset(source, cfg, batch_size, shuffle=False, seed=0, start=expected, flip_probability=0.0,
                                drop_remainder=False, at_proposal_side=True,
                                image_multiple=cfg.train.image_pad_multiple)
        for batch in dataset:
            if should_stop():
                raise _Interrupted()
            boxes, _, counts = run(batch["images"], batch["image_info"])
            boxes, counts = boxes.numpy(), counts.numpy()
            for i, (index, key) in enumerate(zip(batch["index"].numpy(), batch["key"].numpy())):
                if index != expected:
                    raise RuntimeError(f"proposals out of order: example {index}, expected {expected}")
                expected += 1
                writer.write(index, key, boxes[i, :counts[i]])
    return expected


def reseed(model, seed):
    """Restart every random stream of ``model`` (dropout's, the samplers' fallbacks) from
    ``seed``, so a stage draws the same whether or not the run was interrupted before it."""
    states = [v for v in model.variables if "seed_generator_state" in v.path]
    for i, state in enumerate(states):
        state.assign(tf.constant([seed, i], dtype=state.dtype))


# Keys of a training batch that the training views do not read (bookkeeping of the stream).
BOOKKEEPING = ("index", "position", "flipped", "key")


def model_inputs(batch):
    """The keys of a training batch the training views read, so no replica receives tensors it
    never uses."""
    return {k: v for k, v in batch.items() if k not in BOOKKEEPING}


# --- checkpoints ----------------------------------------------------------------------------------


def _weights_by_path(layer) -> dict:
    return {v.path: v for v in layer.weights}


def network_variables(model) -> dict:
    """Every variable of the network keyed by a stable path: the weights by their Keras path
    (``"conv1/kernel"``, ``"detector_head/fc6/kernel"``, ...), the layers' random-stream states
    by the names of the layers that hold them (``"detector_head/dropout/seed_generator_0"``)."""
    keyed = {v.path: v for v in model.weights}

    def walk(layer, prefix):
        # Keras's private _flatten_layers: the only way to every nested layer (guarded by a test).
        for child in layer._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}{child.name}"
            for number, generator in enumerate(getattr(child, "_seed_generators", ())):
                key = f"{path}/seed_generator_{number}"
                if key in keyed:
                    raise ValueError(f"two random streams named {key}: name the layers apart")
                keyed[key] = generator.state
            walk(child, path + "/")

    walk(model, "")
    return keyed


def optimizer_variables(optimizer) -> dict:
    """The optimizer's variables keyed by name: its slots are named after the model variable
    they belong to (Keras: ``"<variable path>_momentum"``), so they are matched by path, not by
    position. Names that repeat (a loss-scale wrapper's and its inner optimizer's) are numbered."""
    keyed = {}
    for variable in optimizer.variables:
        key = variable.name
        number = 1
        while key in keyed:
            key, number = f"{variable.name}#{number}", number + 1
        keyed[key] = variable
    return keyed


# What the runner writes into a run's folder (besides proposals_<stage>): a new run in the folder
# of an earlier one starts without them.
EARLIER_RUN_STATE = ("checkpoint", "initial_weights", "logs", "options.json")
# What train.py writes at a run's end: removed too, so that a new run's folder never shows the
# earlier run's model beside the new run's config.json.
EARLIER_RUN_OUTPUTS = ("model.keras", "model.partial.keras", "metrics.json", "pr_curves", "best.keras",
                       "best.partial.keras", "best.json")


def holds_every_weight(run_dir) -> bool:
    """Whether ``run_dir`` holds what ``--resume`` restores every weight from: a checkpoint and the
    stored initial weights (which stages 2 and 3 start again from)."""
    return TrainingCheckpoint(run_dir).exists() and os.path.isdir(os.path.join(run_dir, "initial_weights"))


def unfinished_run(run_dir, config_path=None, ended=None) -> typing.Optional[str]:
    """What is left to train of the run whose checkpoint ``run_dir`` holds (e.g. "stage2_detector
    at step 1200 of 1800"), or None: no checkpoint, or every stage of the run's schedule done (the
    run's ``config_path``, default ``run_dir/config.json``) and, given ``ended`` (the file a run
    writes last, train.py's metrics.json), that file written: a run killed after its last stage,
    while saving its model or evaluating it, is not finished."""
    checkpoint = TrainingCheckpoint(run_dir)
    if not checkpoint.exists():
        return None
    try:
        state = checkpoint.state()
    except DataError:  # nothing a new run could lose: it starts over (ScheduleRunner.run)
        return None
    try:
        plan = stages(Config.from_file(config_path or os.path.join(run_dir, "config.json")))
    except (OSError, ValueError):
        plan = []
    if state["stage"] is not None:
        steps = next((s.steps for s in plan if s.name == state["stage"]), None)
        return f"{state['stage']} at step {state['step']}" + (f" of {steps}" if steps else "")
    left = [s.name for s in plan if s.name not in state["completed"]]
    if plan and not left:
        return None if ended is None or os.path.exists(ended) else "every stage trained; its model and evaluation " \
            "not yet written"
    return f"{', '.join(left)} to train" if left else f"completed {state['completed'] or 'nothing'}"


def num_workers(strategy) -> int:
    """The workers of a ``MultiWorkerMirroredStrategy``'s cluster (its chief and workers); 1 for
    any other strategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    cluster = strategy.cluster_resolver.cluster_spec()
    return max(1, sum(cluster.num_tasks(job) for job in cluster.jobs if job in ("chief", "worker")))


def is_multi_worker(strategy) -> bool:
    """A ``MultiWorkerMirroredStrategy`` of more than one worker."""
    return num_workers(strategy) > 1


def any_worker(strategy, flag: bool) -> bool:
    """``flag`` on every worker of a multi-worker strategy if it is on any (each must call it)."""
    if not is_multi_worker(strategy):
        return flag
    votes = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)) > 0


def run_options(run_dir) -> dict:
    """The options the run in ``run_dir`` was last trained with (``checkpoint_minutes``,
    ``checkpoint_every``, ``log_every``, ``eval_every``): its ``options.json``, written as each of
    its processes starts (a run killed before its first checkpoint keeps them too), else its
    checkpoint's (a run of an earlier version); none where neither holds them."""
    try:
        with open(os.path.join(run_dir, "options.json"), encoding="utf-8") as f:
            options = json.load(f)
        if isinstance(options, dict):
            return options
    except (OSError, ValueError):  # none, or torn by hand: the checkpoint's
        pass
    checkpoint = TrainingCheckpoint(run_dir)
    try:
        return dict(checkpoint.state().get("options") or {}) if checkpoint.exists() else {}
    except DataError:  # (the resume names it)
        return {}


class TrainingCheckpoint:
    """The whole training state in ``run_dir/checkpoint``: TensorFlow checkpoints written by a
    ``tf.train.CheckpointManager`` (the newest ``keep`` kept; a checkpoint counts only once it is complete),
    and ``state.json``, a copy of the schedule state for people to read.

    A checkpoint holds ``network`` (:func:`network_variables`), ``optimizer``
    (:func:`optimizer_variables`, mid-stage only) and ``state``, the schedule state as JSON:
    ``{"completed": [stage names], "stage": the running stage or None, "step": its steps done,
    "position": its stream position, "data": the training source's name and size}``.
    """

    def __init__(self, run_dir, keep=1):
        self.dir = os.path.join(run_dir, "checkpoint")
        self.keep = keep  # (a multi-worker run keeps 2: see ScheduleRunner.agree_on_checkpoint)

    def latest(self) -> typing.Optional[str]:
        """The newest complete checkpoint's path: the one the ``checkpoint`` list names, or, where
        that list is gone or cannot be read (deleted by hand, left out of a copy, cut short), the
        highest-numbered whose ``.index`` is written (a checkpoint is complete once its index is).
        A list that names a checkpoint whose index is gone gives none: not an older one instead.
        The list's names are taken in this folder, wherever they say they are (a list written with
        the absolute paths of the folder before it was moved or copied)."""
        saved = self._saved()
        if saved is not None:
            found = self._here(saved.model_checkpoint_path)
            return found if tf.io.gfile.exists(found + ".index") else None
        numbers = [int(name[len("ckpt-"):-len(".index")]) for name in self._files()
                   if name.startswith("ckpt-") and name.endswith(".index") and name[5:-6].isdigit()]
        return os.path.join(self.dir, f"ckpt-{max(numbers)}") if numbers else None

    def _saved(self):
        """The ``checkpoint`` list as TensorFlow reads it, or None where it is gone or cannot be
        parsed (``get_checkpoint_state``: None, with TensorFlow's warning)."""
        if not tf.io.gfile.exists(os.path.join(self.dir, "checkpoint")):
            return None
        return tf.train.get_checkpoint_state(self.dir)

    def _here(self, path) -> str:
        return os.path.join(self.dir, os.path.basename(path))

    def _files(self) -> list:
        return sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []

    def remnants(self) -> list:
        """The files of checkpoints that cannot be resumed from (no complete one to read: an
        ``.index`` deleted, a ``checkpoint`` list naming a checkpoint whose index is gone); a save
        killed half-way (``ckpt-N_temp``) is no remnant, being no checkpoint yet."""
        if self.latest() is not None:
            return []
        return [name for name in self._files() if name.startswith("ckpt-") and "_temp" not in name]

    def exists(self) -> bool:
        return self.latest() is not None

    def save(self, net, optimizer, state: dict) -> str:
        objects = {"network": network_variables(net.model),
                   "state": tf.Variable(json.dumps(state), dtype=tf.string, trainable=False)}
        if optimizer is not None:
            objects["optimizer"] = optimizer_variables(optimizer)
        # A new number every time: the previous checkpoint stays whole until this one is complete.
        latest = self.latest()
        # The list written again where it is gone, so that the manager removes the newest in turn,
        # and where it names the folder this one was moved or copied from, whose checkpoints the
        # manager would remove otherwise.
        saved = self._saved()
        if saved is None or any(self._here(path) != path for path in
                                (saved.model_checkpoint_path, *saved.all_model_checkpoint_paths)):
            local = (self.kept() if saved is not None else []) or ([latest] if latest else [])
            if local:
                self._list(local)
            elif saved is not None:
                remove_path(os.path.join(self.dir, "checkpoint"))
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(**objects), self.dir, max_to_keep=self.keep)
        for left in glob.glob(os.path.join(glob.escape(self.dir), "ckpt-*_temp*")):  # a save killed (-9) half-way
            remove_path(left)
        number = int(latest.rsplit("-", 1)[1]) + 1 if latest else 1
        try:
            path = manager.save(checkpoint_number=number)
        except BaseException:  # e.g. a full disk: its parts would hold space the next try needs
            if self.latest() != os.path.join(self.dir, f"ckpt-{number}"):  # not yet the one to resume from
                for part in glob.glob(os.path.join(glob.escape(self.dir), f"ckpt-{number}[._]*")):
                    remove_path(part)
            raise
        write_atomically(os.path.join(self.dir, "state.json"),
                         json.dumps({**state, "checkpoint": os.path.basename(path)}, indent=2))
        return path

    def state(self, path=None) -> dict:
        holder = tf.Variable("", dtype=tf.string, trainable=False)
        try:
            tf.train.Checkpoint(state=holder).read(path or self.latest()).expect_partial()
        except (tf.errors.OpError, IndexError) as error:  # IndexError: a data file cut short
            raise self._unreadable(error) from None
        return json.loads(holder.numpy().decode())

    def kept(self) -> list:
        """The complete checkpoints kept, oldest first: their paths."""
        saved = self._saved()
        paths = [self._here(path) for path in (saved.all_model_checkpoint_paths if saved else [])]
        return [path for path in paths if tf.io.gfile.exists(path + ".index")]

    def go_back_to(self, path):
        """Make the kept checkpoint ``path`` the newest, removing those written after it."""
        kept = self.kept()
        place = kept.index(path) + 1
        for later in kept[place:]:
            for part in glob.glob(glob.escape(later) + ".*"):
                remove_path(part)
        self._list(kept[:place])
        write_atomically(os.path.join(self.dir, "state.json"),
                         json.dumps({**self.state(path), "checkpoint": os.path.basename(path)}, indent=2))

    def remove(self):
        remove_path(self.dir)

    def _list(self, paths):
        """Write the ``checkpoint`` list: ``paths``, the last the newest. Each with its time of writing
        (a checkpoint listed without one counts as kept for good: a manager never removes it)."""
        times = [os.path.getmtime(path + ".index") for path in paths]
        names = [os.path.basename(path) for path in paths]  # relative, as the manager writes them:
        # a run folder moved or copied keeps reading its own checkpoints
        tf.compat.v1.train.update_checkpoint_state(self.dir, names[-1], all_model_checkpoint_paths=names,
                                                   all_model_checkpoint_timestamps=times,
                                                   last_preserved_timestamp=min(times) - 1)

    def _unreadable(self, error) -> DataError:
        message = getattr(error, "message", None) or str(error)
        return DataError(f"{self.latest()}: the checkpoint cannot be read ({message}); restore its "
                         f"files, or delete {self.dir} to train from the beginning")

    def restore_network(self, net):
        self._restore(network=network_variables(net.model))

    def restore_optimizer(self, optimizer) -> bool:
        if "optimizer/" not in " ".join(name for name, _ in tf.train.list_variables(self.latest())):
            return False
        self._restore(optimizer=optimizer_variables(optimizer))
        return True

    def _restore(self, **objects):
        path = self.latest()
        try:
            status = tf.train.Checkpoint(**objects).read(path)
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError) as error:
            raise self._unreadable(error) from None
        except (AssertionError, ValueError) as error:  # a variable missing; another shape
            raise DataError(f"{path}: the checkpoint does not match this model ({error}); it was "
                            "written by another configuration: resume with the run's own "
                            "config.json, or start a new run (another --out)") from None
        status.expect_partial()


def detector_trained(plan) -> set:
    """The names of the stages of ``plan`` from the first that trains the detector head on: those
    whose detector is worth evaluating (the joint stage; the alternating schedule's 2-4)."""
    first = next((i for i, stage in enumerate(plan) if stage.train_detector_head), len(plan))
    return {stage.name for stage in plan[first:]}


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite: the weights are lost from there on, so the run
    stops without checkpointing them (the checkpoints written before stay)."""


class _Interrupted(Exception):
    """Raised by tests' ``stop_after_steps`` (the run stops as if killed) and after the checkpoint
    of a requested stop (``ScheduleRunner.request_stop``)."""


class _WindowProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar for a stage's fit of ``steps`` steps in windows (epochs) of ``window``:
    the last, shorter window counts its own steps (fit's ``steps_per_epoch`` is the full window's)."""

    def __init__(self, steps, window):
        super().__init__()
        self.steps, self.window = steps, window

    def on_epoch_begin(self, epoch, logs=None):
        self.target = min(self.window, self.steps - epoch * self.window)
        super().on_epoch_begin(epoch, logs)


class _StageSteps(StepCounting):
    """Counts a stage's steps, writes its checkpoints when due and stops ``fit`` at its last step."""

    def __init__(self, runner, stage, step, position, batch, evaluated=None, stage_log=None):
        super().__init__()
        self.runner, self.stage, self.step, self.position, self.batch = runner, stage, step, position, batch
        self.stage_log = stage_log  # (a requested stop's part of a window logged at its checkpoint's step)
        self.last_save = runner.clock()
        self.window_start, self.logs = step, None
        # The multiples of eval_every evaluated (a resumed stage: as its checkpoint says).
        self.evaluated = evaluated if evaluated is not None else step // runner.eval_every if runner.eval_every else 0

    def on_train_begin(self, logs=None):
        self.evaluate_if_due()  # a resume at a multiple whose evaluation a stop put off: its weights are these

    def evaluate_if_due(self):
        """The evaluation of every multiple of ``eval_every`` reached, at that step (before its
        checkpoint, so that a run killed while evaluating evaluates it again when resumed); put off
        by a requested stop (the checkpoint says so, and the resumed run evaluates first)."""
        runner = self.runner
        if self.evaluation_due() and not runner.stop_requested:
            self.evaluated = self.step // runner.eval_every
            runner.evaluator(self.stage, self.step)

    def evaluation_due(self) -> bool:
        runner = self.runner
        return bool(runner.eval_every and runner.evaluator and self.step // runner.eval_every > self.evaluated
                    and self.stage.name in runner.evaluated_stages)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)  # (StepCounting's count of the window's steps)
        self.window_start = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.logs = logs  # the window's running means: checked before anything is saved
        runner = self.runner
        steps = self.new_steps(batch)
        self.step += steps
        self.position += self.batch * steps
        runner.steps_run += steps
        self.evaluate_if_due()
        if self.step >= self.stage.steps:
            self.model.stop_training = True  # the stage's last step; its checkpoint follows fit
        elif runner.stop_requested and not runner.multi_worker:  # workers agree at a window's end
            self.stop()
        elif runner.checkpoint_every and self.step % runner.checkpoint_every == 0:
            self.save()
        if runner.stop_after_steps is not None and runner.steps_run >= runner.stop_after_steps:
            raise _Interrupted()

    def on_epoch_end(self, epoch, logs=None):
        runner = self.runner
        self.logs = logs
        self.check_finite()  # the stage's own checkpoint follows fit: not of diverged weights either
        if self.step >= self.stage.steps:
            return
        if runner.multi_worker and runner.agree(runner.stop_requested):
            self.stop()
        due = bool(runner.checkpoint_minutes) and (
            runner.clock() - self.last_save >= 60.0 * runner.checkpoint_minutes)
        if runner.agree(due):
            self.save()

    def stop(self):
        self.save()
        if self.stage_log is not None and self.step > self.window_start:  # (mid-window: fit's end never comes)
            self.stage_log.write(self.logs, self.step)
        self.runner.stopped_at = (self.stage.name, self.step)
        raise _Interrupted()

    def check_finite(self):
        """``TrainingDiverged`` if a loss of the logs so far is NaN or infinite (the window's running
        means: one such step makes them so)."""
        bad = {name: float(value) for name, value in (self.logs or {}).items()
               if name.startswith("loss") and not math.isfinite(float(value))}
        if bad:
            runner = self.runner
            kinds = " and ".join(sorted({"NaN" if math.isnan(v) else "infinite" for v in bad.values()}))
            raise TrainingDiverged(
                f"the training loss became {kinds} ({', '.join(sorted(bad))}) between steps "
                f"{self.window_start} and {self.step} of {self.stage.name} (learning rate {runner.cfg.train.lr:g}): the "
                "weights diverged, so they were not checkpointed (checkpoints written before stay). Start a new "
                f"run with a lower --lr (another --out, or delete {runner.run_dir}); if it diverges at any rate, "
                "look for boxes or images in the data that are not what they say")

    def save(self):
        runner = self.runner
        self.check_finite()
        runner.checkpoint.save(runner.net, self.model.optimizer, runner.state_of(
            stage=self.stage.name, step=self.step, position=self.position, evaluated=self.evaluated))
        runner.saved_at.append((self.stage.name, self.step))
        self.last_save = runner.clock()


# --- the schedule runner ------------------------------------------------------------------------


class ScheduleRunner:
    """Runs a schedule on ``net`` (a ``Networks``) with ``source`` as training data.

    ``run_dir`` receives the checkpoint, the stored proposals, the starting weights of the base and
    the RPN head (``initial_weights/``) and TensorBoard logs (``logs/<stage>/train``). ``log`` prints the stage-by-stage lines.

    checkpoint_minutes: write a checkpoint when this many minutes have passed since the last one,
      checked at the end of every ``log_every``-step window (None or 0: off).
    checkpoint_every: also write one every this many steps (None: off).
    log_every: steps per Keras epoch (progress bar line, TensorBoard point).
    eval_every / evaluator: ``evaluator(stage, step)`` (the detector evaluated on held-out data) at
      every multiple of ``eval_every`` steps, in the stages whose detector head has been trained (the
      joint stage; the alternating schedule's 2-4); the same steps when the run is interrupted and
      resumed (a checkpoint is written after its step's evaluation, and says whether a stop put
      one off).
    dataset_hook: ``fn(stage, dataset) -> dataset`` applied to each stage's stream of batches
      (for audits and benchmarks).
    stop_after_steps / clock: for tests (an interruption after that many steps; the time source).

    ``request_stop()`` (train.py calls it on Ctrl-C and SIGTERM) ends a stage's training after its
    current step (under a multi-worker strategy: its current ``log_every`` window, every worker at
    the same step) with a checkpoint there; ``run`` then returns False and ``stopped_at`` holds
    ``(stage, step)``. Requested outside training (a proposals dump), the run stops before the next
    stage.
    """

    def __init__(self, net, source: DetectionSource, cfg: Config, run_dir: str,
                 steps: typing.Optional[int] = None, checkpoint_every: typing.Optional[int] = None,
                 checkpoint_minutes: typing.Optional[float] = 10.0, log_every: int = 100,
                 verbose="auto", log=print, callbacks=(), strategy=None, stop_after_steps=None,
                 stage_hooks=(), dataset_hook=None, clock=time.monotonic, eval_every=None, evaluator=None):
        self.net, self.cfg, self.run_dir = net, cfg, run_dir
        self.source = as_source(source)
        self.plan = stages(cfg, steps)
        self.checkpoint_every = int(checkpoint_every) if checkpoint_every else None
        self.checkpoint_minutes = checkpoint_minutes
        self.log_every = max(1, int(log_every))
        self.eval_every, self.evaluator = (int(eval_every) if eval_every else None), evaluator
        self.evaluated_stages = detector_trained(self.plan)
        self.verbose, self.log, self.callbacks = verbose, log, list(callbacks)
        self.strategy = strategy or tf.distribute.get_strategy()
        check_jit_under(self.strategy, cfg)
        frozen = net.frozen_by_hand()
        if frozen:
            self.log(f"note: {', '.join(frozen[:4])}" + (f" and {len(frozen) - 4} more" if len(frozen) > 4 else "")
                     + " frozen before the run: the schedule sets each layer's trainable flag, so they train in the "
                     "stages that train their part (README, Training from Python)")
        for callback in self.callbacks:
            if isinstance(callback, (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)):
                raise ConfigError(
                    f"{type(callback).__name__}: the runner's optimizers follow the config's learning-rate "
                    "schedule (train.lr, lr_drop, the stages' drop steps, warmup_steps): set those, or train a view "
                    "with your own optimizer and callbacks (net.prepare(view, optimizer).fit(...))")
        self.checkpoint = TrainingCheckpoint(run_dir, keep=2 if self.multi_worker else 1)
        self.stop_after_steps = stop_after_steps
        self.stage_hooks = list(stage_hooks)  # fn(event, stage, runner), event "start" or "end"
        self.dataset_hook = dataset_hook
        self.clock = clock
        self.stage_seconds = {}
        self.running = None  # (stage name, perf_counter at its start in this process)
        self.history = []  # (stage name, first step, first position, steps) of every fit run
        self.saved_at = []  # (stage name, step) of every mid-stage checkpoint
        self.steps_run = 0
        self.completed = []
        self.stop_requested = False
        self.stopped_at = None  # (stage name, step) of a requested stop's checkpoint
        self.started = None  # the schedule state ``start`` began from
        self.ready = False  # ``start`` called for the next ``run``
        self.put_off = None  # [stage name, step]: the evaluation a stop in a stage's last steps put off
        self.fitting = False  # inside a stage's Keras fit, where a requested stop is honoured
        os.makedirs(run_dir, exist_ok=True)

    def request_stop(self):
        """Stop at the next step with a checkpoint (see the class docstring); safe to call from a
        signal handler."""
        self.stop_requested = True

    @property
    def multi_worker(self) -> bool:
        """More than one worker: flags must be agreed (``agree``) before anything acts on them."""
        return is_multi_worker(self.strategy)

    def _path(self, name):
        return os.path.join(self.run_dir, name)

    def state_of(self, stage=None, step=0, position=0, evaluated=None, put_off=None) -> dict:
        return {"completed": list(self.completed), "stage": stage, "step": int(step),
                "position": int(position), "evaluated": evaluated, "put_off_evaluation": put_off,
                "options": self.options(), "devices": self.devices(),
                "stage_seconds": {name: round(seconds, 1) for name, seconds in self.seconds_so_far().items()},
                "data": {"name": self.source.name, "identity": self.source.identity,
                         "num_examples": self.source.num_examples, "class_names": list(self.source.class_names)}}

    def devices(self) -> dict:
        """How many workers and replicas (in all) train: a step's batch is the stage's images times
        the replicas, and each worker keeps its own checkpoint, so a run resumes on the same."""
        return {"workers": num_workers(self.strategy), "replicas": int(self.strategy.num_replicas_in_sync)}

    def check_devices(self, recorded):
        """``DataError`` if the newest checkpoint's ``recorded`` devices (a state's "devices"; None
        written before they were recorded) are not this run's. A multi-worker run gathers every
        worker's, so that all refuse alike (a worker added to the cluster holds no checkpoint, and
        would have every worker start over)."""
        current = self.devices()
        if self.multi_worker:
            found = [{"workers": int(w), "replicas": int(r)} for w, r in zip(
                self.gather(recorded["workers"] if recorded else -1),
                self.gather(recorded["replicas"] if recorded else -1)) if w >= 0]
            recorded = next((record for record in found if record != current), None)
        if recorded is None or recorded == current:
            return

        def words(d):
            return f"{d['workers']} worker(s), {d['replicas']} replica(s) in all"

        raise DataError(
            f"{self.checkpoint.dir}: the run trained on {words(recorded)}, this one has {words(current)} (a step "
            "trains on the stage's images per replica times the replicas, and each worker resumes its own "
            "checkpoint): resume it on the same workers (TF_CONFIG) and devices (the GPUs visible), or start "
            "a new run (another --out)")

    def options(self) -> dict:
        """The run's own options (train.py's, kept by a resume: see :func:`run_options`)."""
        return {"checkpoint_minutes": self.checkpoint_minutes, "checkpoint_every": self.checkpoint_every,
                "log_every": self.log_every, "eval_every": self.eval_every}

    def seconds_so_far(self) -> dict:
        """Seconds spent in each stage, across the processes of a resumed run: the stage running now
        counted to this moment (a checkpoint keeps them; time after the last checkpoint of a killed
        process is time whose training was lost)."""
        seconds = dict(self.stage_seconds)
        if self.running is not None:
            name, began = self.running
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - began
        return seconds

    def agree(self, flag: bool) -> bool:
        """``flag`` on every worker if it is on any (checkpoints must be written by all workers of
        a multi-worker strategy at the same step, or their resumes would diverge)."""
        return any_worker(self.strategy, flag)

    def gather(self, value: float) -> list:
        """``value`` of every replica of every worker (one worker: ``[value]``)."""
        if not self.multi_worker:
            return [value]
        values = self.strategy.run(lambda: tf.constant([value], tf.float64))
        return [float(v) for v in self.strategy.gather(values, axis=0).numpy()]

    def _newest_devices(self):
        """The devices the newest readable checkpoint records (None: none, or not recorded)."""
        for path in reversed(self.checkpoint.kept()):
            try:
                return self.checkpoint.state(path).get("devices")
            except DataError:
                continue
        return None

    def agree_on_checkpoint(self):
        """The workers of a multi-worker run resume from the same step. Each writes its own
        checkpoint at the same steps, but a run killed (-9, a machine lost) while they wrote one
        can leave one worker's newest a checkpoint later than another's; each keeps its last two,
        and all go back to the newest one every worker holds (none: all start over)."""
        kept = self.checkpoint.kept()
        states = []
        for path in kept:
            try:
                states.append((path, self.checkpoint.state(path)))
            except DataError:
                pass

        def place(state):  # the schedule's progress: stages completed, then steps of the next
            return len(state["completed"]) * 1e9 + (state["step"] if state["stage"] else 0)

        places = self.gather(place(states[-1][1]) if states else -1.0)
        common = min(places)
        if not states or common == place(states[-1][1]):
            return
        if common < 0:
            self.log("resuming: another worker has no checkpoint (killed while writing its first): every "
                     "worker starts over")
            self.checkpoint.remove()
            return
        match = [path for path, state in states if place(state) == common]
        if not match:
            raise DataError(f"{self.checkpoint.dir}: this worker's checkpoints "
                            f"({', '.join(os.path.basename(p) for p in kept)}) hold none at the step another "
                            "worker's newest is at: the workers' checkpoints were not written together; start "
                            "a new run (another --out, or delete the workers' folders)")
        self.checkpoint.go_back_to(match[0])
        state = self.checkpoint.state()
        for stage in self.plan:  # proposals of an RPN stage the run now trains again
            if stage.proposals_from and stage.proposals_from not in state["completed"]:
                remove_path(self._path(f"proposals_{stage.name}"))
                remove_path(self._path(f"proposals_{stage.name}.partial"))
        self.log(f"resuming: this worker's newest checkpoint ({os.path.basename(kept[-1])}) was written after "
                 f"another worker's last: back to "
                 f"{os.path.basename(match[0])} ({state['stage'] or 'next stage'} step {state['step']}), "
                 "the newest every worker holds")

    def start(self, resume=False) -> dict:
        """Before anything is trained or written: a resume's checkpoint checked against the data
        (``DataError`` for other data) and restored; a new run's folder cleared of an earlier run's
        state and outputs. train.py writes the run's config.json after it, so that neither a refused
        resume nor a new run killed while it builds its model leaves a config.json that is not the
        folder's run. ``run`` calls it if not called."""
        if self.started is not None:  # this runner's next run (run(resume=True) after a stop): asked anew
            self.stop_requested = False
        names, wanted = list(self.net.model.class_names), list(self.source.class_names)
        unnamed = names == unnamed_classes(len(names))  # (built with a count alone)
        if wanted and (len(names) != len(wanted) or (names != wanted and not unnamed)):  # (a bare dataset: none)
            raise DataError(f"{self.source.name}: the data's classes {wanted} are not the network's {names}: build "
                            "it for the data's (build_models(cfg, source.num_classes, weights=<a model>, "
                            "class_names=source.class_names) keeps the columns of the classes it shares by name)")
        state = self.state_of()
        if resume:  # (before a multi-worker run's agreement, which may remove a worker's checkpoints)
            self.check_devices(self._newest_devices())
        if resume and self.multi_worker:
            self.agree_on_checkpoint()
        if resume and self.checkpoint.exists():
            state = self.checkpoint.state()
            data = state.get("data", {})
            same = self.source.recorded_as(data.get("identity"), data.get("name"))
            if not same or data.get("num_examples") != self.source.num_examples:
                raise DataError(
                    f"{self.checkpoint.dir}: the run was trained on {data.get('name')!r} "
                    f"({data.get('num_examples')} examples), not {self.source.name!r} "
                    f"({self.source.num_examples}){self.source.identity_differs(data.get('identity'), data.get('name'))}"
                    ": resume on the same data, or start a new run")
            if "class_names" in data and [class_name(n) for n in data["class_names"]] != list(self.source.class_names):
                raise DataError(  # the same images, their classes numbered otherwise: labels would swap
                    f"{self.checkpoint.dir}: the run was trained on the classes {data['class_names']}, the data "
                    f"now gives {list(self.source.class_names)}: resume on the same classes in the same order")
            # Stages 2 and 3 start again from the weights stored before stage 1; written now from
            # the restored network they would be the checkpoint's trained ones.
            resets = [stage.name for stage in self.plan if (stage.reset_base or stage.reset_rpn_head)
                      and stage.name not in state["completed"] and stage.name != state["stage"]]
            if resets and not os.path.isdir(self._path("initial_weights")):
                raise DataError(f"{self._path('initial_weights')} is missing: the starting weights {', '.join(resets)} "
                                "begin again from, written before the first stage; restore it, or start a new run")
            self.checkpoint.restore_network(self.net)
            self.stage_seconds = dict(state.get("stage_seconds") or {})  # (the stages an earlier process trained)
            self.running = None
            self.log(f"resuming: completed {state['completed'] or 'nothing'}; "
                     f"{state['stage'] or 'next stage'} at step {state['step']}")
            dropped, removed = rewind_logs(self._path("logs"), state["completed"], state["stage"], state["step"])
            if dropped or removed:
                self.log(f"   TensorBoard logs rewound to the checkpoint: {dropped} events written after it "
                         f"dropped" + (f", the logs of {', '.join(removed)} removed" if removed else ""))
        else:
            left = self.checkpoint.remnants() if resume else []
            if left:  # (starting over would remove them: the run's training lost)
                raise DataError(
                    f"{self.checkpoint.dir}: the checkpoint cannot be read ({', '.join(left[:4])}"
                    f"{' ...' if len(left) > 4 else ''} without a complete checkpoint: its .index file or the "
                    f"checkpoint list is missing); restore its files, or delete {self.checkpoint.dir} to train "
                    "from the beginning")
            if resume:
                self.log(f"no checkpoint in {self.run_dir}: starting from the beginning")
            self._clear_earlier_run()
        # The options this process trains with: a resume keeps them, checkpoint written or not.
        write_atomically(self._path("options.json"), json.dumps(self.options(), indent=2))
        self.started, self.ready = state, True
        return state

    def run(self, resume=False):
        """Run the remaining stages; False if stopped (``request_stop``, tests' ``stop_after_steps``)."""
        state = self.started if self.ready else self.start(resume)
        self.ready = False  # (a later run of this runner starts again: from its checkpoint with resume=True)
        self.completed = list(state["completed"])
        put_off = state.get("put_off_evaluation")
        if put_off and self.evaluator and not self.stop_requested:
            name, step = put_off
            self.evaluator(next(stage for stage in self.plan if stage.name == name), step)
        # The starting weights that stage 2 (base) and stage 3 (RPN head) begin from again.
        initial = self._path("initial_weights")
        if not os.path.isdir(initial):
            partial = initial + ".partial"
            tf.train.Checkpoint(base=_weights_by_path(self.net.base),
                                rpn_head=_weights_by_path(self.net.rpn_head)).write(os.path.join(partial, "weights"))
            os.replace(partial, initial)
        try:
            return self._run_stages(state)
        finally:
            self.net.set_trainable()  # however the run ends (a stage's flags are the stage's)

    def _run_stages(self, state) -> bool:
        for number, stage in enumerate(self.plan, start=1):
            if stage.name in self.completed:
                if stage.proposals_from:  # (a kill between its checkpoint and their removal left them)
                    remove_path(self._path(f"proposals_{stage.name}"))
                continue
            resuming = state["stage"] == stage.name
            if self.agree(self.stop_requested):  # asked between stages: the last one's checkpoint is written
                self.stopped_at = (stage.name, state["step"] if resuming else 0)
                return False
            try:
                self._run_stage(number, stage, state["step"] if resuming else 0,
                                state["position"] if resuming else 0, resuming,
                                evaluated=state.get("evaluated") if resuming else None)
            except _Interrupted:
                return False
            self.completed.append(stage.name)
            # A stop asked in the stage's last steps put off the evaluation of its last step: the
            # checkpoint says so, and the resumed run evaluates it first (these are its weights).
            self.checkpoint.save(self.net, None, self.state_of(put_off=self.put_off))
            self.put_off = None
            if stage.proposals_from:  # needed no more (a resume continues after this checkpoint): at
                remove_path(self._path(f"proposals_{stage.name}"))  # COCO's size, ~4 GB a stage
            if stage is self.plan[-1] and self.agree(self.stop_requested):  # asked in its last steps: stopped,
                self.stopped_at = (stage.name, stage.steps)  # as told (its checkpoint is written)
                return False
        return True

    def _clear_earlier_run(self):
        """A new run must not reuse what an earlier run left in its folder: its checkpoint, the
        initial weights stages 2 and 3 start from again, its stored proposals (an earlier RPN's),
        its TensorBoard logs; nor show its model and metrics as the new run's."""
        names = [name for name in sorted(os.listdir(self.run_dir))
                 if name in (*EARLIER_RUN_STATE, *(f"{n}.partial" for n in EARLIER_RUN_STATE),
                             *EARLIER_RUN_OUTPUTS)
                 or name.startswith("proposals_")]
        for name in names:
            remove_path(self._path(name))
        if names:
            self.log(f"   a new run in {self.run_dir}: removed the earlier run's {', '.join(names)}")

    def _unbias_batch_norm(self, stage):
        """The base's trained batch norms' moving statistics without their starting values: after n
        steps, Keras's moving average ``m * average + (1 - m) * batch`` still holds its start with
        weight ``m ** n`` (0.99 ** 80 = 0.45; 0.99 ** 2400 = 3e-11), and a base trained a few hundred
        steps from scratch then normalised the next, frozen stage's features by statistics
        half of ones and zeros (a 40-step run of the pyramid: stage 3's loss 0.3 -> 1.1, stage 4's
        NaN). Divided out as Adam divides out its moments' start: ``(average - m ** n * start) /
        (1 - m ** n)``, the starts being ``initial_weights/`` (where every base-training stage
        begins). Done at the stage's end, on the statistics of its last step (a resumed run does it
        again from those), before the stage's checkpoint."""
        norms = [layer for layer in self.net.base._flatten_layers(include_self=False)
                 if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and layer.built]
        if not norms:
            return
        weights = self._path(os.path.join("initial_weights", "weights"))
        averages = {v.path: v for layer in norms for v in (layer.moving_mean, layer.moving_variance)}
        starts = {path: tf.Variable(tf.zeros_like(v), trainable=False) for path, v in averages.items()}
        try:
            tf.train.Checkpoint(base=starts).read(weights).expect_partial().assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            message = getattr(error, "message", None) or str(error)
            raise DataError(f"{weights}: the base's starting weights cannot be read ({message}); restore "
                            f"{os.path.dirname(weights)} from a copy, or start a new run (another --out)") from None
        for layer in norms:
            left = float(layer.momentum) ** stage.steps
            if 0.0 < left < 1.0:
                for variable in (layer.moving_mean, layer.moving_variance):
                    variable.assign((variable - left * starts[variable.path]) / (1.0 - left))

    def _steps_per_execution(self, step, remaining, window):
        """The steps per compiled call for a fit from ``step`` with ``remaining`` steps in windows of
        ``window``: the largest count up to ``train.steps_per_execution`` that divides the window,
        the steps left, the first step and the checkpoint interval (and a test's interruption), so
        that Keras calls the callbacks at every step they act on."""
        limit = self.cfg.train.steps_per_execution
        if remaining <= 0 or limit <= 1 or not is_default_strategy(self.strategy):
            # Under a tf.distribute strategy Keras's loop of steps fails on our steps in TF 2.21
            # ("You must feed a value for placeholder tensor .../while/cond/Placeholder_1"):
            # one step per call there.
            return 1
        stop = self.stop_after_steps - self.steps_run if self.stop_after_steps is not None else 0
        common = math.gcd(window, remaining, step, self.checkpoint_every or 0, self.eval_every or 0, max(stop, 0))
        return max(d for d in range(1, min(limit, common or limit) + 1) if common % d == 0)


    def _run_stage(self, number, stage, step, position, resuming, evaluated=None):
        cfg = self.cfg
        replicas = self.strategy.num_replicas_in_sync
        batch = stage.batch_images * replicas
        self.log(f"== stage {number}/{len(self.plan)} {stage.name}: trains "
                 + ", ".join(n for n, on in (("base", stage.train_base), ("RPN head", stage.train_rpn_head),
                                             ("detector head", stage.train_detector_head)) if on)
                 + f"; {stage.steps} steps, {stage.batch_images} images/batch"
                 + (f" per replica x {replicas} replicas" if replicas > 1 else "")
                 + f" ({stage.steps * batch / self.source.num_examples:.1f} passes over "
                 f"{self.source.num_examples} images), lr {cfg.train.lr:g} "
                 f"(x{cfg.train.lr_drop:g} after step {max(1, stage.lr_drop_step)}"
                 + (f", after {cfg.train.warmup_steps} steps of warm-up" if cfg.train.warmup_steps else "") + ")")
        began = time.perf_counter()
        self.running = (stage.name, began)
        store = None
        if stage.proposals_from:
            directory = self._path(f"proposals_{stage.name}")
            if not ProposalStore.exists(directory):
                writing = time.perf_counter()
                # A stop asked stops the pass after its batch (its part kept for the resume); with
                # several workers the pass ends first (each may resume from another file).
                try:
                    count = write_proposals(self.net, self.source, cfg, directory,
                                            made_from=os.path.basename(self.checkpoint.latest() or ""),
                                            should_stop=lambda: self.stop_requested and not self.multi_worker,
                                            log=self.log)
                except _Interrupted:
                    self.stopped_at = (stage.name, step)
                    raise
                self.log(f"   proposals of the {stage.proposals_from} RPN for {count} images -> {directory} "
                         f"({time.perf_counter() - writing:.0f} s)")
            store = ProposalStore(directory, self.source)
        for reset, part, name, label in ((stage.reset_base, self.net.base, "base", "base"),
                                         (stage.reset_rpn_head, self.net.rpn_head, "rpn_head", "RPN head")):
            if reset and not resuming:
                weights = self._path(os.path.join("initial_weights", "weights"))
                try:
                    tf.train.Checkpoint(**{name: _weights_by_path(part)}).read(weights).expect_partial()
                except (tf.errors.OpError, IndexError, AssertionError, ValueError) as error:
                    message = getattr(error, "message", None) or str(error)
                    raise DataError(f"{weights}: the starting weights {stage.name} begins again from cannot be "
                                    f"read ({message}); restore {os.path.dirname(weights)} from a copy, or start "
                                    "a new run (another --out); the stages before it are in checkpoint/") from None
                self.log(f"   {label} reset to its initial weights")

        remaining = stage.steps - step
        window = min(self.log_every, remaining)
        jit_compile = JIT_COMPILE[cfg.train.jit_compile]
        without_xla = layers_without_xla(self.net.view(stage.view))
        if jit_compile is True and without_xla:  # Keras would warn of "the model", naming nothing
            self.log(f"   --jit on: {stage.name} trains without XLA: {', '.join(without_xla)} cannot be compiled "
                     "(RoIAlign's CropAndResize has no XLA kernel)")
            jit_compile = False
        with self.strategy.scope():
            model = self.net.prepare(stage.view, make_optimizer(cfg, stage), base=stage.train_base,
                                     rpn_head=stage.train_rpn_head,
                                     detector_head=stage.train_detector_head,
                                     jit_compile=jit_compile,
                                     steps_per_execution=self._steps_per_execution(step, remaining, window))
            # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16: keep the wrapper.
            if resuming and self.checkpoint.restore_optimizer(model.optimizer):
                self.log(f"   optimizer state restored at step {int(model.optimizer.iterations.numpy())}; "
                         f"data stream at position {position}")
        stage_seed = cfg.train.seed * 1_000_003 + number
        if not resuming:
            reseed(model, stage_seed)  # a resumed stage has its random streams from the checkpoint
        # A compiled step is recompiled for every new input shape, and oneDNN's kernels are set up
        # anew for each: give the steps a few shapes only.
        pad_multiple = cfg.train.xla_pad_multiple if model.jit_compile else None

        for hook in self.stage_hooks:
            hook("start", stage, self)
        if remaining > 0:
            dataset = train_dataset(self.source, cfg, batch, seed=stage_seed, start=position, repeat=True,
                                    pad_multiple=pad_multiple, image_multiple=cfg.train.image_pad_multiple,
                                    aspect_group=cfg.train.aspect_group, proposals=store)
            if self.dataset_hook is not None:
                dataset = self.dataset_hook(stage, dataset)
            self.history.append((stage.name, step, position, remaining))
            fitting = time.perf_counter()
            self.fitting = True
            stage_log = StageLog(self._path(os.path.join("logs", stage.name, "train")), step)
            counter = _StageSteps(self, stage, step, position, batch, evaluated, stage_log)
            progress = [_WindowProgress(remaining, window)] if self.verbose and not any(
                isinstance(callback, keras.callbacks.ProgbarLogger) for callback in self.callbacks) else []
            try:
                model.fit(dataset.map(model_inputs), epochs=math.ceil(remaining / window), steps_per_epoch=window,
                          shuffle=False, verbose=self.verbose,
                          callbacks=[counter, stage_log, *progress, *self.callbacks])
            finally:
                self.fitting = False
            if counter.step >= stage.steps and counter.evaluation_due():  # put off by a stop asked
                self.put_off = [stage.name, counter.step]
            if counter.step < stage.steps:  # a callback of the user's stopped fit (EarlyStopping, TerminateOnNaN)
                self.log(f"   a callback stopped {stage.name} at step {counter.step} of {stage.steps}: stopping the run "
                         "there with a checkpoint (run(resume=True) continues it)")
                counter.stop()
        if stage.train_base:
            self._unbias_batch_norm(stage)
        for hook in self.stage_hooks:
            hook("end", stage, self)
        seconds = time.perf_counter() - began
        self.stage_seconds[stage.name] = self.stage_seconds.get(stage.name, 0.0) + seconds
        self.running = None
        self.log(f"   {stage.name} done: {stage.steps} steps"
                 + (f", {remaining} of them in this process," if 0 < remaining < stage.steps else "")
                 + f" in {seconds:.0f} s"
                 + (f" ({1000 * (time.perf_counter() - fitting) / remaining:.0f} ms a step)" if remaining > 0 else ""))
