"""Memory and time of the training targets for images of many objects (crowds, aerial views).

    python benchmarks/bench_dense_targets.py                      # 100 .. 8000 boxes an image
    python benchmarks/bench_dense_targets.py --boxes 8000 --max-pairs 0

Each figure is a fresh process that runs ``AnchorTargets`` and ``ProposalTargets`` as a training
step does (one ``tf.function``, seeded sampling) on a batch of 2 images of 600 x 1000 (the voc
preset's 38 x 63 feature map, 9 anchors a cell: 21,546 anchors; 2,000 proposals an image) with
``--boxes`` ground-truth boxes each: the peak resident set above the process's own before the
first call, and the median time of 10 calls. ``--max-pairs`` sets ``targets.MAX_PAIRS`` (how many
IoUs are held at once); 0 holds every pair at once, as the matching did before it was sliced.
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time  # noqa: E402


def measure(boxes, max_pairs):
    import numpy as np
    import tensorflow as tf

    from keras_frcnn import targets

    if max_pairs is not None:
        targets.MAX_PAIRS = max_pairs or 2 ** 31 - 1
    rng = np.random.default_rng(0)

    def random_boxes(n, height, width):
        centres = rng.uniform(0, 1, (n, 2)) * [height, width]
        sizes = rng.uniform(4, 64, (n, 2))
        return np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)

    ys, xs = np.meshgrid(np.arange(38) * 16 + 8.0, np.arange(63) * 16 + 8.0, indexing="ij")
    cells = np.stack([ys.ravel(), xs.ravel()], 1)
    # The paper's 9 anchors (scales 128, 256, 512; ratios 1:2, 1:1, 2:1) as (height, width).
    hw = np.array([(s * r ** 0.5, s / r ** 0.5) for s in (128, 256, 512) for r in (0.5, 1.0, 2.0)], np.float32)
    centres = np.repeat(cells, len(hw), 0)
    half = np.tile(hw, (len(cells), 1)) / 2
    anchors = np.concatenate([centres - half, centres + half], 1).astype(np.float32)
    gt = np.stack([random_boxes(boxes, 600, 1000) for _ in range(2)])
    classes = np.ones((2, boxes), np.int32)
    info = np.array([[600.0, 1000.0, 1.0]] * 2, np.float32)
    proposals = np.stack([random_boxes(2000, 600, 1000) for _ in range(2)])
    seeds = np.array([1, 2], np.int64)
    anchor_targets = targets.AnchorTargets(seed=0)
    proposal_targets = targets.ProposalTargets(seed=0)

    @tf.function
    def step():
        labels, _ = anchor_targets(anchors, gt, classes, info, seeds)
        rois = proposal_targets(proposals, np.array([2000, 2000], np.int32), gt, classes, seeds)[0]
        return tf.reduce_sum(labels) + tf.cast(tf.reduce_sum(rois), tf.int32)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = median_time(lambda: step().numpy(), reps=10, warmup=2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"anchors": len(anchors), "peak_mb": (peak - before) / 1024, "ms": seconds * 1000}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", default="100,1000,4000,8000", help="ground-truth boxes an image (a list)")
    parser.add_argument("--max-pairs", default="default,0",
                        help="targets.MAX_PAIRS values to compare (a list; 'default' as shipped, 0 all at once)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # a child process: boxes, max-pairs
    args = parser.parse_args()
    if args.one:
        boxes, pairs = int(args.one[0]), args.one[1]
        print(json.dumps(measure(boxes, None if pairs == "default" else int(pairs))))
        return
    print("machine:", machine())
    for pairs in args.max_pairs.split(","):
        for boxes in args.boxes.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", boxes, pairs], capture_output=True, text=True)
            if out.returncode:
                print(f"  max_pairs {pairs:>8} {boxes:>6} boxes: failed ({out.returncode}) {out.stderr.strip()[-300:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  max_pairs {pairs:>8} {int(boxes):>6} boxes an image, 2 images, {r['anchors']} anchors: "
                  f"{r['ms']:8.1f} ms a call, peak {r['peak_mb']:7.0f} MB above the process's start")


if __name__ == "__main__":
    main()
