"""Train Faster R-CNN. With no arguments: the built-in synthetic ``shapes`` set (generated locally,
no network), the ``shapes`` preset, the paper's full 4-step alternating schedule, evaluation on the
test split, everything written to ``runs/shapes/``.

    python train.py                                   # shapes, 4-step alternating schedule
    python train.py --schedule joint                  # approximate joint training
    python train.py --preset voc                      # VGG-16, ImageNet weights, TFDS voc/2007
    python train.py --voc-dir VOCdevkit/VOC2007       # any VOC folder
    python train.py --coco-json ann.json --coco-images images/
    python train.py --resume                          # continue after an interruption

Outputs in ``--out`` (default ``runs/<preset>``): ``model.keras``, ``config.json``,
``metrics.json``, ``pr_curves/``, TensorBoard logs in ``logs/`` and the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from keras_frcnn import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shapes", help='"shapes" (default), "voc" or "zf-voc"')
    parser.add_argument("--config", help="a config.json (e.g. of an earlier run) instead of a preset")
    cli.add_data_args(parser)
    parser.add_argument("--train-split", help="training split (default: the preset's; trainval for "
                        "--voc-dir)")
    parser.add_argument("--test-split", help="evaluation split (default: the preset's; test for --voc-dir)")
    parser.add_argument("--backbone", choices=["vgg16", "zf"])
    parser.add_argument("--weights", help='"imagenet", "none" or a weights file')
    parser.add_argument("--schedule", choices=["alternating", "joint"])
    parser.add_argument("--steps", type=int, help="steps per stage (the total for --schedule joint)")
    parser.add_argument("--out", help="output folder (default runs/<preset>)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"], default="default",
                        help="mirrored: every local GPU; multi-worker: the cluster of TF_CONFIG (see README)")
    parser.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                        help="Keras dtype policy (mixed_float16 on GPUs, mixed_bfloat16 on CPUs with "
                        "AVX-512 BF16 / AMX and TPUs)")
    parser.add_argument("--jit", choices=["auto", "on", "off"],
                        help="XLA for the training steps (default auto: on when a GPU is visible)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--min-side", type=int)
    parser.add_argument("--max-side", type=int)
    parser.add_argument("--anchor-scales", help="comma separated, e.g. 8,16,32")
    parser.add_argument("--anchor-ratios", help="comma separated h/w ratios, e.g. 0.5,1,2")
    parser.add_argument("--batch-size", type=int, help="images per batch (per replica) in every stage")
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--verbose", default="auto", help="Keras fit verbosity: auto, 0, 1, 2")
    return parser.parse_args(argv)


def numbers(text):
    return tuple(float(v) for v in text.split(","))


def build_config(args):
    from keras_frcnn.config import Config, preset

    if args.config:
        with open(args.config) as f:
            cfg = Config.from_json(f.read())
    else:
        cfg = preset(args.preset)
    changes = {}
    if args.backbone:
        changes["backbone"] = args.backbone
    if args.weights:
        changes["weights"] = None if args.weights.lower() == "none" else args.weights
    elif args.backbone == "zf" and cfg.weights == "imagenet":
        changes["weights"] = None
    if args.dataset:
        changes["dataset"] = args.dataset
    if args.precision:
        changes["precision"] = args.precision
    image, anchors, train = {}, {}, {}
    if args.min_side:
        image["min_side"] = args.min_side
    if args.max_side:
        image["max_side"] = args.max_side
    if args.anchor_scales:
        anchors["scales"] = numbers(args.anchor_scales)
    if args.anchor_ratios:
        anchors["ratios"] = numbers(args.anchor_ratios)
    if args.schedule:
        train["schedule"] = args.schedule
    if args.batch_size:
        train["rpn_batch_images"] = train["detector_batch_images"] = args.batch_size
    if args.lr:
        train["lr"] = args.lr
    if args.seed is not None:
        train["seed"] = args.seed
    if args.jit:
        train["jit_compile"] = args.jit
    return dataclasses.replace(
        cfg, **changes,
        image=dataclasses.replace(cfg.image, **image),
        anchors=dataclasses.replace(cfg.anchors, **anchors),
        train=dataclasses.replace(cfg.train, **train),
    )


def make_strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
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
    cli.quiet_tensorflow()
    args = parse_args(argv)
    started = time.perf_counter()

    import keras

    from keras_frcnn import metrics
    from keras_frcnn.config import Config
    from keras_frcnn.evaluate import evaluate
    from keras_frcnn.models import build_models
    from keras_frcnn.training import ScheduleRunner
    from keras_frcnn.tensorboard import log_evaluation

    cfg = build_config(args)
    out = args.out or os.path.join("runs", cfg.name)
    config_path = os.path.join(out, "config.json")
    if args.resume and os.path.exists(config_path):
        with open(config_path) as f:
            cfg = Config.from_json(f.read())
        print(f"resume: using the run's own {config_path}")
    strategy = make_strategy(args.strategy)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(cfg.train.seed)

    default_dataset = cfg.dataset
    train_split = args.train_split or ("trainval" if args.voc_dir else cfg.train_split)
    test_split = args.test_split or ("test" if args.voc_dir else cfg.test_split)
    train_source = cli.load_source(args, train_split, default_dataset)
    test_source = train_source if args.coco_json else cli.load_source(args, test_split, default_dataset)
    print(f"data: {train_source.name} ({train_source.num_examples} images) for training, "
          f"{test_source.name} ({test_source.num_examples}) for evaluation; "
          f"{train_source.num_classes} classes: {', '.join(train_source.class_names)}")

    os.makedirs(out, exist_ok=True)
    if chief:
        with open(config_path, "w") as f:
            f.write(cfg.to_json())
    with strategy.scope():
        net = build_models(cfg, train_source.num_classes, class_names=train_source.class_names)
    print(f"model: {cfg.backbone} base (width {cfg.backbone_width:g}), {net.model.count_params():,} "
          f"parameters; schedule {cfg.train.schedule}; replicas {strategy.num_replicas_in_sync}")

    run_dir = out if chief else os.path.join(out, f"worker_{strategy.cluster_resolver.task_id}")
    runner = ScheduleRunner(net, train_source, cfg, run_dir, steps=args.steps,
                            checkpoint_every=args.checkpoint_every, strategy=strategy,
                            verbose=_verbosity(args.verbose))
    runner.run(resume=args.resume)

    if not chief:
        return 0
    model_path = os.path.join(out, "model.keras")
    net.model.save(model_path)
    print(f"saved {model_path}")
    result, summary = evaluate(net.model, test_source, inclusive_pixels=cli.is_voc(args, default_dataset),
                               coco=cli.is_coco(args, default_dataset),
                               plot_dir=os.path.join(out, "pr_curves"))
    summary["stage_seconds"] = {k: round(v, 1) for k, v in runner.stage_seconds.items()}
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log_evaluation(net.model, test_source, summary, os.path.join(out, "logs", "eval"))
    print(metrics.format_table(result))
    print(f"VOC07 mAP {summary['mAP']:.4f}  (area mAP {summary['mAP_area']:.4f}) on "
          f"{summary['num_images']} images; {summary['wall_seconds']:.0f} s in all; wrote "
          f"{os.path.join(out, 'metrics.json')}")
    return 0


def _verbosity(value):
    return value if value == "auto" else int(value)


if __name__ == "__main__":
    sys.exit(main())
