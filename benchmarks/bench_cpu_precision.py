"""Does this CPU gain from bfloat16, and how much at most? VGG-16 Faster R-CNN's inference
arithmetic one kernel at a time, float32 against bfloat16: the 13 convolutions of the base, the
RPN's 3 x 3 convolution, fc6 and fc7 over the test-time RoIs, at the voc preset's sizes (a
600 x 1000 image, 300 proposals). Not a test.

    python benchmarks/bench_cpu_precision.py             # 26 s on 2 Zen 4 cores; ~1 minute where bfloat16 is emulated
    python benchmarks/bench_cpu_precision.py --height 600 --width 800 --rois 300 --rounds 5

The sum over the kernels is the model's arithmetic at the kernels' own speed, so "bfloat16 /
float32" of the sum is what the whole model's ratio can reach on this CPU (bench_inference.py
measures the model itself): below 1 where the CPU has native bfloat16 (AMX, AVX512_BF16), above
1 where TensorFlow emulates it (export float32 for such servers). Rounds alternate the two
precisions so that a change in the machine's speed touches both alike; the medians are printed.
"""

import argparse
import statistics
import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import interleaved_times, machine  # noqa: E402

from keras_frcnn import preset  # noqa: E402
from keras_frcnn.config import native_bfloat16_cpu  # noqa: E402

# VGG-16's convolutions: (block, layers, output channels); each block ends in a 2 x 2 pool.
_VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def kernels(height, width, rois, pool_size, fc_units, rpn_channels):
    """-> [(name, GFLOP, shapes)] of VGG-16 Faster R-CNN's convolutions and fc products, where
    shapes is ("conv", input, filter) or ("fc", input, weights)."""
    out, channels, h, w = [], 3, height, width
    for block, count, width_out in _VGG16_BLOCKS:
        for i in range(1, count + 1):
            out.append((f"conv{block}_{i}", 2 * h * w * 9 * channels * width_out / 1e9,
                        ("conv", [1, h, w, channels], [3, 3, channels, width_out])))
            channels = width_out
        if block < 5:  # Caffe's ceil-mode pools (py-faster-rcnn's 38 x 63 conv5 map at 600 x 1000)
            h, w = -(-h // 2), -(-w // 2)
    out.append(("rpn_conv", 2 * h * w * 9 * channels * rpn_channels / 1e9,
                ("conv", [1, h, w, channels], [3, 3, channels, rpn_channels])))
    features = pool_size * pool_size * channels
    out.append(("fc6", 2 * rois * features * fc_units / 1e9, ("fc", [rois, features], [features, fc_units])))
    out.append(("fc7", 2 * rois * fc_units * fc_units / 1e9, ("fc", [rois, fc_units], [fc_units, fc_units])))
    return out


def runner(kind, x_shape, w_shape, dtype):
    """A call of the kernel on random tensors of ``dtype`` that blocks until it is done."""
    x = tf.cast(tf.random.normal(x_shape), dtype)
    w = tf.Variable(tf.cast(tf.random.normal(w_shape, stddev=0.01), dtype))
    if kind == "conv":
        fn = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"), autograph=False)
    else:
        fn = tf.function(lambda: tf.matmul(x, w), autograph=False)
    fn()  # (traced, oneDNN's kernel made)
    return lambda: fn().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cfg = preset("voc")
    parser.add_argument("--height", type=int, default=cfg.image.min_side)
    parser.add_argument("--width", type=int, default=cfg.image.max_side)
    parser.add_argument("--rois", type=int, default=cfg.rpn.post_nms_top_n[1])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    flag = native_bfloat16_cpu()
    print(f"machine: {machine()}; native bfloat16: {flag.upper() if flag else 'none'}; VGG-16 at "
          f"{args.height} x {args.width}, {args.rois} RoIs; medians of {args.rounds} alternating rounds")
    print(f"{'kernel':9s} {'GFLOP':>7s} {'float32 ms':>11s} {'bfloat16 ms':>12s} {'bf16/f32':>9s} "
          f"{'f32 GFLOP/s':>12s} {'bf16 GFLOP/s':>13s}")
    totals = {"base": [0.0, 0.0], "heads": [0.0, 0.0]}
    for name, gflop, (kind, x_shape, w_shape) in kernels(args.height, args.width, args.rois, cfg.detector.pool_size,
                                                          cfg.detector.fc_units, cfg.rpn.channels):
        candidates = {dtype: runner(kind, x_shape, w_shape, dtype) for dtype in (tf.float32, tf.bfloat16)}
        times = interleaved_times(candidates, args.rounds)
        f32, bf16 = (1000 * statistics.median(times[d]) for d in (tf.float32, tf.bfloat16))
        part = totals["base" if name.startswith("conv") else "heads"]
        part[0] += f32
        part[1] += bf16
        print(f"{name:9s} {gflop:7.2f} {f32:11.1f} {bf16:12.1f} {bf16 / f32:9.2f} {gflop / f32 * 1000:12.0f} "
              f"{gflop / bf16 * 1000:13.0f}")
    whole = [totals["base"][i] + totals["heads"][i] for i in range(2)]
    for name, (f32, bf16) in (("base", totals["base"]), ("heads", totals["heads"]), ("all", whole)):
        print(f"{name:9s} {'':7s} {f32:11.1f} {bf16:12.1f} {bf16 / f32:9.2f}")
    print(f"bfloat16 / float32 at the kernels' own speed: base {totals['base'][1] / totals['base'][0]:.2f}, "
          f"RPN conv + fc6 + fc7 {totals['heads'][1] / totals['heads'][0]:.2f}, all {whole[1] / whole[0]:.2f} "
          "(the whole model's ratio can reach about this; bench_inference.py measures it)")


if __name__ == "__main__":
    main()
