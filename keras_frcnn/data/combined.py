"""Several data sets trained on as one: the paper's "07+12" (VOC 2007 trainval and VOC 2012
trainval, tested on VOC 2007 test), or one's own data spread over several VOC folders.

:func:`combine_sources` joins sources into one :class:`DetectionSource`. The
training stream shuffles a source with random access (folder sources) over all its examples,
whatever its size; a source without it (TFDS) is read through a shuffle buffer of a thousand
records, so two sets simply appended would come one after the other in every pass (all of VOC
2007, then all of VOC 2012). Their examples are therefore interleaved in proportion to the sets'
sizes (every stretch of the stream holds both, as the whole does), in a fixed order.
"""

from __future__ import annotations

import typing

import numpy as np
import tensorflow as tf

from keras_frcnn.data.examples import DetectionSource, fingerprint, in_class_order, some_names
from keras_frcnn.data.pipeline import as_source
from keras_frcnn.data.problems import DataError, warn_once


def combine_sources(sources: typing.Sequence[DetectionSource]) -> DetectionSource:
    """``sources`` as one source: their examples, class names (matched by name: the first
    source's, then those only later ones have, each source's images taken to show none of the
    classes it lacks, warned), problem counts, object counts and image files. Examples are in
    the sources' order one after the other when every source has random access (``example_at``
    too), else interleaved in proportion to their sizes (see the module docstring)."""
    sources = list(sources)
    if len(sources) == 1:
        return sources[0]
    first = sources[0]
    # Classes by name: the first set's in its order, then those only later sets have (two COCO
    # files each listing the categories it uses, another export's label map in another order).
    names = list(first.class_names)
    for other in sources[1:]:
        names += [name for name in other.class_names if name not in names]
    by_letters = {}
    for name in names:
        by_letters.setdefault(name.casefold(), []).append(name)
    alike = [" / ".join(group) for group in by_letters.values() if len(group) > 1]
    if alike:
        warn_once("the data sets trained on together have class names that differ only in case: %s; they are "
                  "%d classes (give one set's names as the other's, or --classes)", some_names(alike),
                  len(names))
    for source in sources:
        lacking = [name for name in names if name not in source.class_names]
        if lacking:
            warn_once("%s has no class %s of the data sets trained with it: its images are taken to show none "
                      "of them (where they do, these objects are taught as background)", source.name,
                      some_names(lacking))
    sources = [in_class_order(source, names) for source in sources]
    for other in sources:
        if other.voc_pixel_numbers != first.voc_pixel_numbers:
            raise DataError(f"{other.name} and {first.name} write boxes in other conventions (VOC's "
                            "pixel numbers, COCO's continuous coordinates): train on sets of one kind")
    sources = [as_source(source) for source in sources]  # counted where TFDS cannot tell
    counts = [source.num_examples for source in sources]
    problems = {}
    for source in sources:
        for kind, count in source.problems.items():
            problems[kind] = problems.get(kind, 0) + count
    random_access = all(source.example_at is not None for source in sources)
    if random_access:
        dataset, example_at = _appended(sources)
    else:
        dataset, example_at = _interleaved(sources), None
    return DetectionSource(
        dataset=dataset,
        class_names=tuple(names),
        num_examples=int(sum(counts)),
        name=" + ".join(source.name for source in sources),
        fingerprint=fingerprint(source.identity for source in sources)
        if any(source.fingerprint for source in sources) else "",
        problems=problems,
        example_at=example_at,
        voc_pixel_numbers=first.voc_pixel_numbers,
        num_objects=None if any(s.num_objects is None for s in sources) else sum(s.num_objects for s in sources),
        objects_per_class=None if any(s.objects_per_class is None for s in sources)
        else tuple(int(n) for n in np.sum([s.objects_per_class for s in sources], axis=0)),
        files=None if any(s.files is None for s in sources) else frozenset().union(*(s.files for s in sources)),
    )


def interleaving_order(counts: typing.Sequence[int]) -> np.ndarray:
    """The source of each position when sources of ``counts`` examples are interleaved in
    proportion: source ``k``'s ``j``-th example sits at the fraction ``(j + 1/2) / counts[k]`` of
    the whole (ties in source order), so that any stretch holds each source's share to within one
    example."""
    fractions = np.concatenate([(np.arange(n) + 0.5) / n for n in counts if n] or [np.zeros(0)])
    which = np.concatenate([np.full(n, k, np.int64) for k, n in enumerate(counts) if n] or [np.zeros(0, np.int64)])
    return which[np.argsort(fractions, kind="stable")]


def _interleaved(sources) -> tf.data.Dataset:
    order = interleaving_order([source.num_examples for source in sources])
    return tf.data.Dataset.choose_from_datasets([source.dataset for source in sources],
                                                tf.data.Dataset.from_tensor_slices(order),
                                                stop_on_empty_dataset=False)


def _appended(sources):
    dataset = sources[0].dataset
    for source in sources[1:]:
        dataset = dataset.concatenate(source.dataset)
    ends = tf.constant(np.cumsum([source.num_examples for source in sources]), tf.int64)
    starts = [int(start) for start in np.cumsum([0] + [source.num_examples for source in sources[:-1]])]

    def example_at(index):
        index = tf.cast(index, tf.int64)
        part = tf.searchsorted(ends, tf.reshape(index, [1]), side="right")[0]
        branches = [lambda source=source, start=start: source.example_at(index - start)
                    for source, start in zip(sources, starts)]
        return tf.switch_case(tf.cast(part, tf.int32), branches)

    return dataset, example_at
