"""A trained model in float32 against its bfloat16 inference form (``for_inference()``, what
export.py writes for a mixed_bfloat16 model) on a held-out split: VOC07 mAP of each, and how far
the bfloat16 detections move (box pixels, score) from the float32 ones, with the time of each.
A model with batch norm also gives its forms with each batch norm folded into its convolution
("float32 folded", ``for_inference()`` of the float32 model) and kept apart ("bfloat16
unfolded", ``for_inference(fold_batch_norm=False)``), each against float32.

    python benchmarks/precision_agreement.py runs/shapes/model.keras [--split test] [--min-score 0.3]
"""

import argparse
import time

from keras_frcnn import cli
from keras_frcnn.data.shapes import load_shapes
from keras_frcnn.evaluate import collect
from keras_frcnn.metrics import detection_agreement, evaluate_detections


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--min-score", type=float, default=0.3)
    args = parser.parse_args()
    trained = cli.load_model(args.model)
    source = load_shapes(args.split)
    float32, mixed = trained.with_precision("float32"), trained.with_precision("mixed_bfloat16")
    forms = {"float32": float32, "bfloat16": mixed.for_inference()}
    folded = float32.for_inference()
    if folded is not float32:
        forms.update({"float32 folded": folded, "bfloat16 unfolded": mixed.for_inference(fold_batch_norm=False)})
    results = {}
    for name, model in forms.items():
        started = time.perf_counter()
        detections, ground_truth, _ = collect(model, source)
        seconds = time.perf_counter() - started
        metrics = evaluate_detections(detections, ground_truth, list(model.class_names), inclusive_pixels=False)
        results[name] = detections
        # The 11-point VOC07 AP moves by 1/11 of a class's AP when its last recall point is crossed;
        # the area AP does not jump so.
        per_class = " / ".join(f"{ap * 100:.1f}" for ap in metrics.ap)
        print(f"{name:17s} VOC07 mAP {metrics.mAP:.4f} (per class {per_class}), area mAP {metrics.mAP_area:.4f}"
              f"  ({len(detections)} images, {seconds:.1f} s with tracing)")
    for name in list(forms)[1:]:
        a = detection_agreement(results["float32"], results[name], args.min_score)
        total = a["compared"] + a["unpaired"]
        print(f"{name} vs float32: {total} float32 detections scoring >= {args.min_score}, "
              f"{a['unpaired']} without a {name} detection of their class at IoU >= 0.5; "
              + (f"{a['within'] * 100:.1f} % within 3 px and 0.05 score" if total else "nothing to compare"))
        for key, unit in (("box_px", "px"), ("score", "")):
            s = a[key]
            print(f"  {key:6s} difference of the pairs: median {s['p50']:.3f}{unit}, p99 {s['p99']:.3f}{unit}, "
                  f"max {s['max']:.3f}{unit}")


if __name__ == "__main__":
    main()
