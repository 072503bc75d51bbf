"""Command-line pieces shared by ``train.py``, ``export.py`` and the ``evaluate`` / ``predict``
modules: the data-source options and which splits they mean, the quiet start-up, and one clean
``error: ...`` line (exit status 2) for every mistake a user can make: a bad flag, a missing or
malformed file, a data set that cannot be used.

Set ``KERAS_FRCNN_TRACEBACK=1`` to see the Python traceback behind such a line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib
import io
import os
import re
import signal
import sys
import threading
import typing


class UsageError(Exception):
    """A mistake in how a command was called (a flag, a file): printed as one ``error:`` line."""


class Terminated(BaseException):
    """SIGTERM (``kill``, ``docker stop``) during a command that has no handler of its own: raised
    in the main thread, so a file being written is removed (``files.write_atomically``) and the
    command ends with the shell's status 143 instead of dying mid-write."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one ``error: ...`` line (exit status 2) instead of usage text."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("type", int, _plain_int)  # (every ``type=int`` option, in groups too)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        """argparse's, refusing an empty value (``--out ''``, a shell variable that was not set), which
        would otherwise read as an option not given: its default, in silence."""
        parsed = super().parse_args(args, namespace)
        flags = {action.dest: (action.option_strings or [action.metavar or action.dest])[-1] for action in self._actions}
        for name, value in vars(parsed).items():
            if value == "" or isinstance(value, list) and "" in value:
                self.error(f"{flags.get(name, name)} was given an empty value")
        return parsed


def _plain_int(text):
    """An int option's value written in ASCII digits (Python's ``int`` also reads ``1_0`` as 10 and
    other scripts' digits)."""
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        raise ValueError(text)
    return int(text)


_plain_int.__name__ = "int"  # (argparse's message: "invalid int value: '1_0'")


def quiet_tensorflow():
    """TensorFlow loaded without its start-up chatter (``keras_frcnn.startup``; importing the
    package does it already, this makes it explicit where a command starts)."""
    from keras_frcnn.startup import load_tensorflow_quietly

    load_tensorflow_quietly()


def run(command, interrupted="interrupted", resume_hint="") -> int:
    """``command()`` (a command's work, returning its exit status) with user errors turned into
    one ``error: ...`` line and exit status 2, Ctrl-C into the line ``interrupted`` and exit
    status 130 (the shell's for SIGINT), and SIGTERM into "terminated" and 143. A full disk
    (Python's or TensorFlow's "No space left on device", e.g. a checkpoint, a model or stored
    proposals being written), a read-only folder and
    an error met while reading data in a TensorFlow graph are such errors too; ``resume_hint`` (how
    to continue the work once the cause is gone) is added to the first and the last. Either text may
    be a function giving it, asked when the error comes (what to do may change as the work goes on)."""
    from keras_frcnn.config import ConfigError
    from keras_frcnn.data.problems import DataError

    user_errors = (UsageError, DataError, ConfigError, FileNotFoundError, IsADirectoryError,
                   NotADirectoryError, FileExistsError, PermissionError)
    def text(value):
        return value() if callable(value) else value

    for stream in (sys.stdout, sys.stderr):  # (a file name that is not UTF-8 printed as \xe9, not an error)
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="backslashreplace")
    restore = _raise_on_sigterm()
    for module in _FILES_READ_BY:  # (the files of an earlier command in this process are not this one's)
        if module in sys.modules:
            sys.modules[module].FILES_READ.clear()
    try:
        return command()
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(text(interrupted), file=sys.stderr)
        return 130
    except user_errors as error:
        return _fail(error)
    except OSError as error:
        if error.errno == errno.EROFS:  # a read-only folder given where something must be written
            return _fail(error)
        if error.errno in DISK_FULL:
            return _fail(error, f"{_os_error_text(error)} (make room on that disk{_then(text(resume_hint))})")
        raise
    except Exception as error:
        training = sys.modules.get("keras_frcnn.training")
        if training is not None and isinstance(error, training.TrainingDiverged):
            print(flush=True)  # (Keras's progress bar leaves its line open)
            _fail(error)
            return 1  # the training failed, not its command line
        tf = sys.modules.get("tensorflow")
        tf_error = tf is not None and isinstance(error, tf.errors.OpError)
        if tf_error and any(os.strerror(code) in error.message for code in DISK_FULL):
            return _fail(error, f"{describe_tf_error(error)} (make room on that disk{_then(text(resume_hint))})")
        if tf_error and os.strerror(errno.EROFS) in error.message:
            return _fail(error, describe_tf_error(error))
        # Errors raised in tf.data graphs while reading data (an unreadable file, stored proposals
        # of another example) are TensorFlow's InvalidArgument / NotFound errors.
        if tf_error and isinstance(error, tf.errors.InvalidArgumentError) and _files_read() \
                and re.search(r"\{\{node [^}]*[Dd]ecode", error.message):
            return _fail(error, _name_refused_images(error))
        if tf_error and isinstance(error, (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
                                           tf.errors.DataLossError)):
            hint = text(resume_hint)
            return _fail(error, describe_tf_error(error) + (
                f" (reading the data; once it is whole again, {hint})" if hint else ""))
        raise
    finally:
        restore()


def _then(hint) -> str:
    return f", then {hint}" if hint else ""


# The modules whose FILES_READ hold the files the running command's sources read (image files;
# record files): searched for the image TensorFlow's decoder refused inside a tf.data graph, where
# the error names none (the image check passed it: a way Pillow's and TensorFlow's decoders differ
# that it does not know).
_FILES_READ_BY = ("keras_frcnn.data.image_files", "keras_frcnn.data.tfrecord_files")


def _files_read() -> int:
    return sum(len(sys.modules[module].FILES_READ) for module in _FILES_READ_BY if module in sys.modules)


def _name_refused_images(error) -> str:
    """The ``error:`` text of a run stopped by TensorFlow's image decoder: the images it refuses
    among those read, found by decoding each (they are skipped, counted, from the next run on)."""
    from keras_frcnn.data import image_files, tfrecord_files
    from keras_frcnn.data.problems import logger

    told = describe_tf_error(error)
    logger.warning("TensorFlow's image decoder refused an image (%s): decoding the images of the %d files read to "
                   "find it", told, _files_read())
    try:
        found = [image_files.refused_by_tensorflow(sorted(image_files.FILES_READ)),
                 tfrecord_files.refused_records(tfrecord_files.FILES_READ)]
    except KeyboardInterrupt:
        return f"{told} (an image TensorFlow's decoder refused; the search for it among the files read was interrupted)"
    refused = [item for items, _ in found for item in items]
    if not refused:
        return f"{told} (an image TensorFlow's decoder refused; decoded again, each image of the {_files_read()} " \
               "files read is whole: was one changed while the run read it?)"
    then = ("remembered as bad now: from the next run on it is skipped with a counted warning unless mended "
            "(start that run anew: its data is not this run's checkpoints')"
            if all(remembered for items, remembered in found if items) else "mend or remove it, then run again")
    if len(refused) == 1:
        where, message = refused[0]
        return f"{where}: TensorFlow's image decoder refuses it ({message}), though the image check passed it; {then}"
    named = "; ".join(f"{where} ({message})" for where, message in refused[:3])
    more = f"; and {len(refused) - 3} more" if len(refused) > 3 else ""
    return (f"TensorFlow's image decoder refuses {len(refused)} images the image check passed: {named}{more}; "
            f"each {then}")


def _raise_on_sigterm():
    """SIGTERM raises :class:`Terminated` until the returned function restores the handler before;
    left alone where the signal is ignored (``nohup``, a parent's choice) or handled already, or
    off the main thread (a command called from a thread of a user's program)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None

    def terminate(number, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


# "No space left on device", "Disk quota exceeded"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _os_error_text(error) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _fail(error, text=None) -> int:
    if os.environ.get("KERAS_FRCNN_TRACEBACK"):
        import traceback

        traceback.print_exception(error)
    text = text or _os_error_text(error)
    print(f"error: {' '.join(text.split())}", file=sys.stderr)
    return 2


def describe_tf_error(error) -> str:
    """The useful part of a TensorFlow op error: its message without graph-node decorations, and
    (an error in a compiled step, e.g. a file gone while ``fit`` reads it) without the "Graph
    execution error" header, where the failing node was defined and the tf.data iterator's name."""
    message = getattr(error, "message", str(error))
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = message.split("\n\t [[")[0].strip()
    message = re.sub(r" \[Op:\w+\]( name: \S*)?$", "", message)  # an eager op's name
    message = re.sub(r"^Graph execution error:\s*", "", message)
    message = re.sub(r"^Detected at node .*?\(most recent call last\):\n(?:(?:  .*|<stack traces unavailable>|)\n)*",
                     "", message)  # (the stack's lines, blank lines between them in some errors)
    message = re.sub(r"^Error in user-defined function passed to \S+ transformation with iterator: \S+?: ", "",
                     message)
    return message.split("\n\n")[0].strip()


def load_model(path):
    """``keras.models.load_model(path)`` (with the package's layers registered), or a
    ``UsageError`` naming the file."""
    if os.path.isdir(path):  # (an exported SavedModel, most likely: predict reads those)
        raise UsageError(f"--model {path}: a folder; give the trained .keras model file (an exported "
                         "model is read by predict and served, not evaluated or exported again)")
    if not os.path.isfile(path):
        raise UsageError(f"--model {path}: no such file")
    import zipfile

    if not zipfile.is_zipfile(path):  # (Keras says "File not found" of a file cut short, empty or of another kind)
        what = "an empty file" if os.path.getsize(path) == 0 else "not a zip archive"
        raise UsageError(f"--model {path}: not a .keras model: {what} (a .keras file is one; a copy cut short, or "
                         "another kind of file)")
    import keras

    import keras_frcnn  # noqa: F401  (registers the layers)

    try:
        return keras.models.load_model(path)
    except Exception as error:  # a truncated zip, another model, another Keras ...
        raise UsageError(f"--model {path}: not a keras_frcnn .keras model ({type(error).__name__}: "
                         f"{error})") from None


# --- data sources -------------------------------------------------------------------------------


def make_folder(option: str, folder: str):
    """``folder`` made (with its parents) for ``option`` (e.g. "--plots runs/x/plots"), before the
    work whose output it takes: a ``UsageError`` naming what is in the way (a file on its path, no
    permission to write)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = folder
        while blocking and not os.path.exists(blocking):
            blocking = os.path.dirname(blocking)
        raise UsageError(f"{option}: {blocking or folder} is a file, not a folder") from None
    except PermissionError:
        raise UsageError(f"{option}: {folder} cannot be made (permission denied)") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option}: {folder} cannot be written to")


def require_positive(parser: argparse.ArgumentParser, args, *flags):
    """Stop with argparse's usage error if any of ``flags`` (dest names) was given and is <= 0, or
    past a config field's largest (``config.LARGEST``: larger ones fail as tensors or loop for ever)."""
    from keras_frcnn.config import LARGEST

    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
        if value is not None and value > LARGEST and value != float("inf"):  # (inf: its command says "finite")
            parser.error(f"--{flag.replace('_', '-')} must be at most {LARGEST:,}, got {value}")


def utf8_name(path) -> bool:
    """Whether the file name ``path`` is UTF-8 (a Latin-1 name on Linux is not)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def add_data_args(parser: argparse.ArgumentParser):
    group = parser.add_argument_group("data (one kind of source; default: the config's dataset)")
    group.add_argument("--dataset", help='a TFDS name ("voc/2007", "voc/2012", "coco/2017") or "shapes"; '
                       'sets joined by + are trained on together, the first one tests ("voc/2007+voc/2012": '
                       "the paper's 07+12)")
    group.add_argument("--voc-dir", action="append",
                       help="a VOC folder: Annotations/, JPEGImages/ (or images/), ImageSets/Main/, or XML files "
                       "beside their images (LabelImg, Roboflow); without split files it trains on all[:90%%] and "
                       "tests on all[90%%:]; repeat it to train on several (the first one tests)")
    group.add_argument("--coco-json", action="append",
                       help="a COCO instances JSON file (with --coco-images); repeat it to train on several of "
                       "the same categories")
    group.add_argument("--coco-images", action="append",
                       help="the folder of the COCO JSON's images (default: the JSON's own folder, as "
                       "Roboflow's exports keep them, or COCO's train2017/ for "
                       "annotations/instances_train2017.json); once for all the --coco-json files, or once "
                       "for each, in their order")
    group.add_argument("--yolo-data", help="a data set in the YOLO format: its data.yaml (Ultralytics, Roboflow), "
                       "obj.data (Darknet, CVAT's YOLO 1.1) or folder (Label Studio's, with classes.txt): trains on "
                       "train, tests on val")
    group.add_argument("--tfrecord", help="TFRecord files in the TF Object Detection API's layout: a pipeline.config, "
                       "a folder (Roboflow's train/ valid/ test/, or *_train.record and *_val.record files), a file "
                       "or a quoted glob; trains on train, tests on val (a file or glob is one split: all[:90%%] -> "
                       "all[90%%:])")
    group.add_argument("--label-map", help="the label map (.pbtxt) of --tfrecord (default: the pipeline.config's, "
                       "or the one beside the records)")
    group.add_argument("--csv", help="detection CSV files: one (path,x1,y1,x2,y2,class rows as keras-retinanet's; "
                       "or with a header row: filename,width,height,class,xmin,ymin,xmax,ymax as the TF OD API's "
                       "tutorials and Roboflow write), or a folder of them (train/ valid/ test/ folders, or "
                       "train_labels.csv and test_labels.csv); trains on train, tests on val (a file: all[:90%%] -> "
                       "all[90%%:])")
    group.add_argument("--csv-images", help="the folder --csv's image paths are relative to (default: looked for "
                       "beside the CSV file, in its images/ folder, the folder above, its images/, the working "
                       "directory)")
    group.add_argument("--csv-classes", help="the classes of --csv: keras-retinanet's name,id rows or a name a line "
                       "(default: _classes.csv or classes.csv beside the CSV files, else the names in them, sorted)")
    group.add_argument("--labelme", action="append", help="a folder of LabelMe JSON files (beside their images; train/ val/ test/ "
                       "folders of them, or one split: all[:90%%] -> all[90%%:]); classes from its labels.txt, else "
                       "the labels found, sorted; repeat it to train on several (the first one tests)")
    group.add_argument("--via", action="append", help="VGG Image Annotator JSON (via_region_data.json, as the Keras Mask R-CNN balloon "
                       "tutorial keeps it): a folder of train/ val/ folders each with its file beside its images, "
                       "or one file or folder (all[:90%%] -> all[90%%:]); repeat it to train on several (the first one tests)")
    group.add_argument("--cvat", action="append", help="CVAT's own export, \"CVAT for images 1.1\": its annotations.xml or the "
                       "unzipped folder (images in images/); a project's subsets train -> val, a task's all[:90%%] "
                       "-> all[90%%:]; repeat it to train on several exports (tasks) of the same labels (the first one tests)")
    group.add_argument("--classes", help="class names for --voc-dir, comma separated, in label order")
    group.add_argument("--data-dir", help="TFDS's data directory (default ~/tensorflow_datasets)")
    group.add_argument("--shapes-images",
                       help="train,test image counts of the built-in shapes set (default 500,100)")
    return group


@dataclasses.dataclass(frozen=True)
class DataChoice:
    """What a command's data options mean: the source kind, its name and splits."""

    kind: str  # "tfds" (shapes included), "voc-dir", "coco-json", "yolo", "tfrecord", "csv", "labelme", "via", "cvat"
    name: str  # the TFDS name, the VOC folder, the COCO JSON file (the first, of several), the YOLO data.yaml
    # or what --tfrecord, --csv, --labelme, --via or --cvat names
    train_split: typing.Optional[str]
    test_split: typing.Optional[str]
    # Further sets of the same kind trained on with the first: (name, training split) each; a
    # split None is a VOC folder's every annotation file.
    more: tuple = ()
    classes: typing.Optional[tuple] = None  # VOC folders' class names (--classes, or several folders')
    test_name: typing.Optional[str] = None  # a VOC folder tested on in place of the first (--voc-val-dir)

    @property
    def full_name(self) -> str:
        """Every set trained on, as ``--dataset`` takes them (``"voc/2007+voc/2012"``)."""
        return "+".join([self.name] + [name for name, _ in self.more])

    @property
    def coco(self) -> bool:
        """COCO data, YOLO data (Ultralytics reports mAP50-95) and TFRecord data (the TF OD API's
        default metrics are COCO's): COCO AP (pycocotools) is the headline figure."""
        return self.kind in ("coco-json", "yolo", "tfrecord") or (self.kind == "tfds" and self.name.startswith("coco"))


def choose_data(args, cfg, train_split=None, test_split=None, evaluation=False) -> DataChoice:
    """The source the options name and its splits: ``--train-split`` / ``--test-split`` if given,
    else the source's own (``data.tfds_sources.DEFAULT_SPLITS``; a VOC folder: trainval -> test,
    or train -> val without a labelled test split (VOC 2012);
    a COCO JSON file: itself -> ``--coco-val-json``; a YOLO data set: train -> val, see
    ``yolo_folder.default_splits``; TFRecord files alike, ``tfrecord_files.default_splits``, and
    all of a single split named for evaluation). Several TFDS sets (``voc/2007+voc/2012``) or VOC folders
    (``--voc-dir`` repeated): the first as alone, each further one trained on with all
    its labelled data (``DataChoice.more``). Checked before anything is trained: an unlabelled
    evaluation split is a ``DataError`` now, not after training."""
    from keras_frcnn.data.problems import DataError
    from keras_frcnn.data.tfds_sources import check_labelled, default_splits

    given = sources_given(args) + (["tfds"] if args.dataset else [])
    if len(given) > 1:
        raise UsageError("give one data source: --dataset, --voc-dir, --coco-json, --yolo-data, --tfrecord, --csv, "
                         "--labelme, --via or --cvat")
    of_the_run = not given and cfg.dataset in FOLDER_KINDS
    if of_the_run:
        _options_of_the_run(args, cfg, evaluation)
    elif not given and cfg.data_paths:  # the run's TFDS folder and the built-in set's size, unless given now
        args.data_dir = args.data_dir or cfg.data_paths[0] or None
        if len(cfg.data_paths) > 1:
            args.shapes_images = args.shapes_images or cfg.data_paths[1]
    _refuse_unused_data_options(args, cfg)
    if args.voc_dir:
        choice = _choose_voc_folders(args.voc_dir, args.classes, train_split, test_split,
                                     getattr(args, "voc_val_dir", None))
        if of_the_run:  # the first folder's splits and the classes as the run had them; the others' splits
            choice = dataclasses.replace(choice, train_split=train_split or cfg.train_split,
                                         test_split=test_split or cfg.test_split,
                                         classes=tuple(cfg.classes) or choice.classes)
        return choice
    if args.coco_json:
        if train_split or test_split:  # (they were ignored: the whole file trained on, nothing held out)
            raise UsageError(f"split {train_split or test_split!r}: a --coco-json file has no splits; train on the "
                             "file and hold data out in its own file, --coco-val-json")
        return _choose_coco_files(args, evaluation)
    if args.yolo_data:
        from keras_frcnn.data import yolo_folder

        if of_the_run:
            splits = (cfg.train_split, cfg.test_split)
        else:
            splits = yolo_folder.default_splits(args.yolo_data)
        return DataChoice("yolo", args.yolo_data, train_split or splits[0], test_split or splits[1])
    # Files of one kind named by path: their own splits (one split alone: all of it when evaluated).
    for kind, given_path, module, extra in (("tfrecord", args.tfrecord, "tfrecord_files", (args.label_map,)),
                                            ("csv", args.csv, "csv_files", ()),
                                            ("labelme", args.labelme, "labelme_folder", ()),
                                            ("via", args.via, "via_json", ()),
                                            ("cvat", args.cvat, "cvat_xml", ())):
        if given_path:
            # --labelme, --via, --cvat repeated: the first as alone, each further one all of its images.
            paths = list(given_path) if isinstance(given_path, list) else [given_path]
            _refuse_repeated([(SOURCE_FLAGS[kind], path) for path in paths], "file or folder")
            source_module = importlib.import_module(f"keras_frcnn.data.{module}")
            if of_the_run:
                splits = (cfg.train_split, cfg.test_split)
            else:
                splits = source_module.default_splits(paths[0], *extra)
                if evaluation and splits[0] and "[" in splits[0]:  # one split, named to be evaluated on: all of it
                    splits = (splits[0], splits[0].split("[")[0])
                if not (splits[0] or train_split or evaluation):  # (a folder of val/ alone)
                    raise DataError(f"{SOURCE_FLAGS[kind]} {paths[0]}: held-out data only (its {splits[1]!r} "
                                    "split), nothing to train on: put the training files beside it or in train/, "
                                    "or name the split to train on with --train-split")
            more = tuple((path, train_split or source_module.labelled_splits(path)) for path in paths[1:])
            return DataChoice(kind, paths[0], train_split or splits[0], test_split or splits[1], more=more)
    names = tfds_names(args.dataset or cfg.dataset)
    if "+".join(names) == "+".join(tfds_names(cfg.dataset)):
        splits = (cfg.train_split, cfg.test_split)
    else:
        splits = default_splits(names[0])
    _check_tfds_together(names)
    # A further set gives every labelled split of its own (the paper's 07+12: VOC 2012's train and
    # validation); the first set's evaluation split stays held out.
    more = tuple((name, train_split or "+".join(default_splits(name))) for name in names[1:])
    choice = DataChoice("tfds", names[0], train_split or splits[0], test_split or splits[1], more=more)
    for name, split in ((choice.name, choice.train_split),) + more:
        check_labelled(name, split, "training")
    check_labelled(choice.name, choice.test_split, "evaluation")
    return choice


def _choose_coco_files(args, evaluation) -> DataChoice:
    """Several ``--coco-json`` files train together (the first named first, each one all of it);
    ``--coco-images`` is given once for all of them, or once for each. Evaluation reads one file."""
    files, folders = list(args.coco_json), list(args.coco_images or [])
    if evaluation and len(files) > 1:
        raise UsageError(f"--coco-json given {len(files)} times: evaluate one file (--coco-json F [--coco-images D])")
    if len(folders) not in (0, 1, len(files)):
        raise UsageError(f"--coco-images given {len(folders)} times for {len(files)} --coco-json files: give it once "
                         "for all of them, or once for each, in their order")
    _refuse_repeated([("--coco-json", path) for path in files], "file")
    return DataChoice("coco-json", files[0], None, None, more=tuple((path, None) for path in files[1:]))


def _refuse_repeated(given, noun):
    """``UsageError`` where two of ``given`` ((flag, path) pairs) name one ``noun`` (a file or
    folder, however written): it would be trained on twice, or tested on as trained."""
    seen = {}
    for flag, path in given:
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{flag} {path}: the same {noun} as {seen[real]}")
        seen[real] = f"{flag} {path}"


def coco_images(args, json_path=None):
    """The ``--coco-images`` folder of ``--coco-json`` file ``json_path`` (default: the first), or
    None for the JSON's own (see ``load_coco_json``)."""
    folders = list(args.coco_images or [])
    if len(folders) <= 1:
        return folders[0] if folders else None
    return folders[list(args.coco_json).index(json_path) if json_path else 0]


def tfds_names(dataset: str) -> list:
    """The TFDS sets of ``--dataset`` (``"voc+voc/2012"`` -> ``["voc/2007", "voc/2012"]``)."""
    from keras_frcnn.data.tfds_sources import canonical_name

    names = [canonical_name(part.strip()) for part in str(dataset).split("+")]
    if not all(names):
        raise UsageError(f"--dataset {dataset}: give TFDS names joined by +, e.g. voc/2007+voc/2012")
    return names


def _check_tfds_together(names):
    if len(names) == 1:
        return
    if len({name.split(":")[0] for name in names}) < len(names):  # (voc+voc/2007:5.0.0 too)
        raise UsageError(f"--dataset {'+'.join(names)}: a set named twice")
    if "shapes" in names:
        raise UsageError("--dataset: the built-in shapes set is trained on alone")
    years = [name for name in names if name.startswith("coco")]
    if len(years) > 1:  # coco/2017's train and validation are coco/2014's images, split anew
        raise UsageError(f"--dataset {'+'.join(names)}: {' and '.join(years)} hold the same images; "
                         "train on one COCO year")


def _choose_voc_folders(folders, classes, train_split, test_split, test_folder=None) -> DataChoice:
    """The first folder trains on its training split and tests on its evaluation split; each
    further one trains on every labelled image of its own splits (``voc_folder.labelled_split``).
    With a ``test_folder`` (``--voc-val-dir``) every folder trains on all its labelled images and
    the test folder is evaluated on all of its. Several folders get the class names of all of them
    (unless ``--classes`` names them)."""
    from keras_frcnn.data import voc_folder

    _refuse_repeated([("--voc-dir", f) for f in folders] + ([("--voc-val-dir", test_folder)] if test_folder else []),
                     "folder")
    if test_folder:
        splits = (voc_folder.labelled_split(folders[0]) or voc_folder.ALL,
                  voc_folder.labelled_split(test_folder) or voc_folder.ALL)
    else:
        splits = voc_folder.default_splits(folders[0])
    more = tuple((folder, train_split or voc_folder.labelled_split(folder)) for folder in folders[1:])
    if classes:
        names = tuple(c.strip() for c in classes.split(","))
        if "" in names:
            raise UsageError(f"--classes {classes}: an empty class name (two commas, or one at an end)")
    else:
        names = voc_folder.common_class_names(folders + [test_folder] * bool(test_folder)) \
            if more or test_folder else None
    return DataChoice("voc-dir", folders[0], train_split or splits[0], test_split or splits[1], more=more,
                      classes=names, test_name=test_folder)


def _options_of_the_run(args, cfg, evaluation):
    """The data options of the run ``cfg`` is the config of (a VOC folder or COCO JSON run; see
    ``Config.dataset``), set in ``args``: the same folders, or the JSON files, with evaluation
    on the held-out JSON it was evaluated on."""
    if cfg.dataset == "voc-dir":
        args.voc_dir = list(cfg.data_paths)
        args.voc_val_dir = cfg.voc_test_dir or None
        return
    if cfg.dataset == "yolo":
        args.yolo_data = cfg.data_paths[0]
        return
    if cfg.dataset == "tfrecord":
        args.tfrecord, args.label_map = cfg.data_paths[0], cfg.data_paths[1] or args.label_map
        return
    if cfg.dataset in ("labelme", "via", "cvat"):
        setattr(args, cfg.dataset, list(cfg.data_paths))
        return
    if cfg.dataset == "csv":
        args.csv = cfg.data_paths[0]
        args.csv_images = args.csv_images or cfg.data_paths[1] or None
        args.csv_classes = args.csv_classes or cfg.data_paths[2] or None
        return
    # (json, images, held-out json, its images, then json, images of each further file trained on)
    json_path, images, held_out, held_out_images = cfg.data_paths[:4]
    if evaluation:
        if not held_out:
            raise UsageError(f"the model was trained on COCO JSON {json_path} without a held-out file: give "
                             "the data to evaluate on (--coco-json, --coco-images, or another source)")
        args.coco_json, args.coco_images = [held_out], [held_out_images_of(held_out, held_out_images, images or None)]
    else:
        pairs = [(json_path, images)] + list(zip(cfg.data_paths[4::2], cfg.data_paths[5::2]))
        args.coco_json = [path for path, _ in pairs]
        args.coco_images = [folder or None for _, folder in pairs] if any(folder for _, folder in pairs) else None
        args.coco_val_json, args.coco_val_images = held_out or None, held_out_images or None


def held_out_images_of(held_out_json, held_out_images, images):
    """Where a held-out COCO JSON's images are: ``--coco-val-images`` if given, else whichever of
    ``--coco-images`` and the JSON's own folder holds them (one folder for both JSONs, or
    ``train/`` and ``valid/`` as Roboflow exports them; ``load_coco_json`` chooses)."""
    return held_out_images or [images, os.path.dirname(os.path.abspath(held_out_json))]


def _refuse_unused_data_options(args, cfg):
    """An option of another source than the one chosen (``--classes`` for a COCO JSON, say) would
    be ignored: a usage error instead, so that nobody trains on what they did not ask for."""
    from keras_frcnn.data.tfds_sources import canonical_name

    named = sources_given(args)
    source = named[0] if named else "shapes" if canonical_name(args.dataset or cfg.dataset) == "shapes" else "tfds"
    owners = {"classes": ("voc-dir",), "voc_val_dir": ("voc-dir",), "coco_images": ("coco-json",),
              "shapes_images": ("shapes",), "data_dir": ("tfds", "shapes"), "label_map": ("tfrecord",),
              "csv_images": ("csv",), "csv_classes": ("csv",)}
    for option, sources in owners.items():
        if getattr(args, option, None) is not None and source not in sources:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} goes with {' or '.join(SOURCE_FLAGS[s] for s in sources)}, "
                             f"not with this run's data ({SOURCE_FLAGS[source]})")


def sources_given(args) -> list:
    """The kinds of file source (``FOLDER_KINDS``) the options name, each by its flag."""
    return [kind for kind in FOLDER_KINDS if getattr(args, SOURCE_FLAGS[kind][2:].replace("-", "_"), None)]


# The sources a run's config.json names by its files (Config.dataset; data_paths: their paths).
FOLDER_KINDS = ("voc-dir", "coco-json", "yolo", "tfrecord", "csv", "labelme", "via", "cvat")
SOURCE_FLAGS = {"voc-dir": "--voc-dir", "coco-json": "--coco-json", "yolo": "--yolo-data", "tfrecord": "--tfrecord",
                "csv": "--csv", "labelme": "--labelme", "via": "--via", "cvat": "--cvat",
                "shapes": "--dataset shapes", "tfds": "--dataset (TFDS)"}


def load_source(args, choice: DataChoice, split: typing.Optional[str], decode_images: bool = True):
    """The ``DetectionSource`` of ``choice``'s ``split`` (a VOC split-file name or a TFDS split
    expression; ignored for a COCO JSON file, which is one split)."""
    from keras_frcnn import data

    if choice.kind == "voc-dir":
        return data.load_voc_folder(choice.name, split=_voc_split(split), classes=choice.classes,
                                    decode_images=decode_images)
    if choice.kind == "coco-json":  # without --coco-images: the JSON's own folder
        return data.load_coco_json(choice.name, coco_images(args, choice.name), decode_images=decode_images)
    if choice.kind == "yolo":
        return data.load_yolo(choice.name, split=split, decode_images=decode_images)
    if choice.kind == "tfrecord":
        return data.load_tfrecord(choice.name, split=split, label_map=args.label_map, decode_images=decode_images)
    if choice.kind == "labelme":
        return data.load_labelme(choice.name, split=split, decode_images=decode_images)
    if choice.kind == "via":
        return data.load_via(choice.name, split=split, decode_images=decode_images)
    if choice.kind == "cvat":
        return data.load_cvat(choice.name, split=split, decode_images=decode_images)
    if choice.kind == "csv":
        return data.load_csv(choice.name, split=split, images=args.csv_images, classes_file=args.csv_classes,
                             decode_images=decode_images)
    if choice.name == "shapes":
        try:
            num_train, num_test = (int(n) for n in (args.shapes_images or "500,100").split(","))
        except ValueError:
            raise UsageError(f"--shapes-images {args.shapes_images}: give two counts, e.g. 500,100") from None
        if min(num_train, num_test) < 1:  # (TFDS fails to write an empty split, and leaves its folder)
            raise UsageError(f"--shapes-images {args.shapes_images}: give two positive counts, e.g. 500,100")
        return data.load_shapes(split=split, data_dir=args.data_dir, num_train=num_train,
                                num_test=num_test, decode_images=decode_images)
    return data.load_tfds(choice.name, split, data_dir=args.data_dir, decode_images=decode_images)


def class_list(class_names, shown=80) -> str:
    """Class names for a line of output: all of COCO's 80, the first 80 of more (LVIS's 1,203)."""
    names = ", ".join(class_names[:shown])
    return names if len(class_names) <= shown else f"{names} and {len(class_names) - shown} more"


def objects_per_class(source, shown=80) -> str:
    """The objects of each class a source trains on, for a line of output (as detectron2 tables its
    instances per category), "" where the source does not know them (TFDS): ``circle 1,213, square
    1,190, ...``; of more than ``shown`` classes the fewest and the most, with a warning on stderr
    for every class without an object (it cannot be learned: a misspelt ``--classes`` name, a
    split without it)."""
    counts = source.objects_per_class
    if counts is None:
        return ""
    names = list(source.class_names)
    missing = [name for name, count in zip(names, counts) if count == 0]
    if missing:
        print(f"warning: {len(missing)} of the {len(names)} classes have no object to train on in "
              f"{source.name}: {class_list(missing, 20)}; the model cannot learn them (check the class "
              "names and the annotations, or the split)", file=sys.stderr)
    pairs = [f"{name} {count:,}" for name, count in zip(names, counts)]
    if len(pairs) > shown:
        order = sorted(range(len(pairs)), key=lambda k: (counts[k], k))
        half = shown // 2
        pairs = ([pairs[k] for k in order[:half]] + [f"... {len(pairs) - 2 * half} more ..."]
                 + [pairs[k] for k in order[-half:]])
    return ", ".join(pairs)


def load_test_source(args, choice: DataChoice, decode_images: bool = True):
    """The evaluation data of ``choice``: its test split, of ``--voc-val-dir``'s folder if given."""
    return load_source(args, dataclasses.replace(choice, name=choice.test_name or choice.name), choice.test_split,
                       decode_images)


def load_training_source(args, choice: DataChoice, decode_images: bool = True):
    """The training data of ``choice``: its training split, and with several sets each one's
    (``DataChoice.more``), combined (``data.combined``); counted once here where TFDS cannot tell
    its size (a split expression, images without their box left out), not in every stage."""
    from keras_frcnn.data.combined import combine_sources
    from keras_frcnn.data.pipeline import as_source

    sources = [load_source(args, choice, choice.train_split, decode_images)]
    for name, split in choice.more:
        sources.append(load_source(args, dataclasses.replace(choice, name=name), split, decode_images))
    return as_source(combine_sources(sources))


def warn_if_not_held_out(train_source, test_source):
    """A warning on stderr when the evaluation data shares images with the training data (split
    files, JSON files or TFDS split expressions that overlap): its figures would not be held-out ones."""
    if test_source is None or not train_source.files or not test_source.files:
        return
    shared = len(train_source.files & test_source.files)
    if shared:
        total = test_source.num_examples or len(test_source.files)  # (None: a count TFDS does not give)
        print(f"warning: {shared} of the {total} evaluation images are training images "
              f"too (the same images in {train_source.name} and {test_source.name}): the evaluation is "
              "not on held-out data", file=sys.stderr)


def _voc_split(split: typing.Optional[str]) -> typing.Optional[str]:
    # TFDS's "train+validation" is the VOC folder's trainval.txt.
    return {"train+validation": "trainval", "validation": "val"}.get(split, split)
