"""The arithmetic of a shapes detector step, one op at a time: the ZF base's five convolutions
(forward, filter gradient, input gradient) and fc6's three matrix products, float32 and bfloat16,
at the sizes of a shapes training step (the preset's width and stride; not a test).

    python benchmarks/bench_base_ops.py                  # 2 images of 256 x 384, the preset's width 0.5
    python benchmarks/bench_base_ops.py --height 256 --width 256 --rois 256

The layers' shapes follow ``backbone.zf`` (its padding and strides) and the preset's detector head
(``pool_size`` x ``pool_size`` x conv5's channels into ``fc_units``); each op runs alone, so the
sum is the step's arithmetic at the kernels' own speed, against which a step's wall time compares.
"""

import argparse
import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, median_time  # noqa: E402

from keras_frcnn import preset  # noqa: E402


def conv_shapes(cfg, batch, height, width):
    """(name, input shape, filter shape, stride) of ZF's convolutions after their zero padding."""
    channels = [max(1, int(round(c * cfg.backbone_width))) for c in (96, 256, 384, 384, 256)]

    def pooled(n, step=2):  # Caffe's 3x3 pool with pad 1 on a map of n
        return (n + 2 - 3) // step + 1

    h, w = (height + 6 - 7) // 2 + 1, (width + 6 - 7) // 2 + 1  # conv1 7x7/2, pad 3
    layers = [("conv1", [batch, height + 6, width + 6, 3], [7, 7, 3, channels[0]], 2)]
    h, w = pooled(h), pooled(w)
    layers.append(("conv2", [batch, h + 4, w + 4, channels[0]], [5, 5, channels[0], channels[1]], 2))
    h, w = (h + 4 - 5) // 2 + 1, (w + 4 - 5) // 2 + 1
    step = 2 if cfg.anchors.stride == 16 else 1  # stride 8: the second pool 3x3/1 (backbone.zf)
    h, w = pooled(h, step), pooled(w, step)
    for name, cin, cout in (("conv3", channels[1], channels[2]), ("conv4", channels[2], channels[3]),
                            ("conv5", channels[3], channels[4])):
        layers.append((name, [batch, h + 2, w + 2, cin], [3, 3, cin, cout], 1))
    return layers, channels[4]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--rois", type=int, help="RoIs a step (default: the preset's batch_rois)")
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    cfg = preset("shapes")
    rois = args.rois or cfg.detector.batch_rois
    layers, conv5 = conv_shapes(cfg, args.batch, args.height, args.width)
    print(f"machine: {machine()}; {args.batch} images of {args.height} x {args.width}, stride "
          f"{cfg.anchors.stride}, {rois} RoIs")
    print(f"{'op':8s} {'dtype':9s} {'GFLOP':>6s} {'forward ms':>11s} {'filter grad':>12s} {'input grad':>11s}")
    totals = {}
    for dtype in (tf.bfloat16, tf.float32):
        sums = [0.0, 0.0, 0.0]
        for name, xs, ws, s in layers:
            x = tf.cast(tf.random.normal(xs), dtype)
            w = tf.cast(tf.random.normal(ws), dtype)
            y = tf.nn.conv2d(x, w, s, "VALID")
            dy = tf.cast(tf.random.normal(y.shape), dtype)
            forward = tf.function(lambda x, w, s=s: tf.nn.conv2d(x, w, s, "VALID"))
            filter_grad = tf.function(lambda x, dy, s=s, ws=ws: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=ws, out_backprop=dy, strides=[1, s, s, 1], padding="VALID"))
            input_grad = tf.function(lambda w, dy, s=s, xs=xs: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=xs, filter=w, out_backprop=dy, strides=[1, s, s, 1], padding="VALID"))
            times = [1000 * median_time(lambda f=f, a=a: f(*a).numpy(), reps=args.reps, warmup=3)
                     for f, a in ((forward, (x, w)), (filter_grad, (x, dy)), (input_grad, (w, dy)))]
            flop = 2 * y.shape[0] * y.shape[1] * y.shape[2] * ws[0] * ws[1] * ws[2] * ws[3] / 1e9
            # conv1's input gradient is never computed in training (the images take no gradient).
            for i, t in enumerate(times if name != "conv1" else times[:2]):
                sums[i] += t
            print(f"{name:8s} {dtype.name:9s} {flop:6.2f} {times[0]:11.2f} {times[1]:12.2f} {times[2]:11.2f}")
        features, units = cfg.detector.pool_size ** 2 * conv5, cfg.detector.fc_units
        x = tf.cast(tf.random.normal([rois, features]), dtype)
        w = tf.cast(tf.random.normal([features, units]), dtype)
        dy = tf.cast(tf.random.normal([rois, units]), dtype)
        products = (tf.function(lambda x, w: tf.matmul(x, w)), (x, w)), \
            (tf.function(lambda x, dy: tf.matmul(x, dy, transpose_a=True)), (x, dy)), \
            (tf.function(lambda dy, w: tf.matmul(dy, w, transpose_b=True)), (dy, w))
        fc = [1000 * median_time(lambda f=f, a=a: f(*a).numpy(), reps=args.reps, warmup=3) for f, a in products]
        print(f"{'fc6':8s} {dtype.name:9s} {2 * rois * features * units / 1e9:6.2f} {fc[0]:11.2f} "
              f"{fc[1]:12.2f} {fc[2]:11.2f}")
        totals[dtype.name] = sum(sums) + sum(fc)
        print(f"{'sum':8s} {dtype.name:9s} {'':6s} {sums[0] + fc[0]:11.2f} {sums[1] + fc[1]:12.2f} "
              f"{sums[2] + fc[2]:11.2f}  (all {totals[dtype.name]:.1f} ms)")
    print(f"bfloat16 / float32: {totals['bfloat16'] / totals['float32']:.2f}")


if __name__ == "__main__":
    main()
