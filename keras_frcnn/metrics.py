"""Detection metrics: PASCAL VOC AP (the paper's headline number) and COCO AP. Pure NumPy.

Inputs, one entry per image, in the same order for both lists (NumPy arrays or nested lists):

    detections[i]   = {"boxes": [D, 4], "scores": [D], "labels": [D]}
    ground_truth[i] = {"boxes": [G, 4], "labels": [G], "difficult": [G]}   # "difficult" optional

Boxes are absolute pixels ``[ymin, xmin, ymax, xmax]`` (the package's box format); labels are
0-based indices into ``class_names`` (foreground classes only, no background). ``D`` and ``G`` may
be 0. A model's padded output is cut to its ``num_detections`` before it is passed here.

VOC semantics are py-faster-rcnn's ``voc_eval.py`` (the number Detectron2, mmdetection and
tf-faster-rcnn print), which follows the devkit's ``VOCevaldet.m`` but for two float edges (below):

- Per class, detections of all images are sorted by score, descending; ties keep input order
  (image order, then order within the image), as the devkit reading a results file.
- Each detection is compared with the ground truth of its class in its image and takes the one of
  highest IoU (ties: the first), matched or not. If that IoU is ``> iou_threshold`` (strict, as
  ``voc_eval.py``; the MATLAB devkit writes ``>=``, which differs only at an IoU of exactly 0.5):
  a difficult box makes the detection count neither as true nor false positive; an unmatched box
  makes it a true positive and marks the box; an already-matched box makes it a false positive
  (duplicate). Otherwise the detection is a false positive.
- Difficult boxes are not in the positive count. A class with no positive has no defined recall:
  its AP is NaN here, ``null`` in ``metrics_json``, and it is left out of the means (pycocotools
  leaves such categories out the same way).
- IoU with ``inclusive_pixels=True`` (the default) counts pixels as the devkit does: a box covers
  ``ymax - ymin + 1`` rows and ``xmax - xmin + 1`` columns, i.e. ``ymax``/``xmax`` are the indices
  of the last pixel inside: for VOC numbers as written (a devkit results file and its XML), which
  then reproduce the devkit's. With ``inclusive_pixels=False`` the IoU is the continuous one of
  ``keras_frcnn.boxes``: **pass it for the package's own boxes**, ``keras_frcnn.evaluate.collect``'s
  detections and ground truth (the pipelines turn VOC numbers into continuous edges ``[xmin - 1,
  xmax]``, whose continuous IoU is the devkit's), as ``evaluate`` does; the default on them would
  add the pixel twice (an IoU of 0.5 read as 0.545).

Shape letters: ``D`` detections and ``G`` ground-truth boxes of one image, ``K`` classes, ``N`` the
detections of one class over the data set.
"""

import contextlib
import dataclasses
import io
import math
import os
import re

import numpy as np

# VOC07's 11 recall thresholds as py-faster-rcnn's ``voc_eval.py`` computes them,
# ``np.arange(0.0, 1.1, 0.1)`` (Detectron2, mmdetection and tf-faster-rcnn copy it): the 4th, 7th
# and 8th are 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, so a class whose
# recall is exactly 0.3 (or 0.6, 0.7) does not reach "its" threshold, and its AP equals the one
# those libraries print. (The MATLAB devkit's ``0:0.1:1`` is 0.30000000000000004 at the 4th but
# exact at 0.6 and 0.7; exact i / 10 thresholds would give up to 1/11 more for such a class.)
VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)

# The order of pycocotools' ``COCOeval.stats``.
COCO_STAT_NAMES = (
    "AP",  # IoU 0.50:0.95, all areas, 100 detections per image
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def voc_ap(recall, precision, use_07_metric=True):
    """AP of one class from its precision/recall curve ``[N]`` (recall non-decreasing).

    ``use_07_metric=True``: VOC2007's 11-point interpolated AP, the mean over ``t`` in
    ``0, 0.1, ..., 1`` (``VOC07_RECALL_THRESHOLDS``, ``voc_eval.py``'s floats) of the maximum
    precision at ``recall >= t`` (0 where recall never reaches ``t``). ``False``: VOC2010+'s area under the interpolated curve, where the precision at each
    recall is made the maximum precision at that recall or higher (the curve is padded with
    ``(0, 0)`` and ``(1, 0)``, as the devkit does). Empty curves give 0. NaN precisions (the
    devkit's ``0 / 0``) count as 0.
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.nan_to_num(np.asarray(precision, dtype=np.float64).reshape(-1), nan=0.0)
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision differ in length: {recall.shape} vs {precision.shape}")
    if use_07_metric:
        return float(
            np.mean([precision[recall >= t].max(initial=0.0) for t in VOC07_RECALL_THRESHOLDS])
        )
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, non-increasing
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


@dataclasses.dataclass(frozen=True)
class DetectionMetrics:
    """VOC evaluation of a data set. Per-class arrays are indexed like ``class_names``.

    ``ap`` (VOC07 11-point) and ``ap_area`` (VOC2010+ area) are ``[K]``, NaN for classes without
    positives; ``mAP`` and ``mAP_area`` average the others (NaN if there are none).
    ``precision[k]`` and ``recall[k]`` are the class's curve ``[N_k]``, one point per detection
    that counted (true or false positive) in score order; detections matched to difficult boxes
    are left out, which changes neither AP. ``num_positives`` counts non-difficult ground truth,
    ``num_detections`` all detections of the class.
    """

    class_names: tuple
    ap: np.ndarray
    ap_area: np.ndarray
    precision: tuple
    recall: tuple
    num_positives: np.ndarray
    num_detections: np.ndarray
    mAP: float
    mAP_area: float
    num_images: int
    iou_threshold: float
    inclusive_pixels: bool


def evaluate_detections(
    detections, ground_truth, class_names, iou_threshold=0.5, inclusive_pixels=True
):
    """VOC evaluation (module docstring) of per-image ``detections`` against ``ground_truth``:
    ``inclusive_pixels=False`` for boxes in continuous pixels (``keras_frcnn.evaluate.collect``'s),
    True for VOC's pixel numbers as written.

    Returns a ``DetectionMetrics``; ``metrics_json`` turns it into the ``metrics.json`` dict.
    """
    class_names = tuple(str(name) for name in class_names)
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique, got {class_names}")
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"detections and ground_truth must have one entry per image, got {len(detections)} "
            f"and {len(ground_truth)}"
        )
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    num_classes = len(class_names)

    # One pass over the images: every detection's best same-class ground truth (a global index
    # into the concatenated ground truth) and its IoU.
    det_labels, det_scores, det_best_gt, det_best_iou = [], [], [], []
    gt_difficult = []
    num_positives = np.zeros(num_classes, np.int64)
    gt_offset = 0
    for image, (det, gt) in enumerate(zip(detections, ground_truth)):
        pred_boxes, pred_scores, pred_labels = _read_detections(det, num_classes, image)
        gt_boxes, gt_labels, difficult = _read_ground_truth(gt, num_classes, image)
        num_positives += np.bincount(gt_labels[~difficult], minlength=num_classes)
        gt_difficult.append(difficult)
        if len(pred_labels):
            iou = pairwise_iou(pred_boxes, gt_boxes, inclusive_pixels)  # [D, G]
            iou = np.where(pred_labels[:, None] == gt_labels[None, :], iou, -np.inf)
            if iou.shape[1]:
                best = np.argmax(iou, axis=1)
                best_iou = iou[np.arange(len(best)), best]
            else:
                best = np.zeros(len(pred_labels), np.int64)
                best_iou = np.full(len(pred_labels), -np.inf)
            det_labels.append(pred_labels)
            det_scores.append(pred_scores)
            det_best_gt.append(best + gt_offset)
            det_best_iou.append(best_iou)
        gt_offset += len(gt_labels)

    det_labels = _concat(det_labels, np.int64)
    det_scores = _concat(det_scores, np.float64)
    det_best_gt = _concat(det_best_gt, np.int64)
    det_best_iou = _concat(det_best_iou, np.float64)
    gt_difficult = _concat(gt_difficult, bool).tolist()

    ap, ap_area, precisions, recalls = [], [], [], []
    num_detections = np.bincount(det_labels, minlength=num_classes)
    for k in range(num_classes):
        idx = np.flatnonzero(det_labels == k)
        order = idx[np.argsort(-det_scores[idx], kind="stable")]
        is_tp = _match(
            det_best_gt[order].tolist(),
            (det_best_iou[order] > iou_threshold).tolist(),
            gt_difficult,
        )
        tp = np.cumsum(is_tp, dtype=np.float64)
        fp = np.cumsum(~is_tp, dtype=np.float64)
        precision = tp / np.maximum(tp + fp, 1.0)  # tp + fp >= 1 at every point
        if num_positives[k] > 0:
            recall = tp / num_positives[k]
            ap.append(voc_ap(recall, precision, use_07_metric=True))
            ap_area.append(voc_ap(recall, precision, use_07_metric=False))
        else:
            recall = np.full_like(tp, np.nan)
            ap.append(math.nan)
            ap_area.append(math.nan)
        precisions.append(precision)
        recalls.append(recall)

    ap, ap_area = np.asarray(ap, np.float64), np.asarray(ap_area, np.float64)
    return DetectionMetrics(
        class_names=class_names,
        ap=ap,
        ap_area=ap_area,
        precision=tuple(precisions),
        recall=tuple(recalls),
        num_positives=num_positives,
        num_detections=num_detections,
        mAP=_mean_defined(ap),
        mAP_area=_mean_defined(ap_area),
        num_images=len(ground_truth),
        iou_threshold=float(iou_threshold),
        inclusive_pixels=bool(inclusive_pixels),
    )


def _match(best_gt, overlaps, gt_difficult):
    """Devkit assignment of one class's detections in score order -> ``[N']`` bool (True = TP).

    Detections whose best box is difficult are dropped (they count neither way).
    """
    matched = set()
    is_tp = []
    for gt, overlap in zip(best_gt, overlaps):
        if not overlap:
            is_tp.append(False)
        elif gt_difficult[gt]:
            continue
        elif gt not in matched:
            matched.add(gt)
            is_tp.append(True)
        else:
            is_tp.append(False)  # duplicate detection of a matched box
    return np.asarray(is_tp, dtype=bool)


def pairwise_iou(boxes1, boxes2, inclusive_pixels=True):
    """IoU ``[N, M]`` of yxyx boxes ``[N, 4]`` x ``[M, 4]`` in float64 NumPy.

    ``inclusive_pixels=True`` adds 1 to every side length (``ymax``/``xmax`` are last pixels), as
    the VOC devkit. Pairs with an empty union have IoU 0.
    """
    b1 = np.asarray(boxes1, np.float64).reshape(-1, 1, 4)
    b2 = np.asarray(boxes2, np.float64).reshape(1, -1, 4)
    one = 1.0 if inclusive_pixels else 0.0
    inter_h = np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]) + one
    inter_w = np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]) + one
    inter = np.maximum(inter_h, 0.0) * np.maximum(inter_w, 0.0)

    def area(b):
        return np.maximum(b[..., 2] - b[..., 0] + one, 0.0) * np.maximum(
            b[..., 3] - b[..., 1] + one, 0.0
        )

    union = area(b1) + area(b2) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def detection_agreement(reference, other, min_score=0.3, box_px=3.0, score=0.05):
    """How closely ``other`` reproduces ``reference``'s detections (e.g. a bfloat16 model against
    its float32 form), both lists of per-image ``{"boxes", "scores", "labels"}``. Each reference
    detection scoring ``>= min_score`` is paired with the same-class detection of ``other`` it
    overlaps most, if that IoU is at least 0.5. Returns ``{"compared", "unpaired",
    "within"}`` (pairs, reference detections without one, and the fraction of the reference
    detections paired within ``box_px`` pixels (every coordinate) and ``score``; None where there
    is none) and the
    ``"box_px"`` and ``"score"`` differences of the pairs: ``{"p50", "p99", "max"}``."""
    box_diffs, score_diffs, unpaired = [], [], 0
    for ref, oth in zip(reference, other, strict=True):
        oth_boxes, oth_labels = np.asarray(oth["boxes"]), np.asarray(oth["labels"])
        for box, value, label in zip(ref["boxes"], ref["scores"], ref["labels"]):
            if value < min_score:
                continue
            same = np.flatnonzero(oth_labels == label)
            overlaps = pairwise_iou(np.asarray(box)[None], oth_boxes[same], inclusive_pixels=False)[0] \
                if len(same) else np.zeros(0)
            if not len(same) or overlaps.max() < 0.5:
                unpaired += 1
                continue
            nearest = same[np.argmax(overlaps)]
            box_diffs.append(float(np.abs(oth_boxes[nearest] - box).max()))
            score_diffs.append(abs(float(oth["scores"][nearest]) - float(value)))
    total = len(box_diffs) + unpaired
    close = sum(b <= box_px and s <= score for b, s in zip(box_diffs, score_diffs))

    def stats(values):
        if not values:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        return {"p50": float(np.median(values)), "p99": float(np.percentile(values, 99)),
                "max": float(np.max(values))}

    return {"compared": len(box_diffs), "unpaired": unpaired, "within": close / total if total else None,
            "box_px": stats(box_diffs), "score": stats(score_diffs)}


def metrics_json(result):
    """The ``metrics.json`` dict of a ``DetectionMetrics`` (classes without positives -> ``null``).

    ``mAP`` / ``per_class``: VOC07 11-point AP; ``mAP_area`` / ``per_class_area``: VOC2010+ area
    AP; all in [0, 1]. Strict JSON (``json.dumps(..., allow_nan=False)`` accepts it).
    """
    names = result.class_names
    return {
        "mAP": _json_float(result.mAP),
        "mAP_area": _json_float(result.mAP_area),
        "per_class": {name: _json_float(v) for name, v in zip(names, result.ap)},
        "per_class_area": {name: _json_float(v) for name, v in zip(names, result.ap_area)},
        "num_positives": {name: int(n) for name, n in zip(names, result.num_positives)},
        "num_detections": {name: int(n) for name, n in zip(names, result.num_detections)},
        # The end of each class's PR curve: the share of its objects found at all.
        "recall": {name: _json_float(max_recall(result, k)) for k, name in enumerate(names)},
        "num_images": int(result.num_images),
        "iou_threshold": result.iou_threshold,
        "inclusive_pixels": result.inclusive_pixels,
    }


def max_recall(result, k) -> float:
    """The recall at the end of class ``k``'s PR curve (NaN without positives)."""
    if not result.num_positives[k]:
        return math.nan
    return float(result.recall[k][-1]) if len(result.recall[k]) else 0.0


def format_table(result):
    """Per-class AP of a ``DetectionMetrics`` as a text table (AP in percent, as papers print it)."""
    width = max([len("class"), len("mAP")] + [len(n) for n in result.class_names])
    header = (f"{'class':<{width}}  {'AP07 %':>7}  {'AP area %':>9}  {'recall %':>8}  {'positives':>9}  "
              f"{'detections':>10}")
    lines = [header, "-" * len(header)]
    for k, name in enumerate(result.class_names):
        lines.append(
            f"{name:<{width}}  {_percent(result.ap[k]):>7}  {_percent(result.ap_area[k]):>9}  "
            f"{_percent(max_recall(result, k)):>8}  {int(result.num_positives[k]):>9}  "
            f"{int(result.num_detections[k]):>10}"
        )
    lines.append("-" * len(header))
    lines.append(f"{'mAP':<{width}}  {_percent(result.mAP):>7}  {_percent(result.mAP_area):>9}")
    lines.append(
        f"{result.num_images} images, IoU > {result.iou_threshold:g}"
        f"{' (inclusive pixels, VOC devkit)' if result.inclusive_pixels else ''}; "
        "AP07 = VOC2007 11-point, AP area = VOC2010+, recall = at the end of the PR curve"
    )
    return "\n".join(lines)


def plot_pr_curves(result, out_dir):
    """One PNG per class in ``out_dir``: the precision-recall curve and its interpolated envelope.

    Files are ``pr_<index>_<class name>.png`` (name reduced to letters, digits and ``_.-``). Drawn with
    Matplotlib's Agg canvas directly, so pyplot's global state and backend are left alone.
    Returns the paths in class order. Plots of an earlier evaluation in ``out_dir`` of classes this
    one has not are removed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    from keras_frcnn.files import write_atomically
    from keras_frcnn.visualize import font_file_for

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k, name in enumerate(result.class_names):
        recall, precision = result.recall[k], result.precision[k]
        fig = Figure(figsize=(5, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if result.num_positives[k] > 0 and len(recall):
            # The envelope as the area AP integrates it: on (r[i-1], r[i]] it is envelope[i].
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ax.plot(recall, precision, color="tab:blue", lw=1, label="precision")
            ax.plot(
                np.concatenate([[0.0], recall]),
                np.concatenate([envelope[:1], envelope]),
                color="tab:orange", lw=1, ls="--", drawstyle="steps-pre", label="interpolated",
            )
            ax.legend(loc="lower left")
        if result.num_positives[k] > 0:
            title = f"{name}: AP07 {result.ap[k]:.3f}, AP area {result.ap_area[k]:.3f}"
        else:
            title = f"{name}: no ground truth, AP undefined"
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.set_title(title, fontproperties=FontProperties(fname=font_file_for(title), size="large"))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        # (the class's number keeps the names apart; 100 bytes leave room under a file name's 255)
        stem = re.sub(r"[^\w.-]+", "_", name).encode()[:100].decode(errors="ignore")
        path = os.path.join(out_dir, f"pr_{k:03d}_{stem}.png")
        write_atomically(path, lambda partial: fig.savefig(partial, format="png"))  # never a torn plot
        paths.append(path)
    # An earlier evaluation's plots of classes this one has not (another model's, renamed classes)
    # would read as this one's: removed.
    for name in os.listdir(out_dir):
        if re.fullmatch(r"pr_\d{3}_.*\.png", name) and os.path.join(out_dir, name) not in paths:
            os.remove(os.path.join(out_dir, name))
    return paths


def coco_ap(detections, ground_truth, class_names, image_sizes=None):
    """COCO box AP via pycocotools -> ``{name: value}`` for the 12 ``COCO_STAT_NAMES``.

    Same inputs as ``evaluate_detections`` (boxes converted to COCO's continuous ``[x, y, w, h]``,
    no +1). ``image_sizes``: optional ``(height, width)`` per image, copied into the image records
    (box evaluation does not use them). Ground truth may carry ``"area"`` ``[G]`` (COCO's
    segmentation areas, which pick the small/medium/large bins, as in the official evaluation);
    where it is missing or negative the box area is used.
    Difficult boxes become ``iscrowd`` regions, COCO's nearest notion: detections on them are
    ignored, though COCO matches them only after every non-crowd box (VOC takes the highest IoU).

    pycocotools' own conventions hold: a value is -1 where there is no ground truth to measure
    (e.g. ``AP_small`` without small boxes); with ground truth but no detections AP is 0.
    pycocotools' printing is swallowed.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    num_classes = len(class_names)
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"detections and ground_truth must have one entry per image, got {len(detections)} "
            f"and {len(ground_truth)}"
        )
    if image_sizes is not None and len(image_sizes) != len(ground_truth):
        raise ValueError(f"need one image size per image, got {len(image_sizes)}")

    # Ids start at 1: pycocotools treats a matched ground-truth id of 0 as "no match".
    images, annotations, results = [], [], []
    for image, (det, gt) in enumerate(zip(detections, ground_truth)):
        record = {"id": image + 1}
        if image_sizes is not None:
            record["height"], record["width"] = (int(s) for s in image_sizes[image])
        images.append(record)
        gt_boxes, gt_labels, difficult = _read_ground_truth(gt, num_classes, image)
        gt_xywh = _to_xywh(gt_boxes)
        areas = gt_xywh[:, 2] * gt_xywh[:, 3]
        if "area" in gt:  # the source's own areas (COCO's); negative: none given, the box's
            given = np.asarray(gt["area"], np.float64).reshape(-1)
            areas = np.where(given >= 0, given, areas)
        for box, label, crowd, area in zip(
            gt_xywh.tolist(), gt_labels.tolist(), difficult.tolist(), areas.tolist()
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image + 1,
                    "category_id": label + 1,
                    "bbox": box,
                    "area": area,
                    "iscrowd": int(crowd),
                }
            )
        pred_boxes, pred_scores, pred_labels = _read_detections(det, num_classes, image)
        for box, score, label in zip(
            _to_xywh(pred_boxes).tolist(), pred_scores.tolist(), pred_labels.tolist()
        ):
            results.append(
                {"image_id": image + 1, "category_id": label + 1, "bbox": box, "score": score}
            )
    categories = [{"id": k + 1, "name": str(name)} for k, name in enumerate(class_names)]

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list (it reads the first result's keys)
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "annotations": [], "categories": categories}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}


def _read_detections(det, num_classes, image):
    boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(det["scores"], np.float64).reshape(-1)
    labels = np.asarray(det["labels"]).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"image {image}: detections have {len(boxes)} boxes, {len(scores)} scores and "
            f"{len(labels)} labels"
        )
    _check_labels(labels, num_classes, image, "detection")
    return boxes, scores, labels


def _read_ground_truth(gt, num_classes, image):
    boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
    labels = np.asarray(gt["labels"]).reshape(-1).astype(np.int64)
    difficult = gt.get("difficult")
    difficult = (
        np.zeros(len(labels), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
    )
    if not len(boxes) == len(labels) == len(difficult):
        raise ValueError(
            f"image {image}: ground truth has {len(boxes)} boxes, {len(labels)} labels and "
            f"{len(difficult)} difficult flags"
        )
    _check_labels(labels, num_classes, image, "ground-truth")
    return boxes, labels, difficult


def _check_labels(labels, num_classes, image, what):
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"image {image}: {what} labels must be in [0, {num_classes}), got {labels.tolist()}"
        )


def _to_xywh(boxes):
    ymin, xmin, ymax, xmax = boxes.T
    return np.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=1)


def _concat(arrays, dtype):
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)


def _mean_defined(values):
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else math.nan


def _json_float(value):
    return None if math.isnan(value) else float(value)


def _percent(value):
    return "-" if math.isnan(value) else f"{100 * value:.1f}"
