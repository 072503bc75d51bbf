"""The same Faster R-CNN in torchvision, timed: the other side of ``bench_compare.py``.

Runs in a benchmark environment with torch and torchvision (not a dependency of this project):

    python -m venv bench-venv && bench-venv/bin/pip install torch torchvision
    bench-venv/bin/python benchmarks/torchvision_frcnn.py --task infer --batch 1

Architecture and settings as keras-frcnn's ``voc`` preset: VGG-16 conv1_1..conv5_3 (stride 16,
512 channels), 9 anchors (128/256/512 px, h/w 0.5/1/2), a 3x3 512 RPN conv, RPN NMS 0.7 with
6000/300 (test) and 12000/2000 (train) boxes, RoI max pooling 7x7 at 1/16 (``torchvision.ops.RoIPool``),
fc6/fc7 4096, 21 classes, 256 anchors and 128 RoIs sampled per image, score threshold 0.05,
per-class NMS 0.3, 100 detections, images resized to 600 (max 1000) px. Random weights.
Prints one JSON line: median seconds, the repetitions and the peak resident memory.

``--arch resnet50-fpn``: torchvision's own ``fasterrcnn_resnet50_fpn`` (random weights, 91
classes, its defaults: 800 / 1333 resize, 1000 test proposals, ...), against keras-frcnn's
``resnet50-fpn-coco`` preset; ``--arch mobilenetv3-fpn``: its ``fasterrcnn_mobilenet_v3_large_fpn``
against ``mobilenetv3-fpn-coco``.
"""

import argparse
import json
import resource
import statistics
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_times  # noqa: E402  (plain Python, no TensorFlow)


class RoIMaxPool(nn.Module):
    """``torchvision.ops.RoIPool`` behind the interface FasterRCNN gives its box pooler."""

    def __init__(self):
        super().__init__()
        self.pool = torchvision.ops.RoIPool(output_size=7, spatial_scale=1.0 / 16)

    def forward(self, features, proposals, image_shapes):
        # RoIPool has no bfloat16 CPU kernel: under --bf16 it pools in float32.
        return self.pool(features["0"].float(), [p.float() for p in proposals])


def build():
    backbone = torchvision.models.vgg16(weights=None).features[:-1]  # conv5_3 + ReLU, no pool5
    backbone.out_channels = 512
    model = FasterRCNN(
        backbone, num_classes=None,
        rpn_anchor_generator=AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(512 * 7 * 7, 4096),
        box_predictor=FastRCNNPredictor(4096, 21),
        min_size=600, max_size=1000,
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300, rpn_nms_thresh=0.7,
        rpn_batch_size_per_image=256, box_batch_size_per_image=128, box_positive_fraction=0.25,
        box_score_thresh=0.05, box_nms_thresh=0.3, box_detections_per_img=100,
    )
    # The constructor only accepts MultiScaleRoIAlign; Fast R-CNN's RoI max pooling goes in after.
    model.roi_heads.box_roi_pool = RoIMaxPool()
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=["infer", "train"], default="infer")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16 (inference)")
    parser.add_argument("--arch", choices=["vgg16", "resnet50-fpn", "mobilenetv3-fpn"], default="vgg16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.arch == "vgg16":
        model = build()
    else:
        builder = {"resnet50-fpn": torchvision.models.detection.fasterrcnn_resnet50_fpn,
                   "mobilenetv3-fpn": torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn}[args.arch]
        model = builder(weights=None, weights_backbone=None, num_classes=91)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 600, 1000), generator=generator).float() / 255.0
              for _ in range(args.batch)]

    if args.task == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                model(images)
    else:
        model.train()
        boxes = torch.tensor([[100.0, 150.0, 300.0, 400.0], [500.0, 250.0, 900.0, 500.0],
                              [600.0, 50.0, 750.0, 200.0]])  # x1, y1, x2, y2 in a 1000 x 600 image
        targets = [{"boxes": boxes, "labels": torch.tensor([3, 7, 12])} for _ in images]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)

        def step():
            losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

    times = run_times(step, args.reps, args.warmup)
    print(json.dumps({"framework": f"torchvision {torchvision.__version__} / torch {torch.__version__}",
                      "task": args.task, "batch": args.batch, "bf16": args.bf16,
                      "median_s": statistics.median(times), "times_s": times,
                      "threads": torch.get_num_threads(),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
