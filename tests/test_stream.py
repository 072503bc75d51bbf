"""The training stream: every example exactly once per pass over a source larger than every
buffer, a new order each pass, and a stream started at a checkpointed position that continues
exactly where an uninterrupted one is, for both kinds of source (random access: index shuffling;
sequential, as TFDS: a shuffle buffer of encoded records). Then the same through the schedule
runner: what the model was fed across checkpoints and a kill in the middle of a pass."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from keras_frcnn import data
from keras_frcnn.data.examples import DetectionSource
from keras_frcnn.data.pipeline import SHUFFLE_BUFFER, example_stream
from keras_frcnn.models import build_models
from keras_frcnn.training import ScheduleRunner

N = 5003  # more than every buffer: the shuffle buffer (1024), tf.data's prefetch, a batch


def index_only_source(n, random_access):
    """``n`` examples that are only their own number (``"id"``), with or without random access."""
    def example_at(index):
        return {"id": index}

    dataset = tf.data.Dataset.range(n).map(example_at)
    return DetectionSource(dataset=dataset, class_names=("thing",), num_examples=n, name=f"{n} numbers",
                           example_at=example_at if random_access else None)


def read(stream, count):
    elements = list(stream.take(count).as_numpy_iterator())
    positions = [int(e["position"]) for e in elements]
    indices = [int(e["index"]) for e in elements]
    assert indices == [int(e["example"]["id"]) for e in elements]  # the index names the example
    return positions, indices


@pytest.mark.parametrize("random_access", [True, False], ids=["index shuffle", "record buffer"])
def test_every_example_once_per_pass_and_resume_continues_the_pass(random_access):
    assert N > SHUFFLE_BUFFER
    source = index_only_source(N, random_access)
    positions, indices = read(example_stream(source, seed=7), 3 * N)
    assert positions == list(range(3 * N))
    passes = [indices[k * N:(k + 1) * N] for k in range(3)]
    for order in passes:
        assert sorted(order) == list(range(N))  # every example exactly once in every pass
    assert passes[0] != passes[1] != passes[2] and passes[0] != list(range(N))  # a new order each pass
    # How far the head of the source reaches into each pass: a shuffle that only ever drew from the
    # first examples would leave the tail for last.
    first_half = [np.mean([i < N // 2 for i in order[:N // 4]]) for order in passes]
    assert all(0.3 < share < 0.7 for share in first_half) if random_access else True

    # A run resumed at a checkpointed position in the middle of pass 1 reads exactly what the
    # uninterrupted stream reads from there on, to the end of pass 2.
    start = N + 1234
    resumed_positions, resumed = read(example_stream(source, seed=7, start=start), 3 * N - start)
    assert resumed_positions == list(range(start, 3 * N))
    assert resumed == indices[start:]
    # The seed alone decides the order (not the global seed Keras sets).
    keras.utils.set_random_seed(123)
    assert read(example_stream(source, seed=7), N)[1] == passes[0]
    assert read(example_stream(source, seed=8), N)[1] != passes[0]


def test_one_pass_in_source_order():
    source = index_only_source(50, random_access=True)
    _, indices = read(example_stream(source, seed=0, shuffle=False, repeat=False), 100)
    assert indices == list(range(50))  # repeat=False ends after the pass


def test_flips_and_sampling_seeds_follow_the_position(shapes_source):
    """What is random about a stream position is a function of the position: a stream started
    there draws the same flip and sampling seed."""
    cfg = dataclasses.replace(tiny_config(), image=dataclasses.replace(tiny_config().image, flip=True))
    whole = list(data.train_dataset(shapes_source, cfg, 1, seed=3, repeat=True).take(20))
    tail = list(data.train_dataset(shapes_source, cfg, 1, seed=3, repeat=True, start=13).take(7))
    for a, b in zip(whole[13:], tail, strict=True):
        for key in ("position", "index", "flipped", "sample_seed", "gt_boxes", "images"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    flips = [bool(b["flipped"][0]) for b in whole]
    assert 3 < sum(flips) < 17


@pytest.fixture(scope="module")
def shapes_source(tmp_path_factory):
    return data.load_shapes("train", data_dir=tmp_path_factory.mktemp("tfds"), num_train=8, num_test=2,
                            decode_images=False)


class Tap:
    """Records, in a variable, which example the stream delivered at each position (a
    ``dataset_hook``): what the model was actually fed is then read off the positions trained."""

    def __init__(self, size):
        self.seen = tf.Variable(tf.fill([size], tf.constant(-1, tf.int64)))

    def __call__(self, stage, dataset):
        if stage.name != "joint":
            return dataset

        def record(batch):
            update = self.seen.scatter_nd_update(batch["position"][:, None], batch["index"])
            with tf.control_dependencies([update]):
                return {**batch, "index": tf.identity(batch["index"])}

        return dataset.map(record)


# (~25 s: under -m slow for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03); by default, the stream's
# passes and its resumed position (above, on a source larger than the shuffle buffer), and a run
# resumed mid-stage ending with an uninterrupted run's weights (test_training).)
@pytest.mark.slow
def test_what_the_model_is_fed_across_checkpoints_and_a_kill(shapes_source, tmp_path):
    """Joint training, 2 images a step, 8 images: 15 steps are 3.75 passes. Checkpoints every 3
    steps; a kill after step 10 (the last checkpoint at step 9, in the middle of pass 3); the
    resumed run feeds from position 18 on what the uninterrupted run fed, and every pass of the
    whole run holds each image once."""
    cfg = dataclasses.replace(tiny_config(), train=dataclasses.replace(tiny_config().train, schedule="joint"))
    steps, batch, n = 15, 2, shapes_source.num_examples

    def run(run_dir, tap, **kwargs):
        keras.utils.set_random_seed(0)
        net = build_models(cfg, 4, weights=None)
        resume = kwargs.pop("resume", False)
        runner = ScheduleRunner(net, shapes_source, cfg, str(run_dir), steps=steps, checkpoint_every=3,
                                log_every=4, verbose=0, log=lambda *a: None, dataset_hook=tap, **kwargs)
        return runner.run(resume=resume), runner

    straight_tap = Tap(steps * batch + 64)
    assert run(tmp_path / "straight", straight_tap)[0]
    fed = straight_tap.seen.numpy()[:steps * batch].tolist()
    for k in range(3):
        assert sorted(fed[k * n:(k + 1) * n]) == list(range(n))
    assert len(set(fed[3 * n:])) == steps * batch - 3 * n  # the fourth pass, begun: no repeats

    killed_tap, resumed_tap = Tap(steps * batch + 64), Tap(steps * batch + 64)
    stopped, killed = run(tmp_path / "resumed", killed_tap, stop_after_steps=10)
    assert stopped is False and killed.saved_at[-1] == ("joint", 9)
    finished, resumed = run(tmp_path / "resumed", resumed_tap, resume=True)
    assert finished and resumed.history == [("joint", 9, 18, 6)]
    resumed_fed = resumed_tap.seen.numpy()
    assert (resumed_fed[:18] == -1).all()  # nothing before the checkpointed position was read again
    assert killed_tap.seen.numpy()[:18].tolist() + resumed_fed[18:steps * batch].tolist() == fed
