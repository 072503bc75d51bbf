"""Train Faster R-CNN. With no arguments: the built-in synthetic ``shapes`` set (generated locally,
no network), the ``shapes`` preset, the paper's full 4-step alternating schedule, evaluation on the
test split, everything written to ``runs/shapes/``.

    python train.py                                   # shapes, 4-step alternating schedule
    python train.py --schedule joint                  # approximate joint training
    python train.py --backbone resnet50-fpn           # another base on shapes (its shapes preset)
    python train.py --preset voc                      # VGG-16, ImageNet weights, TFDS voc/2007
    python train.py --preset coco                     # VGG-16, TFDS coco/2017, COCO AP
    python train.py --voc-dir VOCdevkit/VOC2007       # a VOC folder: trainval -> test (2012: train -> val)
    python train.py --coco-json train.json --coco-images train/ \
        --coco-val-json val.json --coco-val-images val/
    python train.py --yolo-data data.yaml             # YOLO format (Ultralytics, Roboflow): train -> val
    python train.py --tfrecord pipeline.config        # TF Object Detection API TFRecords (or a folder, files)
    python train.py --csv annotations.csv             # CSV rows: path,x1,y1,x2,y2,class (or a headed CSV, a folder)
    python train.py --labelme DIR                     # LabelMe JSON files beside their images
    python train.py --via balloon/                    # VIA JSON (train/ val/ via_region_data.json)
    python train.py --cvat export/                    # CVAT for images 1.1 (annotations.xml, images/)
    python train.py --resume                          # continue after an interruption

Evaluation is on held-out data only: TFDS voc/2007 train+validation -> test, coco/2017 train ->
validation, a VOC folder trainval -> test (train -> val without a labelled test split; all[:90%] ->
all[90%:] without split files; all of it -> all of --voc-val-dir), a COCO
JSON file -> --coco-val-json (none without it), a YOLO data set, TFRecord, CSV, LabelMe or VIA files, a CVAT
project's subsets train -> val (train[:90%] -> train[90%:] without val; one split all[:90%] -> all[90%:]).
Outputs in ``--out`` (default ``runs/<preset>``; with ``--config``, ``runs/<the config's name>``): ``model.keras``, ``config.json``,
``metrics.json``, ``pr_curves/``, TensorBoard logs in ``logs/`` and the checkpoint (every 10
minutes and at the end of each stage).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import math
import shutil
import signal
import sys
import threading
import time

try:  # (TensorFlow loads here: seconds in which a Ctrl-C would print a traceback)
    from keras_frcnn import cli
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("interrupted", file=sys.stderr)
    sys.exit(130)


# The options of a run's process, not of its config: kept in its checkpoint for --resume.
RUN_OPTIONS = {"checkpoint_minutes": 10.0, "checkpoint_every": None, "log_every": 100, "eval_every": None}


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help='"shapes" (default; with --backbone, that base\'s shapes preset), "voc", '
                        '"coco", "zf-voc", '
                        '"resnet50-voc", "resnet101-voc", "resnet101-coco", "resnet50-fpn-coco", '
                        '"mobilenetv3-fpn-coco", "shapes-resnet50", "shapes-fpn" or "shapes-mobilenet"')
    parser.add_argument("--config", help="a config.json (e.g. of an earlier run) instead of a preset")
    cli.add_data_args(parser)
    parser.add_argument("--coco-val-json", help="held-out COCO JSON to evaluate a --coco-json run on")
    parser.add_argument("--coco-val-images", help="its images (default: --coco-images, the JSON's own "
                        "folder or COCO's val2017/, the one holding them)")
    parser.add_argument("--voc-val-dir", help="a VOC folder to evaluate a --voc-dir run on, all its labelled "
                        "images (Roboflow's valid/); the --voc-dir folders then train on all of theirs")
    parser.add_argument("--train-split", help="training split (default: the data set's; trainval for "
                        "--voc-dir, train where it has no labelled test split)")
    parser.add_argument("--test-split", help="evaluation split (default: the data set's held-out "
                        "labelled split; test for --voc-dir, else val)")
    parser.add_argument("--backbone", choices=["vgg16", "zf", "resnet50", "resnet101", "resnet50-fpn",
                                               "mobilenetv3-fpn"],
                        help="the base (a ResNet brings its conv5 head; its presets set the rest)")
    parser.add_argument("--weights", help='"imagenet", "none", a weights file, or a trained model.keras to '
                        'start from (fine-tuning: its weights where the shapes match)')
    parser.add_argument("--schedule", choices=["alternating", "joint"])
    parser.add_argument("--steps", type=int, help="steps per stage (the total for --schedule joint)")
    parser.add_argument("--out", help="output folder (default runs/<preset>; with --config, runs/<the config's "
                        "name>: a finished run there is replaced)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"], default="default",
                        help="mirrored: every local GPU; multi-worker: the cluster of TF_CONFIG (see README)")
    parser.add_argument("--precision", choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                        help="Keras dtype policy (default auto: mixed_bfloat16 on CPUs with AVX512_BF16 / "
                        "AMX, float32 elsewhere; mixed_float16 for GPUs)")
    parser.add_argument("--jit", choices=["auto", "on", "off"],
                        help="XLA for the training steps (default auto: on when a GPU is visible, "
                             "without --strategy; on is refused with --strategy)")
    parser.add_argument("--steps-per-execution", type=int,
                        help="training steps per call of the compiled step (default: the preset's, 10); "
                        "Keras's per-step Python runs once per call")
    parser.add_argument("--checkpoint-minutes", type=float,
                        help="write a checkpoint every this many minutes (default 10; 0: only at the "
                        "end of each stage)")
    parser.add_argument("--checkpoint-every", type=int, help="also write one every this many steps")
    parser.add_argument("--log-every", type=int,
                        help="steps per progress-bar line and TensorBoard point (default 100)")
    parser.add_argument("--eval-every", type=int,
                        help="also evaluate on the held-out data every this many steps (at each multiple, "
                        "an interrupted and resumed run too) once the detector has trained (joint; alternating "
                        "stages 2-4): mAP to the console and TensorBoard (logs/<stage>/eval); the best "
                        "model so far (the end's included) kept as best.keras")
    parser.add_argument("--min-side", type=int,
                        help="shorter side in training and test (clears the preset's --train-min-sides)")
    parser.add_argument("--max-side", type=int)
    parser.add_argument("--train-min-sides",
                        help="multi-scale training: comma separated shorter sides, one drawn per batch "
                        "(e.g. 480,576,688,864,1200); test at --min-side")
    parser.add_argument("--anchor-scales", help="comma separated, e.g. 8,16,32")
    parser.add_argument("--anchor-ratios", help="comma separated h/w ratios, e.g. 0.5,1,2")
    parser.add_argument("--batch-size", type=int, help="images per batch (per replica) in every stage")
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--verbose", default="auto", choices=["auto", "0", "1", "2"],
                        help="Keras fit verbosity")
    args = parser.parse_args(argv)  # (cli.ArgumentParser: an empty value refused)
    if args.preset and args.config:
        parser.error("give --preset or --config, not both (a run's config.json holds its preset's settings)")
    if args.coco_val_json and not args.coco_json:
        parser.error("--coco-val-json goes with --coco-json")
    if args.coco_val_images and not args.coco_val_json:
        parser.error("--coco-val-images goes with --coco-val-json")
    if args.voc_val_dir and not args.voc_dir:
        parser.error("--voc-val-dir goes with --voc-dir")
    if args.checkpoint_minutes is not None and not args.checkpoint_minutes >= 0:  # nan too
        parser.error(f"--checkpoint-minutes must be >= 0 (0: only at the end of each stage), got "
                     f"{args.checkpoint_minutes}")
    cli.require_positive(parser, args, "steps", "checkpoint_every", "log_every", "eval_every", "batch_size", "min_side",
                         "max_side", "steps_per_execution", "lr")
    if args.lr is not None and not args.lr < float("inf"):
        parser.error(f"--lr must be a finite number, got {args.lr}")
    for flag in ("out", "data_dir"):  # (TensorFlow's file functions take UTF-8 names only)
        value = getattr(args, flag, None)
        if value and not cli.utf8_name(value):
            shown = os.fsencode(value).decode("utf-8", "backslashreplace")  # (printable on any stream)
            parser.error(f"--{flag.replace('_', '-')} {shown}: a name that is not UTF-8, which TensorFlow's file "
                         "functions do not take; rename it")
    return args


# An example of each comma separated option's value, for its error.
NUMBERS_EXAMPLES = {"--train-min-sides": "480,576,688", "--anchor-scales": "8,16,32", "--anchor-ratios": "0.5,1,2"}


def numbers(text, flag):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):  # (float() reads "nan", "inf" and "1e999")
        raise cli.UsageError(f"{flag} {text}: give comma separated numbers, e.g. {NUMBERS_EXAMPLES[flag]}")
    return values


# The built-in set's preset for each base: `python train.py --backbone B` trains B on it.
SHAPES_PRESETS = {"zf": "shapes", "resnet50": "shapes-resnet50", "resnet101": "shapes-resnet50",
                  "resnet50-fpn": "shapes-fpn", "mobilenetv3-fpn": "shapes-mobilenet"}


def build_config(args, base=None):
    """The config the options ask for: on ``--config``'s file or the preset's, or on ``base`` (a
    resumed run's own, to learn what the options given now would change in it)."""
    from keras_frcnn.config import Config, ConfigError, preset
    from keras_frcnn.data.tfds_sources import default_splits

    if base is not None:
        cfg = base
    elif args.config:
        try:
            cfg = Config.from_file(args.config)
        except OSError as error:
            raise cli.UsageError(f"--config {args.config}: {error.strerror}") from None
    else:
        # No preset named: the built-in set, with the shapes preset of the --backbone asked for
        # (a base brings its anchors' stride, RoI pooling, head and input scale).
        if not args.preset and args.backbone and args.backbone not in SHAPES_PRESETS:
            raise cli.UsageError(f"--backbone {args.backbone} has no preset of the built-in set: train it with "
                                 f"--preset voc (VGG-16; on the built-in set: --preset voc --dataset shapes)")
        cfg = preset(args.preset or SHAPES_PRESETS.get(args.backbone, "shapes"))
    changes = {}
    if args.backbone:
        changes["backbone"] = args.backbone
    if args.weights:
        changes["weights"] = None if args.weights.lower() == "none" else args.weights
    if args.dataset and cli.tfds_names(args.dataset) != cli.tfds_names(cfg.dataset):
        # Another data set brings its own splits (a preset's are its own data set's); of several
        # joined by +, the first's (the others': cli.choose_data).
        names = cli.tfds_names(args.dataset)
        changes["dataset"] = "+".join(names)
        changes["train_split"], changes["test_split"] = default_splits(names[0])
    if args.precision:
        changes["precision"] = args.precision
    image, anchors, train = {}, {}, {}
    if args.min_side:
        image["min_side"] = args.min_side
        image["train_min_sides"] = ()
    if args.train_min_sides:
        sides = numbers(args.train_min_sides, "--train-min-sides")
        if not all(s == int(s) and s > 0 for s in sides):
            raise cli.UsageError(f"--train-min-sides {args.train_min_sides}: give positive whole numbers of pixels")
        image["train_min_sides"] = tuple(int(s) for s in sides)
    if args.max_side:
        image["max_side"] = args.max_side
    if args.anchor_scales:
        anchors["scales"] = numbers(args.anchor_scales, "--anchor-scales")
    if args.anchor_ratios:
        anchors["ratios"] = numbers(args.anchor_ratios, "--anchor-ratios")
    if args.schedule:
        train["schedule"] = args.schedule
    if args.batch_size:
        train["rpn_batch_images"] = train["detector_batch_images"] = args.batch_size
    if args.lr is not None:
        train["lr"] = args.lr
    if args.seed is not None:
        train["seed"] = args.seed
    if args.jit:
        train["jit_compile"] = args.jit
    if args.steps_per_execution:
        train["steps_per_execution"] = args.steps_per_execution
    try:
        train = dataclasses.replace(cfg.train, **train)
        if args.steps:  # in the run's config.json: --resume continues the same schedule
            train = train.with_steps(args.steps)
        return dataclasses.replace(
            cfg, **changes,
            image=dataclasses.replace(cfg.image, **image),
            anchors=dataclasses.replace(cfg.anchors, **anchors),
            train=train,
        )
    except ConfigError as error:  # named by the options typed that set the fields it names
        given = [f"{flag} {getattr(args, dest)}" for field, (flag, dest) in FIELD_OPTIONS.items()
                 if getattr(args, dest) is not None and "." in field and f"{field} " in str(error)]
        hint = " (a base brings its own stride: use one of its presets, see --preset)" \
            if "anchors.stride" in str(error) else ""
        raise ConfigError(f"{', '.join(dict.fromkeys(given))}: {error}{hint}" if given else f"{error}{hint}") from None


# The config fields options set: an error about one names the option, and so does a resume that
# does not apply it.
FIELD_OPTIONS = {"train.lr": ("--lr", "lr"), "train.seed": ("--seed", "seed"),
                 "anchors.scales": ("--anchor-scales", "anchor_scales"),
                 "anchors.ratios": ("--anchor-ratios", "anchor_ratios"),
                 "image.min_side": ("--min-side", "min_side"), "image.max_side": ("--max-side", "max_side"),
                 "image.train_min_sides": ("--train-min-sides", "train_min_sides"),
                 "anchors.stride": ("--backbone", "backbone"), "backbone": ("--backbone", "backbone"),
                 "weights": ("--weights", "weights"), "precision": ("--precision", "precision"),
                 "train.schedule": ("--schedule", "schedule"),
                 "train.rpn_batch_images": ("--batch-size", "batch_size"),
                 "train.detector_batch_images": ("--batch-size", "batch_size"),
                 "train.jit_compile": ("--jit", "jit"),
                 "train.steps_per_execution": ("--steps-per-execution", "steps_per_execution"),
                 **{f"train.{field}": ("--steps", "steps") for field in
                    ("stage_steps", "stage_lr_drop_steps", "joint_steps", "joint_lr_drop_step")}}


def by_option(fields) -> dict:
    """Config fields by the option that sets them (the field itself where none does)."""
    grouped = {}
    for name in fields:
        grouped.setdefault(FIELD_OPTIONS.get(name, (name,))[0], []).append(name)
    return grouped


def run_config(path):
    """A run's own ``config.json`` (a ``Config``), for ``--resume``. One written before ``train.aspect_group``
    existed (2026-12-04) trained its batches in the stream's order: it resumes so (0), not with
    the field's default, whose grouping would reorder the rest of its stream."""
    from keras_frcnn.config import Config

    cfg = Config.from_file(path)
    with open(path) as f:
        train_fields = json.load(f).get("train")
    if isinstance(train_fields, dict) and "aspect_group" not in train_fields and cfg.train.aspect_group:
        print(f"resume: {path} was written before train.aspect_group: its batches stay in the stream's "
              "order (aspect_group 0), as the run trained")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, aspect_group=0))
    return cfg


def differing_fields(asked: dict, run: dict, prefix="") -> list:
    """Dotted names of the config fields whose values differ between two config dicts."""
    names = []
    for key in sorted(set(asked) | set(run)):
        a, b = asked.get(key), run.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += differing_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key}")
    return names


def make_strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        try:  # TensorFlow reads it as JSON and tracebacks on a typo
            tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        except json.JSONDecodeError as error:
            raise cli.UsageError(f"TF_CONFIG is not valid JSON ({error}): see README, Distributed "
                                 "training") from None
        cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
        if cluster:  # TensorFlow waits, silently and without end, until every worker has started
            print(f"multi-worker: this is {task.get('type')} {task.get('index')} of a cluster of "
                  f"{sum(len(hosts) for hosts in cluster.values())} ({', '.join(sorted(cluster))}); waiting "
                  "until every one of them has started", flush=True)
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def main(argv=None):
    args = parse_args(argv)
    cli.quiet_tensorflow()
    # Resumable once this run's config.json is written (or given --resume): before it, nothing to continue.
    args.begun = args.resume

    def hint():
        return RESUME if args.begun else AGAIN

    return cli.run(lambda: train(args), resume_hint=hint, interrupted=lambda: f"interrupted: {hint()}" + (
        " (every stage's end, --checkpoint-minutes, --checkpoint-every)" if args.begun else ""))


RESUME = "add --resume to the same command to continue from the last checkpoint"
AGAIN = "give the same command again to start the run (it had not begun training: nothing to resume)"


@contextlib.contextmanager
def stop_gracefully(runner):
    """Ctrl-C or SIGTERM (a scheduler preempting the job, ``docker stop``, ``kill``) while a stage
    trains: the runner stops after the current step with a checkpoint there (nothing trained is
    lost). Outside training (a proposals dump), or a second time: stop at once, as before (the last
    checkpoint stays). Yields a list that receives the signal's number. Main thread only (Python's
    signal handlers); elsewhere a no-op. A signal ignored when the process started stays ignored."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum, frame):
        at_once = bool(received) or not runner.fitting
        received.append(signum)
        # A stop is asked either way: an exception raised while Python runs a destructor (a TensorFlow
        # object's __del__) is printed and dropped, and the run then stops at its next step.
        runner.request_stop()
        if at_once:  # (the shell's status follows the signal: 130 Ctrl-C, 143 SIGTERM)
            raise KeyboardInterrupt if signum == signal.SIGINT else cli.Terminated
        print(f"\n{signal.Signals(signum).name}: stopping after this step to write a checkpoint "
              "(Ctrl-C again: stop at once)", file=sys.stderr, flush=True)

    # A signal the process was started ignoring (SIGINT of a job started with & or nohup) stays ignored.
    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(number) is not signal.SIG_IGN}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def run_folder_lock(run_dir):
    """One train.py at a time in a run folder: a second one (the same command started twice, or
    into a folder a run is still using) would clear or overwrite the first's checkpoint, stored
    proposals and initial weights under it. The lock is the kernel's (``keras_frcnn.locks``), so a
    killed run (even by kill -9) leaves none behind."""
    from keras_frcnn.locks import file_lock

    with file_lock(os.path.join(run_dir, ".train.lock"), wait=False) as holder:
        if holder is not None:
            raise cli.UsageError(f"{run_dir} is in use by another train.py (process {holder}): wait for it "
                                 "to end, or give another --out")
        yield


def train(args):
    try:
        with contextlib.ExitStack() as held:  # the run folder's lock, once it is known
            return _train(args, held)
    except Exception as error:
        tf = sys.modules.get("tensorflow")
        if args.strategy == "multi-worker" and tf is not None and isinstance(error, tf.errors.UnavailableError):
            return worker_lost(error)
        raise


def worker_lost(error) -> int:
    """A multi-worker run whose collective ops failed (another worker killed, its machine lost):
    one line with the tasks TensorFlow names, not the traceback; exit status 1."""
    message = cli.describe_tf_error(error)
    tasks = sorted({re.sub(r"/replica:\d+", "", task)
                    for task in re.findall(r"/job:\w+/(?:replica:\d+/)?task:\d+", message)})
    print(flush=True)  # (Keras's progress bar leaves its line open)
    print(f"error: the cluster lost a worker ({' '.join(message.splitlines()[0].split()).rstrip(':')}"
          f"{'; tasks named: ' + ', '.join(tasks) if tasks else ''}): start every worker again with --resume "
          "(they go on from the newest checkpoint all of them hold)", file=sys.stderr)
    return 1


def _train(args, held):
    started = time.perf_counter()

    import keras

    from keras_frcnn import data, metrics
    from keras_frcnn.backbone import check_weights
    from keras_frcnn.config import MIXED_PRECISIONS, ConfigError, resolve_precision
    from keras_frcnn.evaluate import evaluate, headline, no_evaluation
    from keras_frcnn.files import remove_path, write_atomically
    from keras_frcnn.models import build_models
    from keras_frcnn.tensorboard import Writers, log_evaluation, log_scalars
    from keras_frcnn.training import (ScheduleRunner, any_worker, check_jit_under, holds_every_weight, run_options,
                                      unfinished_run)

    cfg = build_config(args)
    if not args.resume:  # a resume checks the run's own config below
        check_weights(cfg.backbone, cfg.weights)
    out = args.out or os.path.join("runs", cfg.name)
    if os.path.exists(out) and not os.path.isdir(out):
        raise cli.UsageError(f"--out {out}: a file, not a folder")
    config_path = os.path.join(out, "config.json")
    if args.resume and args.strategy != "multi-worker" and not os.path.exists(config_path):
        # (Not a new run: the options given would train another, a preset's default folder's.)
        raise cli.UsageError(f"--resume: {out} holds no run to continue (no config.json; a run writes it once its "
                             "data is read and its model built, before its first step): give the run's --out, or "
                             "start it again without --resume")
    # A multi-worker strategy must exist before TensorFlow runs its first op.
    strategy = make_strategy(args.strategy)
    chief = is_chief(strategy)
    run_dir = out if chief else os.path.join(out, f"worker_{strategy.cluster_resolver.task_id}")
    # Another worker's folder is its own (on its machine if the file system is not shared): it reads the
    # config.json it wrote there, and its part of a run ends with its last stage (the chief then saves
    # and evaluates the model).
    own_config = os.path.join(run_dir, "config.json")
    run_config_path = own_config if os.path.exists(own_config) else config_path
    if args.resume and os.path.exists(run_config_path):
        given, cfg = cfg, run_config(run_config_path)
        # Named: the options given now that would change the run's config, applied to it (an option
        # set back to its preset's value, --schedule alternating on a joint run, is one too); the
        # data comes from the options given now, checked against the checkpoint's.
        asked = build_config(args, base=cfg)
        asked = dataclasses.replace(asked, precision=resolve_precision(asked.precision)[0])
        fields = [name for name in differing_fields(asked.to_dict(), cfg.to_dict())
                  if name not in ("dataset", "data_paths", "classes", "voc_test_dir", "train_split", "test_split")]
        ignored = ([f"--preset {args.preset}" if args.preset else f"--config {args.config}"]
                   if (args.preset or args.config) and given.name != cfg.name else []) + [
            f"{option} ({', '.join(names)})" for option, names in by_option(fields).items()]
        if len(ignored) > 8:
            ignored = ignored[:8] + [f"and {len(ignored) - 8} more"]
        print(f"resume: using the run's own {run_config_path}"
              + (f"; not applied (the run's values stay): {', '.join(ignored)}" if ignored else ""))
    precision, why = resolve_precision(cfg.precision)
    if precision in MIXED_PRECISIONS:  # (a config's "bfloat16": weights held in 16 bits, nothing to train)
        mixed = MIXED_PRECISIONS[precision]
        raise ConfigError(f"config field precision {precision!r} is the inference form of {mixed!r} (weights "
                          f"held in 16 bits, not trainable): train with {mixed!r}")
    cfg = dataclasses.replace(cfg, precision=precision)
    with strategy.scope():
        check_jit_under(strategy, cfg)  # before the data is read
    # The options of the run's own process that a resume does not give again are the run's (its
    # checkpoint holds them), the others their defaults.
    stored, kept = run_options(run_dir) if args.resume else {}, {}
    for name, default in RUN_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, stored.get(name, default))
            if getattr(args, name) not in (None, default):
                kept[name] = getattr(args, name)
    if kept:
        print("resume: the run's own " + ", ".join(f"--{name.replace('_', '-')} {value:g}"
                                                   for name, value in kept.items()))
    # A resume whose checkpoint holds every weight needs no starting weights (ImageNet's, a file
    # since moved, a model.keras fine-tuned from): they are neither fetched nor read.
    restoring = args.resume and holds_every_weight(run_dir)
    if not restoring:
        check_weights(cfg.backbone, cfg.weights, fetch=True)  # downloaded now, before the data is read
    choice = cli.choose_data(args, cfg, args.train_split, args.test_split)
    held.enter_context(run_folder_lock(run_dir))
    # A new run starts only if no worker holds an unfinished one.
    left = None if args.resume else unfinished_run(
        run_dir, run_config_path,
        ended=os.path.join(out, "metrics.json") if chief else None)
    if not args.resume and any_worker(strategy, bool(left)):  # (every worker votes, then all stop alike)
        raise cli.UsageError(f"{run_dir} holds an unfinished run ({left}): add --resume to continue it, "
                             "or give another --out (or delete that folder) to start a new one" if left else
                             "another worker's folder holds an unfinished run: add --resume on every worker to "
                             "continue it, or give another --out to start a new one")
    # The run's config.json says what it trained on (and a later --config or evaluate reads it).
    if choice.kind == "tfds":  # (its TFDS folder and the built-in set's size, where not the defaults)
        where = (os.path.abspath(args.data_dir) if args.data_dir else "",) + (
            (args.shapes_images,) if choice.name == "shapes" and args.shapes_images else ())
        cfg = dataclasses.replace(cfg, dataset=choice.full_name, data_paths=where if any(where) else (), classes=(),
                                  voc_test_dir="", train_split=choice.train_split, test_split=choice.test_split)
    elif choice.kind == "voc-dir":
        folders = [choice.name] + [name for name, _ in choice.more]
        cfg = dataclasses.replace(cfg, dataset="voc-dir", data_paths=tuple(os.path.abspath(f) for f in folders),
                                  classes=tuple(choice.classes or ()), train_split=choice.train_split,
                                  test_split=choice.test_split,
                                  voc_test_dir=os.path.abspath(choice.test_name) if choice.test_name else "")
    elif choice.kind == "yolo":
        cfg = dataclasses.replace(cfg, dataset="yolo", data_paths=(os.path.abspath(choice.name),), classes=(),
                                  voc_test_dir="", train_split=choice.train_split, test_split=choice.test_split)
    elif choice.kind == "tfrecord":
        def absolute(path):  # gs://, s3:// ... paths as given
            return path if "://" in path else os.path.abspath(path)

        cfg = dataclasses.replace(cfg, dataset="tfrecord", data_paths=(
            absolute(choice.name), absolute(args.label_map) if args.label_map else ""), classes=(),
            voc_test_dir="", train_split=choice.train_split, test_split=choice.test_split)
    elif choice.kind in ("labelme", "via", "cvat"):
        cfg = dataclasses.replace(cfg, dataset=choice.kind, data_paths=tuple(
            os.path.abspath(path) for path in [choice.name] + [name for name, _ in choice.more]), classes=(),
                                  voc_test_dir="", train_split=choice.train_split, test_split=choice.test_split)
    elif choice.kind == "csv":
        cfg = dataclasses.replace(cfg, dataset="csv", data_paths=tuple(
            os.path.abspath(path) if path else "" for path in (choice.name, args.csv_images, args.csv_classes)),
            classes=(), voc_test_dir="", train_split=choice.train_split, test_split=choice.test_split)
    else:
        paths = (args.coco_json[0], cli.coco_images(args), args.coco_val_json, args.coco_val_images,
                 *[part for path in args.coco_json[1:] for part in (path, cli.coco_images(args, path))])
        cfg = dataclasses.replace(cfg, dataset="coco-json", data_paths=tuple(os.path.abspath(p) if p else ""
                                                                                for p in paths),
                                  classes=(), voc_test_dir="", train_split="", test_split="")

    # Everything is read and checked before anything is trained.
    train_source = cli.load_training_source(args, choice, decode_images=False)
    if choice.kind == "coco-json" and args.coco_val_json:
        test_source = data.load_coco_json(args.coco_val_json, cli.held_out_images_of(
            args.coco_val_json, args.coco_val_images, cli.coco_images(args)))
    elif choice.kind == "coco-json":
        test_source = None
    else:
        test_source = cli.load_test_source(args, choice)
    if test_source is not None:  # (the names, or some of them, in any order, a COCO file's other ids: by name)
        test_source = data.in_class_order(test_source, train_source.class_names)
    if test_source is not None and tuple(test_source.class_names) != tuple(train_source.class_names):
        raise cli.UsageError(f"the evaluation data {test_source.name} has "
                             f"{data.classes_differ(test_source.class_names, train_source.class_names)} "
                             f"(the training data {train_source.name}'s classes)")
    if train_source.num_objects == 0:
        raise cli.UsageError(f"the training data {train_source.name} has no objects to learn from "
                             f"(none in its {train_source.num_examples} image(s), or only difficult / crowd "
                             "ones): check its annotations, or the split chosen")
    if test_source is not None and test_source.num_objects == 0:
        raise cli.UsageError(f"the evaluation data {test_source.name} has no labelled objects (none in "
                             f"its {test_source.num_examples} image(s), or only difficult / crowd ones: an "
                             "unlabelled test set?): give a labelled split or file to evaluate on")
    cli.warn_if_not_held_out(train_source, test_source)
    print(f"data: training on {train_source.name} ({train_source.num_examples} images); "
          + (f"evaluating on {test_source.name} ({test_source.num_examples or 'uncounted'} images)" if test_source else
             "no evaluation: a --coco-json run evaluates only on held-out images "
             "(--coco-val-json, --coco-val-images), never on its training images")
          + f"; {train_source.num_classes} classes: {cli.class_list(train_source.class_names)}")
    per_class = cli.objects_per_class(train_source)
    if per_class:
        print(f"objects to train on, by class ({train_source.num_objects:,}): {per_class}")

    keras.utils.set_random_seed(cfg.train.seed)
    os.makedirs(out, exist_ok=True)
    with strategy.scope():
        net = build_models(cfg, train_source.num_classes, weights=None if restoring else "config",
                           class_names=train_source.class_names)
    print(f"model: {cfg.backbone} base (width {cfg.backbone_width:g}), {net.model.count_params():,} "
          f"parameters; schedule {cfg.train.schedule}; replicas {strategy.num_replicas_in_sync}; "
          f"precision {cfg.precision} ({why})")

    # --eval-every keeps the best model evaluated so far (best.json: where and its figure; a resumed run
    # continues from the one it had).
    best_path, best_json = os.path.join(out, "best.keras"), os.path.join(out, "best.json")
    best = read_best(best_json) if args.resume and args.eval_every else None

    def keep_if_best(summary, stage_name, step, save):
        nonlocal best
        metric, value = headline_value(summary)
        if value is None or (best is not None and value <= best["value"]):
            return
        write_atomically(best_path, save, partial=os.path.join(out, "best.partial.keras"))
        best = {"stage": stage_name, "step": step, "metric": metric, "value": value}
        write_atomically(best_json, json.dumps(best, indent=2))
        print(f"   best so far: {metric} {value:.4f} ({stage_name} step {step}), saved {best_path}")

    writers = Writers()  # the evaluations' TensorBoard files, one a folder

    def evaluate_now(stage, step):  # --eval-every: the detector as it is at this step
        if not chief or (stage is runner.plan[-1] and step >= stage.steps):  # (the end's evaluation follows)
            return
        began = time.perf_counter()
        # The inference form, as evaluate, predict and export run it (16-bit weights, batch norms folded).
        _, summary = evaluate(net.model.for_inference(), test_source, coco=choice.coco)
        log_scalars(summary, writers(os.path.join(out, "logs", stage.name, "eval")), step)
        # With Keras's progress bar, a step ends on the bar's line: a line of its own (the bar's redraw
        # would erase it).
        print(("\n" if runner.verbose not in (0, 2) else "") + f"   {stage.name} step {step}: {headline(summary)} "
              f"({time.perf_counter() - began:.0f} s)")
        if stage.train_rpn_head or not stage.train_base:  # (stage 2's RPN head is of another base: no model)
            keep_if_best(summary, stage.name, step, net.model.save)

    if args.eval_every and test_source is None:
        raise cli.UsageError("--eval-every: this run has no held-out data to evaluate on (--coco-val-json)")
    runner = ScheduleRunner(net, train_source, cfg, run_dir, checkpoint_every=args.checkpoint_every,
                            checkpoint_minutes=args.checkpoint_minutes, log_every=args.log_every,
                            eval_every=args.eval_every, evaluator=evaluate_now,
                            strategy=strategy, verbose=_verbosity(args.verbose))
    # config.json once the folder is this run's: a resume's checkpoint checked against the data (a refused
    # resume leaves the run's config as it was), a new run's folder cleared of an earlier run.
    runner.start(resume=args.resume)
    if best is not None and not _reached(runner.started, best):  # killed after it, before the next checkpoint
        for path in (best_path, best_json) if chief else ():
            remove_path(path)
        print(f"   best.keras removed: it was of {best['stage']} step {best['step']}, after the checkpoint "
              "(those steps are trained and evaluated again)")
        best = None
    write_atomically(config_path if chief else own_config, cfg.to_json())
    args.begun = True
    with stop_gracefully(runner) as stopped_by:
        finished = runner.run(resume=args.resume)
    if not finished:
        stage, step = runner.stopped_at
        print(f"interrupted: checkpoint written at {stage} step {step}; {RESUME}", file=sys.stderr)
        # The shell's status for the signal (130 Ctrl-C, 143 SIGTERM; a worker that only agreed: 143).
        return 128 + (stopped_by[0] if stopped_by else signal.SIGTERM)

    if not chief:
        return 0
    model_path = os.path.join(out, "model.keras")
    write_atomically(model_path, net.model.save, partial=os.path.join(out, "model.partial.keras"))
    print(f"saved {model_path}")
    if test_source is None:
        summary = no_evaluation(train_source)
    else:
        inference = net.model.for_inference()  # as evaluate, predict and export run it
        result, summary = evaluate(inference, test_source, coco=choice.coco, plot_dir=os.path.join(out, "pr_curves"))
        log_evaluation(inference, test_source, summary, writers(os.path.join(out, "logs", "eval")))
        writers.close()
        print(metrics.format_table(result))
        if args.eval_every:
            last = runner.plan[-1]
            keep_if_best(summary, last.name, last.steps, lambda path: shutil.copyfile(model_path, path))
            summary["best"] = best
    summary["trained_on"] = train_source.name
    summary["stage_seconds"] = {k: round(v, 1) for k, v in runner.stage_seconds.items()}
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)  # (this process's)
    began_at = runner.started
    if began_at["completed"] or began_at["stage"]:  # a resumed run: its stage_seconds count every process
        summary["resumed_at"] = {"stage": began_at["stage"] or "next stage", "step": began_at["step"]}
    write_atomically(os.path.join(out, "metrics.json"), json.dumps(summary, indent=2))
    print(f"{headline(summary)}; {summary['wall_seconds']:.0f} s "
          + ("in this process (resumed)" if "resumed_at" in summary else "in all")
          + f"; wrote {os.path.join(out, 'metrics.json')}")
    return 0


def headline_value(summary) -> tuple:
    """(name, value) of an evaluation's headline figure: COCO AP for COCO-style data, else VOC07
    mAP; value None where it is undefined (no labelled objects)."""
    metric, value = ("COCO AP", summary["coco"]["AP"]) if "coco" in summary else ("VOC07 mAP", summary.get("mAP"))
    return metric, None if value is None or value != value else float(value)


def _reached(state, best) -> bool:
    """Whether the schedule state ``state`` (a checkpoint's) is at or after ``best``'s stage and step."""
    return best["stage"] in state["completed"] or (best["stage"] == state["stage"] and best["step"] <= state["step"])


def read_best(path):
    """A resumed run's best.json (None where there is none, or it cannot be read)."""
    try:
        with open(path) as f:
            best = json.load(f)
        return best if isinstance(best.get("value"), (int, float)) else None
    except (OSError, ValueError, AttributeError):
        return None


def _verbosity(value):
    return value if value == "auto" else int(value)


if __name__ == "__main__":
    sys.exit(main())
