"""Checkpoints: written by time (checked at the end of each window of steps) and at every stage
end, with TensorFlow's checkpoint machinery; variables and optimizer slots matched by path, not
by position; a checkpoint of another configuration refused with a clear error."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import synthetic_batch, tiny_config
from keras_frcnn import data
from keras_frcnn.data.problems import DataError
from keras_frcnn.models import build_models
from keras_frcnn.training import ScheduleRunner, TrainingCheckpoint, optimizer_variables


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return data.load_shapes("train", data_dir=tmp_path_factory.mktemp("tfds"), num_train=8, num_test=2,
                            decode_images=False)


def joint_config():
    return dataclasses.replace(tiny_config(), train=dataclasses.replace(tiny_config().train, schedule="joint"))


def test_checkpoints_follow_the_clock(source, tmp_path, capsys):
    """A step takes 4 "minutes" on the runner's clock; windows are 2 steps; a checkpoint is due
    10 minutes after the last one: written at the end of the windows at steps 4 and 8 (16 and 32
    minutes), not between windows, and once more at the end of the stage. (The progress bars of
    the 11 steps read 2/2 five times, then 1/1: the last, shorter window's own count.)"""
    cfg = joint_config()
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 4, weights=None)
    runner = ScheduleRunner(net, source, cfg, str(tmp_path), steps=11, checkpoint_minutes=10, log_every=2,
                            verbose=0, log=lambda *a: None, clock=lambda: 240.0 * runner.steps_run)
    assert runner.run()
    assert runner.saved_at == [("joint", 4), ("joint", 8)]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["completed"] == ["joint"] and state["stage"] is None
    # Only the newest checkpoint is kept.
    assert len(list((tmp_path / "checkpoint").glob("*.index"))) == 1

    keras.utils.set_random_seed(0)
    quiet = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path / "off"), steps=11,
                           checkpoint_minutes=0, log_every=2, verbose=2, log=lambda *a: None,
                           clock=lambda: 1e9 * quiet.steps_run)
    capsys.readouterr()
    assert quiet.run() and quiet.saved_at == []
    assert re.findall(r"^(\d+/\d+) ", capsys.readouterr().out, re.MULTILINE) == ["2/2"] * 5 + ["1/1"]


def _trained_joint(cfg, steps=2):
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 2, weights=None)
    model = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    if steps:  # (0: the optimizer's variables built, nothing trained)
        batch = {**synthetic_batch(2), "sample_seed": np.array([1, 2], np.int64)}
        model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=steps, verbose=0)
    return net, model


def test_optimizer_slots_are_matched_by_variable_path(tmp_path):
    cfg = tiny_config()
    net, model = _trained_joint(cfg)
    checkpoint = TrainingCheckpoint(str(tmp_path))
    checkpoint.save(net, model.optimizer, {"completed": [], "stage": "joint", "step": 2, "position": 4})
    saved = {name: v.numpy() for name, v in optimizer_variables(model.optimizer).items()}
    assert int(saved["iteration"]) == 2 and "detector_head_fc6_kernel_momentum" in saved

    # A fresh network whose optimizer was built over the same variables in reverse order: a
    # restore by position would give every variable another one's momentum.
    other = build_models(cfg, 2, weights=None)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(list(reversed(other.joint_model.trainable_variables)))
    checkpoint.restore_network(other)
    assert checkpoint.restore_optimizer(optimizer)
    for name, variable in optimizer_variables(optimizer).items():
        np.testing.assert_array_equal(variable.numpy(), saved[name], err_msg=name)
    for a, b in zip(net.model.weights, other.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert checkpoint.state()["position"] == 4


def test_a_checkpoint_the_disk_cannot_hold_leaves_the_last_one_whole(tmp_path, monkeypatch):
    """A save that fails part-way (here: a full disk, as TensorFlow reports it) removes its own
    parts, which would hold space the next try needs, and the previous checkpoint stays the one to
    resume from."""
    net, model = _trained_joint(tiny_config())
    checkpoint = TrainingCheckpoint(str(tmp_path))
    state = {"completed": [], "stage": "joint", "step": 2, "position": 4}
    checkpoint.save(net, model.optimizer, state)
    kept = sorted(os.listdir(checkpoint.dir))

    def full_disk(manager, checkpoint_number=None, **kwargs):
        temp = os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp")
        os.makedirs(temp)
        with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001.tempstate1"), "wb") as f:
            f.write(bytes(1000))
        with open(os.path.join(manager.directory, f"ckpt-{checkpoint_number}.index"), "wb") as f:
            f.write(b"torn")
        raise tf.errors.ResourceExhaustedError(None, None, f"{temp}/part-00000: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tf.train.CheckpointManager, "save", full_disk)
        with pytest.raises(tf.errors.ResourceExhaustedError):
            checkpoint.save(net, model.optimizer, {**state, "step": 3})
    assert sorted(os.listdir(checkpoint.dir)) == kept
    assert checkpoint.latest().endswith("ckpt-1") and checkpoint.state()["step"] == 2
    checkpoint.save(net, model.optimizer, {**state, "step": 3})  # with the space back
    assert checkpoint.latest().endswith("ckpt-2") and checkpoint.state()["step"] == 3


@pytest.mark.parametrize("multi_worker, stop_step", [(False, 2), (True, 5)])
def test_a_requested_stop_writes_a_checkpoint_at_that_step_and_loses_nothing(source, tmp_path, monkeypatch,
                                                                             multi_worker, stop_step):
    """``request_stop`` (train.py's Ctrl-C / SIGTERM) mid-stage: a checkpoint at the next step (with
    several workers: at the end of the 5-step window, where they agree), then ``run`` returns
    False; resumed, the run ends with the weights of one never stopped."""
    monkeypatch.setattr(ScheduleRunner, "multi_worker", property(lambda runner: multi_worker))
    cfg = joint_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train.with_steps(6), steps_per_execution=1))

    class StopAfter(keras.callbacks.Callback):
        def __init__(self, steps):
            super().__init__()
            self.steps = steps

        def on_train_batch_end(self, batch, logs=None):
            if runner.steps_run == self.steps:
                runner.request_stop()

    def make(run_dir, callbacks=()):
        keras.utils.set_random_seed(0)
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(run_dir),
                              checkpoint_minutes=None, log_every=5, verbose=0, log=lambda *a: None,
                              callbacks=callbacks)

    runner = make(tmp_path / "stopped", [StopAfter(1)])
    assert not runner.run()
    assert runner.stopped_at == ("joint", stop_step) and runner.saved_at == [("joint", stop_step)]
    assert TrainingCheckpoint(str(tmp_path / "stopped")).state()["step"] == stop_step
    train_log = tmp_path / "stopped" / "logs" / "joint" / "train"  # the stopped window logged at its end
    assert [step for tag, step in _logged_steps(train_log) if tag == "loss"] == [stop_step]
    if multi_worker:
        return  # resuming from a checkpoint is the same for both
    resumed = make(tmp_path / "stopped")
    assert resumed.run(resume=True)
    assert [step for tag, step in _logged_steps(train_log) if tag == "loss"] == [2, 6]
    whole = make(tmp_path / "whole")
    assert whole.run()
    for a, b in zip(resumed.net.model.weights, whole.net.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    net, model = _trained_joint(tiny_config(), steps=0)
    checkpoint = TrainingCheckpoint(str(tmp_path))
    checkpoint.save(net, model.optimizer, {"completed": [], "stage": "joint", "step": 2, "position": 4})
    wider = dataclasses.replace(tiny_config(), detector=dataclasses.replace(tiny_config().detector, fc_units=32))
    other = build_models(dataclasses.replace(wider, backbone="vgg16", backbone_width=0.0625), 2, weights=None)
    with pytest.raises(DataError, match="does not match this model"):
        checkpoint.restore_network(other)


def test_resume_on_other_data_is_refused(source, tmp_path):
    cfg = joint_config()
    keras.utils.set_random_seed(0)
    runner = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=4,
                            checkpoint_every=2, verbose=0, log=lambda *a: None, stop_after_steps=3)
    assert runner.run() is False
    bigger = data.load_shapes("train", data_dir=str(tmp_path / "tfds"), num_train=10, num_test=2)
    again = ScheduleRunner(build_models(cfg, 4, weights=None), bigger, cfg, str(tmp_path), steps=4,
                           verbose=0, log=lambda *a: None)
    with pytest.raises(DataError, match=r"trained on 'shapes/train8_test2_seed0 train' \(8 examples\)"):
        again.run(resume=True)
    # The same images with their classes numbered otherwise (a reader's class order changed): refused.
    renamed = dataclasses.replace(source, class_names=tuple(reversed(source.class_names)))
    again = ScheduleRunner(build_models(cfg, 4, weights=None), renamed, cfg, str(tmp_path), steps=4,
                           verbose=0, log=lambda *a: None)
    with pytest.raises(DataError, match=r"trained on the classes \['circle', .*resume on the same classes"):
        again.run(resume=True)


# (~23 s: two stopped runs; under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); a
# resume on other data or other classes is refused by default, above.)
@pytest.mark.slow
def test_resume_on_another_build_of_a_tfds_set_is_refused(source, tmp_path):
    """A TFDS set's identity holds its builder's version: a run started on shapes 1.1.0 (the same
    images, other boxes) resumed on 1.2.0 without a word, its checkpoint's identity being the
    name. Now refused, naming both builds; a checkpoint written before versions (its identity its
    name) still resumes."""
    from keras_frcnn.data.shapes import Shapes

    assert source.identity == f"TFDS shapes/train8_test2_seed0/{Shapes.VERSION} train"
    cfg = joint_config()

    def stopped_run(run_dir, recorded):
        keras.utils.set_random_seed(0)
        runner = ScheduleRunner(build_models(cfg, 4, weights=None), recorded, cfg, str(run_dir), steps=4,
                                checkpoint_every=2, verbose=0, log=lambda *a: None, stop_after_steps=3)
        assert runner.run() is False
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(run_dir), steps=4,
                              verbose=0, log=lambda *a: None)

    older = dataclasses.replace(source, fingerprint="TFDS shapes/train8_test2_seed0/1.1.0 train")
    with pytest.raises(DataError, match=r"\(8\); another build of the set: 'shapes/train8_test2_seed0/1.1.0 train' "
                                        rf"then, 'shapes/train8_test2_seed0/{re.escape(str(Shapes.VERSION))} train' now: resume on"):
        stopped_run(tmp_path / "older", older).run(resume=True)
    assert stopped_run(tmp_path / "unversioned", dataclasses.replace(source, fingerprint="")).run(resume=True)


# (~15 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); a resumed run ends with
# the weights of an uninterrupted one, which it cannot without the optimizer's step count and
# momentum: test_training's test_resume_after_an_interruption_is_exact, by default.)
@pytest.mark.slow
def test_resume_restores_the_optimizers_step_count_and_momentum(source, tmp_path):
    cfg = joint_config()
    keras.utils.set_random_seed(0)
    first = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=4,
                           checkpoint_every=2, verbose=0, log=lambda *a: None, stop_after_steps=3)
    assert first.run() is False
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoint"))
    saved = {name.split("/")[1]: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
             if name.startswith("optimizer/")}
    assert int(saved["iteration"]) == 2
    momentum = {name: value for name, value in saved.items() if name.endswith("_momentum")}
    assert len(momentum) > 10 and all(np.abs(v).sum() > 0 for v in momentum.values())

    restored = {}

    def at_start(event, stage, runner):
        if event == "start":
            optimizer = runner.net.joint_model.optimizer
            restored.update({name: v.numpy() for name, v in optimizer_variables(optimizer).items()})

    keras.utils.set_random_seed(1)  # another global seed: nothing may depend on it
    second = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=4,
                            verbose=0, log=lambda *a: None, stage_hooks=[at_start])
    assert second.run(resume=True)
    assert int(restored["iteration"]) == 2
    for name, value in momentum.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)


def test_keras_internals_this_package_relies_on_are_there():
    """Two private Keras methods are used (each commented where it is): fail here, loudly, when a
    Keras release changes them, not silently in training."""
    import inspect

    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from keras_frcnn.models import _Trainer

    # _Trainer overrides _maybe_symbolic_build, which fit() calls with an epoch iterator.
    assert "iterator" in inspect.signature(keras.Model._maybe_symbolic_build).parameters
    assert "self._maybe_symbolic_build(iterator=" in inspect.getsource(TensorFlowTrainer.fit)
    assert _Trainer._maybe_symbolic_build is not keras.Model._maybe_symbolic_build
    # network_variables walks every nested layer with _flatten_layers to key the random streams.
    net = build_models(dataclasses.replace(tiny_config(), detector=dataclasses.replace(
        tiny_config().detector, dropout=0.5)), 2, weights=None)
    head = net.model.get_layer("detector_head")
    assert "dropout" in [layer.name for layer in head._flatten_layers(include_self=False, recursive=False)]
    from keras_frcnn.training import network_variables

    assert "detector_head/dropout/seed_generator_0" in network_variables(net.model)


@pytest.mark.slow  # (~22 s: two runs of the 4-step schedule; the default suite's time is near its 10 minutes)
def test_a_new_run_in_an_earlier_runs_folder_reuses_nothing_of_it(source, tmp_path):
    """Alternating schedule, 2 steps a stage: a finished run, then a new one (not resumed) with
    another seed in the same folder, stopped in stage 2. The new run wrote its own stored
    proposals (the earlier RPN's removed) and keeps its own initial weights for stages 2 and 3 to
    start from again (the earlier run's replaced); ``unfinished_run`` tells the finished run from
    the interrupted one by the run's config.json."""
    from keras_frcnn.training import _weights_by_path, unfinished_run

    cfg = tiny_config()
    (tmp_path / "config.json").write_text(cfg.to_json())
    logs = []

    def runner(seed, **kwargs):
        keras.utils.set_random_seed(seed)
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=2,
                              log_every=2, verbose=0, log=logs.append, **kwargs)

    def stored_initial_base():
        keras.utils.set_random_seed(7)
        net = build_models(cfg, 4, weights=None)
        tf.train.Checkpoint(base=_weights_by_path(net.base)).read(
            str(tmp_path / "initial_weights" / "weights")).expect_partial()
        return [w.numpy() for w in net.base.weights]

    assert runner(0).run()
    assert unfinished_run(str(tmp_path)) is None
    # A kill between a detector stage's last checkpoint and the removal of its stored proposals
    # left them for good (a resume skips the stage): a resume removes them.
    (tmp_path / "proposals_stage2_detector").mkdir()
    (tmp_path / "proposals_stage2_detector" / "left.txt").write_text("stage 2's")
    assert runner(0).run(resume=True)
    assert not (tmp_path / "proposals_stage2_detector").exists()
    # train.py's run ends with metrics.json: a run killed after its last stage (saving its model,
    # evaluating it) is not finished, and a new run in its folder is refused.
    assert unfinished_run(str(tmp_path), ended=tmp_path / "metrics.json") == \
        "every stage trained; its model and evaluation not yet written"
    earlier = stored_initial_base()
    # A finished run's stored proposals are removed with its stages (~4 GB each at COCO's size):
    # here as a run killed before that would have left them.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("proposals")]
    marker = tmp_path / "proposals_stage2_detector" / "earlier.txt"
    marker.parent.mkdir()
    marker.write_text("the earlier run's")
    for output in ("model.keras", "metrics.json"):  # what train.py writes at a run's end
        (tmp_path / output).write_text("the earlier run's")
    logs.clear()
    second = runner(1, stop_after_steps=3)  # stopped in stage 2, after its proposals
    initial = [w.numpy() for w in second.net.base.weights]
    assert not second.run()
    assert not marker.exists() and (tmp_path / "proposals_stage2_detector").is_dir()
    assert any("removed the earlier run's checkpoint, initial_weights, logs, metrics.json, model.keras, "
               "options.json, proposals_stage2_detector" in line for line in logs)
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "metrics.json").exists()
    assert any("proposals of the stage1_rpn RPN" in line for line in logs)  # written again
    assert not (tmp_path / "proposals_stage4_detector").exists()
    assert unfinished_run(str(tmp_path)) == "stage2_detector, stage3_rpn, stage4_detector to train"
    now = stored_initial_base()
    for a, b in zip(now, initial):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, c) for a, c in zip(now, earlier))


def test_an_unreadable_checkpoint_is_named_and_a_new_run_starts_over(source, tmp_path):
    """A checkpoint whose data file is gone, or cut short: resuming stops with one error naming
    it (a data file cut short raised TensorFlow's IndexError); a new run in the folder has nothing
    to lose and starts over."""
    from keras_frcnn.training import unfinished_run

    cfg = joint_config()
    cfg = dataclasses.replace(cfg, train=cfg.train.with_steps(4))  # as train.py --steps 4
    (tmp_path / "config.json").write_text(cfg.to_json())

    def runner(stop_after_steps=2):
        keras.utils.set_random_seed(0)
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path),
                              checkpoint_every=2, log_every=2, verbose=0, log=lambda *a: None,
                              stop_after_steps=stop_after_steps)

    assert not runner().run()
    assert unfinished_run(str(tmp_path)) == "joint at step 2 of 4"
    (data_file,) = (tmp_path / "checkpoint").glob("*.data-*")
    data_file.write_bytes(data_file.read_bytes()[:len(data_file.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"checkpoint[/\\]ckpt-\d+: the checkpoint cannot be read"):
        TrainingCheckpoint(str(tmp_path)).state()
    with pytest.raises(DataError, match="the checkpoint cannot be read"):
        runner().run(resume=True)
    data_file.unlink()
    with pytest.raises(DataError, match=r"checkpoint[/\\]ckpt-\d+: the checkpoint cannot be read"):
        TrainingCheckpoint(str(tmp_path)).state()
    with pytest.raises(DataError, match="the checkpoint cannot be read"):
        runner().run(resume=True)
    assert unfinished_run(str(tmp_path)) is None
    assert not runner().run()  # a new run: the unreadable checkpoint replaced by its own
    assert unfinished_run(str(tmp_path)) == "joint at step 2 of 4"
    # Its .index deleted: resuming stops, naming the files left, and removes none of them (it
    # started over, removing the data file the index could still be restored beside).
    folder = tmp_path / "checkpoint"
    (index,) = folder.glob("ckpt-*.index")
    kept = index.read_bytes()
    index.unlink()
    files = sorted(p.name for p in folder.iterdir())
    with pytest.raises(DataError, match=r"ckpt-\d+\.data-00000-of-00001 without a complete checkpoint"):
        runner().run(resume=True)
    assert sorted(p.name for p in folder.iterdir()) == files
    # Its index back, the checkpoint list deleted instead: the newest complete checkpoint is the one
    # to resume from (it was "no checkpoint": a resume started over), and the list is written again
    # so that the next save removes it in turn.
    index.write_bytes(kept)
    # (the list cut short, which TensorFlow cannot parse, is as one deleted: it named the checkpoint as missing)
    (folder / "checkpoint").write_text("model_chec")
    assert unfinished_run(str(tmp_path)) == "joint at step 2 of 4"
    (folder / "checkpoint").unlink()
    assert unfinished_run(str(tmp_path)) == "joint at step 2 of 4"
    assert runner(stop_after_steps=None).run(resume=True)
    assert TrainingCheckpoint(str(tmp_path)).state()["completed"] == ["joint"]
    assert not (folder / index.name).exists() and len(list(folder.glob("ckpt-*.index"))) == 1


def test_a_run_folder_moved_or_copied_resumes_its_own_checkpoints(source, tmp_path):
    """A checkpoint list naming the folder a run was in before a move or a copy (absolute paths:
    the list this package wrote again where it was gone had them, until the next save replaced
    it): the moved run was refused ("without a complete checkpoint"), and a copy resumed from the
    original's checkpoint, its manager then removing the original's files. Each folder now reads
    and replaces its own checkpoints, and both end with the weights of one run."""
    import shutil

    cfg = joint_config()
    cfg = dataclasses.replace(cfg, train=cfg.train.with_steps(4))  # as train.py --steps 4

    def runner(folder, stop_after_steps=2):
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(cfg.to_json())
        keras.utils.set_random_seed(0)
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(folder),
                              checkpoint_every=2, log_every=2, verbose=0, log=lambda *a: None,
                              stop_after_steps=stop_after_steps)

    def weights(folder):
        path = TrainingCheckpoint(str(folder)).latest()
        return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
                if name.startswith("network/")}

    original = tmp_path / "original"
    assert not runner(original).run()
    folder = original / "checkpoint"
    (newest,) = [p.with_suffix("") for p in folder.glob("ckpt-*.index")]
    written = os.path.getmtime(f"{newest}.index")
    tf.compat.v1.train.update_checkpoint_state(str(folder), str(newest), all_model_checkpoint_paths=[str(newest)],
                                               all_model_checkpoint_timestamps=[written],
                                               last_preserved_timestamp=written - 1)
    assert str(newest) in (folder / "checkpoint").read_text()  # absolute, as a list of before
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert runner(copy, stop_after_steps=None).run(resume=True)
    assert (folder / newest.name).with_suffix(".index").exists()  # the original's checkpoint is its own still
    assert TrainingCheckpoint(str(original)).state()["step"] == 2
    moved = tmp_path / "moved"
    original.rename(moved)
    assert TrainingCheckpoint(str(moved)).latest() == str(moved / "checkpoint" / newest.name)
    assert runner(moved, stop_after_steps=None).run(resume=True)
    assert TrainingCheckpoint(str(moved)).state()["completed"] == ["joint"]
    finished_copy, finished_moved = weights(copy), weights(moved)
    assert finished_copy.keys() == finished_moved.keys() and finished_copy
    for name, value in finished_copy.items():
        np.testing.assert_array_equal(value, finished_moved[name], err_msg=name)
    assert str(tmp_path) not in (moved / "checkpoint" / "checkpoint").read_text()


def test_the_run_s_options_are_kept_from_its_start_before_any_checkpoint(source, tmp_path):
    """train.py --resume takes the run's own --checkpoint-every, --log-every, --eval-every and
    --checkpoint-minutes (``run_options``): a run killed before its first checkpoint kept none of
    them (they were in the checkpoint only); they are written as the run starts."""
    from keras_frcnn.training import run_options

    cfg = joint_config()
    runner = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), checkpoint_every=3,
                            checkpoint_minutes=2.5, log_every=1, eval_every=2, evaluator=lambda *a: None, verbose=0,
                            log=lambda *a: None)
    runner.start()
    assert not TrainingCheckpoint(str(tmp_path)).exists()
    assert run_options(str(tmp_path)) == {"checkpoint_minutes": 2.5, "checkpoint_every": 3, "log_every": 1,
                                          "eval_every": 2}


def test_a_file_written_atomically_is_whole_or_the_previous_one(tmp_path):
    from keras_frcnn.files import write_atomically

    path = tmp_path / "config.json"
    write_atomically(path, "first")
    with pytest.raises(TypeError):
        write_atomically(path, b"a write that fails part-way")
    assert path.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    write_atomically(path, "second")
    assert path.read_text() == "second"

    def disk_full(partial):  # Keras's model save and Pillow raise write errors naming no file
        open(partial, "w").close()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as raised:
        write_atomically(tmp_path / "model.keras", disk_full)
    assert (raised.value.errno, raised.value.filename) == (28, tmp_path / "model.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    # An error naming the temporary file (a folder that cannot be written to): the file asked for named.
    def denied(partial):
        raise PermissionError(13, "Permission denied", partial)

    with pytest.raises(PermissionError) as raised:
        write_atomically(str(tmp_path / "a.png"), denied)
    assert raised.value.filename == str(tmp_path / "a.png")


def test_evaluations_every_n_steps_are_the_same_steps_when_a_run_is_killed_and_resumed(source, tmp_path):
    """--eval-every 2 over 6 joint steps in windows of 4, a checkpoint every 3: evaluated at 2, 4 and 6
    whatever the windows. It was at the end of the window reaching a multiple (4, not 2), a run
    resumed at step 3 evaluated the end of its window only (6), and one killed while evaluating
    after that step's checkpoint never evaluated the step. Here killed while evaluating step 4 (the
    last checkpoint step 3's), resumed: 2, then 4 again and 6; a stale half-written checkpoint
    removed."""
    cfg = joint_config()
    seen = []

    def run(evaluator, resume=False):
        keras.utils.set_random_seed(0)
        runner = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=6, log_every=4,
                                checkpoint_every=3, eval_every=2, evaluator=evaluator, verbose=0, log=lambda *a: None)
        return runner.run(resume=resume)

    def killed_at_4(stage, step):
        seen.append(step)
        if step == 4:
            raise KeyboardInterrupt  # as a kill while evaluating

    with pytest.raises(KeyboardInterrupt):
        run(killed_at_4)
    assert seen == [2, 4] and json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 3
    (tmp_path / "checkpoint" / "ckpt-9_temp").mkdir()  # what a kill -9 in a save leaves
    assert run(lambda stage, step: seen.append(step), resume=True)
    assert seen == [2, 4, 4, 6] and not (tmp_path / "checkpoint" / "ckpt-9_temp").exists()


def test_a_stop_asked_in_the_last_steps_of_the_last_stage_stops(source, tmp_path):
    """SIGTERM while the last stage's last window trains: "stopping after this step" said, and done
    (the run returned finished, saved and evaluated its model, and exited 0)."""
    cfg = joint_config()
    keras.utils.set_random_seed(0)
    runner = ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=2, log_every=2,
                            verbose=0, log=lambda *a: None,
                            stage_hooks=[lambda event, stage, runner: event == "end" and runner.request_stop()])
    assert not runner.run() and runner.stopped_at == ("joint", 2)
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["completed"] == ["joint"]


def test_keras_callbacks_save_the_network_stop_the_run_and_cannot_take_the_schedule(source, tmp_path):
    """A user's callbacks get the stage's training view: ``ModelCheckpoint`` writes the whole
    ``FasterRCNN`` (it crashed on the view's config), a callback that stops fit stops the run with
    a checkpoint (the stage was reported done with steps never run), and learning-rate callbacks,
    which cannot act on the config's schedule, are refused before anything runs."""
    from keras_frcnn.config import ConfigError

    class StopAfterFirstWindow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    cfg = joint_config()
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 4, weights=None, class_names=source.class_names)
    for callback in (keras.callbacks.ReduceLROnPlateau(), keras.callbacks.LearningRateScheduler(lambda e, lr: lr)):
        with pytest.raises(ConfigError, match=f"{type(callback).__name__}: the runner's optimizers follow"):
            ScheduleRunner(net, source, cfg, str(tmp_path), steps=4, callbacks=[callback])
    lines = []
    ScheduleRunner(net, source, cfg, str(tmp_path), steps=4, log=lines.append)
    net.base.trainable = False  # Keras's way of freezing: the schedule's stages set the flags again (said)
    ScheduleRunner(net, source, cfg, str(tmp_path), steps=4, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("note: zf, conv1, conv2, conv3 and 2 more frozen before the run")
    saved = tmp_path / "saved.keras"
    lines = []
    runner = ScheduleRunner(net, source, cfg, str(tmp_path / "run"), steps=4, log_every=2, verbose=0, log=lines.append,
                            callbacks=[keras.callbacks.ModelCheckpoint(str(saved)), StopAfterFirstWindow()])
    assert runner.run() is False and runner.stopped_at == ("joint", 2)
    assert any("a callback stopped joint at step 2 of 4" in line for line in lines)
    reloaded = keras.models.load_model(str(saved))
    assert list(reloaded.class_names) == list(source.class_names)
    for ours, theirs in zip(net.model.weights, reloaded.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    again = ScheduleRunner(build_models(cfg, 4, weights=None, class_names=source.class_names), source, cfg,
                           str(tmp_path / "run"), steps=4, log_every=2, verbose=0, log=lambda *a: None)
    assert again.run(resume=True) is True


def test_the_inference_model_keeps_its_statistics_in_a_call_with_training_true():
    from keras_frcnn.models import FasterRCNN

    cfg = dataclasses.replace(tiny_config(), base_batch_norm=True)
    model = FasterRCNN(cfg, 2)
    images = np.random.default_rng(0).integers(0, 256, (1, 64, 80, 3)).astype(np.uint8)
    model(images)
    before = [v.numpy() for v in model.weights]
    model(images, training=True)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_a_mixed_global_policy_is_the_precision_of_auto():
    from keras_frcnn.models import FasterRCNN

    cfg = dataclasses.replace(tiny_config(), precision="auto")
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert FasterRCNN(cfg, 2).frcnn_config.precision == "mixed_float16"
    finally:
        keras.config.set_dtype_policy(previous)
    assert FasterRCNN(cfg, 2).frcnn_config.precision in ("float32", "mixed_bfloat16")


def _logged_steps(folder):
    from tensorflow.core.util import event_pb2
    steps = []
    for path in sorted(folder.glob("events.out.tfevents*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [(value.tag, event.step) for value in event.summary.value]
    return steps


def test_a_resumed_run_rewinds_its_tensorboard_logs_to_its_checkpoint(source, tmp_path):
    """Killed in step 5 of 6 (as by kill -9: its last checkpoint at step 3, its logs at 1 to 4),
    then resumed: the logs hold each step once, 1 to 6 (before, step 4 twice: TensorBoard drew the
    line back on itself). Another stage's logs and the final evaluation's are removed."""
    cfg = joint_config()

    said = []

    def run(resume=False, **kwargs):
        keras.utils.set_random_seed(0)
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), steps=6,
                              checkpoint_every=3, log_every=1, verbose=0, log=said.append, **kwargs).run(resume)

    assert run(stop_after_steps=5) is False
    train = tmp_path / "logs" / "joint" / "train"
    assert [s for tag, s in _logged_steps(train) if tag == "loss"] == [1, 2, 3, 4]
    assert TrainingCheckpoint(str(tmp_path)).state()["stage_seconds"]["joint"] > 0  # (a stage's part counted)
    for stray in ("eval", "stage4_detector"):  # (as a final evaluation or a later stage would leave)
        with tf.summary.create_file_writer(str(tmp_path / "logs" / stray)).as_default():
            tf.summary.scalar("x", 1.0, step=9)
    assert run(resume=True)
    assert [s for tag, s in _logged_steps(train) if tag == "loss"] == [1, 2, 3, 4, 5, 6]
    assert [s for tag, s in _logged_steps(train) if tag == "learning_rate"] == [1, 2, 3, 4, 5, 6]
    assert sorted(os.listdir(tmp_path / "logs")) == ["joint"]
    assert any("rewound to the checkpoint" in line and "logs of eval, stage4_detector removed" in line
               for line in said)


def test_an_evaluation_a_stop_in_a_stages_last_steps_put_off_comes_first_when_resumed(source, tmp_path):
    """--eval-every 2 over 4 steps, a stop asked in step 3: the stage still ends at step 4 (its
    last), its evaluation put off by the stop; the checkpoint says so and the resumed run evaluates
    step 4 first (before, never: the stage was complete and its evaluation lost)."""
    cfg = joint_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train.with_steps(4), steps_per_execution=1))
    seen = []

    class StopIn3(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if runner.steps_run == 3:
                runner.request_stop()

    def make(callbacks=()):
        keras.utils.set_random_seed(0)
        return ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), log_every=2,
                              eval_every=2, evaluator=lambda stage, step: seen.append((stage.name, step)),
                              checkpoint_minutes=None, verbose=0, log=lambda *a: None, callbacks=callbacks)

    runner = make([StopIn3()])
    assert not runner.run() and seen == [("joint", 2)]
    state = TrainingCheckpoint(str(tmp_path)).state()
    assert state["completed"] == ["joint"] and state["put_off_evaluation"] == ["joint", 4]
    # (the same runner: it starts again from its checkpoint; before, from the start it had begun at)
    assert runner.run(resume=True) and seen == [("joint", 2), ("joint", 4)]
    assert [fit[:2] for fit in runner.history] == [("joint", 0)]  # (nothing trained again)


def test_a_proposals_pass_stopped_part_way_continues_where_its_files_end(source, tmp_path):
    """The detector stages' proposals pass, stopped after two batches (4 of 8 images), keeps its
    part; run again from the same weights it continues at the last file written (written again: a
    kill may have cut it short) and ends with the files of a pass never stopped. From other weights
    it starts over."""
    from keras_frcnn.data.stored_proposals import ProposalStore
    from keras_frcnn.training import _Interrupted, write_proposals

    cfg = tiny_config()
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 4, weights=None)
    asked, said = [], []

    def stop_after(batches):
        asked.clear()
        return lambda: asked.append(1) or len(asked) > batches

    with pytest.raises(_Interrupted):
        write_proposals(net, source, cfg, str(tmp_path / "p"), made_from="ckpt-3", should_stop=stop_after(2))
    part = tmp_path / "p.partial"
    assert sorted(f.name for f in part.glob("*.tfexample")) == [f"{i:08d}.tfexample" for i in range(4)]
    assert not ProposalStore.exists(tmp_path / "p")
    assert write_proposals(net, source, cfg, str(tmp_path / "p"), made_from="ckpt-3", should_stop=stop_after(99),
                           log=said.append) == 8
    assert len(asked) == 3 and said == ["   proposals: an earlier process's pass continued from image 3 of 8"]
    write_proposals(net, source, cfg, str(tmp_path / "whole"), made_from="ckpt-3")
    for i in range(8):  # (compared parsed: a proto's map order in bytes is not fixed)
        name = f"{i:08d}.tfexample"
        resumed, whole = (tf.train.Example.FromString((tmp_path / d / name).read_bytes()).features.feature
                          for d in ("p", "whole"))
        assert resumed["key"] == whole["key"] and len(whole["boxes"].float_list.value) > 0, name
        np.testing.assert_array_equal(resumed["boxes"].float_list.value, whole["boxes"].float_list.value, name)

    with pytest.raises(_Interrupted):
        write_proposals(net, source, cfg, str(tmp_path / "q"), made_from="ckpt-3", should_stop=stop_after(1))
    said.clear()
    write_proposals(net, source, cfg, str(tmp_path / "q"), made_from="ckpt-4", should_stop=stop_after(99),
                    log=said.append)
    assert len(asked) == 4 and said == []  # other weights: from the first image


def test_the_proposals_pass_stores_the_same_proposals_whatever_the_images_padding(source, tmp_path):
    """``train.image_pad_multiple`` pads the proposals pass's images too (a few shapes for oneDNN):
    the model masks the padding, so each image's stored proposals are those of no padding."""
    from keras_frcnn.training import write_proposals

    cfg = tiny_config()
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 4, weights=None)
    for multiple in (1, 96):
        write_proposals(net, source, dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, image_pad_multiple=multiple)), str(tmp_path / str(multiple)))
    for i in range(source.num_examples):
        name = f"{i:08d}.tfexample"
        plain, padded = (tf.train.Example.FromString((tmp_path / d / name).read_bytes()).features.feature
                         for d in ("1", "96"))
        assert len(plain["boxes"].float_list.value) > 0, name
        np.testing.assert_allclose(padded["boxes"].float_list.value, plain["boxes"].float_list.value,
                                   atol=1e-3, err_msg=name)


def test_workers_checkpoints_in_common_decide_where_a_multi_worker_run_resumes(source, tmp_path):
    """``agree_on_checkpoint`` with the other worker's place given: behind this worker's newest,
    at its older one: back to it (the proposals of a stage trained again removed); with no
    checkpoint: every worker starts over; at a place this worker holds none of: one error naming
    the folder. (Two real workers: the slow test_distribute case.)"""
    cfg = tiny_config()
    net = build_models(cfg, 4, weights=None)

    def worker(other_place):
        runner = ScheduleRunner(net, source, cfg, str(tmp_path), log=said.append)
        runner.checkpoint = TrainingCheckpoint(str(tmp_path), keep=2)
        runner.gather = lambda value: [value, other_place]
        return runner

    def write_two():  # stage 3 at step 2, then at its end (stage 4's proposals stored, stage 2's too)
        runner = worker(None)
        runner.completed = ["stage1_rpn", "stage2_detector"]
        runner.checkpoint.save(net, None, runner.state_of("stage3_rpn", 2))
        runner.completed.append("stage3_rpn")
        runner.checkpoint.save(net, None, runner.state_of())
        for stage in ("stage2_detector", "stage4_detector"):
            os.makedirs(tmp_path / f"proposals_{stage}", exist_ok=True)
        return runner.checkpoint.kept()

    said = []
    older, newer = write_two()
    worker(2e9 + 2).agree_on_checkpoint()  # (two stages completed, 2 steps of the next)
    assert TrainingCheckpoint(str(tmp_path)).kept() == [older]
    assert TrainingCheckpoint(str(tmp_path)).state()["stage"] == "stage3_rpn"
    assert not (tmp_path / "proposals_stage4_detector").exists()  # (stage 3's RPN is trained again)
    assert (tmp_path / "proposals_stage2_detector").exists()
    assert "back to ckpt-1 (stage3_rpn step 2)" in said[-1]

    remove = TrainingCheckpoint(str(tmp_path))
    remove.remove()
    write_two()
    worker(-1.0).agree_on_checkpoint()
    assert not TrainingCheckpoint(str(tmp_path)).exists() and "every worker starts over" in said[-1]

    write_two()
    with pytest.raises(DataError, match=r"checkpoint: this worker's checkpoints \(ckpt-1, ckpt-2\) hold none"):
        worker(2e9 + 1).agree_on_checkpoint()


def test_a_run_resumes_only_on_the_workers_and_replicas_it_trained_on(source, tmp_path, monkeypatch):
    """A step trains on the stage's images per replica times the replicas, and each worker resumes
    its own checkpoint: a resume on other devices is refused, naming both, before anything is
    removed (before, a third worker added to a two-worker run, holding no checkpoint, had every
    worker start over; one process resuming a two-replica run went on at half the batch, silently).
    A checkpoint written before the devices were recorded resumes as before."""
    cfg = joint_config()
    net = build_models(cfg, 4, weights=None)
    said = []

    def runner():
        return ScheduleRunner(net, source, cfg, str(tmp_path), steps=4, verbose=0, log=said.append)

    def write(devices):
        TrainingCheckpoint(str(tmp_path)).remove()
        state = runner().state_of("joint", 2, 4)
        if devices is None:
            del state["devices"]
        else:
            state["devices"] = devices
        TrainingCheckpoint(str(tmp_path), keep=2).save(net, None, state)

    assert runner().state_of()["devices"] == {"workers": 1, "replicas": 1}
    write({"workers": 2, "replicas": 2})  # (the chief's folder of a two-worker run)
    with pytest.raises(DataError, match=r"checkpoint: the run trained on 2 worker\(s\), 2 replica\(s\) in all, "
                                        r"this one has 1 worker\(s\), 1 replica\(s\) in all .* or start a new run"):
        runner().start(resume=True)
    assert TrainingCheckpoint(str(tmp_path)).state()["step"] == 2

    # Three workers resuming a two-worker run: the new one holds no checkpoint (-1); all refuse alike.
    monkeypatch.setattr(ScheduleRunner, "multi_worker", property(lambda self: True))
    three = runner()
    three.devices = lambda: {"workers": 3, "replicas": 3}
    three.gather = lambda value: [value, value, -1.0]
    with pytest.raises(DataError, match=r"trained on 2 worker\(s\), 2 replica\(s\) in all, this one has 3 worker"):
        three.start(resume=True)
    assert TrainingCheckpoint(str(tmp_path)).state()["step"] == 2 and not any("starts over" in s for s in said)
    monkeypatch.undo()

    for devices in ({"workers": 1, "replicas": 1}, None):  # the same devices; none recorded
        write(devices)
        assert runner().start(resume=True)["step"] == 2


def test_a_network_of_other_classes_than_the_datas_is_refused(source, tmp_path):
    """A model of other classes (a loaded model.keras) trained on data: one error naming both lists
    (before, dogs trained silently as circles, or a gather error mid-step for more classes)."""
    cfg = tiny_config()
    for net in (build_models(cfg, 4, weights=None, class_names=["dog", "cat", "cow", "owl"]),
                build_models(cfg, 3, weights=None)):
        with pytest.raises(DataError, match=r"the data's classes \['circle', .*\] are not the network's \["):
            ScheduleRunner(net, source, cfg, str(tmp_path), log=lambda *a: None).start()
    assert ScheduleRunner(build_models(cfg, 4, weights=None), source, cfg, str(tmp_path), log=lambda *a: None).start()
    named = build_models(cfg, 4, weights=None, class_names=["dog", "cat", "cow", "owl"])  # a bare dataset: no names
    assert ScheduleRunner(named, source.dataset, cfg, str(tmp_path), log=lambda *a: None).start()
