"""Where a training step's time goes, from TensorFlow's profiler trace (not a test).

    python benchmarks/profile_train_step.py --preset shapes --views stage1,stage2,stage3,stage4,joint [--precision float32]
    python benchmarks/profile_train_step.py --preset voc --views joint --steps 3
    python benchmarks/profile_train_step.py --checkout OLD ...        # the same, on another checkout
    python benchmarks/profile_train_step.py --detail 8 ...            # and each category's op types
    python benchmarks/profile_train_step.py --by-layer 30 ...         # and the layers' ops of most time

Each view trains as ``ScheduleRunner`` trains it: Keras ``fit`` with the stage's optimizer
(``training.make_optimizer``), its callbacks, and for the shapes preset the real input pipeline
over the built-in set (the detector view with 300 stored-like proposals per image around the
ground truth); the voc preset takes synthetic 600 x 1000 images (no VOC here). After warm-up,
``--steps`` steps run under ``tf.profiler.experimental``; the trace (``.xplane.pb``) is read back
and every TensorFlow op of the step is put in a category by its name scope:

- base conv / batch norm / padding mask / max pool, forward and backward (``gradient_tape/...``);
- the heads (``rpn_head``, ``detector_head``: convolutions and fc layers, forward and backward);
- targets and sampling (``anchor_targets``, ``proposal_targets``), proposals (``proposals``),
  RoI pooling forward / backward, preprocessing (``to_input``), losses, the optimizer;

Op times are summed over TensorFlow's executor threads (ops run concurrently on the 2 cores), so
the table gives each category's share of the op time; beside it, per step: the wall time, the
time the step waited for the input pipeline (``IteratorGetNext``), the Python / callback time
between executions of the compiled step (the gaps between consecutive executions), and the rest
of the wall time: ``fit``'s own start and end (iterator, callbacks' setup, the profiler), spread
over the profiled steps only; over a stage of thousands of steps it nearly vanishes.
"""

import argparse
import collections
import dataclasses
import glob
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
# --checkout DIR: profile the keras_frcnn of another checkout (before / after figures, one script).
_CHECKOUT = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--checkout"), None)
sys.path.insert(0, os.path.abspath(_CHECKOUT) if _CHECKOUT else str(Path(__file__).resolve().parents[1]))
from bench_train_step import synthetic_batch  # noqa: E402
from common import machine  # noqa: E402

from keras_frcnn import build_models, data, preset, roi_pooling  # noqa: E402
from keras_frcnn.training import StageLog, make_optimizer, model_inputs, stages  # noqa: E402

try:
    from keras_frcnn.config import resolve_precision  # noqa: E402
except ImportError:  # a checkout from before --precision auto (for before / after figures)
    def resolve_precision(precision):
        return ("float32" if precision == "auto" else precision), ""

ARITHMETIC = ("base conv", "rpn_head", "detector_head")  # convolutions and fc layers
BASES = ("zf", "vgg16", "resnet50", "resnet101", "resnet50_fpn", "mobilenetv3_fpn")


def scope(name):
    """An op's node name -> (its name scopes inside the training view's model, backward?)."""
    parts = name.split(":")[0].split("/")
    # The step's function call; with several steps per call it sits inside Keras's
    # ``while/body/.../while/cond/`` loop.
    if "StatefulPartitionedCall" in parts:
        parts = parts[parts.index("StatefulPartitionedCall") + 1:]
    backward = bool(parts) and parts[0] == "gradient_tape"
    if backward:
        parts = parts[1:]
    if parts and re.match(r"(rpn|detector|joint)_model", parts[0]):
        parts = parts[1:]
    return parts, backward


def category(name):
    """An op's node name -> (category, backward?)."""
    parts, backward = scope(name)
    if getattr(roi_pooling, "GRADIENT_SCOPE", "roi_pooling_gradient") in parts:  # its own gradient, outside its scope
        return "roi_pooling", True
    if not parts:
        return "other", backward
    top = re.sub(r"_\d+$", "", parts[0])
    if top.replace("-", "_") in BASES:
        sub = re.sub(r"_\d+$", "", parts[1]) if len(parts) > 1 else ""
        kind = ("squeeze-excite" if "squeeze_excite" in sub else "batch norm" if "bn" in sub
                else "padding mask" if "mask" in sub or "pad" in sub
                else "max pool" if "pool" in sub else "conv" if "conv" in sub or "depthwise" in sub
                or "expand" in sub or "project" in sub or "fpn_" in sub
                else "activation" if "relu" in sub or "swish" in sub else "other")
        return f"base {kind}", backward
    if top in ("caffe_sgd", "sgd", "SGD", "loss_scale_optimizer"):
        return "optimizer", False
    if top in ("rpn_head", "detector_head", "anchor_targets", "proposal_targets", "proposals", "anchors",
               "roi_pooling", "to_input"):
        return top, backward
    return "losses, sums and the rest", backward


def layer(name):
    """An op's node name -> the layer it belongs to (``zf/conv1``, ``detector_head/fc6``)."""
    parts, _ = scope(name)
    return "/".join(re.sub(r"_\d+$", "", p) for p in parts[:2])


def profile(model, dataset, steps, warmup, callbacks):
    """``callbacks()`` -> the callbacks of one ``fit`` (new ones for each)."""
    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0, callbacks=callbacks())
    logdir = tempfile.mkdtemp(prefix="frcnn_profile_")
    started = time.perf_counter()
    tf.profiler.experimental.start(logdir)
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks())
    tf.profiler.experimental.stop()
    wall = time.perf_counter() - started
    space = xplane_pb2.XSpace()
    with open(sorted(glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")))[-1], "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    ops, executing, waiting, calls = collections.Counter(), 0.0, 0.0, []
    kinds, detail, layers = collections.Counter(), collections.Counter(), collections.Counter()
    for line in plane.lines:
        for event in line.events:
            meta = plane.event_metadata[event.metadata_id]
            ms = event.duration_ps / 1e9
            if line.name.startswith("tf_Compute") and meta.display_name \
                    and not meta.display_name.startswith("ExecutorState"):
                name, backward = category(meta.name)
                ops[(name, backward)] += ms
                kinds[meta.display_name] += ms
                detail[(name, meta.display_name)] += ms
                if name.startswith("base ") or name in ("rpn_head", "detector_head"):
                    layers[(layer(meta.name), meta.display_name, backward)] += ms
            elif line.name == "python" and meta.name.startswith("EagerLocalExecute"):
                executing += ms
                calls.append((event.offset_ps, event.offset_ps + event.duration_ps))
            elif line.name.startswith("tf_Compute") and meta.name == "IteratorGetNextOp::DoCompute":
                waiting += ms
            elif line.name.startswith("tf_data_iterator_get_next") and meta.name == "IteratorGetNextOp::DoCompute":
                waiting += ms
    calls.sort()
    between = sum(max(start - end, 0) for (_, end), (start, _) in zip(calls, calls[1:])) / 1e9
    return {"wall": 1000 * wall / steps, "executing": executing / steps, "waiting": waiting / steps,
            "between": between / steps,
            "ops": {k: v / steps for k, v in ops.items()},
            "op_types": {k: v / steps for k, v in kinds.most_common(12)},
            "detail": {k: v / steps for k, v in detail.items()},
            "layers": {k: v / steps for k, v in layers.items()}}


def report(title, result, detail=0, by_layer=0):
    """``detail``: also each category's op types of most time, this many; ``by_layer``: also the
    convolution and fc layers' (layer, op type) pairs of most time, this many."""
    total = sum(result["ops"].values())
    arithmetic = sum(v for (name, _), v in result["ops"].items() if name in ARITHMETIC)
    print(f"\n{title}: {result['wall']:.1f} ms/step wall; compiled step running {result['executing']:.1f} ms, "
          f"waiting for input {result['waiting']:.1f} ms, Python and callbacks between executions "
          f"{result['between']:.1f} ms, fit's start and end "
          f"{max(result['wall'] - result['executing'] - result['between'], 0):.1f} ms; op time {total:.1f} ms/step "
          f"(summed over threads), convolutions and fc layers {100 * arithmetic / total:.0f} %, "
          f"the rest {100 * (1 - arithmetic / total):.0f} %")
    print(f"  {'category':34s} {'forward ms':>10s} {'backward ms':>11s} {'share':>6s}")
    names = sorted({name for name, _ in result["ops"]}, key=lambda n: -sum(
        v for (m, _), v in result["ops"].items() if m == n))
    for name in names:
        fwd, bwd = result["ops"].get((name, False), 0.0), result["ops"].get((name, True), 0.0)
        print(f"  {name:34s} {fwd:10.1f} {bwd:11.1f} {100 * (fwd + bwd) / total:5.1f}%")
    print("  the op types of most time: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result["op_types"].items()))
    for name in names if detail else ():
        kinds = sorted(((v, kind) for (m, kind), v in result["detail"].items() if m == name), reverse=True)
        print(f"    {name}: " + ", ".join(f"{kind} {v:.1f}" for v, kind in kinds[:detail]))
    if by_layer:
        print(f"  {'layer':28s} {'op type':34s} {'ms':>6s}")
        for (name, kind, backward), ms in sorted(result["layers"].items(), key=lambda kv: -kv[1])[:by_layer]:
            print(f"  {name:28s} {kind + (' (grad)' if backward else ''):34s} {ms:6.1f}")


def shapes_dataset(cfg, view, batch):
    source = data.load_shapes("train", decode_images=False)
    dataset = data.train_dataset(source, cfg, batch, seed=1, repeat=True,
                                 **({"image_multiple": m} if (m := getattr(cfg.train, "image_pad_multiple", 1)) > 1
                                    else {}),
                                 **({"aspect_group": g} if (g := getattr(cfg.train, "aspect_group", 0)) > 1 else {}))
    if view == "detector":
        proposals = cfg.rpn.post_nms_top_n[0]

        def with_proposals(b):
            noise = tf.random.stateless_normal([batch, proposals, 4], seed=[1, 2], stddev=12.0)
            around = tf.gather(b["gt_boxes"], tf.zeros([batch, proposals], tf.int32), batch_dims=1)
            return {**b, "proposals": around + noise, "num_proposals": tf.fill([batch], proposals)}

        dataset = dataset.map(with_proposals)
    return dataset.map(model_inputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--views", default="stage1,stage2,stage3,stage4,joint",
                        help="stageN of the alternating schedule, rpn (= stage1), detector (= stage2), joint")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--image-pad-multiple", type=int,
                        help="pad training images' sides to a multiple of this (default: the preset's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps-per-execution", type=int,
                        help="steps per compiled call (default: the largest count dividing the preset's "
                        "train.steps_per_execution, --steps and --warmup, as the runner picks; 1 for a checkout "
                        "from before it)")
    parser.add_argument("--checkout", help="the repository whose keras_frcnn to profile (default: this one)")
    parser.add_argument("--detail", type=int, default=0, metavar="N",
                        help="also list each category's N op types of most time (ms a step, forward + backward)")
    parser.add_argument("--by-layer", type=int, default=0, metavar="N",
                        help="also list the N (layer, op type) pairs of the base and heads of most time")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    precision = resolve_precision(args.precision)[0]
    cfg = dataclasses.replace(preset(args.preset), precision=precision)
    if args.image_pad_multiple:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, image_pad_multiple=args.image_pad_multiple))
    net = build_models(cfg, 20 if args.preset != "shapes" else 4, weights=None)
    alternating = stages(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="alternating")))
    plan = {f"stage{number}": stage for number, stage in enumerate(alternating, start=1)}
    plan.update(rpn=alternating[0], detector=alternating[1])
    plan["joint"] = stages(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="joint")))[0]
    if args.steps_per_execution:
        steps_per_execution = args.steps_per_execution
        if args.steps % steps_per_execution or args.warmup % steps_per_execution:
            parser.error(f"--steps and --warmup must be multiples of --steps-per-execution ({steps_per_execution})")
    else:  # the largest count dividing the preset's, --steps and --warmup (as the runner picks per fit)
        steps_per_execution = math.gcd(getattr(cfg.train, "steps_per_execution", 1), args.steps, args.warmup)
    import keras_frcnn

    print(f"machine: {machine()}; preset {args.preset}, {precision}, {steps_per_execution} steps per "
          f"compiled call; keras_frcnn from "
          f"{os.path.dirname(os.path.dirname(keras_frcnn.__file__))}")
    for view in args.views.split(","):
        stage = plan[view]
        model = net.prepare(stage.view, make_optimizer(cfg, stage), base=stage.train_base,
                            rpn_head=stage.train_rpn_head, detector_head=stage.train_detector_head,
                            steps_per_execution=steps_per_execution)
        if args.preset == "shapes":
            dataset = shapes_dataset(cfg, stage.view, stage.batch_images)
        else:
            batch = synthetic_batch(cfg, stage.batch_images, np.random.default_rng(0))
            batch["sample_seed"] = np.arange(stage.batch_images, dtype=np.int64)
            dataset = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in batch.items()}).repeat()
            if stage.view != "detector":
                dataset = dataset.map(lambda b: {k: v for k, v in b.items() if "proposals" not in k})
        def callbacks():
            return [StageLog(tempfile.mkdtemp(prefix="frcnn_log_"))]

        report(f"{args.preset} {view}: {stage.name} ({stage.batch_images} images a step, {precision})",
               profile(model, dataset, args.steps, args.warmup, callbacks), args.detail, args.by_layer)


if __name__ == "__main__":
    main()
