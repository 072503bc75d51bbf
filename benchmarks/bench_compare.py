"""keras-frcnn vs torchvision, the same architecture and settings, timed in one run.

    python benchmarks/bench_compare.py --torch-python bench-venv/bin/python [--rounds 2] [--reps 3]

Each measurement is a fresh process (one framework, one task), so neither framework's thread
pools or caches disturb the other; the two frameworks alternate in every round, and the figures
are the medians over rounds of each process's median. Tasks: inference on 600 x 1000 images
(batch 1 and 4) and one approximate-joint training step (batch 1). The torchvision side is
``torchvision_frcnn.py`` (VGG-16, RoIPool 7x7, fc6/fc7 4096, 300 test proposals, ...), run by the
``--torch-python`` interpreter of an environment that has torch and torchvision. Our side: the
``voc`` preset with random weights, 20 classes, float32 unless ``--bf16``; inference runs the
model's ``for_inference()`` form, what export.py writes (bfloat16 weights with ``--bf16``; batch
norms folded into their convolutions, ``--no-fold`` not). Peak memory is each process's peak
resident set.

    python benchmarks/bench_compare.py --side keras --task infer --batch 1      # one measurement
    python benchmarks/bench_compare.py --torch-python ... --arch resnet50-fpn --tasks infer:1
        # ResNet-50-FPN: torchvision's fasterrcnn_resnet50_fpn vs the resnet50-fpn-coco preset
        # (--arch mobilenetv3-fpn: fasterrcnn_mobilenet_v3_large_fpn vs mobilenetv3-fpn-coco)
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCH = "vgg16"  # --arch, passed to every measurement
sys.path.insert(0, str(HERE))
from common import machine, run_times  # noqa: E402


def keras_side(args):
    import dataclasses

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_frcnn import build_models, preset

    keras.utils.set_random_seed(0)  # the same random weights every run
    presets = {"vgg16": "voc", "resnet50-fpn": "resnet50-fpn-coco", "mobilenetv3-fpn": "mobilenetv3-fpn-coco"}
    cfg = preset(presets[args.arch])
    cfg = dataclasses.replace(cfg, precision="mixed_bfloat16" if args.bf16 else "float32")
    net = build_models(cfg, 20 if args.arch == "vgg16" else 90, weights=None)
    rng = np.random.default_rng(0)
    if args.task == "infer":
        images = tf.constant(rng.integers(0, 256, (args.batch, 600, 1000, 3)), tf.uint8)
        model = net.model.for_inference(fold_batch_norm=not args.no_fold)
        del net  # the model it was made from: out of the peak memory, as export.py's process
        gc.collect()
        run = tf.function(lambda x: model(x))

        def step():
            run(images)["boxes"].numpy()
    else:
        # torchvision_frcnn.py's boxes, in yxyx.
        boxes = np.array([[[150.0, 100.0, 400.0, 300.0], [250.0, 500.0, 500.0, 900.0],
                           [50.0, 600.0, 200.0, 750.0]]], np.float32)
        batch = {"images": rng.integers(0, 256, (args.batch, 600, 1000, 3)).astype(np.uint8),
                 "image_info": np.tile([[600.0, 1000.0, 1.0]], (args.batch, 1)).astype(np.float32),
                 "gt_boxes": np.tile(boxes, (args.batch, 1, 1)),
                 "gt_classes": np.tile([[3, 7, 12]], (args.batch, 1)).astype(np.int32),
                 "num_gt": np.full((args.batch,), 3, np.int32),
                 "sample_seed": np.arange(args.batch, dtype=np.int64)}
        optimizer = keras.optimizers.SGD(1e-4, momentum=0.9, weight_decay=5e-4)
        model = net.prepare("joint", optimizer, jit_compile=False)
        model.make_train_function()
        iterator = iter(tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in batch.items()}).repeat())

        def step():
            float(model.train_function(iterator)["loss"])

    times = run_times(step, args.reps, args.warmup)
    print(json.dumps({"framework": f"keras-frcnn (TF {tf.__version__}, Keras {keras.__version__})",
                      "task": args.task, "batch": args.batch, "bf16": args.bf16,
                      "median_s": statistics.median(times), "times_s": times,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(python, script, task, batch, reps, warmup, bf16=False, extra=()):
    command = [python, str(script), "--task", task, "--batch", str(batch), "--reps", str(reps),
               "--warmup", str(warmup), "--arch", ARCH, *extra]
    if bf16:
        command.append("--bf16")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE.parent)
    if out.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["keras"], help="run one measurement of our side and print JSON")
    parser.add_argument("--task", choices=["infer", "train"], default="infer")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--no-fold", action="store_true",
                        help="inference: keep batch norms apart from their convolutions")
    parser.add_argument("--arch", choices=["vgg16", "resnet50-fpn", "mobilenetv3-fpn"], default="vgg16")
    parser.add_argument("--torch-python", help="python of an environment with torch + torchvision")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", default="infer:1,infer:4,train:1", help="task:batch list")
    args = parser.parse_args()
    global ARCH
    ARCH = args.arch
    if args.side == "keras":
        return keras_side(args)
    if not args.torch_python:
        parser.error("--torch-python is required (an environment with torch and torchvision)")

    ours = [sys.executable, str(Path(__file__).resolve()), "--side", "keras"]
    results = {}
    for _ in range(args.rounds):
        for spec in args.tasks.split(","):
            task, batch = spec.split(":")
            for name, python, script, extra in [
                ("keras-frcnn", ours[0], ours[1], ["--side", "keras"] + (["--no-fold"] if args.no_fold else [])),
                ("torchvision", args.torch_python, HERE / "torchvision_frcnn.py", []),
            ]:
                result = measure(python, script, task, int(batch), args.reps, args.warmup, bf16=args.bf16,
                                 extra=extra)
                results.setdefault((task, int(batch), name), []).append(result)
                print(f"  {task} batch {batch} {name:12s} {result['median_s'] * 1000:9.0f} ms  "
                      f"peak {result['peak_rss_mb']:6.0f} MB", flush=True)
    print(f"machine: {machine()}")
    print(f"{'task':10s} {'batch':>5s} {'keras-frcnn ms':>15s} {'torchvision ms':>15s} {'ratio':>7s} "
          f"{'peak MB (ours / tv)':>20s}")
    for spec in args.tasks.split(","):
        task, batch = spec.split(":")
        ours_runs = results[(task, int(batch), "keras-frcnn")]
        theirs_runs = results[(task, int(batch), "torchvision")]
        a = statistics.median(r["median_s"] for r in ours_runs)
        b = statistics.median(r["median_s"] for r in theirs_runs)
        peaks = f"{max(r['peak_rss_mb'] for r in ours_runs):.0f} / {max(r['peak_rss_mb'] for r in theirs_runs):.0f}"
        print(f"{task:10s} {batch:>5s} {a * 1000:15.0f} {b * 1000:15.0f} {a / b:7.2f} {peaks:>20s}")
    print(f"frameworks: {ours_runs[0]['framework']}; {theirs_runs[0]['framework']}")


if __name__ == "__main__":
    main()
