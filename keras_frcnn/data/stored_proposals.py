"""Stored proposals of the alternating schedule's detector stages (2 and 4): one file per example.

The RPN of the stage before runs once over the training set (resized as for training, unflipped)
and each example's proposals are written to ``DIR/<index>.tfexample``: a serialized
``tf.train.Example`` with the example's key (``examples.example_key``: file name and id) and its
boxes (yxyx pixels of the resized image, ``[P, 4]`` flattened). ``DIR/manifest.json`` names the
source and its size. A detector stage reads the file of each example it draws, by index, in any
order (so the training stream can shuffle freely), and checks the stored key against the
example's: proposals of another example are an error naming both, never silently used.

The folder is written under ``DIR.partial`` and renamed when complete, so a run killed while
writing leaves nothing that looks finished. ``DIR.partial/progress.json`` names the source and the
weights (the checkpoint) the proposals come from: a pass started again from the same ones (a run
killed during it, then resumed) continues where the files end, not from the first image (at
COCO's size a pass is hours of a GPU's time).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from keras_frcnn.data.examples import example_key
from keras_frcnn.data.problems import DataError

MANIFEST = "manifest.json"
PROGRESS = "progress.json"


def _file_name(index: int) -> str:
    return f"{index:08d}.tfexample"


class ProposalWriter:
    """Writes one stage's proposals into ``directory`` (see the module docstring).

        with ProposalWriter(directory, source, made_from) as writer:
            for index in range(writer.start, source.num_examples):
                writer.write(index, key, boxes)    # every example of the source from writer.start, once

    ``made_from`` names the weights the proposals come from; an earlier writer's part of the same
    source and weights is kept and ``start`` is where it ends (its last file written again: a kill
    may have cut it short), else 0.
    """

    def __init__(self, directory, source, made_from=""):
        self.directory = os.fspath(directory)
        self.partial = self.directory + ".partial"
        self.source = source
        self.progress = {"source": source.name, "identity": source.identity, "num_examples": source.num_examples,
                         "made_from": made_from}
        self.start = self.count = 0

    def __enter__(self):
        try:
            with open(os.path.join(self.partial, PROGRESS)) as f:
                same = json.load(f) == self.progress
        except (OSError, ValueError):
            same = False
        if same and self.progress["made_from"]:
            written = {name for name in os.listdir(self.partial) if name.endswith(".tfexample")}
            while _file_name(self.start) in written:
                self.start += 1
            self.start = self.count = max(0, self.start - 1)
        else:
            shutil.rmtree(self.partial, ignore_errors=True)
            os.makedirs(self.partial)
            with open(os.path.join(self.partial, PROGRESS), "w") as f:
                json.dump(self.progress, f, indent=2)
        return self

    def write(self, index: int, key: bytes, boxes: np.ndarray):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        record = tf.train.Example(features=tf.train.Features(feature={
            "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key])),
            "boxes": tf.train.Feature(float_list=tf.train.FloatList(value=boxes.reshape(-1))),
        }))
        path = os.path.join(self.partial, _file_name(int(index)))
        try:
            with open(path, "wb") as f:
                f.write(record.SerializeToString())
        except OSError as error:  # a full disk: a write's error names no file
            raise OSError(error.errno, error.strerror, path) from None
        self.count += 1

    def __exit__(self, kind, error, traceback):
        if kind is not None:
            if isinstance(error, OSError):  # e.g. a full disk: the next try starts over, with the space back
                shutil.rmtree(self.partial, ignore_errors=True)
            return False  # (killed or stopped: the part written is kept for the resumed run)
        if self.count != self.source.num_examples:
            raise RuntimeError(f"{self.partial}: wrote proposals for {self.count} of "
                               f"{self.source.num_examples} examples")
        with open(os.path.join(self.partial, MANIFEST), "w") as f:
            json.dump({"source": self.source.name, "identity": self.source.identity, "num_examples": self.count},
                      f, indent=2)
        os.remove(os.path.join(self.partial, PROGRESS))
        shutil.rmtree(self.directory, ignore_errors=True)
        os.replace(self.partial, self.directory)
        return False


class ProposalStore:
    """A complete proposals folder, opened for a source: ``read(index, example)`` in a
    ``tf.data`` map gives the example's stored boxes ``[P, 4]``."""

    def __init__(self, directory, source):
        self.directory = os.fspath(directory)
        path = os.path.join(self.directory, MANIFEST)
        try:
            with open(path) as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise DataError(f"{path}: not found: {self.directory} holds no complete proposals") from None
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: unreadable ({error})") from None
        same = source.recorded_as(manifest.get("identity"), manifest.get("source"))
        if manifest.get("num_examples") != source.num_examples or not same:
            raise DataError(
                f"{self.directory}: proposals of {manifest.get('source')!r} "
                f"({manifest.get('num_examples')} examples), but training reads {source.name!r} "
                f"({source.num_examples} examples{source.identity_differs(manifest.get('identity'), manifest.get('source'))}"
                "): the run was started on other data; start a new "
                "run (another --out) or resume on the data it was started on")

    @staticmethod
    def exists(directory) -> bool:
        return os.path.isfile(os.path.join(os.fspath(directory), MANIFEST))

    def read(self, index, example):
        """Graph code: the stored proposals of example ``index`` (int64 scalar), after checking
        that they were written for ``example`` (its key)."""
        path = tf.strings.join([self.directory, os.sep,
                                tf.strings.as_string(index, width=8, fill="0"), ".tfexample"])
        record = tf.io.parse_single_example(tf.io.read_file(path), {
            "key": tf.io.FixedLenFeature([], tf.string),
            "boxes": tf.io.VarLenFeature(tf.float32),
        })
        key = example_key(example)
        check = tf.debugging.Assert(
            tf.equal(record["key"], key),
            ["stored proposals do not belong to this example: example", key, "(index", index,
             ") but", path, "was written for", record["key"],
             "- the data changed since the proposals were computed"])
        with tf.control_dependencies([check]):
            return tf.reshape(tf.sparse.to_dense(record["boxes"]), [-1, 4])
