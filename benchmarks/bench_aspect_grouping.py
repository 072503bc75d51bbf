"""How much of a training batch is padding, with and without aspect grouping (``train.aspect_group``):
the valid pixels of a pass's batches over their padded pixels, as the training stream feeds them
(the preset's training side, flips, batches of two, sides padded to ``train.image_pad_multiple``).
The convolutions' work follows the padded pixels. Not a test.

    python benchmarks/bench_aspect_grouping.py                          # the built-in shapes set
    python benchmarks/bench_aspect_grouping.py --preset voc --voc-dir VOCdevkit/VOC2007
    python benchmarks/bench_aspect_grouping.py --preset voc --dataset voc/2007

Any data option of train.py names the source (its training split).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine  # noqa: E402

from keras_frcnn import cli  # noqa: E402
from keras_frcnn.config import preset  # noqa: E402
from keras_frcnn.data import train_dataset  # noqa: E402


def padding(source, cfg, batch_size, aspect_group, steps):
    """Valid pixels / padded pixels over ``steps`` batches of the training stream."""
    dataset = train_dataset(source, cfg, batch_size, seed=0, repeat=True, aspect_group=aspect_group,
                            image_multiple=cfg.train.image_pad_multiple)
    valid = padded = 0
    for batch in dataset.take(steps):
        info, shape = batch["image_info"].numpy(), batch["images"].shape
        valid += float((info[:, 0] * info[:, 1]).sum())
        padded += shape[0] * shape[1] * shape[2]
    return valid / padded


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--batch", type=int, default=2, help="images a batch (the detector stages': 2)")
    parser.add_argument("--groups", default="0,16,64", help="aspect_group values to compare (0: stream order)")
    parser.add_argument("--passes", type=float, default=1.0, help="passes over the training split")
    cli.add_data_args(parser)
    args = parser.parse_args()
    cfg = preset(args.preset)
    choice = cli.choose_data(args, cfg)
    source = cli.load_training_source(args, choice, decode_images=False)
    steps = max(1, int(args.passes * source.num_examples) // args.batch)
    print(f"machine: {machine()}; {source.name}, {source.num_examples} images, preset {args.preset} "
          f"(training side {cfg.image.train_min_sides or cfg.image.min_side}, max {cfg.image.max_side}), "
          f"{steps} batches of {args.batch}")
    shares = {}
    for group in (int(g) for g in args.groups.split(",")):
        shares[group] = padding(source, cfg, args.batch, group, steps)
        print(f"  aspect_group {group:3d}: valid / padded pixels {shares[group]:.3f}; padded pixels "
              f"{next(iter(shares.values())) / shares[group]:.3f}x the first's")


if __name__ == "__main__":
    main()
