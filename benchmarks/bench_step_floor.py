"""How small can the part of a training step outside its convolutions and fc layers be on this
CPU? The step's arithmetic one kernel at a time against the optimizer's update, which no step can
skip and which runs at the memory's speed, not the arithmetic units' (not a test).

    python benchmarks/bench_step_floor.py                          # shapes preset, stage 2 (detector, base trains)
    python benchmarks/bench_step_floor.py --view rpn               # stage 1
    python benchmarks/bench_step_floor.py --preset voc --view joint --rounds 3

Three figures, each the median of ``--rounds`` alternating rounds:

- **arithmetic**: every convolution and fc layer of the view's trainable network at a training
  step's sizes (the preset's training side, its images a step, its RoIs a step), forward, filter /
  weight gradient and input gradient (not the first layer's input gradient, which training never
  computes), each kernel run alone at the model's compute precision; the shapes are read from the
  model itself (its Conv2D and Dense layers' inputs on an image of the training size);
- **update**: the stage's own optimizer (``training.make_optimizer``: Caffe's SGD, L2 through the
  momentum) applying one step of gradients to the view's trainable weights, as ``fit`` does;
- **casts** (a mixed policy only): the float32 weights' copies in the compute precision, which
  Keras makes on every step (6 bytes a weight at the floor);
- **memory**: the bandwidth of an in-place update (``assign_add`` over 256 MB, 12 bytes moved per
  float), and the update's floor at it: 20 bytes a float32 weight (read the weight, its gradient
  and its momentum; write the weight and the momentum).

The share ``update / (arithmetic + update)`` is what the update alone takes of a step that did
nothing else, at TensorFlow's kernels; at the memory floor, what any update would take. A step's
other work (targets, sampling, RoI pooling, NMS, batch norm, casts, the input) comes on top.
"""

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import keras
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import interleaved_times, machine  # noqa: E402

from keras_frcnn import build_models, preset  # noqa: E402
from keras_frcnn.models import rois_per_image  # noqa: E402
from keras_frcnn.training import make_optimizer, stages  # noqa: E402


def recorded_layers(net, images):
    """[(layer, input shape)] of every Conv2D and Dense layer the inference model runs on
    ``images``, in call order (each layer once)."""
    seen, calls = set(), []
    originals = {cls: cls.call for cls in (keras.layers.Conv2D, keras.layers.Dense)}

    def recorder(cls):
        def call(layer, inputs, *args, **kwargs):
            if id(layer) not in seen:
                seen.add(id(layer))
                calls.append((layer, tuple(inputs.shape)))
            return originals[cls](layer, inputs, *args, **kwargs)
        return call

    try:
        for cls in originals:
            cls.call = recorder(cls)
        net.model(images)
    finally:
        for cls, call in originals.items():
            cls.call = call
    return calls


def kernel_runners(layer, shape, dtype, with_weight_gradient, with_input_gradient):
    """{kind: fn} running the layer's forward kernel, and its weight-gradient and input-gradient
    kernels where asked."""
    kernel = layer.kernel
    w = tf.Variable(tf.cast(tf.random.normal(kernel.shape, stddev=0.01), dtype))
    x = tf.cast(tf.random.normal(shape), dtype)
    if isinstance(layer, keras.layers.Conv2D):
        strides, dilations = [1, *layer.strides, 1], [1, *layer.dilation_rate, 1]
        padding = layer.padding.upper()
        y = tf.nn.conv2d(x, w, strides, padding, dilations=dilations)
        dy = tf.cast(tf.random.normal(y.shape), dtype)
        runners = {"forward": tf.function(lambda: tf.nn.conv2d(x, w, strides, padding, dilations=dilations))}
        if with_weight_gradient:
            runners["weight gradient"] = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=strides, padding=padding,
                dilations=dilations))
        if with_input_gradient:
            runners["input gradient"] = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=w, out_backprop=dy, strides=strides, padding=padding,
                dilations=dilations))
        flops = 2 * int(tf.size(y)) * int(tf.reduce_prod(w.shape[:3]))
    else:
        dy = tf.cast(tf.random.normal([shape[0], w.shape[1]]), dtype)
        runners = {"forward": tf.function(lambda: tf.matmul(x, w))}
        if with_weight_gradient:
            runners["weight gradient"] = tf.function(lambda: tf.matmul(x, dy, transpose_a=True))
        if with_input_gradient:
            runners["input gradient"] = tf.function(lambda: tf.matmul(dy, w, transpose_b=True))
        flops = 2 * shape[0] * int(w.shape[0]) * int(w.shape[1])
    return runners, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--view", default="detector", choices=["rpn", "detector", "joint"],
                        help="the stage: rpn (stage 1), detector (stage 2) or joint, the base training")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--height", type=int, help="a training image's size (default: the preset's training side, 1.5x wide)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(machine())

    cfg = preset(args.preset)
    height = args.height or (cfg.image.train_min_sides[0] if cfg.image.train_min_sides else cfg.image.min_side)
    width = args.width or min(cfg.image.max_side, round(height * 1.5))
    # The inference model at the training side, so that its layers see a training step's shapes.
    cfg = dataclasses.replace(cfg, precision=args.precision, image=dataclasses.replace(
        cfg.image, min_side=height, max_side=max(height, width), train_min_sides=()))
    net = build_models(cfg, 20, weights=None)
    policy = net.config.precision
    compute = tf.bfloat16 if "bfloat16" in policy else tf.float16 if "float16" in policy else tf.float32
    schedule = "joint" if args.view == "joint" else "alternating"  # the stage's own optimizer settings
    stage = next(s for s in stages(dataclasses.replace(net.config, train=dataclasses.replace(
        net.config.train, schedule=schedule))) if s.view == args.view and s.train_base)
    t = net.config.train
    images_per_step = t.detector_batch_images if args.view == "detector" else t.rpn_batch_images
    rois = rois_per_image(net.config, images_per_step) * images_per_step
    print(f"preset {args.preset}, view {args.view} ({stage.name}), precision {policy}: {images_per_step} "
          f"image(s) of {height} x {width} a step, {rois} RoIs")

    calls = recorded_layers(net, tf.zeros([images_per_step, height, width, 3], tf.uint8))
    optimizer = make_optimizer(net.config, stage)
    net.prepare(args.view, optimizer, base=stage.train_base, rpn_head=stage.train_rpn_head,
                detector_head=stage.train_detector_head)
    variables = net.view(args.view).trainable_variables

    in_view = {w.path for w in net.view(args.view).weights}
    trainable = {v.path for v in variables}
    candidates, flops, upstream_trains = {}, 0, False
    for layer, shape in calls:  # call order: the base, then the heads
        if layer.kernel.path not in in_view:
            continue
        trains = layer.kernel.path in trainable
        if isinstance(layer, keras.layers.Dense):
            shape = (rois, *shape[1:])  # the inference model's RoIs -> a training step's
        runners, f = kernel_runners(layer, shape, compute, trains, upstream_trains)
        upstream_trains = upstream_trains or trains
        flops += f * len(runners)
        for kind, fn in runners.items():
            candidates[f"{layer.name} {kind}"] = lambda fn=fn: fn().numpy()

    grads = [tf.random.normal(v.shape, stddev=1e-3) for v in variables]
    update = tf.function(lambda: optimizer.apply(grads, variables))
    weights = sum(int(tf.size(v)) for v in variables)
    n = 64 * 2**20
    a, b = tf.Variable(tf.zeros([n])), tf.random.uniform([n])
    bandwidth = tf.function(lambda: a.assign_add(b))

    candidates["update"] = lambda: (update(), variables[0].numpy()[..., :1])
    if compute != tf.float32:  # a mixed policy's copies of the float32 weights, made every step
        casts = tf.function(lambda: [tf.cast(v, compute) for v in variables])
        candidates["casts"] = lambda: casts()[0].numpy()
    candidates["memory"] = lambda: (bandwidth(), a[:1].numpy())
    for fn in candidates.values():  # warm: traced, and oneDNN's primitives made
        fn(), fn()
    times = interleaved_times(candidates, args.rounds)
    median = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}

    arithmetic = sum(ms for name, ms in median.items() if name not in ("update", "memory", "casts"))
    by_kind = {kind: sum(ms for name, ms in median.items() if name.endswith(kind))
               for kind in ("forward", "weight gradient", "input gradient")}
    gbps = 3 * 4 * n / (median["memory"] / 1e3) / 1e9
    floor = weights * 20 / (gbps * 1e9) * 1e3
    print(f"arithmetic: {arithmetic:.1f} ms ({flops / arithmetic / 1e6:.0f} GFLOP/s; forward {by_kind['forward']:.1f}, "
          f"weight gradients {by_kind['weight gradient']:.1f}, input gradients {by_kind['input gradient']:.1f})")
    print(f"update of {weights:,} weights: {median['update']:.1f} ms = "
          f"{median['update'] / (arithmetic + median['update']):.1%} of arithmetic + update")
    print(f"memory: {gbps:.1f} GB/s in place; the update's floor at it {floor:.1f} ms = "
          f"{floor / (arithmetic + floor):.1%} of arithmetic + floor")
    if "casts" in median:
        cast_floor = weights * 6 / (gbps * 1e9) * 1e3
        both = median["update"] + median["casts"]
        print(f"the weights' {policy} casts: {median['casts']:.1f} ms (floor {cast_floor:.1f}); update and casts "
              f"{both / (arithmetic + both):.1%} of arithmetic + both, at the floors "
              f"{(floor + cast_floor) / (arithmetic + floor + cast_floor):.1%}")
    for name, ms in sorted(median.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
