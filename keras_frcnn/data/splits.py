"""Which of a source's own splits trains and which is held out, for the sources whose files or
folders are named by split (CSV, TFRecord, LabelMe, VIA): ``train`` -> ``val``, else ``test``;
``trainval`` (train and val together, as VOC names it) -> ``test``; a training split with none of
these beside it holds its last tenth out; held-out splits alone train nothing."""

from __future__ import annotations

import os

from keras_frcnn.data.voc_folder import held_out_tenth

ALL = "all"
TRAINING = ("train", "trainval")
HELD_OUT = {"train": ("val", "test"), "trainval": ("test",)}


def own_splits(splits, count) -> tuple:
    """(training, evaluation) of a source with the splits ``splits`` (names among train, trainval,
    val, test and all); ``count(split)`` the images of a split (10 or more where that is known
    without reading it). The training split is None where there are held-out splits only (a
    folder of val/ alone: evaluated, not trained on)."""
    training = next((name for name in (*TRAINING, ALL) if name in splits), None)
    if training is None:
        return None, next((name for name in ("val", "test") if name in splits), sorted(splits)[0])
    for held in HELD_OUT.get(training, ()):
        if held in splits:
            return training, held
    return held_out_tenth(training, count(training))


def beside_held_out(splits, files) -> dict:
    """``splits`` found in split folders; where they are held-out ones only (``val/``, ``test/``),
    the files beside those folders (``files()``, listed only then) are the training split."""
    if splits and not set(splits) & set(TRAINING):
        found = files()
        if found:
            return {**splits, "train": found}
    return splits


def every_split(splits) -> str:
    """All of a source's splits joined (what a further source trains on): train and val left out
    beside trainval (it holds them: their images would be read twice)."""
    return "+".join(name for name in splits if name not in ("train", "val") or "trainval" not in splits)


def named_splits(files, split_of) -> dict:
    """``files`` by the split their names say (``split_of(name)``, None for a name that says none):
    every file ``all`` where no name says a split, or where files of no split sit beside a
    training file (names that are not a split layout); files of no split beside held-out ones
    only (``data.csv`` beside ``val.csv``) are the training split."""
    named = {file: split_of(os.path.basename(file)) for file in files}
    said = set(named.values()) - {None}
    if not said or (None in named.values() and said & set(TRAINING)):
        return {ALL: tuple(files)}
    splits = {}
    for file, split in named.items():
        splits.setdefault(split or "train", []).append(file)
    return {name: tuple(found) for name, found in splits.items()}
