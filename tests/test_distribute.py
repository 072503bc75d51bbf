"""tf.distribute: a batch split over replicas trains exactly as on one device (ZF, with and
without batch norm; ResNet-50-FPN and MobileNetV3-FPN under -m slow); checkpoints and
--resume under MirroredStrategy; two MultiWorkerMirroredStrategy workers on localhost running
train.py's 4-step schedule.

Each runs in a fresh process: logical devices and TF_CONFIG must be set before TensorFlow starts.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

MIRRORED_CHILD = textwrap.dedent(r"""
    import dataclasses, json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    sys.path.insert(0, sys.argv[1])
    from conftest import synthetic_batch, tiny_config, tiny_fpn_config, tiny_mobilenet_config
    from keras_frcnn.data import load_shapes
    from keras_frcnn.models import build_models
    from keras_frcnn.training import ScheduleRunner

    out_json, work, part = sys.argv[2], sys.argv[3], sys.argv[4]
    # One strategy for the whole process: a second one over the same devices would reuse the
    # first one's collective instance keys.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = lambda: strategy
    report = {}

    # Sampling seeded per image (as the training pipeline's sample_seed): each image samples the
    # same anchors and RoIs alone on a replica as in the batch on one device.
    base = tiny_config()
    batch = synthetic_batch(2)
    batch["sample_seed"] = np.array([11, -12345678901], np.int64)
    batch["num_gt"][1] = 1  # images of different object counts: per-image normalisation matters
    batch["gt_classes"][1, 1] = 0
    batch["gt_boxes"][1, 1] = 0
    batch = {**batch, "proposals": batch["gt_boxes"] + 3.0, "num_proposals": np.array([2, 1], np.int32)}

    def one_step(cfg, strategy, view):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            net = build_models(cfg, 2, weights=None)
            model = net.prepare(view, keras.optimizers.SGD(0.05))
        before = [v.numpy() for v in net.model.weights]
        model.fit(tf.data.Dataset.from_tensors(batch), verbose=0)
        return before, [v.numpy() for v in net.model.weights]

    # The joint view carries the four losses of both heads; batch norm is synchronised. "bases":
    # the pyramid bases' own batch norm too, from random weights (ResNet-50-FPN joint; MobileNetV3-
    # FPN's RPN view: its untrained RPN scores many boxes alike, and float32 summation order then
    # changed which proposals its joint view kept, by 4.7 % of the step in one run, 0.2 % in another).
    # "dropout": the detector head's masks are drawn per image too (Keras's Dropout would give
    # both replicas one mask).
    cases = {"core": [("joint", base, "joint"),
                      ("joint, batch norm", dataclasses.replace(base, base_batch_norm=True), "joint"),
                      ("detector, dropout", dataclasses.replace(
                          base, detector=dataclasses.replace(base.detector, dropout=0.5)), "detector")],
             "bases": [("joint, resnet50-fpn", tiny_fpn_config(), "joint"),
                       ("rpn, mobilenetv3-fpn", tiny_mobilenet_config(), "rpn")]}[part]
    for name, cfg, view in cases:
        before, one = one_step(cfg, tf.distribute.get_strategy(), view)
        _, two = one_step(cfg, mirrored(), view)
        report[name] = {"moved": max(float(np.abs(a - b).max()) for a, b in zip(before, one)),
                        "difference": max(float(np.abs(a - b).max()) for a, b in zip(one, two))}
    if part == "bases":
        with open(out_json, "w") as f:
            json.dump(report, f)
        sys.exit(0)

    # Checkpoints and --resume under the strategy: interrupted + resumed == uninterrupted.
    source = load_shapes("train", data_dir=f"{work}/tfds", num_train=8, num_test=2)
    # Batches paired by orientation in blocks of 8 (two global batches of 2 x 2 images): the resumed
    # stream (position 4) starts inside one.
    cfg = dataclasses.replace(tiny_config(), train=dataclasses.replace(tiny_config().train, schedule="joint",
                                                                       aspect_group=8))

    def schedule(run_dir, stop_after=None, resume=False):
        keras.utils.set_random_seed(0)
        strategy = mirrored()
        with strategy.scope():
            net = build_models(cfg, source.num_classes, weights=None)
        runner = ScheduleRunner(net, source, cfg, run_dir, steps=3, checkpoint_every=1, verbose=0,
                                log=lambda *a: None, strategy=strategy, stop_after_steps=stop_after)
        finished = runner.run(resume=resume)
        return finished, [v.numpy() for v in net.model.weights]

    _, straight = schedule(f"{work}/straight")
    stopped, _ = schedule(f"{work}/resumed", stop_after=1)
    finished, resumed = schedule(f"{work}/resumed", resume=True)
    report["resume"] = {"stopped": not stopped, "finished": finished,
                        "difference": max(float(np.abs(a - b).max()) for a, b in zip(straight, resumed)),
                        "replicas": mirrored().num_replicas_in_sync}
    with open(out_json, "w") as f:
        json.dump(report, f)
""")


def mirrored_report(tmp_path, part):
    subprocess.run([sys.executable, "-c", MIRRORED_CHILD, TESTS, str(tmp_path / "report.json"), str(tmp_path), part],
                   check=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    report = json.loads((tmp_path / "report.json").read_text())
    for name, result in report.items():
        if name != "resume":
            # One SGD step moves weights by ~1e-2 .. 1; two replicas of one image each give the step
            # of the two-image batch on one device, up to float32 summation order.
            assert result["moved"] > 1e-3, (name, result)
            assert result["difference"] < 1e-5 + 1e-3 * result["moved"], (name, result)
    return report


@pytest.mark.slow  # ~50 s: two pyramid networks built and traced under the strategy
def test_mirrored_split_batch_trains_as_one_device_with_the_pyramid_bases(tmp_path):
    assert set(mirrored_report(tmp_path, "bases")) == {"joint, resnet50-fpn", "rpn, mobilenetv3-fpn"}


@pytest.mark.slow  # ~50 s (the suite's 10-minute budget); the two-worker train.py test stays in it
def test_mirrored_split_batch_trains_as_one_device_and_resumes(tmp_path):
    report = mirrored_report(tmp_path, "core")
    assert {"joint", "joint, batch norm", "detector, dropout"} <= set(report)
    resume = report["resume"]
    assert resume["replicas"] == 2 and resume["stopped"] and resume["finished"]
    assert resume["difference"] < 1e-6, resume


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def network_weights(checkpoint_dir):
    """The network variables of the newest TF checkpoint in ``checkpoint_dir``, by name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("network/")}


@pytest.mark.slow  # (40 s in one worker of the suite: over its budget; the agreement logic runs in-process in test_checkpoints)
def test_two_workers_train_py_multi_worker_end_with_identical_weights(tmp_path):
    """Two workers, each with its own --out (as on machines without a shared file system), train
    the 4-step schedule to identical weights."""
    two_workers(tmp_path, resume_one_behind=False)


@pytest.mark.slow
def test_two_workers_resume_from_the_newest_checkpoint_both_hold(tmp_path):
    """As above; then worker 1 as if killed while writing its last checkpoint (its newest one step
    behind the chief's): resumed, both go back to the newest checkpoint both hold and end equal
    again (before, each resumed from its own newest, and their weights differed)."""
    two_workers(tmp_path, resume_one_behind=True)


def two_workers(tmp_path, resume_one_behind):
    from keras_frcnn.training import TrainingCheckpoint

    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json())
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    outs = [tmp_path / "run", tmp_path / "machine1"]

    def run_workers(*extra):
        workers = []
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
            workers.append(subprocess.Popen(
                [sys.executable, "train.py", "--strategy", "multi-worker", "--config", str(config),
                 "--shapes-images", "8,2", "--data-dir", str(tmp_path / f"tfds{index}"), "--steps", "2",
                 # A checkpoint due at the end of every 1-step window: the workers agree on it.
                 "--log-every", "1", "--checkpoint-minutes", "1e-6", "--verbose", "0", "--out", str(outs[index]),
                 *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        logs = [w.communicate(timeout=600)[0] for w in workers]
        for worker, log in zip(workers, logs):
            assert worker.returncode == 0, log[-3000:]
        return logs

    def assert_equal_weights():
        chief = network_weights(outs[0] / "checkpoint")
        other = network_weights(outs[1] / "worker_1" / "checkpoint")
        assert chief.keys() == other.keys() and len(chief) > 10
        for name in chief:
            np.testing.assert_array_equal(chief[name], other[name], err_msg=name)

    logs = run_workers()
    out = outs[0]
    assert "replicas 2" in logs[0]
    for index, log in enumerate(logs):  # said before TensorFlow waits for the other worker
        assert f"multi-worker: this is worker {index} of a cluster of 2 (worker); waiting" in log
    assert_equal_weights()
    # The chief writes the outputs; the other worker its own checkpoint and config.json.
    assert (out / "model.keras").exists() and (out / "metrics.json").exists()
    assert not (outs[1] / "worker_1" / "model.keras").exists() and (outs[1] / "worker_1" / "config.json").exists()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["completed"] == ["stage1_rpn", "stage2_detector", "stage3_rpn", "stage4_detector"]
    assert "per replica x 2 replicas" in logs[0]
    # 4 stage ends + one agreed time-based checkpoint in each stage, on both workers.
    assert state["checkpoint"] == "ckpt-8"
    assert json.loads((outs[1] / "worker_1" / "checkpoint" / "state.json").read_text())["checkpoint"] == "ckpt-8"

    if not resume_one_behind:
        return
    behind = TrainingCheckpoint(str(outs[1] / "worker_1"))
    behind.go_back_to(behind.kept()[0])  # ckpt-7: stage 4 at step 1
    assert json.loads((outs[1] / "worker_1" / "checkpoint" / "state.json").read_text())["step"] == 1
    # An option given again differently is not applied on any worker: worker 1 reads its own folder's
    # config.json (before, without the chief's folder it built its config from the options given).
    lr = json.loads((out / "config.json").read_text())["train"]["lr"]
    logs = run_workers("--resume", "--lr", "0.5")
    assert "back to ckpt-7 (stage4_detector step 1), the newest every worker holds" in logs[0]
    for log in logs:
        assert "not applied (the run's values stay): --lr (train.lr)" in log, log[-3000:]
    assert json.loads((outs[1] / "worker_1" / "config.json").read_text())["train"]["lr"] == lr
    assert json.loads((out / "checkpoint" / "state.json").read_text())["checkpoint"] == "ckpt-8"
    assert_equal_weights()
