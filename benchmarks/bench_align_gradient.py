"""RoIAlign's forward + backward: the layer's own gradient against TensorFlow's kernel (not a test).

    python benchmarks/bench_align_gradient.py [--rounds 10] [--checkout OLD]

``RoIPooling(mode="align")`` samples with ``tf.image.crop_and_resize`` but computes the gradient
to the features itself (``roi_pooling._splat_bins``): TensorFlow's CPU ``CropAndResizeGradImage``
adds the boxes' gradients from several threads without synchronisation. Per workload, the
median time of forward + backward of the bins (``_align_bins``) for this checkout ("ours"),
``--checkout OLD``'s (for before / after figures in one run), and crop_and_resize with
TensorFlow's own gradient; interleaved rounds, so the machine's load falls on all alike. Each
gradient is also compared with the first call's: "runs differing" counts calls whose gradient
was not bit for bit the first one's (TensorFlow's kernel loses updates, and sums in another
order, from run to run).

Workloads (random features, RoIs of 16 px to 40 % of the image, some across the edges):
the shapes preset's detector step (2 images, 32 x 36 map at stride 8, 128 channels, 128 RoIs
each, pool 6), an FPN P2 level at 800 x 1344 (stride 4, 256 channels, 256 RoIs per image,
pool 7), the ResNet-50 C4 head at 600 x 1000 (stride 16, 1024 channels, 128 RoIs, pool 14), and
the shapes step with 4 images.
"""

import argparse
import importlib.util
import inspect
import os
import statistics
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved_times, machine  # noqa: E402

from keras_frcnn import roi_pooling  # noqa: E402

WORKLOADS = {
    # name: (images, height, width, channels, RoIs per image, pool size, stride)
    "shapes detector": (2, 32, 36, 128, 128, 6, 8),
    "FPN P2 800x1344": (2, 200, 336, 256, 256, 7, 4),
    "C4 600x1000": (1, 38, 63, 1024, 128, 14, 16),
    "shapes, 4 images": (4, 32, 36, 128, 128, 6, 8),
}


def load_checkout(path):
    """``keras_frcnn.roi_pooling`` of another checkout, as its own module."""
    spec = importlib.util.spec_from_file_location("roi_pooling_checkout",
                                                  os.path.join(path, "keras_frcnn", "roi_pooling.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workload(images, height, width, channels, rois_per_image, pool_size, stride, rng):
    features = rng.standard_normal((images, height, width, channels)).astype(np.float32)
    image_h, image_w = height * stride, width * stride
    n = images * rois_per_image
    y0, x0 = rng.uniform(-20, image_h * 0.8, n), rng.uniform(-20, image_w * 0.8, n)
    h, w = rng.uniform(16, image_h * 0.4, n), rng.uniform(16, image_w * 0.4, n)
    rois = np.stack([y0, x0, y0 + h, x0 + w], -1).astype(np.float32)
    box_indices = np.repeat(np.arange(images), rois_per_image).astype(np.int32)
    upstream = rng.standard_normal((n, pool_size, pool_size, channels)).astype(np.float32)
    return tuple(tf.constant(a) for a in (features, rois, box_indices, upstream))


def forward_backward(module, features, rois, box_indices, upstream, pool_size, scale, tensorflow_kernel,
                     per_image):
    padded = module._align_source(features)
    # The RoIs in one block per image, as roi_align hands them over (a checkout from before
    # per_image: its call without it).
    blocks = {"per_image": per_image} if "per_image" in inspect.signature(module._align_bins).parameters else {}

    @tf.function
    def call():
        with tf.GradientTape() as tape:
            tape.watch(padded)
            if tensorflow_kernel:
                bins = module._mean_of_samples(
                    module._crop_samples(padded, rois, box_indices, scale, 2 * pool_size))
            else:
                bins = module._align_bins(padded, rois, box_indices, scale, pool_size, **blocks)
        return tape.gradient(bins, padded, output_gradients=upstream)

    return call


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--checkout", help="another checkout whose gradient to time beside this one's")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    modules = {"ours": (roi_pooling, False)}
    if args.checkout:
        modules["checkout"] = (load_checkout(args.checkout), False)
    modules["TensorFlow's kernel"] = (roi_pooling, True)
    rng = np.random.default_rng(0)
    print(f"{'workload':<18}{'gradient':<22}{'fwd+bwd ms':>12}{'x ours':>8}{'runs differing':>16}"
          f"{'max |x - ours|':>16}")
    for name, (images, height, width, channels, per_image, pool_size, stride) in WORKLOADS.items():
        features, rois, box_indices, upstream = workload(images, height, width, channels, per_image,
                                                         pool_size, stride, rng)
        calls, first, differing = {}, {}, {}
        for label, (module, tensorflow_kernel) in modules.items():
            call = forward_backward(module, features, rois, box_indices, upstream, pool_size, 1 / stride,
                                    tensorflow_kernel, per_image)
            first[label], differing[label] = call().numpy(), 0

            def checked(call=call, label=label):
                differing[label] += int(np.any(call().numpy() != first[label]))

            calls[label] = checked
        times = {label: statistics.median(t) * 1000 for label, t in interleaved_times(calls, args.rounds).items()}
        for label in modules:
            print(f"{name:<18}{label:<22}{times[label]:>12.1f}{times[label] / times['ours']:>8.2f}"
                  f"{differing[label]:>10} of {args.rounds}"
                  f"{np.abs(first[label] - first['ours']).max():>16.2g}")


if __name__ == "__main__":
    main()
