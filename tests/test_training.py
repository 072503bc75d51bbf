import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn import data
from keras_frcnn.models import build_models
from keras_frcnn.training import ScheduleRunner, detector_trained, stages
from conftest import tiny_config, tiny_fpn_config, tiny_mobilenet_config, tiny_resnet_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the repository's train.py)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    data.load_shapes("train", data_dir=path, num_train=8, num_test=4)
    return path


def small_shapes(shapes_dir, split="train"):
    return data.load_shapes(split, data_dir=shapes_dir, num_train=8, num_test=4)


def snapshot(layer_or_model):
    return [np.array(v.numpy()) for v in layer_or_model.weights]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_stage_plans():
    cfg = tiny_config()
    plan = stages(cfg)
    assert [s.name for s in plan] == ["stage1_rpn", "stage2_detector", "stage3_rpn", "stage4_detector"]
    assert [(s.train_base, s.train_rpn_head, s.train_detector_head) for s in plan] == [
        (True, True, False), (True, False, True), (False, True, False), (False, False, True)]
    assert [s.proposals_from for s in plan] == [None, "stage1_rpn", None, "stage3_rpn"]
    assert [(s.reset_base, s.reset_rpn_head) for s in plan] == [
        (False, False), (True, False), (False, True), (False, False)]
    warm = stages(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stage3_rpn_from_stage1=True)))
    assert not warm[2].reset_rpn_head
    # --steps N: every stage N steps, each learning-rate drop at the same fraction of its stage.
    short = stages(cfg, steps=100)
    assert [(s.steps, s.lr_drop_step) for s in short] == [
        (100, round(100 * d / n)) for n, d in zip(cfg.train.stage_steps, cfg.train.stage_lr_drop_steps)]
    joint = stages(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="joint")), steps=10)
    assert len(joint) == 1 and joint[0].view == "joint" and joint[0].steps == 10
    # --eval-every evaluates the stages whose detector has trained (stage 1's is untrained)
    assert detector_trained(plan) == {"stage2_detector", "stage3_rpn", "stage4_detector"}
    assert detector_trained(joint) == {"joint"}


def test_xla_on_is_refused_under_a_strategy():
    """XLA cannot compile a step over mirrored variables (Keras's "auto" turns it off under
    tf.distribute): "on" with a strategy is one error naming the field and the option."""
    from keras_frcnn.config import ConfigError
    from keras_frcnn.training import check_jit_under

    cfg = tiny_config()
    on = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, jit_compile="on"))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with pytest.raises(ConfigError, match=r"train.jit_compile \"on\" \(--jit on\).*OneDeviceStrategy"):
        check_jit_under(strategy, on)
    with strategy.scope(), pytest.raises(ConfigError):
        check_jit_under(strategy, on)
    check_jit_under(strategy, cfg)  # auto
    check_jit_under(tf.distribute.get_strategy(), on)


@pytest.mark.parametrize("backbone", ["vgg16",
                                      # the others: 18 s, 30 s and a minute, over the suite's budget (ResNet's
                                      # frozen parts are checked in test_resnet)
                                      pytest.param("resnet50", marks=pytest.mark.slow),
                                      pytest.param("resnet50-fpn", marks=pytest.mark.slow),
                                      pytest.param("mobilenetv3-fpn", marks=pytest.mark.slow)])
def test_alternating_stages_move_exactly_the_intended_variables(shapes_dir, tmp_path, backbone):
    # VGG-16 (tiny) so that the always-frozen conv1_1..conv2_2 are checked too; tiny ResNets from
    # random weights (nothing frozen, batch norm following the stages): C4, whose conv5 head
    # trains in the detector stages only, and FPN, whose pyramid is part of the shared base.
    if backbone == "vgg16":
        cfg = dataclasses.replace(tiny_config(), backbone="vgg16", backbone_width=0.0625)
    else:
        cfg = {"resnet50": tiny_resnet_config, "resnet50-fpn": tiny_fpn_config,
               "mobilenetv3-fpn": tiny_mobilenet_config}[backbone]()
    keras.utils.set_random_seed(0)
    source = small_shapes(shapes_dir)
    net = build_models(cfg, source.num_classes, weights=None)
    frozen = [net.base.get_layer(n) for n in ("block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2")
              if backbone == "vgg16"]
    initial = {"base": snapshot(net.base), "rpn": snapshot(net.rpn_head), "frozen": [snapshot(l) for l in frozen]}
    seen = {}

    def hook(event, stage, runner):
        seen[(stage.name, event)] = {"base": snapshot(net.base), "rpn": snapshot(net.rpn_head),
                                     "det": snapshot(net.detector_head)}

    runner = ScheduleRunner(net, source, cfg, str(tmp_path), steps=2, checkpoint_every=2, verbose=0,
                            log=lambda *a: None, stage_hooks=[hook])
    assert runner.run()
    moved = {}
    for stage in ("stage1_rpn", "stage2_detector", "stage3_rpn", "stage4_detector"):
        start, end = seen[(stage, "start")], seen[(stage, "end")]
        moved[stage] = {part: not same(start[part], end[part]) for part in ("base", "rpn", "det")}
    assert moved == {
        "stage1_rpn": {"base": True, "rpn": True, "det": False},
        "stage2_detector": {"base": True, "rpn": False, "det": True},
        "stage3_rpn": {"base": False, "rpn": True, "det": False},
        "stage4_detector": {"base": False, "rpn": False, "det": True},
    }
    # Stage 2 starts from the initial base, not stage 1's; stage 3 from the initial RPN head
    # (py-faster-rcnn: its stage-2 RPN net is initialised from a Fast R-CNN model without RPN layers).
    assert same(seen[("stage2_detector", "start")]["base"], initial["base"])
    assert not same(seen[("stage1_rpn", "end")]["base"], initial["base"])
    assert same(seen[("stage3_rpn", "start")]["rpn"], initial["rpn"])
    assert not same(seen[("stage1_rpn", "end")]["rpn"], initial["rpn"])
    # conv1_1..conv2_2 never move; after stage 4 the one base is stage 2's.
    assert all(same(snapshot(l), s) for l, s in zip(frozen, initial["frozen"]))
    assert same(snapshot(net.base), seen[("stage2_detector", "end")]["base"])
    assert {id(v) for v in net.base.weights} <= {id(v) for v in net.rpn_model.weights}
    assert {id(v) for v in net.base.weights} <= {id(v) for v in net.detector_model.weights}


def test_resume_after_an_interruption_is_exact(shapes_dir, tmp_path, monkeypatch):
    """Killed in the middle of stage 2 (after its step 3; the last checkpoint at its step 2) and
    resumed: the run continues at the checkpoint's step and stream position, and ends with the
    weights of an uninterrupted run (dropout on, so the layers' random streams matter too; with
    multi-scale training, so the per-batch sides resume too, and the detector stages' stored
    proposals are rescaled to them; with batches paired by orientation in blocks of 6 positions,
    so the resumed stream starts inside a block)."""
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, dropout=0.5),
                              image=dataclasses.replace(cfg.image, train_min_sides=(112, 128, 144)),
                              train=dataclasses.replace(cfg.train, aspect_group=6))
    source = small_shapes(shapes_dir)
    from keras_frcnn import training

    groups = []  # the training streams' aspect_group (the proposal passes read in order)

    def recording(*args, **kwargs):
        groups.append(kwargs.get("aspect_group", 0) if kwargs.get("shuffle", True) else None)
        return data.train_dataset(*args, **kwargs)

    monkeypatch.setattr(training, "train_dataset", recording)

    def run(run_dir, **kwargs):
        keras.utils.set_random_seed(0)
        net = build_models(cfg, 4, weights=None)
        resume = kwargs.pop("resume", False)
        runner = ScheduleRunner(net, source, cfg, str(run_dir), steps=5, checkpoint_every=2, log_every=3,
                                verbose=0, log=lambda *a: None, **kwargs)
        return runner.run(resume=resume), runner, snapshot(net.model)

    finished, straight, expected = run(tmp_path / "straight")
    assert finished
    assert groups == [6, None, 6, 6, None, 6]  # four stages' streams, two proposal passes
    assert straight.saved_at == [(s, k) for s in ("stage1_rpn", "stage2_detector", "stage3_rpn",
                                                  "stage4_detector") for k in (2, 4)]
    stopped, first, _ = run(tmp_path / "resumed", stop_after_steps=8)
    assert stopped is False
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert {k: state[k] for k in ("completed", "stage", "step", "position")} == {
        "completed": ["stage1_rpn"], "stage": "stage2_detector", "step": 2, "position": 4}
    # Without initial_weights/ stage 3 would start again from the checkpoint's trained RPN head: refused.
    shutil.copytree(tmp_path / "resumed", tmp_path / "no_initial")
    shutil.rmtree(tmp_path / "no_initial" / "initial_weights")
    with pytest.raises(data.DataError, match=r"initial_weights is missing: the starting weights stage3_rpn begin"):
        run(tmp_path / "no_initial", resume=True)
    # Its file cut short (a disk that filled, a copy broken off): named, not TensorFlow's IndexError.
    shutil.rmtree(tmp_path / "no_initial")
    shutil.copytree(tmp_path / "resumed", tmp_path / "cut_initial")
    os.truncate(tmp_path / "cut_initial" / "initial_weights" / "weights.data-00000-of-00001", 10)
    with pytest.raises(data.DataError, match=r"initial_weights/weights: the starting weights stage3_rpn begins again "
                                             r"from cannot be read \(.*\); restore .*initial_weights from a copy"):
        run(tmp_path / "cut_initial", resume=True)
    finished, second, resumed = run(tmp_path / "resumed", resume=True)
    assert finished
    # (stage, first step, first stream position, steps): stage 2 goes on at step 2, position 4.
    assert first.history == [("stage1_rpn", 0, 0, 5), ("stage2_detector", 0, 0, 5)]
    assert second.history == [("stage2_detector", 2, 4, 3), ("stage3_rpn", 0, 0, 5),
                              ("stage4_detector", 0, 0, 5)]
    assert same(resumed, expected)


def _logged_steps(log_dir):
    """The steps of the "loss" scalar in a stage's TensorBoard log."""
    steps = []
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for value in event.summary.value if value.tag == "loss"]
    return steps


# (~17 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); the
# resume tests above train several steps per call by default (the preset's 10, cut to each
# checkpoint's window) and end with an uninterrupted run's weights.)
@pytest.mark.slow
def test_steps_per_execution_trains_the_same_steps(shapes_dir, tmp_path):
    """Several steps per compiled call (``train.steps_per_execution``): the same weights as one
    step a call, checkpoints at the same steps, the stage's end on its last step and TensorBoard
    points at the same step counts; the count per fit divides everything it must."""
    source = small_shapes(shapes_dir)

    def run(name, steps_per_execution, **kwargs):
        cfg = tiny_config()
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, schedule="joint", steps_per_execution=steps_per_execution))
        keras.utils.set_random_seed(0)
        net = build_models(cfg, 4, weights=None)
        runner = ScheduleRunner(net, source, cfg, str(tmp_path / name), steps=8, checkpoint_every=4,
                                log_every=8, verbose=0, log=lambda *a: None, **kwargs)
        calls = []
        runner.callbacks.append(keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: calls.append(batch)))
        assert runner.run()
        return runner, snapshot(net.model), calls

    one, expected, one_calls = run("one", 1)
    many, weights, calls = run("many", 10)
    assert one_calls == list(range(8))
    assert calls == [3, 7]  # gcd(8 steps, window 8, checkpoint every 4) = 4 steps a call
    assert many.saved_at == one.saved_at == [("joint", 4)]
    assert many.steps_run == one.steps_run == 8
    for a, b in zip(weights, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert _logged_steps(tmp_path / "many" / "logs" / "joint" / "train") == \
        _logged_steps(tmp_path / "one" / "logs" / "joint" / "train") == [8]

    # The count per fit: the largest up to the limit dividing the window, the steps left, the
    # first step, the checkpoint interval and a test's interruption.
    runner = many
    assert runner._steps_per_execution(0, 6, 6) == 2  # checkpoint_every 4
    runner.checkpoint_every = None
    assert runner._steps_per_execution(0, 700, 100) == 10
    assert runner._steps_per_execution(0, 6, 6) == 6
    assert runner._steps_per_execution(0, 250, 100) == 10
    assert runner._steps_per_execution(300, 37, 37) == 1
    assert runner._steps_per_execution(96, 104, 100) == 4
    runner.stop_after_steps, runner.steps_run = 35, 32
    assert runner._steps_per_execution(0, 700, 100) == 1
    # Under a tf.distribute strategy: one step per call (Keras's step loop fails there, TF 2.21).
    runner.stop_after_steps = None
    runner.strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert runner._steps_per_execution(0, 700, 100) == 1


# (~10 s of the suite: under -m slow for its budget; the gradient's determinism, every run and
# every split, on a large map: test_roi_pooling's test_align_gradient_on_a_large_map_....)
@pytest.mark.slow
def test_the_shapes_preset_s_roialign_trains_the_same_weights_twice(shapes_dir, tmp_path):
    """The shapes preset pools with RoIAlign (issue 14). Its gradient into the base is the
    layer's own sparse matrix product: two joint runs from one seed under mixed_bfloat16 end with the same
    weights bit for bit (TensorFlow's CPU gradient of crop_and_resize raced; test_roi_pooling)."""
    from keras_frcnn import config as C

    assert C.preset("shapes").detector.pool_mode == "align"
    source = small_shapes(shapes_dir)

    def run(name):
        cfg = tiny_config(precision="mixed_bfloat16")
        cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, pool_mode="align"),
                                  train=dataclasses.replace(cfg.train, schedule="joint"))
        keras.utils.set_random_seed(0)
        net = build_models(cfg, 4, weights=None)
        runner = ScheduleRunner(net, source, cfg, str(tmp_path / name), steps=6, log_every=6, verbose=0,
                                log=lambda *a: None)
        assert runner.run()
        return snapshot(net.model)

    first, second = run("first"), run("second")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def _write_tiny_config(path, **train):
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    path.write_text(cfg.to_json())
    return path


def test_train_py_survives_kill_9_and_resumes(shapes_dir, tmp_path, capsys):
    config = _write_tiny_config(tmp_path / "tiny.json")
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(config), "--data-dir", str(shapes_dir),
               "--shapes-images", "8,4", "--checkpoint-every", "2", "--out", str(out), "--verbose", "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command + ["--steps", "6"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    # Polled every 10 ms: on a fast CPU a stage of this tiny run holds a checkpoint at step >= 2 for
    # ~0.1 s (every 0.2 s missed all four stages' windows now and then: the kill came after the run).
    while time.time() < deadline and process.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text()).get("step", 0) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state_file.exists(), "no checkpoint before the kill"
    before = json.loads(state_file.read_text())
    assert "stage4_detector" not in before["completed"]
    # Started again without --resume (train.py's main, in this process): refused before anything
    # is read or built, nothing of the run touched.
    assert train.main(command[2:]) == 2
    assert "holds an unfinished run (" in capsys.readouterr().err
    assert json.loads(state_file.read_text()) == before
    # Resumed without --steps: the run's config.json holds its 6-step schedule.
    result = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming: completed" in result.stdout
    assert "stage4_detector done: 6 steps" in result.stdout
    assert "not applied" not in result.stdout  # (no option given now would change the run's config)
    after = json.loads(state_file.read_text())
    assert after["completed"] == ["stage1_rpn", "stage2_detector", "stage3_rpn", "stage4_detector"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and set(metrics["per_class"]) == {"circle", "square", "triangle", "cross"}
    assert (out / "model.keras").exists() and (out / "config.json").exists()
    assert list((out / "logs").glob("stage1_rpn/train/events.out.tfevents.*"))
    assert list((out / "pr_curves").glob("*.png"))



@pytest.mark.slow  # (~80 s: three train.py processes of the shapes preset)
def test_the_shapes_preset_killed_with_9_in_its_detector_stage_resumes_to_the_same_weights(shapes_dir, tmp_path):
    """The kill test above trains tiny_config (RoI max pooling); the main job's preset pools with
    RoIAlign, whose gradient is the layer's own (``roi_pooling._splat_bins``). Killed with -9 in
    stage 2 after a checkpoint there and resumed, the run ends with an uninterrupted run's
    weights bit for bit."""
    command = [sys.executable, str(ROOT / "train.py"), "--data-dir", str(shapes_dir), "--shapes-images", "8,4",
               "--checkpoint-every", "10", "--verbose", "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    schedule = ["--steps", "40", "--seed", "3"]
    subprocess.run(command + schedule + ["--out", str(whole)], env=env, check=True, capture_output=True, timeout=900)
    process = subprocess.Popen(command + schedule + ["--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = killed / "checkpoint" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if state.get("completed") == ["stage1_rpn"] and state.get("step", 0) >= 20:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads(state_file.read_text())
    assert state["completed"] == ["stage1_rpn"] and 20 <= state["step"] < 40, state
    result = subprocess.run(command + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"stage2_detector at step {state['step']}" in result.stdout
    resumed = keras.models.load_model(killed / "model.keras").get_weights()
    for a, b in zip(keras.models.load_model(whole / "model.keras").get_weights(), resumed, strict=True):
        np.testing.assert_array_equal(a, b)

VGG16_SERVING_CHILD = """
import json, sys
sys.modules["keras_frcnn"] = None  # plain TensorFlow, as TF Serving
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    out = model.signatures["serving_encoded"](encoded_image_string_tensor=tf.constant([f.read()]))
n = int(out["num_detections"][0])
print(json.dumps({"boxes": out["detection_boxes"][0, :n].numpy().tolist(),
                  "scores": out["detection_scores"][0, :n].numpy().tolist(),
                  "names": [s.decode() for s in out["detection_class_names"][0, :n].numpy()]}))
"""


@pytest.mark.slow  # (~3 minutes: the real network, 138M parameters, on 600 x 800 images)
def test_the_paper_s_vgg16_at_600_px_trains_every_stage_evaluates_and_serves(tmp_path):
    """``python train.py --preset voc`` as the paper trains it (VGG-16 with its fc layers from a
    weights file of Keras's format, as the ImageNet file is; 600 px, the 4-step schedule), 2 steps a
    stage on a small VOC folder of 500 x 375 JPEGs; then ``export.py`` and the SavedModel in plain
    TensorFlow, whose detections are ``predict``'s (the Keras model's)."""
    from test_data_fixtures import write_voc_folder

    rng = np.random.default_rng(0)
    entries = {}
    for i in range(9):
        objects = []
        for _ in range(3):
            y, x = int(rng.integers(0, 250)), int(rng.integers(0, 380))
            objects.append((["dog", "cat", "person"][rng.integers(3)],
                            (x, y, x + int(rng.integers(40, 120)), y + int(rng.integers(40, 120))), False))
        entries[f"{i:06d}"] = {"size": (375, 500), "objects": objects}
    ids = sorted(entries)
    write_voc_folder(tmp_path / "VOC", entries, {"trainval": ids[:6], "test": ids[6:]})
    weights = tmp_path / "vgg16.weights.h5"
    keras.applications.VGG16(weights=None).save_weights(weights)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--preset", "voc", "--voc-dir", str(tmp_path / "VOC"),
                             "--weights", str(weights), "--steps", "2", "--out", str(run), "--verbose", "0"],
                            env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model: vgg16 base (width 1), 137,073,622 parameters; schedule alternating" in result.stdout
    for stage in ("stage1_rpn", "stage2_detector", "stage3_rpn", "stage4_detector"):
        assert f"{stage} done: 2 steps" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["test_scale"] == {"min_side": 600, "max_side": 1000}
    assert len(metrics["per_class"]) == 20 and metrics["num_positives"]["dog"] > 0
    image = tmp_path / "VOC" / "JPEGImages" / (ids[-1] + ".jpg")
    predicted = subprocess.run([sys.executable, "-m", "keras_frcnn.predict", "--model", str(run / "model.keras"),
                                str(image), "--out", str(tmp_path / "predicted"), "--min-score", "0"],
                               env=env, capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    keras_detections = json.loads((tmp_path / "predicted" / "detections.json").read_text())[0]["detections"]
    exported = subprocess.run([sys.executable, str(ROOT / "export.py"), "--model", str(run / "model.keras"),
                               "--out", str(tmp_path / "serving")], env=env, capture_output=True, text=True, timeout=900)
    assert exported.returncode == 0, exported.stderr[-3000:]
    served = subprocess.run([sys.executable, "-c", VGG16_SERVING_CHILD, str(tmp_path / "serving" / "1"), str(image)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-3000:]
    served = json.loads(served.stdout.strip().splitlines()[-1])
    assert keras_detections and len(served["scores"]) == len(keras_detections)
    assert served["names"] == [d["class"] for d in keras_detections]
    np.testing.assert_allclose(served["scores"], [d["score"] for d in keras_detections], atol=1e-3)
    boxes = np.array(served["boxes"]) * [375, 500, 375, 500]  # normalised yxyx -> pixels, as predict's xyxy
    np.testing.assert_allclose(boxes[:, [1, 0, 3, 2]], [d["box"] for d in keras_detections], atol=1.0)


def test_a_base_trained_few_steps_is_normalised_by_its_batches_statistics_once_frozen(shapes_dir, tmp_path):
    """Keras's moving averages of batch norm still hold their starting ones and zeros with weight
    0.99 ** n after n steps: a base trained a few dozen steps from scratch normalised the next,
    frozen stage's features by statistics mostly those (the pyramid's 40-step run went NaN in stage
    4). At the end of a stage that trains the base, the start is divided out:
    ``(average - m ** n * start) / (1 - m ** n)``; the frozen base then normalises a training
    batch about as its training steps did."""
    cfg = dataclasses.replace(tiny_config(), base_batch_norm=True, base_initializer="he_normal")
    keras.utils.set_random_seed(0)
    source = small_shapes(shapes_dir)
    net = build_models(cfg, source.num_classes, weights=None)
    norms = [layer for layer in net.base._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == 0.99 for layer in norms)
    start = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]
    raw, ended = [], {}

    class AtFitEnd(keras.callbacks.Callback):  # (the averages as the steps left them)
        def on_train_end(self, logs=None):
            raw.append([(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms])

    def at_end(event, stage, runner):
        if event == "end":
            ended[stage.name] = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]
            runner.request_stop()

    runner = ScheduleRunner(net, source, cfg, str(tmp_path), steps=3, verbose=0, log=lambda *a: None,
                            callbacks=[AtFitEnd()], stage_hooks=[at_end])
    runner.run()
    left = 0.99 ** 3
    for (mean0, var0), (mean, var), (mean1, var1) in zip(start, raw[0], ended["stage1_rpn"]):
        np.testing.assert_allclose(mean1, (mean - left * mean0) / (1 - left), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(var1, (var - left * var0) / (1 - left), rtol=1e-4, atol=1e-6)
    # The frozen base (moving statistics) against the base on batch statistics, on the data.
    batch = next(iter(data.train_dataset(source, cfg, 2, seed=0)))
    inputs = net.rpn_model.to_input([batch["images"], batch["image_info"]])

    def features(training):  # (the base's last map)
        return np.asarray(net.base(list(inputs), training=training), np.float32)

    trained = features(True)
    for layer, (mean, var) in zip(norms, ended["stage1_rpn"]):  # (that call moved the averages)
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)
    gap = np.abs(features(False) - trained).mean() / np.abs(trained).mean()
    for layer, (mean, var) in zip(norms, raw[0]):  # the averages as they were, start and all
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)
    gap_before = np.abs(features(False) - trained).mean() / np.abs(trained).mean()
    assert gap < 0.5 * gap_before, (gap, gap_before)


ONEDNN_LOG_CHILD = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # tests (conftest), the repository (train.py)
from conftest import tiny_config, tiny_fpn_config
import train
for i, cfg in enumerate((tiny_config(), tiny_fpn_config())):
    path = f"{sys.argv[3]}/config{i}.json"
    open(path, "w").write(cfg.to_json())
    assert train.main(["--config", path, "--dataset", "shapes", "--shapes-images", "4,2", "--schedule", "joint",
                       "--steps", "1", "--out", f"{sys.argv[3]}/run{i}", "--verbose", "0"]) == 0
"""


def test_a_training_step_logs_no_onednn_error(tmp_path):
    """TensorFlow's oneDNN build logs an error-level line for a transpose of a bool or integer tensor
    in a graph ("E0000 ... util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512.
    Falling back ..."): the matching of anchors and RoIs to the ground truth and the pyramid's
    upsampling gradient had one, and every training run printed it. A joint step of the ZF and the
    pyramid (ResNet-50-FPN) models in a fresh process (the line is logged once per process) logs none."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    result = subprocess.run([sys.executable, "-c", ONEDNN_LOG_CHILD, str(ROOT / "tests"), str(ROOT), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run1" / "model.keras").exists()
    assert [line for line in result.stderr.splitlines() if "oneDNN supports" in line] == []


def test_predict_writes_pngs_and_reports_unreadable_images(tmp_path):
    from PIL import Image

    keras.utils.set_random_seed(0)
    net = build_models(tiny_config(), 2, weights=None, class_names=["square", "wide"])
    model_path = tmp_path / "model.keras"
    net.model.save(model_path)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3)).astype(np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    result = subprocess.run(
        [sys.executable, "-m", "keras_frcnn.predict", "--model", str(model_path), str(bad), str(good),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1  # one image failed...
    assert "bad.jpg: image file is corrupt or unreadable" in result.stderr
    png = tmp_path / "out" / "good.png"  # ...the other was still done
    assert png.exists() and Image.open(png).size == (120, 90)


def test_short_shapes_run_learns(shapes_dir, tmp_path):
    """Joint training on 8 shapes images must fit them: a broken target, loss, schedule or
    evaluation keeps the mAP far below the bar."""
    from keras_frcnn import config as C
    from keras_frcnn.evaluate import evaluate

    base = tiny_config()
    cfg = dataclasses.replace(
        base, base_initializer="he_normal", base_batch_norm=True,
        image=C.ImageConfig(min_side=256, max_side=320, flip=False, pixel_scale=1 / 64),
        anchors=C.AnchorConfig(scales=(1.5, 3.0, 6.0)),
        train=dataclasses.replace(base.train, schedule="joint", lr=0.01))
    keras.utils.set_random_seed(0)
    source = small_shapes(shapes_dir)
    net = build_models(cfg, source.num_classes, weights=None, class_names=source.class_names)
    assert ScheduleRunner(net, source, cfg, str(tmp_path), steps=300, checkpoint_every=300, verbose=0,
                          log=lambda *a: None).run()
    _, summary = evaluate(net.model, source)
    assert summary["num_images"] == 8
    assert summary["mAP"] >= 0.7, summary
    # Evaluated again (--eval-every): the model's detect function is traced once (before, anew each
    # time, and TensorFlow warned of retracing).
    from keras_frcnn.evaluate import _detect_function

    assert evaluate(net.model, source)[1]["mAP"] == summary["mAP"]
    assert _detect_function(net.model).experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="steps must be a positive int"):
        ScheduleRunner(net, source, cfg, str(tmp_path / "none"), steps=-1)
    assert summary["test_scale"] == {"min_side": 256, "max_side": 320}
    # Another test scale (evaluate.py --min-side): the same weights, inputs resized to it.
    scaled = net.model.at_scale(288)
    assert all(np.array_equal(a, b) for a, b in zip(scaled.get_weights(), net.model.get_weights()))
    _, at_288 = evaluate(scaled, source)
    assert at_288["test_scale"] == {"min_side": 288, "max_side": 432}
    assert at_288["mAP"] >= 0.5 and at_288["num_detections"] != summary["num_detections"], at_288
