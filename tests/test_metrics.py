"""VOC / COCO metrics: hand-worked cases (expected numbers derived in the comments), devkit
cross-checks on random data, and the outputs (metrics.json dict, table, PR plots)."""

import json
import math
import os

import numpy as np
import pytest

from keras_frcnn import metrics
from conftest import random_boxes

# Boxes below are yxyx and, unless said otherwise, read with the devkit's inclusive pixels:
# [0, 0, 9, 9] covers rows 0..9 and columns 0..9, 10 x 10 = 100 pixels.
A = [0.0, 0.0, 9.0, 9.0]
B = [0.0, 50.0, 9.0, 59.0]  # disjoint from A, also 10 x 10
C = [50.0, 0.0, 59.0, 9.0]  # disjoint from A and B
NOWHERE = [100.0, 100.0, 109.0, 109.0]


def dets(boxes, scores, labels=None):
    labels = [0] * len(scores) if labels is None else labels
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": scores, "labels": labels}


def gts(boxes, labels=None, difficult=None):
    labels = [0] * len(boxes) if labels is None else labels
    out = {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": labels}
    if difficult is not None:
        out["difficult"] = difficult
    return out


# --- voc_ap -------------------------------------------------------------------------------------


def test_voc_ap_worked_curve_11_point_and_area_differ():
    # 3 positives; in score order TP, FP, TP:
    #   recall    1/3, 1/3, 2/3;  precision 1, 1/2, 2/3.
    # 11-point: t = 0, .1, .2, .3 -> max precision at recall >= t is 1 (4 thresholds);
    #           t = .4, .5, .6 -> only the point at recall 2/3 -> 2/3 (3 thresholds);
    #           t = .7 ... 1 -> recall never reaches t -> 0.  AP = (4 + 3 * 2/3) / 11 = 6/11.
    # Area: envelope is 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 beyond -> 1/3 + 2/9 = 5/9.
    recall, precision = [1 / 3, 1 / 3, 2 / 3], [1.0, 0.5, 2 / 3]
    assert metrics.voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6 / 11)  # 0.5454
    assert metrics.voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 9)  # 0.5556


def test_voc_ap_empty_curve_is_zero():
    assert metrics.voc_ap([], [], use_07_metric=True) == 0.0
    assert metrics.voc_ap([], [], use_07_metric=False) == 0.0


@pytest.mark.parametrize("recall, reached", [(3 / 10, 3), (6 / 10, 6), (7 / 10, 7), (4 / 10, 5), (1.0, 11)])
def test_voc07_thresholds_are_voc_eval_py_floats(recall, reached):
    # One point at this recall, precision 1: py-faster-rcnn's voc_eval.py thresholds
    # (np.arange(0, 1.1, 0.1): 0.30000000000000004, 0.6000000000000001, 0.7000000000000001) are
    # not reached by a recall of exactly 0.3, 0.6 or 0.7, so those give 3 / 11, 6 / 11, 7 / 11 as
    # voc_eval.py does (exact i / 10 thresholds would give 4, 7, 8 / 11).
    assert metrics.voc_ap([recall], [1.0], use_07_metric=True) == reached / 11


def _straightforward_ap(recall, precision, use_07_metric):
    """Textbook definitions, written independently of metrics.voc_ap."""
    points = list(zip(recall, precision))
    if use_07_metric:
        total = 0.0
        for i in range(11):
            t = i * 0.1  # voc_eval.py's floats (0.30000000000000004 at i = 3)
            total += max([p for r, p in points if r >= t], default=0.0)
        return total / 11
    # Sum over the distinct recall levels of (recall step) x (best precision at that recall or more).
    ap, previous = 0.0, 0.0
    for level in sorted(set(recall)):
        if level > previous:
            ap += (level - previous) * max(p for r, p in points if r >= level)
            previous = level
    return ap


def _random_curve(rng):
    num_positives = int(rng.integers(1, 21))
    num_tp = int(rng.integers(0, num_positives + 1))
    num_fp = int(rng.integers(0, 20))
    outcomes = rng.permutation(np.array([True] * num_tp + [False] * num_fp, bool))
    tp, fp = np.cumsum(outcomes), np.cumsum(~outcomes)
    return tp / num_positives, tp / np.maximum(tp + fp, 1)


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_voc_ap_matches_straightforward_implementation(rng, use_07_metric):
    for _ in range(300):
        recall, precision = _random_curve(rng)
        expected = _straightforward_ap(recall.tolist(), precision.tolist(), use_07_metric)
        assert metrics.voc_ap(recall, precision, use_07_metric) == pytest.approx(expected, abs=1e-12)


# --- matching semantics -------------------------------------------------------------------------


def test_worked_curve_through_evaluate_detections():
    # GT A, B, C; detections in score order: on A (TP), nowhere (FP), on B (TP); C is missed.
    # The curve of test_voc_ap_worked_curve: AP07 6/11, area 5/9.
    result = metrics.evaluate_detections(
        [dets([NOWHERE, B, A], [0.8, 0.7, 0.9])], [gts([A, B, C])], ["thing"]
    )
    np.testing.assert_allclose(result.recall[0], [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(result.precision[0], [1.0, 0.5, 2 / 3])
    assert result.ap[0] == pytest.approx(6 / 11)
    assert result.ap_area[0] == pytest.approx(5 / 9)
    assert result.mAP == pytest.approx(6 / 11) and result.mAP_area == pytest.approx(5 / 9)
    assert result.num_positives.tolist() == [3] and result.num_detections.tolist() == [3]


def test_difficult_match_counts_neither_way():
    # GT: A (normal), B (difficult). Detections: two on B (0.95, 0.9), one on A (0.8).
    # Both B detections are ignored; B is not a positive: 1 positive, the curve is the single
    # point (recall 1, precision 1) -> AP 1.
    result = metrics.evaluate_detections(
        [dets([B, B, A], [0.95, 0.9, 0.8])], [gts([A, B], difficult=[False, True])], ["thing"]
    )
    assert result.num_positives.tolist() == [1]
    np.testing.assert_allclose(result.recall[0], [1.0])
    np.testing.assert_allclose(result.precision[0], [1.0])
    assert result.ap[0] == 1.0 and result.ap_area[0] == 1.0

    # Without B in the ground truth the two detections are false positives ahead of the TP:
    # recall 0, 0, 1; precision 0, 0, 1/3 -> every threshold sees 1/3 -> AP 1/3.
    result = metrics.evaluate_detections([dets([B, B, A], [0.95, 0.9, 0.8])], [gts([A])], ["thing"])
    assert result.ap[0] == pytest.approx(1 / 3)


def test_duplicate_detection_is_false_positive():
    # GT A, B. Detections: A (0.9, TP), A again (0.8, duplicate -> FP), B (0.7, TP).
    # recall .5, .5, 1; precision 1, 1/2, 2/3.
    # 11-point: t <= .5 -> 1 (6 thresholds), t >= .6 -> 2/3 (5) -> (6 + 10/3) / 11 = 28/33.
    # Area: .5 * 1 + .5 * 2/3 = 5/6.
    duplicate = [0.0, 0.0, 9.0, 8.0]  # 10 x 9 inside A: IoU 90/100 = 0.9
    result = metrics.evaluate_detections(
        [dets([A, duplicate, B], [0.9, 0.8, 0.7])], [gts([A, B])], ["thing"]
    )
    np.testing.assert_allclose(result.precision[0], [1.0, 0.5, 2 / 3])
    assert result.ap[0] == pytest.approx(28 / 33)
    assert result.ap_area[0] == pytest.approx(5 / 6)


def test_detection_takes_highest_iou_box_even_if_already_matched():
    # Devkit rule: a detection is judged against its highest-IoU box only. GT A = cols 0..9 and
    # A2 = cols 2..11 (both 10 x 10). The second detection, cols 0..10 (10 x 11 = 110 px), has
    # IoU 100/110 = 0.909 with A (already matched) and 90/120 = 0.75 with the free A2: it is a
    # duplicate of A (FP), not a match of A2. recall .5, .5; precision 1, .5 -> AP07 6/11.
    a2 = [0.0, 2.0, 9.0, 11.0]
    wide = [0.0, 0.0, 9.0, 10.0]
    np.testing.assert_allclose(
        metrics.pairwise_iou([wide], [A, a2]), [[100 / 110, 90 / 120]], rtol=1e-12
    )
    result = metrics.evaluate_detections([dets([A, wide], [0.9, 0.8])], [gts([A, a2])], ["thing"])
    np.testing.assert_allclose(result.precision[0], [1.0, 0.5])
    assert result.ap[0] == pytest.approx(6 / 11)


def test_iou_exactly_half_is_not_a_match_slightly_above_is():
    # Inclusive pixels: GT A has 10 x 10 = 100 px. [0, 0, 9, 4] covers rows 0..9, cols 0..4:
    # 10 x 5 = 50 px, all inside A -> IoU 50 / 100 = 0.5 exactly -> not a match (strict) -> AP 0.
    # With xmax 4.01: 10 x 5.01 = 50.1 px -> IoU 0.501 -> match -> AP 1.
    half, above = [0.0, 0.0, 9.0, 4.0], [0.0, 0.0, 9.0, 4.01]
    assert metrics.pairwise_iou([half], [A])[0, 0] == 0.5
    assert metrics.pairwise_iou([above], [A])[0, 0] == pytest.approx(0.501)
    assert metrics.evaluate_detections([dets([half], [1.0])], [gts([A])], ["t"]).ap[0] == 0.0
    assert metrics.evaluate_detections([dets([above], [1.0])], [gts([A])], ["t"]).ap[0] == 1.0

    # Continuous boxes (inclusive_pixels=False): the same pair is 9 x 4 / (9 x 9) = 36/81; the
    # exact half is [0, 0, 10, 5] against [0, 0, 10, 10] (50 / 100).
    assert metrics.pairwise_iou([half], [A], inclusive_pixels=False)[0, 0] == pytest.approx(36 / 81)
    gt10, half10, above10 = [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 5.01]
    assert metrics.pairwise_iou([half10], [gt10], inclusive_pixels=False)[0, 0] == 0.5
    for box, expected in ((half10, 0.0), (above10, 1.0)):
        result = metrics.evaluate_detections(
            [dets([box], [1.0])], [gts([gt10])], ["t"], inclusive_pixels=False
        )
        assert result.ap[0] == expected


def test_equal_scores_keep_input_order():
    # Stable sort: with equal scores the earlier detection comes first.
    # FP then TP: recall 0, 1; precision 0, 1/2 -> AP 1/2.  TP then FP: precision 1, 1/2 -> AP 1.
    fp_first = metrics.evaluate_detections([dets([NOWHERE, A], [0.5, 0.5])], [gts([A])], ["t"])
    tp_first = metrics.evaluate_detections([dets([A, NOWHERE], [0.5, 0.5])], [gts([A])], ["t"])
    assert fp_first.ap[0] == pytest.approx(0.5)
    assert tp_first.ap[0] == 1.0


def test_wrong_class_is_not_a_match():
    result = metrics.evaluate_detections(
        [dets([A], [0.9], labels=[1])], [gts([A], labels=[0])], ["cat", "dog"]
    )
    assert result.ap[0] == 0.0  # the cat was missed
    assert math.isnan(result.ap[1])  # no dog in the ground truth
    assert result.mAP == 0.0


def test_class_without_detections_gets_zero_and_counts_in_mean():
    # cat: detected perfectly (AP 1); dog: has ground truth, no detection (AP 0) -> mAP 1/2.
    result = metrics.evaluate_detections(
        [dets([A], [0.9], labels=[0])], [gts([A, B], labels=[0, 1])], ["cat", "dog"]
    )
    assert result.ap.tolist() == [1.0, 0.0]
    assert result.ap_area.tolist() == [1.0, 0.0]
    assert result.mAP == 0.5 and result.mAP_area == 0.5


def test_class_without_positives_is_null_and_left_out_of_mean():
    # bird has a (necessarily false) detection but no ground truth: AP undefined, not averaged.
    # A second image with only a difficult bird still gives no positive.
    result = metrics.evaluate_detections(
        [dets([A, B], [0.9, 0.8], labels=[0, 2]), dets([], [])],
        [gts([A, B], labels=[0, 1]), gts([C], labels=[2], difficult=[True])],
        ["cat", "dog", "bird"],
    )
    assert result.ap[:2].tolist() == [1.0, 0.0] and math.isnan(result.ap[2])
    assert result.mAP == 0.5
    out = metrics.metrics_json(result)
    assert out["per_class"] == {"cat": 1.0, "dog": 0.0, "bird": None}
    assert out["per_class_area"] == {"cat": 1.0, "dog": 0.0, "bird": None}
    assert out["mAP"] == 0.5 and out["mAP_area"] == 0.5 and out["num_images"] == 2
    assert out["num_positives"] == {"cat": 1, "dog": 1, "bird": 0}
    json.dumps(out, allow_nan=False)


def test_perfect_detections_give_map_one(rng):
    names = ["a", "b", "c"]
    ground_truth, detections = [], []
    for _ in range(5):
        boxes = random_boxes(rng, 6, size=300.0, min_side=5.0)
        labels = rng.integers(0, len(names), 6)
        ground_truth.append(gts(boxes, labels))
        detections.append(dets(boxes, rng.uniform(0.1, 1.0, 6).tolist(), labels))
    result = metrics.evaluate_detections(detections, ground_truth, names)
    assert result.mAP == 1.0 and result.mAP_area == 1.0
    assert result.num_images == 5


def test_no_images_and_no_detections():
    result = metrics.evaluate_detections([], [], ["a"])
    assert math.isnan(result.mAP) and result.num_images == 0
    assert metrics.metrics_json(result)["mAP"] is None
    result = metrics.evaluate_detections([dets([], [])], [gts([A])], ["a"])
    assert result.mAP == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels"):
        metrics.evaluate_detections([dets([A], [0.9], labels=[3])], [gts([A])], ["a"])
    with pytest.raises(ValueError, match="one entry per image"):
        metrics.evaluate_detections([], [gts([A])], ["a"])
    with pytest.raises(ValueError, match="scores"):
        metrics.evaluate_detections([dets([A, B], [0.9])], [gts([A])], ["a"])


# --- cross-check against a transcription of the devkit loop --------------------------------------


def _devkit_ap(detections, ground_truth, k, use_07_metric):
    """VOCevaldet.m for class k, transcribed loop by loop (strict > 0.5, as voc_eval.py)."""
    gt = []
    npos = 0
    for g in ground_truth:
        mask = np.asarray(g["labels"]) == k
        difficult = np.asarray(g.get("difficult", np.zeros(len(mask), bool)), bool)[mask]
        boxes = np.asarray(g["boxes"])[mask]
        gt.append({"BB": boxes, "diff": difficult, "det": [False] * len(difficult)})
        npos += int((~difficult).sum())
    ids, confidence, bbs = [], [], []
    for i, d in enumerate(detections):
        for box, score, label in zip(d["boxes"], d["scores"], d["labels"]):
            if label == k:
                ids.append(i)
                confidence.append(score)
                bbs.append(box)
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, j in enumerate(order):
        i, bb = ids[j], bbs[j]
        ovmax, jmax = -np.inf, -1
        for jj, bbgt in enumerate(gt[i]["BB"]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (
                    bbgt[3] - bbgt[1] + 1
                ) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, jj
        if ovmax > 0.5:
            if not gt[i]["diff"][jmax]:
                if not gt[i]["det"][jmax]:
                    tp[d] = 1
                    gt[i]["det"][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return _straightforward_ap(rec.tolist(), prec.tolist(), use_07_metric)


def test_matches_devkit_transcription_on_random_detections(rng):
    names = ["a", "b", "c"]
    ground_truth, detections = [], []
    for _ in range(20):
        g = int(rng.integers(0, 6))
        gt_boxes = np.round(random_boxes(rng, g, size=100.0, min_side=4.0).astype(np.float64))
        ground_truth.append(
            gts(gt_boxes, rng.integers(0, 3, g).tolist(), (rng.uniform(size=g) < 0.2).tolist())
        )
        # Jittered copies of the ground truth (some duplicated) plus random boxes.
        copies = gt_boxes[rng.integers(0, g, 2 * g)] if g else np.zeros((0, 4))
        copies = copies + np.round(rng.normal(0, 2.0, copies.shape))
        pred = np.concatenate([copies, np.round(random_boxes(rng, 3, size=100.0, min_side=4.0))])
        detections.append(
            dets(
                pred,
                np.round(rng.uniform(size=len(pred)), 1).tolist(),  # many ties
                rng.integers(0, 3, len(pred)).tolist(),
            )
        )
    result = metrics.evaluate_detections(detections, ground_truth, names)
    for k in range(3):
        assert result.num_positives[k] > 0
        ap07 = _devkit_ap(detections, ground_truth, k, use_07_metric=True)
        ap_area = _devkit_ap(detections, ground_truth, k, use_07_metric=False)
        assert result.ap[k] == pytest.approx(ap07, abs=1e-12)
        assert result.ap_area[k] == pytest.approx(ap_area, abs=1e-12)
    assert 0.0 < result.mAP < 1.0


# --- outputs ------------------------------------------------------------------------------------


def test_metrics_json_and_table():
    result = metrics.evaluate_detections(
        [dets([NOWHERE, B, A], [0.8, 0.7, 0.9])], [gts([A, B, C])], ["thing"]
    )
    out = metrics.metrics_json(result)
    assert {"mAP", "mAP_area", "per_class", "per_class_area", "num_images"} <= set(out)
    assert out["mAP"] == pytest.approx(6 / 11) and out["per_class"]["thing"] == pytest.approx(6 / 11)
    assert isinstance(out["mAP"], float) and isinstance(out["num_images"], int)
    table = metrics.format_table(result)
    assert "thing" in table and "54.5" in table and "55.6" in table and "mAP" in table


def test_pr_plots_are_written(tmp_path):
    result = metrics.evaluate_detections(
        [dets([A, NOWHERE], [0.9, 0.5], labels=[0, 1])],
        [gts([A, B, C], labels=[0, 0, 2])],
        ["cat", "dog/with spaces", "eel"],  # no dog in the ground truth, no eel detected
    )
    paths = metrics.plot_pr_curves(result, tmp_path / "pr")
    assert len(paths) == 3
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert paths[1].endswith("pr_001_dog_with_spaces.png")
    # Another evaluation into the folder (other classes): the earlier one's plots do not stay as its own.
    (tmp_path / "pr" / "notes.txt").write_text("mine")
    result = metrics.evaluate_detections([dets([A], [0.9])], [gts([A])], ["cat", "fox"])
    paths = metrics.plot_pr_curves(result, tmp_path / "pr")
    assert sorted(os.listdir(tmp_path / "pr")) == ["notes.txt", "pr_000_cat.png", "pr_001_fox.png"]


def test_class_names_of_any_script_are_written_and_drawn_in_a_font_that_has_them(tmp_path):
    """Class names like "Ünïcode", "кошка" or "猫" were drawn as boxes (Pillow's built-in font has
    ASCII only), at 11 px on a 4000-pixel photo, and lost from the PR plots' file names."""
    from keras_frcnn import visualize

    result = metrics.evaluate_detections([dets([A], [0.9])], [gts([A])], ["Ünïcode кошка", "猫"])
    paths = metrics.plot_pr_curves(result, tmp_path / "pr")
    assert [os.path.basename(p) for p in paths] == ["pr_000_Ünïcode_кошка.png", "pr_001_猫.png"]
    # Long names: a file name holds 255 bytes (80 Han characters are 240 bytes of UTF-8).
    result = metrics.evaluate_detections([dets([A], [0.9])], [gts([A])], ["猫" * 80, "x" * 280])
    paths = metrics.plot_pr_curves(result, tmp_path / "long")
    assert [os.path.basename(p) for p in paths] == [f"pr_000_{'猫' * 33}.png", f"pr_001_{'x' * 100}.png"]
    assert visualize.font_file_for("Ünïcode кошка 0.90").endswith("DejaVuSans.ttf")
    han = [path for path in visualize._system_fonts() if ord("猫") in visualize._characters(path)]
    assert visualize.font_file_for("猫 0.90") == (han[0] if han else visualize._dejavu_sans())

    def label_rows(side):  # rows of the filled label band above a box
        image = np.zeros((side, side, 3), np.uint8)
        box = [side / 2, side / 4, side * 3 / 4, side * 3 / 4]
        drawn = visualize.draw_detections(image, [box], [0.9], [0], ["Ünïcode"])
        above = drawn[: int(side / 2) - side // 100 - 1]
        return int((above.reshape(len(above), -1).max(axis=1) > 0).sum())

    assert label_rows(4000) > 5 * label_rows(400)


# --- COCO ---------------------------------------------------------------------------------------


def _coco_case(rng):
    names = ["a", "b"]
    ground_truth, sizes = [], []
    for _ in range(4):
        # Sides 50..100 px: areas 2500..10000, all above COCO's "small" (32^2).
        y, x = rng.uniform(0, 200, (2, 3))
        h, w = rng.uniform(50, 100, (2, 3))
        boxes = np.stack([y, x, y + h, x + w], 1)
        ground_truth.append(gts(boxes, rng.integers(0, 2, 3).tolist()))
        sizes.append((300, 300))
    return names, ground_truth, sizes


def test_coco_ap_perfect_detections_is_one(rng, capsys):
    names, ground_truth, sizes = _coco_case(rng)
    detections = [dets(g["boxes"], [0.9] * len(g["labels"]), g["labels"]) for g in ground_truth]
    stats = metrics.coco_ap(detections, ground_truth, names, sizes)
    assert list(stats) == list(metrics.COCO_STAT_NAMES)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AR100"] == pytest.approx(1.0)
    assert stats["AP_small"] == -1.0  # pycocotools: no small ground truth -> -1
    assert capsys.readouterr().out == ""


def test_coco_ap_without_detections_is_zero(rng):
    # pycocotools gives 0 (not -1) where ground truth exists but nothing was detected, and -1
    # only where there is no ground truth at all (here: small boxes).
    names, ground_truth, sizes = _coco_case(rng)
    stats = metrics.coco_ap([dets([], []) for _ in ground_truth], ground_truth, names, sizes)
    assert stats["AP"] == 0.0 and stats["AP50"] == 0.0 and stats["AR100"] == 0.0
    assert stats["AP_small"] == -1.0


def test_coco_difficult_boxes_are_ignored():
    # Difficult boxes become crowd regions: a detection on one is neither TP nor FP, and missing
    # one costs nothing. GT A normal, B difficult: detecting both, or only A, gives AP 1. With B
    # normal and only A detected, recall is 1/2.
    big_a, big_b = [0.0, 0.0, 60.0, 60.0], [0.0, 100.0, 60.0, 160.0]
    on_both = [dets([big_a, big_b], [0.9, 0.8])]
    only_a = [dets([big_a], [0.9])]
    difficult_b = [gts([big_a, big_b], difficult=[False, True])]
    assert metrics.coco_ap(on_both, difficult_b, ["t"])["AP"] == pytest.approx(1.0)
    assert metrics.coco_ap(only_a, difficult_b, ["t"])["AP"] == pytest.approx(1.0)
    assert metrics.coco_ap(only_a, [gts([big_a, big_b])], ["t"])["AR100"] == pytest.approx(0.5)


def test_coco_size_bins_use_the_annotations_area():
    """COCO's small / medium / large bins are picked by the annotation's area (the segmentation's),
    not the box's, as in the official evaluation; a negative area (none given) means the box's."""
    box = np.array([[10.0, 10.0, 60.0, 60.0]])  # 50 x 50: a "medium" box (area 2500 > 32^2)
    detections = [{"boxes": box, "scores": [0.9], "labels": [0]}]
    by_box = metrics.coco_ap(detections, [{"boxes": box, "labels": [0], "area": [-1.0]}], ["a"])
    assert by_box["AP_medium"] == pytest.approx(1.0) and by_box["AP_small"] == -1
    # A thin object inside that box: its area is 900 px, "small".
    by_area = metrics.coco_ap(detections, [{"boxes": box, "labels": [0], "area": [900.0]}], ["a"])
    assert by_area["AP_small"] == pytest.approx(1.0) and by_area["AP_medium"] == -1


def test_recall_at_the_end_of_each_pr_curve():
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    detections = [{"boxes": [[0, 0, 10, 10], [40, 40, 50, 50]], "scores": [0.9, 0.8], "labels": [0, 1]}]
    truth = [{"boxes": boxes, "labels": [0, 0, 1]}]
    result = metrics.evaluate_detections(detections, truth, ["a", "b", "c"], inclusive_pixels=False)
    summary = metrics.metrics_json(result)
    assert summary["recall"] == {"a": 0.5, "b": 1.0, "c": None}
    assert "recall %" in metrics.format_table(result)


def test_detection_agreement_pairs_by_overlap_and_measures_the_moves():
    from keras_frcnn.metrics import detection_agreement

    def image(boxes, scores, labels):
        return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float32),
                "labels": np.array(labels, np.int32)}

    reference = [image([[0, 0, 50, 50], [100, 100, 160, 160], [0, 100, 40, 140]], [0.9, 0.8, 0.2], [0, 1, 0]),
                 image([[10, 10, 90, 90], [200, 0, 260, 60]], [0.95, 0.7], [2, 2])]
    other = [image([[2, 0, 50, 51], [100, 105, 160, 160], [0, 100, 40, 140]], [0.88, 0.8, 0.9], [0, 1, 1]),
             image([[10, 10, 90, 90], [0, 0, 60, 60]], [0.7, 0.7], [2, 2])]
    a = detection_agreement(reference, other, min_score=0.3)
    # Paired: 2 px / 0.02, 5 px / 0, 0 px / 0.25; the 0.2 detection is below min_score; the
    # fourth has no same-class detection at IoU >= 0.5.
    assert a["compared"] == 3 and a["unpaired"] == 1
    assert a["within"] == pytest.approx(1 / 4)
    assert a["box_px"]["max"] == pytest.approx(5.0) and a["box_px"]["p50"] == pytest.approx(2.0)
    assert a["score"]["max"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        detection_agreement(reference, other[:1])
    assert detection_agreement([image([], [], [])], [image([], [], [])])["within"] is None  # (nothing to agree on)
