"""A schedule stage's steps a second under TensorFlow's thread settings, and without the padding
masks (a measurement only: the model is then wrong for padded batches), over the real input
pipeline of the built-in set (not a test).

    python benchmarks/bench_stage_threads.py --view stage2                      # as shipped
    python benchmarks/bench_stage_threads.py --view stage2 --inter-op 1 --intra-op 2
    python benchmarks/bench_stage_threads.py --view stage2 --without-padding-masks
    python benchmarks/bench_stage_threads.py --view stage2 --aspect-group 0   # batches in stream order
    python benchmarks/bench_stage_threads.py --view stage2 --batch-images 4   # 4 images a step

Each run is one process (the thread pools are fixed at TensorFlow's start): ``--warmup`` steps,
then ``--reps`` fits of ``--steps`` steps, each fit's ms a step printed. Compare runs of one hour.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine  # noqa: E402
from profile_train_step import shapes_dataset  # noqa: E402

from keras_frcnn import backbone, build_models, preset  # noqa: E402
from keras_frcnn.config import resolve_precision  # noqa: E402
from keras_frcnn.training import make_optimizer, stages  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--view", default="stage2", choices=["stage1", "stage2", "stage3", "stage4"])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0: TensorFlow's default)")
    parser.add_argument("--intra-op", type=int, default=0, help="intra-op threads (0: TensorFlow's default)")
    parser.add_argument("--without-padding-masks", action="store_true",
                        help="the base's padding masks pass their input through (wrong results; timing only)")
    parser.add_argument("--aspect-group", type=int, help="train.aspect_group (default: the preset's)")
    parser.add_argument("--batch-images", type=int,
                        help="images a step (default: the preset's); the detector's RoIs a step grow with them")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.without_padding_masks:
        backbone.PaddingMask.call = lambda self, inputs: inputs[0]

    keras.utils.set_random_seed(0)
    precision = resolve_precision(args.precision)[0]
    cfg = dataclasses.replace(preset("shapes"), precision=precision)
    if args.aspect_group is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, aspect_group=args.aspect_group))
    if args.batch_images:
        rois_per_image = cfg.detector.batch_rois // cfg.train.detector_batch_images
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, rpn_batch_images=args.batch_images,
                                           detector_batch_images=args.batch_images),
            detector=dataclasses.replace(cfg.detector, batch_rois=rois_per_image * args.batch_images))
    net = build_models(cfg, 4, weights=None)
    stage = stages(cfg)[int(args.view[-1]) - 1]
    per_call = cfg.train.steps_per_execution
    if args.steps % per_call or args.warmup % per_call:
        parser.error(f"--steps and --warmup must be multiples of the preset's steps per execution ({per_call})")
    model = net.prepare(stage.view, make_optimizer(cfg, stage), base=stage.train_base,
                        rpn_head=stage.train_rpn_head, detector_head=stage.train_detector_head,
                        steps_per_execution=per_call)
    dataset = shapes_dataset(cfg, stage.view, stage.batch_images)
    model.fit(dataset, steps_per_epoch=args.warmup, epochs=1, verbose=0)
    times = []
    for _ in range(args.reps):
        began = time.perf_counter()
        model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
        times.append(1000 * (time.perf_counter() - began) / args.steps)
    print(f"machine: {machine()}; shapes {args.view} ({stage.name}), {precision}, inter-op "
          f"{args.inter_op or 'default'}, intra-op {args.intra_op or 'default'}"
          + (", padding masks removed" if args.without_padding_masks else "")
          + f", aspect_group {cfg.train.aspect_group}, {stage.batch_images} images a step"
          + ": ms a step " + " / ".join(f"{t:.1f}" for t in times))


if __name__ == "__main__":
    main()
