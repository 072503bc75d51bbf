"""TensorBoard: the training losses and learning rate per window of steps, and after training the
mAP and a few test images with their detections drawn."""

import os

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2

from keras_frcnn.files import remove_path


class StepCounting(keras.callbacks.Callback):
    """A callback that counts training steps: with Keras's ``steps_per_execution``,
    ``on_train_batch_end`` runs once per call of the compiled step, with the index (in the epoch)
    of its last step; ``new_steps(batch)`` is the number of steps since the previous call."""

    _seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = 0

    def new_steps(self, batch):
        steps, self._seen = batch + 1 - self._seen, batch + 1
        return steps


class StageLog(StepCounting):
    """Writes a stage's losses (Keras's means over each epoch, i.e. each window of steps) and the
    learning rate to TensorBoard in ``log_dir``, at the stage's step count, which continues
    across a resume (``step``: the steps done before this ``fit``)."""

    def __init__(self, log_dir, step=0):
        super().__init__()
        self.log_dir, self.step = log_dir, int(step)
        self.writer = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += self.new_steps(batch)

    def on_epoch_end(self, epoch, logs=None):
        self.write(logs)

    def write(self, logs, step=None):
        """The window's ``logs`` at ``step`` (default the steps counted): also called for the part
        of a window a requested stop ends, at its checkpoint's step."""
        self.step = self.step if step is None else int(step)
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        if callable(lr):
            lr = lr(optimizer.iterations)
        with self.writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.scalar(name, float(np.mean(value)), step=self.step)
            tf.summary.scalar("learning_rate", float(np.asarray(lr)), step=self.step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Writers:
    """Summary writers by folder, each opened once and kept (a writer is an events file of its own:
    one a call gave a long run's eval folder a file per evaluation); ``close`` closes them."""

    def __init__(self):
        self._open = {}

    def __call__(self, log_dir):
        if log_dir not in self._open:
            self._open[log_dir] = tf.summary.create_file_writer(log_dir)
        return self._open[log_dir]

    def close(self):
        for writer in self._open.values():
            writer.close()
        self._open.clear()


def log_scalars(summary, writer, step):
    """An evaluation's figures (``evaluate``'s dict) at ``step`` into ``writer`` (flushed): VOC07
    mAP, area mAP, and COCO AP and AP50 where it has them."""
    with writer.as_default():
        tf.summary.scalar("mAP_voc07", summary["mAP"] or 0.0, step=step)
        tf.summary.scalar("mAP_area", summary["mAP_area"] or 0.0, step=step)
        if "coco" in summary:
            tf.summary.scalar("coco_AP", summary["coco"]["AP"], step=step)
            tf.summary.scalar("coco_AP50", summary["coco"]["AP50"], step=step)
    writer.flush()


def log_evaluation(model, source, summary, writer, num_images=4):
    """Write the evaluation's scalars (:func:`log_scalars`) and ``num_images`` test images with
    drawn detections into ``writer``."""
    from keras_frcnn.data.pipeline import eval_dataset
    from keras_frcnn.visualize import draw_detections

    drawn = []
    for batch in eval_dataset(source).take(num_images):
        image = batch["images"][0].numpy()
        out = {k: v.numpy()[0] for k, v in model(image[None]).items()}
        n = int(out["num_detections"])
        drawn.append(draw_detections(image, out["boxes"][:n], out["confidence"][:n], out["labels"][:n],
                                     model.class_names, min_score=0.3))
    with writer.as_default():
        for i, image in enumerate(drawn):
            tf.summary.image(f"detections/{i}", image[None], step=0)
    log_scalars(summary, writer, step=0)


def rewind_logs(logs_dir, completed, stage, step):
    """A resumed run's TensorBoard logs (``logs_dir``: ``logs/<stage>/{train,eval}``, ``logs/eval``)
    made those of its checkpoint: the logs of the ``completed`` stages kept, the events of ``stage``
    up to ``step`` kept and those after it removed (a run killed after its last checkpoint wrote
    them, and the resumed run writes those steps again: TensorBoard would draw both, one line
    doubling back on itself), every other stage's logs and the final evaluation's (``logs/eval``,
    written again at the end) removed. Event files are rewritten in place (a TensorBoard already
    open shows the change once restarted). Returns the number of ``stage``'s events dropped and
    the names of the folders removed."""
    dropped, removed = 0, []
    if not os.path.isdir(logs_dir):
        return dropped, removed
    for name in sorted(os.listdir(logs_dir)):
        path = os.path.join(logs_dir, name)
        if name in completed:
            continue
        if name == stage:
            for folder, _, files in os.walk(path):
                for file in sorted(files):
                    if "tfevents" in file:
                        dropped += _drop_events_after(os.path.join(folder, file), step)
        else:
            remove_path(path)
            removed.append(name)
    return dropped, removed


def _records(path):
    """The records of an event file, as far as they can be read (a process killed while writing
    leaves a last record cut short)."""
    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        pass
    return records


def _drop_events_after(path, step):
    """Rewrites the event file ``path`` without its events of steps after ``step``; the count removed."""
    records = _records(path)
    kept = [record for record in records if event_pb2.Event.FromString(record).step <= step]
    if len(kept) == len(records) and os.path.getsize(path) == sum(len(r) + 16 for r in records):
        return 0
    partial = os.path.join(os.path.dirname(path), ".rewound.partial")  # (not an events file to TensorBoard)
    with tf.io.TFRecordWriter(partial) as writer:
        for record in kept:
            writer.write(record)
    os.replace(partial, path)
    return len(records) - len(kept)
