"""VOC folders: TFDS's box conversion, classes, bad data, entity-expansion attacks."""

import argparse
import io
import itertools
import logging
import os

import numpy as np
import pytest
from tensorflow_datasets.object_detection import voc as tfds_voc
from test_data_fixtures import examples, gif_stating, voc_xml, write_image, write_turned_photo, write_voc_folder

from keras_frcnn.cli import add_data_args, choose_data, warn_if_not_held_out
from keras_frcnn.config import Config
from keras_frcnn.data import VOC_CLASSES, DataError, load_voc_folder, parse_voc_xml
from keras_frcnn.data.voc_folder import common_class_names, default_splits, labelled_split

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<annotation><filename>&lol9;</filename></annotation>
"""


def _truncated_jpeg(tmp_path):
    path = os.path.join(tmp_path, "whole.jpg")
    write_image(path, 64, 64)
    with open(path, "rb") as f:
        data = f.read()
    return data[: len(data) // 2]


def _jpeg_without_its_end():
    """A JPEG of one colour whose last two bytes (its end-of-image marker) are cut off: Pillow
    decodes it whole, TensorFlow's decoder refuses it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 200, 200)).save(buffer, "JPEG")
    return buffer.getvalue()[:-2]


@pytest.fixture
def edge_folder(tmp_path):
    """Every edge case of the issue in one folder; ``trainval`` lists them all."""
    root = tmp_path / "VOC2007"
    entries = {
        "000001": {"size": (60, 80), "objects": [("dog", (10, 5, 40, 30), False), ("cat", (1, 1, 80, 60), True)]},
        "000002": {"size": (50, 70), "objects": [("person", (30, 10, 30, 40), False),  # xmax == xmin: 1 px
                                                 ("person", (40, 10, 20, 40), False),  # xmax < xmin
                                                 ("person", (9, 12, 9, 11), False),    # ymax < ymin
                                                 ("car", (5, 6, 25, 26), False)]},
        "000003": {"size": (40, 50), "objects": [("bus", (-5, 10, 60, 30), False),      # clipped
                                                 ("bus", (70, 10, 90, 30), False),      # outside
                                                 ("bus", (50, 35, 55, 38), False)]},    # its last column
        "000004": {"size": (30, 30), "objects": []},                                    # a negative
        "000005": {"image": b"this is not an image", "objects": [("dog", (1, 1, 5, 5), False)]},
        "000006": {"image": False, "objects": [("dog", (1, 1, 5, 5), False)]},          # missing image
        "000007": {"xml": "<annotation><object><name>dog</name>"},                      # malformed XML
        "000008": {"xml": False},                                                       # missing XML
        "000009": {"size": (40, 40), "image": "L", "objects": [("cow", (2, 3, 20, 30), False)]},
        "000010": {"size": (40, 40), "image": "RGBA", "ext": ".png", "objects": [("cow", (2, 3, 20, 30), False)]},
        "000011": {"image": _truncated_jpeg(tmp_path), "objects": [("dog", (1, 1, 5, 5), False)]},
        "000012": {"size": (40, 50), "xml_size": (100, 80), "objects": [("sheep", (10, 10, 20, 20), False)]},
        "000013": {"image": _jpeg_without_its_end(), "objects": [("dog", (1, 1, 5, 5), False)]},
    }
    write_voc_folder(root, entries, {"trainval": list(entries), "test": ["000001"]})
    return root


def test_edge_cases_load_end_to_end(edge_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(edge_folder, "trainval")
    assert source.class_names == VOC_CLASSES
    got = {e["image/filename"].decode(): e for e in examples(source)}
    assert sorted(got) == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "000009.jpg",
                           "000010.png", "000012.jpg"]
    assert source.num_examples == 7
    assert source.problems == {
        "bad image file": 3, "missing image file": 1, "malformed XML": 1, "missing annotation file": 1,
        "degenerate box": 2, "box clipped": 2, "box outside the image": 1, "size mismatch": 1,
    }
    # VOC's pixel numbers include both ends: xmin == xmax is one pixel (pixel 30, [29, 30] as
    # continuous edges), and a box reaching past the border from its last column keeps that column.
    two, three = got["000002.jpg"], got["000003.jpg"]
    np.testing.assert_allclose(two["objects/bbox"][0] * [50, 70, 50, 70], [10, 30, 40, 30], rtol=1e-6)
    assert len(two["objects/label"]) == 2 and len(three["objects/label"]) == 2
    np.testing.assert_allclose(three["objects/bbox"][1] * [40, 50, 40, 50], [35, 50, 38, 50], rtol=1e-6)

    one = got["000001.jpg"]
    assert one["image"].shape == (60, 80, 3) and one["image"].dtype == np.uint8
    np.testing.assert_array_equal(one["objects/label"], [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")])
    np.testing.assert_array_equal(one["objects/is_difficult"], [False, True])
    # TFDS's conversion: the 1-based numbers divided by the size, no offset.
    np.testing.assert_array_equal(one["objects/bbox"][0], np.float32([5 / 60, 10 / 80, 30 / 60, 40 / 80]))
    np.testing.assert_array_equal(got["000002.jpg"]["objects/label"], [VOC_CLASSES.index(c) for c in ("person", "car")])
    np.testing.assert_array_equal(got["000003.jpg"]["objects/bbox"][:1], np.float32([[10 / 40, 0, 30 / 40, 1]]))
    assert got["000004.jpg"]["objects/bbox"].shape == (0, 4)
    assert got["000009.jpg"]["image"].shape == (40, 40, 3)  # grayscale -> 3 channels
    assert got["000010.png"]["image"].shape == (40, 40, 3)  # RGBA -> 3 channels
    # A wrong <size> is overruled by the image file's own size.
    np.testing.assert_array_equal(got["000012.jpg"]["objects/bbox"], np.float32([[10 / 40, 10 / 50, 20 / 40, 20 / 50]]))

    text = caplog.text
    for name in ("000002.xml", "000003.xml", "000005.jpg", "000006.jpg", "000007.xml", "000008.xml",
                 "000011.jpg", "000012.xml", "000013.jpg"):
        assert name in text, name
    assert "examples; problems:" in text  # the summary line


def test_the_image_check_refuses_a_jpeg_cut_short_where_tensorflow_does():
    """A JPEG cut short by a few bytes (its end-of-image marker gone, or more): Pillow decodes
    those whole, so the check also walks the file's markers; where the end marker is missing it
    refuses the file exactly when TensorFlow's decoder does (training stopped at such a file,
    naming none). Baseline and progressive files of noise and of one colour, with trailing bytes
    after the end too."""
    import tensorflow as tf
    from PIL import Image

    from keras_frcnn.data.image_files import check_image

    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    agreed = refused = 0
    for pixels, options in itertools.product((noise, np.full_like(noise, 200)),
                                             ({}, {"progressive": True}, {"quality": 100})):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", **options)
        whole = buffer.getvalue()
        assert whole.endswith(b"\xff\xd9")
        for data in [whole, whole + b"\x00trailing\xff\xda junk"] + [whole[:-cut] for cut in (1, 2, 3, 9, 40)]:
            try:
                tf.io.decode_jpeg(data, channels=3)
                decodes = True
            except tf.errors.InvalidArgumentError:
                decodes = False
            try:
                check_image(io.BytesIO(data))
                passes = True
            except ValueError as error:
                passes = False
                assert "cut short" in str(error) or "corrupt" in str(error), error
            assert passes == decodes, (options, len(whole) - len(data))
            agreed += 1
            refused += not passes
        with pytest.raises(ValueError, match="JPEG file cut short .no end-of-image marker"):
            check_image(io.BytesIO(whole[:-2]))
    assert agreed == 42 and refused >= 12
    # (the one-colour baseline file without its end marker: Pillow decodes it whole, TensorFlow not;
    # one byte shorter only, both decode it)
    with pytest.raises(ValueError, match="JPEG file cut short"):
        check_image(io.BytesIO(_jpeg_without_its_end()))
    check_image(io.BytesIO(_jpeg_without_its_end() + b"\xff"))


def test_an_image_named_in_bytes_that_are_not_utf8_is_read(tmp_path):
    """A Linux file name in Latin-1 (``caf\\xe9.jpg``: Python's str of it holds a surrogate, which
    neither SQLite's text nor a string tensor takes): the check, its cache and the data set read
    it, the first time and from the cache."""
    root = os.fsencode(str(tmp_path))
    try:
        with open(os.path.join(root, b"caf\xe9.xml"), "w") as f:
            f.write(voc_xml("", 80, 60, [("dog", (10, 5, 40, 30), False)]).replace("<filename></filename>", ""))
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    pixels = write_image(os.fsdecode(os.path.join(root, b"caf\xe9.jpg")), 60, 80, fmt="PNG")
    write_image(str(tmp_path / "plain.jpg"), 60, 80, seed=1)
    (tmp_path / "plain.xml").write_text(voc_xml("plain.jpg", 80, 60, [("cat", (1, 1, 9, 9), False)]))
    for _ in range(2):  # (checked, then read from the check's cache)
        source = load_voc_folder(tmp_path, "all")
        got = {os.fsdecode(e["image/filename"]): e for e in examples(source)}
        assert sorted(got) == ["caf\udce9.jpg", "plain.jpg"] and source.problems == {}
        np.testing.assert_array_equal(got["caf\udce9.jpg"]["image"], pixels)


def test_conversion_matches_tfds_voc_builder(tmp_path):
    objects = [("dog", (48, 240, 195, 371), False), ("person", (8, 12, 352, 498), True),
               ("cat", (1, 1, 353, 500), False), ("bird", (100.5, 33.25, 120.75, 80), False)]
    write_voc_folder(tmp_path, {"000005": {"size": (500, 353), "objects": objects}}, {"trainval": ["000005"]})
    ours = examples(load_voc_folder(tmp_path, "trainval"))[0]
    theirs = list(tfds_voc._get_example_objects(os.path.join(tmp_path, "Annotations", "000005.xml")))
    expected = np.array([list(o["bbox"]) for o in theirs], np.float32)
    np.testing.assert_array_equal(ours["objects/bbox"], expected)
    np.testing.assert_array_equal(ours["objects/is_difficult"], [o["is_difficult"] for o in theirs])
    np.testing.assert_array_equal(ours["objects/label"], [VOC_CLASSES.index(o["label"]) for o in theirs])


def test_billion_laughs_is_refused(tmp_path):
    write_voc_folder(tmp_path, {"000001": {"xml": BILLION_LAUGHS}}, {"trainval": ["000001"]})
    with pytest.raises(DataError, match=r"000001\.xml.*refused"):
        load_voc_folder(tmp_path, "trainval")
    with pytest.raises(DataError, match="entity"):
        parse_voc_xml(os.path.join(tmp_path, "Annotations", "000001.xml"))


def test_class_names_found_sorted_or_given(tmp_path):
    entries = {"a": {"objects": [("zebra", (1, 1, 9, 9), False)]},
               "b": {"objects": [("apple", (1, 1, 9, 9), False), ("dog", (2, 2, 9, 9), False)]}}
    write_voc_folder(tmp_path, entries, {"train": ["a"], "test": ["b"]})
    # Found across all annotation files, so both splits agree on the labels.
    train, test = load_voc_folder(tmp_path, "train"), load_voc_folder(tmp_path, "test")
    assert train.class_names == test.class_names == ("apple", "dog", "zebra")
    assert examples(train)[0]["objects/label"].tolist() == [2]
    assert examples(test)[0]["objects/label"].tolist() == [0, 1]

    given = load_voc_folder(tmp_path, "test", classes=["dog ", "apple"])  # (names as every source takes them)
    assert given.class_names == ("dog", "apple") and given.objects_per_class == (1, 1)
    assert examples(given)[0]["objects/label"].tolist() == [1, 0]

    only_dog = load_voc_folder(tmp_path, "test", classes=["dog"])
    assert only_dog.problems == {"unknown class": 1}
    assert examples(only_dog)[0]["objects/label"].tolist() == [0]


def test_split_files_by_name(tmp_path):
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("a", "b", "c")}
    write_voc_folder(tmp_path, entries, {"train": ["a", "b"], "val": ["c"]})
    names = lambda s: [e["image/filename"].decode() for e in examples(s)]  # noqa: E731
    assert names(load_voc_folder(tmp_path, "train")) == ["a.jpg", "b.jpg"]
    assert names(load_voc_folder(tmp_path, "train+val")) == ["a.jpg", "b.jpg", "c.jpg"]
    assert names(load_voc_folder(tmp_path, None)) == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(DataError, match=r"trainval\.txt.*train"):
        load_voc_folder(tmp_path, "trainval")
    # Parts of a split file, as TFDS's split expressions take them (one file from an annotation tool).
    assert names(load_voc_folder(tmp_path, "train[:50%]+val")) == ["a.jpg", "c.jpg"]  # 1 of 2: halves up
    assert names(load_voc_folder(tmp_path, "train[1:]")) == ["b.jpg"]
    (tmp_path / "ImageSets" / "Main" / "notepad.txt").write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")  # BOM, CRLF
    assert names(load_voc_folder(tmp_path, "notepad")) == ["a.jpg", "b.jpg"]
    (tmp_path / "ImageSets" / "Main" / "notepad.txt").unlink()
    assert names(load_voc_folder(tmp_path, "train[-1:] + val[:100%]")) == ["b.jpg", "c.jpg"]
    with pytest.raises(DataError, match=r"split 'train\[:x\]': not a split name or a slice"):
        load_voc_folder(tmp_path, "train[:x]")
    (tmp_path / "ImageSets" / "Main" / "val.txt").unlink()
    with pytest.raises(DataError, match=r"splits here: \['train'\]; parts of one as in TFDS, e\.g\. train\[:90%\] and train\[90%:\]\)$"):
        load_voc_folder(tmp_path, "trainval")


def test_image_ids_with_spaces_and_per_class_split_files(tmp_path):
    """A split file's line is the image id, spaces and all (annotation tools name images after
    their files: "IMG 0001", "été 2"); a per-class file's "<id> <flag>" is its id; a line that reads
    both ways is the id of the annotation file that exists. The first token alone took "IMG 0001"
    for "IMG" ("annotation file is missing")."""
    ids = ["IMG 0001", "été 2", "写真", "plain", "IMG"]
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ids}
    write_voc_folder(tmp_path, entries, {"default": ids[:4]})
    with open(tmp_path / "ImageSets" / "Main" / "dog_default.txt", "w", encoding="utf-8") as f:
        f.write("IMG 0001  1\nété 2 -1\n写真 0\nplain\t1\n")
    names = lambda s: [e["image/filename"].decode() for e in examples(s)]  # noqa: E731
    whole = load_voc_folder(tmp_path, "default")
    assert names(whole) == ["IMG 0001.jpg", "été 2.jpg", "写真.jpg", "plain.jpg"] and not whole.problems
    assert names(load_voc_folder(tmp_path, "dog_default")) == ["IMG 0001.jpg", "été 2.jpg", "写真.jpg", "plain.jpg"]
    with open(tmp_path / "ImageSets" / "Main" / "flags.txt", "w", encoding="utf-8") as f:
        f.write("IMG 1\nIMG 0001 1\n")  # no "IMG 1.xml": the image IMG, flag 1
    assert names(load_voc_folder(tmp_path, "flags")) == ["IMG.jpg", "IMG 0001.jpg"]


def test_split_file_ids_written_with_their_image_suffix_are_the_ids(tmp_path):
    """A conversion script's split files list "a.jpg" where VOC lists "a": without the suffix the
    test split named no annotation file and was passed over, the run evaluating on a tenth of
    trainval without a word."""
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("a", "b", "c", "d", "e.png")}
    write_voc_folder(tmp_path, entries, {"trainval": ["a.jpg", "b.JPG", "e.png"], "test": ["c.jpg", "d"]})
    assert default_splits(tmp_path) == ("trainval", "test")
    names = lambda s: [e["image/filename"].decode() for e in examples(s)]  # noqa: E731
    assert names(load_voc_folder(tmp_path, "trainval")) == ["a.jpg", "b.jpg", "e.png.jpg"]  # (an id "e.png" stays)
    assert names(load_voc_folder(tmp_path, "test")) == ["c.jpg", "d.jpg"]


def test_split_files_named_as_annotation_tools_name_their_subsets(tmp_path):
    """CVAT's Pascal VOC export writes its subsets' names, Train.txt and Validation.txt; others
    write valid.txt. Read only by their exact lower-case names, such a folder was taken as one of no
    split files and its last tenth of annotation files held out, training on validation images."""
    entries = {f"f{i:02d}": {"objects": [("dog", (1, 1, 9, 9), False)]} for i in range(13)}
    write_voc_folder(tmp_path, entries, {"Train": [f"f{i:02d}" for i in range(10)],
                                         "Validation": ["f10", "f11", "f12"]})
    (tmp_path / "ImageSets" / "Main" / "dog_Train.txt").write_text("f00  1\n")  # (a per-class file)
    assert default_splits(tmp_path) == ("Train", "Validation")
    assert labelled_split(tmp_path) == "Train+Validation"
    names = lambda s: [e["image/filename"].decode() for e in examples(s)]  # noqa: E731
    assert names(load_voc_folder(tmp_path, "Validation")) == ["f10.jpg", "f11.jpg", "f12.jpg"]
    main = tmp_path / "ImageSets" / "Main"
    (main / "Validation.txt").rename(main / "valid.txt")
    (main / "Train.txt").rename(main / "train.txt")
    assert default_splits(tmp_path) == ("train", "valid")
    (main / "Test.txt").write_text("f12\n")  # a labelled test split: trained on train + valid
    assert default_splits(tmp_path) == ("train+valid", "Test")
    assert labelled_split(tmp_path) == "train+valid+Test"


def test_a_split_file_that_is_not_utf8_is_named(tmp_path):
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("été", "b")}
    write_voc_folder(tmp_path, entries, {"trainval": ["b"]})
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_bytes("été\nb\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"trainval\.txt: not UTF-8 text \(invalid continuation byte at byte 0\); save it as UTF-8"):
        load_voc_folder(tmp_path, "trainval")


def test_an_unlabelled_test_split_passed_over_for_a_tenth_of_trainval_says_so(tmp_path, caplog):
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in "abcd"}
    entries["t"] = {"xml": False}
    write_voc_folder(tmp_path, entries, {"trainval": list("abcd"), "test": ["t"]})
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        assert default_splits(tmp_path) == ("trainval[:-1]", "trainval[-1:]")
    assert "test.txt: none of its images has an annotation file in " in caplog.text
    assert "evaluating on trainval[-1:] instead" in caplog.text
    caplog.clear()  # Trained on beside a --voc-val-dir, the folder's own evaluation split is not used.
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        labelled_split(tmp_path)
    assert "test.txt" not in caplog.text


def test_an_image_of_another_suffix_is_checked_not_called_missing(tmp_path):
    """JPEGImages/a.tif where the annotation says a.jpg: "image file is missing" sent users looking
    for a file that is there. The id's file of another suffix is checked: a TIFF is named as a
    format TensorFlow does not decode, a JPEG saved as .jfif is read."""
    from PIL import Image

    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("a", "b", "c", "d")}
    write_voc_folder(tmp_path, entries, {"trainval": ["a", "b", "c", "d"]})
    images = tmp_path / "JPEGImages"
    (images / "d.jpg").rename(images / "D.JPG")  # (a folder made on Windows, read on Linux)
    Image.open(images / "a.jpg").save(images / "a.tif")
    (images / "a.jpg").unlink()
    (images / "b.jpg").rename(images / "b.jfif")
    # A phone photo with a depth map or gain map after it (Pillow: "MPO"): TensorFlow decodes the photo
    photo = Image.open(images / "c.jpg")
    photo.save(images / "c.jpg", format="MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    assert Image.open(images / "c.jpg").format == "MPO"
    source = load_voc_folder(tmp_path, "trainval")
    assert source.problems == {"bad image file": 1}
    assert [e["image/filename"].decode() for e in examples(source)] == ["b.jfif", "c.jpg", "D.JPG"]
    assert examples(source)[1]["image"].shape == (*photo.size[::-1], 3)


def test_a_voc2012_folder_trains_on_train_and_evaluates_on_val(tmp_path):
    # VOC 2012 ships train / val / trainval and no test.txt; its test archive adds a test.txt whose
    # images have no annotation files. Either way the folder's own splits are train -> val.
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("a", "b", "c")}
    entries["t"] = {"xml": False}
    write_voc_folder(tmp_path, entries, {"train": ["a", "b"], "val": ["c"], "trainval": ["a", "b", "c"]})
    assert default_splits(tmp_path) == ("train", "val")
    with open(tmp_path / "ImageSets" / "Main" / "test.txt", "w") as f:
        f.write("t\n")
    assert default_splits(tmp_path) == ("train", "val")
    with pytest.raises(DataError, match=r"split 'test': none of its 1 ids \('t'\) names an annotation file in \S+ "
                                        r"\(whose files are a\.xml, b\.xml \.\.\.\): ids that are not the annotation "
                                        r"files' names, or an unlabelled test set, as VOC 2012's; .*e\.g\. val"):
        load_voc_folder(tmp_path, "test")
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    choice = choose_data(parser.parse_args(["--voc-dir", str(tmp_path)]), Config())
    assert (choice.train_split, choice.test_split) == ("train", "val")
    # A labelled test split (VOC 2007) keeps trainval -> test; so does a folder with neither.
    write_voc_folder(tmp_path, {"t": {"objects": [("dog", (1, 1, 9, 9), False)]}}, {"test": ["t"]})
    assert default_splits(tmp_path) == ("trainval", "test")
    assert default_splits(tmp_path / "nowhere") == ("trainval", "test")


def test_a_folder_without_trainval_txt_trains_on_its_parts_and_reads_each_image_once(tmp_path, caplog):
    """train / val / test files and no trainval.txt: train+val -> test (before, trainval.txt was
    asked for and the run refused); an image listed in train and val, or twice in one file, is
    read once with a warning; a folder of train.txt alone holds a tenth of it out."""
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("a", "b", "c", "t")}
    write_voc_folder(tmp_path, entries, {"train": ["a", "b", "a"], "val": ["b", "c"], "test": ["t"]})
    assert default_splits(tmp_path) == ("train+val", "test")
    with caplog.at_level("WARNING"):
        source = load_voc_folder(tmp_path, "train+val")
    assert [e["image/filename"].decode() for e in examples(source)] == ["a.jpg", "b.jpg", "c.jpg"]
    assert "split 'train+val' lists 2 images again" in caplog.text
    for name in ("val", "test"):
        (tmp_path / "ImageSets" / "Main" / f"{name}.txt").unlink()
    assert default_splits(tmp_path) == ("train[:-1]", "train[-1:]")
    assert [e["image/filename"].decode() for e in examples(load_voc_folder(tmp_path, "train[-1:]"))] == ["b.jpg"]


def test_evaluation_images_that_are_training_images_are_warned_about(tmp_path, capsys):
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("a", "b", "c")}
    write_voc_folder(tmp_path, entries, {"trainval": ["a", "b"], "test": ["b", "c"], "held": ["c"]})
    warn_if_not_held_out(load_voc_folder(tmp_path, "trainval"), load_voc_folder(tmp_path, "test"))
    assert "warning: 1 of the 2 evaluation images are training images too" in capsys.readouterr().err
    warn_if_not_held_out(load_voc_folder(tmp_path, "trainval"), load_voc_folder(tmp_path, "held"))
    assert capsys.readouterr().err == ""


def test_image_checks_are_kept_per_file_version(tmp_path, monkeypatch, caplog):
    """A file checked once is not decoded again (COCO's 118k images: 83 s a start on 2 cores)
    until it changes; errors are kept too; a cache that cannot be written is passed over."""
    from keras_frcnn.data import image_files

    monkeypatch.setenv("KERAS_FRCNN_CACHE", str(tmp_path / "cache"))
    write_image(tmp_path / "a.jpg", 30, 40)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    paths = [str(tmp_path / name) for name in ("a.jpg", "b.jpg", "gone.jpg")]
    monkeypatch.setattr(image_files, "LONG_CHECK", 3)  # a long check says so first
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        first = image_files.check_images(paths)
    assert f"checking 3 images ({tmp_path}), once: the results are remembered in {tmp_path / 'cache'}" in caplog.text
    decoded = []
    check = image_files.check_image
    monkeypatch.setattr(image_files, "check_image", lambda path: decoded.append(path) or check(path))
    again = image_files.check_images(paths)
    assert decoded == [paths[2]]  # only the file that is not there (nothing to key it by)
    assert again[0] == first[0] == (30, 40, 1)
    assert [type(r).__name__ for r in again[1:]] == ["ValueError", "ValueError"]
    assert str(again[1]) == str(first[1]) and "corrupt" in str(again[1])
    write_image(tmp_path / "a.jpg", 50, 20)  # changed: checked again
    decoded.clear()
    assert image_files.check_images(paths)[0] == (50, 20, 1) and paths[0] in decoded
    # The cache keeps its newest rows (a cluster's scratch copies of a set each added rows for good).
    monkeypatch.setattr(image_files, "CACHE_ROWS", 2)
    write_image(tmp_path / "c.jpg", 30, 40)
    image_files.check_images([str(tmp_path / "c.jpg")])
    decoded.clear()
    image_files.check_images(paths[:2] + [str(tmp_path / "c.jpg")])
    assert decoded == [paths[1]]  # b.jpg's row, of the oldest two, went; a.jpg's was written again since
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("KERAS_FRCNN_CACHE", str(tmp_path / "not_a_folder"))
    assert image_files.check_images(paths)[0] == (50, 20, 1)


def test_an_image_check_interrupted_part_way_keeps_what_it_checked(tmp_path, monkeypatch):
    """The check's results went to the cache once, after the last file: a first check of a large
    set (COCO's 118k images: minutes) killed or interrupted near its end kept nothing, and the next
    run checked every file again. It writes as it goes now, a chunk at a time."""
    from keras_frcnn.data import image_files

    monkeypatch.setenv("KERAS_FRCNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(image_files, "CHECK_CHUNK", 4)
    paths = []
    for i in range(10):
        write_image(tmp_path / f"{i}.jpg", 30, 40)
        paths.append(str(tmp_path / f"{i}.jpg"))
    check = image_files.check_image

    def interrupted_at_the_ninth(path):
        if path == paths[8]:
            raise KeyboardInterrupt
        return check(path)

    monkeypatch.setattr(image_files, "check_image", interrupted_at_the_ninth)
    with pytest.raises(KeyboardInterrupt):
        image_files.check_images(paths, max_workers=1)
    decoded = []
    monkeypatch.setattr(image_files, "check_image", lambda path: decoded.append(path) or check(path))
    assert image_files.check_images(paths) == [(30, 40, 1)] * 10
    assert decoded == paths[8:]  # the two chunks done were kept


def test_bmp_files_tensorflow_would_misread_are_skipped_by_name(tmp_path, caplog):
    """TensorFlow's BMP decoder takes every file as 8-bit grey, 24-bit or 32-bit: a palette BMP
    would train as grey index values, a 1-bit one fail mid-training. Those are skipped, named;
    the BMPs it reads right are kept and decode as Pillow shows them."""
    from PIL import Image

    rgb = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    encoded = {}
    for name, mode in (("rgb", "RGB"), ("grey", "L"), ("palette", "P"), ("bits", "1")):
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, format="BMP")
        encoded[name] = buffer.getvalue()
    entries = {name: {"image": data, "ext": ".bmp", "size": (30, 40), "objects": [("dog", (1, 1, 9, 9), False)]}
               for name, data in encoded.items()}
    write_voc_folder(tmp_path, entries, {"trainval": list(entries)})
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path)
    assert source.problems == {"bad image file": 2}
    assert "palette.bmp: BMP with a colour palette" in caplog.text and "bits.bmp: BMP with 1-bit pixels" in caplog.text
    for example in examples(source):
        shown = Image.open(tmp_path / "JPEGImages" / example["image/filename"].decode()).convert("RGB")
        np.testing.assert_array_equal(example["image"], np.asarray(shown))


def test_strict_and_skip_empty(edge_folder, tmp_path):
    with pytest.raises(DataError, match=r"000007\.xml: malformed XML"):
        load_voc_folder(edge_folder, "trainval", strict=True)
    write_voc_folder(tmp_path, {"a": {"objects": []}, "b": {"objects": [("dog", (1, 1, 9, 9), False)]},
                                "c": {"objects": [("dog", (9, 1, 8, 9), False)]}},
                     {"trainval": ["a", "b"], "bad": ["c"]})
    with pytest.raises(DataError, match=r"c\.xml: degenerate box \(xmin, ymin, xmax, ymax\) = \(9\.0, 1\.0, 8\.0"):
        load_voc_folder(tmp_path, "bad", strict=True)
    assert load_voc_folder(tmp_path).num_examples == 2
    skipped = load_voc_folder(tmp_path, skip_empty=True)
    assert [e["image/filename"] for e in examples(skipped)] == [b"b.jpg"]


def test_encoded_images_on_request(tmp_path):
    pixels = write_voc_folder(tmp_path, {"a": {"size": (20, 30)}}, {"trainval": ["a"]})
    example = examples(load_voc_folder(tmp_path, decode_images=False))[0]
    assert isinstance(example["image"], bytes) and example["image"][:2] == b"\xff\xd8"  # JPEG
    assert pixels["a"].shape == (20, 30, 3)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_voc_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="Annotations: not found, and no XML file in"):
        load_voc_folder(tmp_path)


def test_voc_xml_helper_is_valid_voc():
    # The helper writes what TFDS's builder parses (pose, truncated, difficult present).
    assert "<difficult>1</difficult>" in voc_xml("a.jpg", 10, 10, [("dog", (1, 1, 5, 5), True)])


def test_class_names_differing_only_in_case_are_flagged(tmp_path, caplog):
    entries = {"a": {"objects": [("Tree", (1, 1, 9, 9), False)]}, "b": {"objects": [("tree", (1, 1, 9, 9), False)]},
               "c": {"objects": [("rock", (1, 1, 9, 9), False)]}}
    write_voc_folder(tmp_path, entries, {"trainval": ["a", "b", "c"]})
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path)
    assert source.class_names == ("Tree", "rock", "tree")
    assert "the class names ['Tree', 'tree'] differ only in case and are 2 classes" in caplog.text


def test_a_stray_name_among_voc_names_is_flagged(tmp_path, caplog):
    entries = {"a": {"objects": [("dog", (1, 1, 9, 9), False), ("cat", (1, 1, 9, 9), False)]},
               "b": {"objects": [("dgo", (1, 1, 9, 9), False), ("person", (1, 1, 9, 9), False)]}}
    write_voc_folder(tmp_path, entries, {"trainval": ["a", "b"]})
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path)
    assert source.class_names == ("cat", "dgo", "dog", "person")
    assert "['dgo']" in caplog.text
    voc = load_voc_folder(tmp_path, classes=VOC_CLASSES)
    assert voc.problems == {"unknown class": 1}


def test_no_usable_image_is_one_clear_error(tmp_path):
    """Images named otherwise than their annotations (or none at all): one error naming the
    folder and the first missing file, not a traceback deep in the pipeline."""
    write_voc_folder(tmp_path, {i: {"image": False, "objects": [("dog", (1, 1, 9, 9), False)]} for i in "ab"},
                     {"trainval": ["a", "b"], "test": []})
    with pytest.raises(DataError, match=r"\(trainval\): no usable example \(2 missing image file, e\.g\. "
                                        r".*JPEGImages/a\.jpg: image file is missing\); do .*JPEGImages's files "
                                        r"have the annotations' names\?"):
        load_voc_folder(tmp_path, "trainval")
    with pytest.raises(DataError, match=r"\(test\): no usable example listed$"):
        load_voc_folder(tmp_path, "test")


def test_boxes_drawn_on_a_turned_photo_as_shown_land_on_its_stored_pixels(tmp_path, caplog):
    """A phone photo stored 100 x 60 with an EXIF orientation: a tool that shows it turned writes
    the turned size and boxes; TensorFlow decodes the stored pixels, so the boxes are turned back
    (orientations 5-8, told by the stated size); where the frame cannot be told (3: the same
    size either way) or the size is the stored one, the boxes are taken as stored."""
    write_voc_folder(tmp_path, {}, {})
    stored_rect = np.float32([11 / 60, 61 / 100, 25 / 60, 90 / 100])  # rows 10-24, cols 60-89 as VOC numbers
    cases = {"o5": 5, "o6": 6, "o7": 7, "o8": 8, "o3": 3, "o6stored": 6}
    for image_id, orientation in cases.items():
        (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "JPEGImages" / f"{image_id}.jpg", orientation)
        if image_id == "o6stored":  # drawn on the stored pixels: the stored size and rectangle
            (height, width), (r0, c0, r1, c1) = (60, 100), (10, 60, 24, 89)
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}.jpg", width, height, [("dog", (c0 + 1, r0 + 1, c1 + 1, r1 + 1), False)]))
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(cases))
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path, classes=["dog"])
    got = {e["image/filename"].decode(): e["objects/bbox"][0] for e in examples(source)}
    for image_id in ("o5", "o6", "o7", "o8", "o6stored"):
        np.testing.assert_allclose(got[f"{image_id}.jpg"], stored_rect, atol=1e-6, err_msg=image_id)
    # Orientation 3 shows the image upside down at the same size: its boxes are taken as stored.
    np.testing.assert_allclose(got["o3.jpg"], [(60 - 24) / 60, (100 - 89) / 100, (60 - 10) / 60, (100 - 60) / 100],
                               atol=1e-6)
    assert source.problems == {"EXIF orientation": 5}
    assert "o6.xml: <size> 60 x 100 (w x h) is o6.jpg as shown (EXIF orientation 6; stored 100 x 60); " \
           "boxes turned onto the stored pixels" in caplog.text
    assert "o3.jpg: EXIF orientation 3: viewers show this image mirrored or turned" in caplog.text


def test_a_turned_square_photo_cannot_tell_its_frame_and_says_so(tmp_path, caplog):
    """A square photo turned by its EXIF orientation (5-8) has the same size either way: its boxes
    are taken as stored, with the warning the other undecidable frames get."""
    write_voc_folder(tmp_path, {}, {})
    (height, width), (r0, c0, r1, c1) = write_turned_photo(tmp_path / "JPEGImages" / "sq.jpg", 6, stored=(80, 80))
    (tmp_path / "Annotations" / "sq.xml").write_text(
        voc_xml("sq.jpg", width, height, [("dog", (c0 + 1, r0 + 1, c1 + 1, r1 + 1), False)]))
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("sq")
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path, classes=["dog"])
    (example,) = examples(source)
    np.testing.assert_allclose(example["objects/bbox"], [[r0 + 1, c0 + 1, r1 + 1, c1 + 1]] / np.float32(80), atol=1e-6)
    assert source.problems == {"EXIF orientation": 1}
    assert "sq.jpg: EXIF orientation 6: viewers show this image turned by 90 degrees" in caplog.text


def test_large_photos_are_read_and_those_tensorflow_cannot_decode_are_named(tmp_path, monkeypatch):
    """A 108-megapixel phone photo drew Pillow's "could be decompression bomb DOS attack" warning and
    a 200-megapixel one was "corrupt or unreadable"; Pillow's limit is not applied now, and an image
    over what TensorFlow's JPEG decoder takes is skipped with its size (both limits scaled down here)."""
    import warnings

    from PIL import Image

    from keras_frcnn.data import image_files

    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)], "size": size}
               for i, size in (("a", (60, 80)), ("b", (80, 100)), ("c", (40, 50)))}
    write_voc_folder(tmp_path, entries, {"trainval": ["a", "b", "c"]})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # "a" and "b" are bombs to Pillow
    monkeypatch.setattr(image_files, "MAX_PIXELS", 60 * 80)  # "b" is too large to decode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = load_voc_folder(tmp_path, "trainval")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own setting is left as it was
    assert source.problems == {"bad image file": 1}
    assert [e["image/filename"].decode() for e in examples(source)] == ["a.jpg", "c.jpg"]
    with pytest.raises(ValueError, match=r"100 x 80 pixels \(0 megapixels\), more than the 0 read \(TensorFlow"):
        image_files.check_image(tmp_path / "JPEGImages" / "b.jpg")
    # Any format: a PNG stating a huge size in a small file (a decompression bomb) is refused before
    # Pillow allocates its pixels.
    Image.new("RGB", (100, 80)).save(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match=r"100 x 80 pixels .*more than the 0 read"):
        image_files.check_image(tmp_path / "bomb.png")


def test_pngs_tensorflow_refuses_are_skipped_by_name_and_those_it_reads_are_kept(tmp_path):
    """A PNG cut short after its pixels (no complete IEND: a cut download) or with a bad pixel-chunk
    checksum passed Pillow's check and then stopped training mid-stage in TensorFlow's decoder,
    naming no file; each is refused by the check now, exactly where TensorFlow refuses it (a bad
    checksum in an ancillary chunk, which libpng drops, still passes)."""
    import struct
    import zlib

    import tensorflow as tf

    from keras_frcnn.data import image_files

    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)], "size": (40, 50)} for i in "abcd"}
    write_voc_folder(tmp_path, entries, {"trainval": list("abcd")})
    folder = tmp_path / "JPEGImages"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)
    good = tf.io.encode_png(pixels).numpy()
    iend = good.rindex(b"IEND") - 4
    idat = good.index(b"IDAT") - 4
    chunk = lambda kind, data, crc=None: (struct.pack(">I", len(data)) + kind + data
                                          + struct.pack(">I", zlib.crc32(kind + data) if crc is None else crc))
    variants = {
        "a": good[:-1],  # cut in IEND's checksum
        "b": good[:idat + 20] + bytes([good[idat + 20] ^ 1]) + good[idat + 21:],  # a pixel byte changed
        "c": good[:iend] + chunk(b"tEXt", b"Comment\0x", crc=1) + good[iend:],  # ancillary: libpng drops it
        "d": good + b"trailing bytes",  # after IEND: ignored by both
    }
    for name, data in variants.items():
        (folder / f"{name}.jpg").unlink()
        (folder / f"{name}.png").write_bytes(data)
        xml = tmp_path / "Annotations" / f"{name}.xml"
        xml.write_text(xml.read_text().replace(f"{name}.jpg", f"{name}.png"))
    decodes = {}
    for name, data in variants.items():
        try:
            tf.io.decode_image(data, channels=3)
            decodes[name] = True
        except tf.errors.InvalidArgumentError:
            decodes[name] = False
    assert decodes == {"a": False, "b": False, "c": True, "d": True}  # what TensorFlow reads
    with pytest.raises(ValueError, match="PNG file cut short"):
        image_files.check_image(folder / "a.png")
    with pytest.raises(ValueError, match="'IDAT' chunk at byte 33 fails its checksum"):
        image_files.check_image(folder / "b.png")
    source = load_voc_folder(tmp_path, "trainval")
    assert source.problems == {"bad image file": 2}
    assert [e["image/filename"].decode() for e in examples(source)] == ["c.png", "d.png"]


def test_files_pillow_reads_whole_and_tensorflow_refuses_are_refused_by_the_check(tmp_path):
    """A fuzzing run (340k corrupted files) found Pillow and TensorFlow parting ways on whole-looking
    GIF, BMP and PNG files; each stopped training in the tf.data graph, naming no file. The check
    decodes those formats with the pipelines' own decoder now, so each is refused, named; and a GIF
    whose first picture is smaller than its screen is sized as TensorFlow decodes it (Pillow gives
    the screen: boxes would have been scaled by the wrong height)."""
    import struct

    from PIL import Image

    from keras_frcnn.data.image_files import check_image

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)

    def saved(fmt, **options):
        buffer = io.BytesIO()
        image = Image.fromarray(pixels)
        (image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) if fmt == "GIF" else image).save(
            buffer, format=fmt, **options)
        return buffer.getvalue()

    bmp, gif, png = saved("BMP"), saved("GIF"), saved("PNG")
    palette = 3 * 2 ** ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0
    descriptor = 13 + palette  # after the header and the global colour table: extensions, then the picture
    while gif[descriptor] == 0x21:
        descriptor += 2
        while gif[descriptor]:
            descriptor += gif[descriptor] + 1
        descriptor += 1
    assert gif[descriptor] == 0x2C
    variants = {
        "padded.bmp": bmp + b"\0\0",  # as some writers pad a BMP: TensorFlow wants its exact size
        "stray.gif": gif[:descriptor] + b"\0" + gif[descriptor:],  # a stray byte between blocks
        "short.gif": gif[:-2],  # its last block's end and its trailer gone
        "two_headers.png": png[:33] + png[8:33] + png[33:],  # IHDR twice
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        with Image.open(tmp_path / name) as image:
            image.load()  # Pillow reads each whole
        with pytest.raises(ValueError, match=r"TensorFlow does not decode it \((Input size should match|Invalid "
                                             r"GIF data|Invalid PNG)"):
            check_image(tmp_path / name)
    # A GIF's screen taller than its picture: the size is the decoded picture's, 48 x 64.
    tall = gif[:8] + struct.pack("<H", 100) + gif[10:]
    (tmp_path / "tall.gif").write_bytes(tall)
    with Image.open(tmp_path / "tall.gif") as image:
        assert image.size == (64, 100)
    assert check_image(tmp_path / "tall.gif")[:2] == (48, 64)
    # GIFs whose pictures TensorFlow's decoder would hold past the memory of the largest image read
    # (a 3.8 MB one of 80 8000 x 8000 pictures took 5.9 GB): refused before a pixel is decoded.
    (tmp_path / "many.gif").write_bytes(gif_stating([(8000, 8000)] * 9))
    with pytest.raises(ValueError, match="a GIF of 9 pictures, 576 megapixels in all"):
        check_image(tmp_path / "many.gif")
    (tmp_path / "past_its_screen.gif").write_bytes(gif_stating([(64, 48), (30000, 30000)]))
    with pytest.raises(ValueError, match="a GIF picture of 30000 x 30000 pixels"):
        check_image(tmp_path / "past_its_screen.gif")
    # A BMP's width is signed: below 0 it is corrupt (Pillow reads it unsigned, 4 billion pixels wide).
    (tmp_path / "negative.bmp").write_bytes(bmp[:18] + struct.pack("<i", -64) + bmp[22:])
    with pytest.raises(ValueError, match="a BMP whose header states a width of -64: corrupt"):
        check_image(tmp_path / "negative.bmp")
    # The whole files are read as before.
    for name, data in (("whole.bmp", bmp), ("whole.gif", gif), ("whole.png", png)):
        (tmp_path / name).write_bytes(data)
        assert check_image(tmp_path / name) == (48, 64, 1)


def test_folders_as_annotation_tools_write_them(tmp_path):
    """LabelImg and Roboflow's "Pascal VOC" export put each XML beside its image, Label Studio's
    VOC export names the image folder images/, and none writes split files (CVAT writes
    default.txt): each was "Annotations (or JPEGImages) not found" or "split file not found
    (splits here: [])". They are read, and without VOC's split files a folder trains on the
    split all[:90%] (every annotation file, sorted by id) and evaluates on all[90%:]. CVAT's
    labelmap.txt gives the classes and their order."""
    import shutil

    entries = {f"img_{i:02d}_jpg.rf.{i}": {"objects": [("dog", (1, 1, 9, 9), False)]} for i in range(10)}
    ids = sorted(entries)
    write_voc_folder(tmp_path / "voc", entries, {"trainval": ids[:8], "test": ids[8:]})
    flat, studio, cvat = tmp_path / "flat", tmp_path / "studio", tmp_path / "cvat"
    shutil.copytree(tmp_path / "voc", studio)
    shutil.rmtree(studio / "ImageSets")
    (studio / "JPEGImages").rename(studio / "images")
    shutil.copytree(tmp_path / "voc", cvat)
    (cvat / "ImageSets" / "Main" / "trainval.txt").rename(cvat / "ImageSets" / "Main" / "default.txt")
    (cvat / "ImageSets" / "Main" / "test.txt").unlink()
    flat.mkdir()
    for name in os.listdir(tmp_path / "voc" / "JPEGImages"):
        shutil.copy(tmp_path / "voc" / "JPEGImages" / name, flat / name)
    for name in os.listdir(tmp_path / "voc" / "Annotations"):
        shutil.copy(tmp_path / "voc" / "Annotations" / name, flat / name)

    parser = argparse.ArgumentParser()
    add_data_args(parser)
    for folder in (flat, studio, cvat):
        assert default_splits(folder) == ("all[:90%]", "all[90%:]")
        choice = choose_data(parser.parse_args(["--voc-dir", str(folder)]), Config())
        train = load_voc_folder(folder, choice.train_split)
        test = load_voc_folder(folder, choice.test_split)
        assert not train.problems and not test.problems, folder
        assert [e["image/filename"].decode() for e in examples(test)] == [ids[9] + ".jpg"]
        assert len(examples(train)) == 9 and train.class_names == VOC_CLASSES
    # VOC's own layout keeps its splits; "all" is every annotation file there too.
    assert default_splits(tmp_path / "voc") == ("trainval", "test")
    assert len(examples(load_voc_folder(tmp_path / "voc", "all"))) == 10
    with pytest.raises(DataError, match=r"split file not found \(splits here: \[\]; 'all' is every annotation"):
        load_voc_folder(studio, "trainval")
    # CVAT's labelmap.txt: its labels, in the project's order (background left out), are the classes;
    # a name not in it is an unknown class. A labelmap of VOC's names keeps VOC's order.
    (cvat / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nzebra:250,50,83::\n"
                                       "dog:51,221,255::\ncat:52,209,183::\n")
    labelled = load_voc_folder(cvat, "all")
    assert labelled.class_names == ("zebra", "dog", "cat") and not labelled.problems
    assert {int(label) for e in examples(labelled) for label in e["objects/label"]} == {1}
    (cvat / "labelmap.txt").write_text("background:0,0,0::\nzebra:250,50,83::\ncat:52,209,183::\n")
    assert load_voc_folder(cvat, "all").problems == {"unknown class": 10}
    assert common_class_names([cvat, flat]) == ("zebra", "cat")  # (with --voc-val-dir or more folders)
    (cvat / "labelmap.txt").write_text("background:0,0,0::\ncat:1,2,3::\ndog:4,5,6::\n")
    assert load_voc_folder(cvat, "all").class_names == VOC_CLASSES
    # Under ten images a tenth rounds to none: the last one is held out.
    write_voc_folder(tmp_path / "few", {i: entries[i] for i in ids[:4]}, {})
    assert default_splits(tmp_path / "few") == ("all[:-1]", "all[-1:]")
    assert len(examples(load_voc_folder(tmp_path / "few", "all[-1:]"))) == 1


def test_a_filename_with_the_folder_it_was_annotated_in_finds_its_image(tmp_path):
    """<filename>images/photo 1.jpg</filename> or a Windows path, where the XML is not named after
    the image: the image was "missing"; the name's last part is looked for."""
    entries = {"x1": {"objects": [("dog", (1, 1, 9, 9), False)], "image": False,
                      "xml": voc_xml("images/photo 1.jpg", 80, 60, [("dog", (1, 1, 9, 9), False)])},
               "x2": {"objects": [("dog", (1, 1, 9, 9), False)], "image": False,
                      "xml": voc_xml("C:\\Users\\me\\data\\p2.jpg", 80, 60, [("dog", (1, 1, 9, 9), False)])}}
    write_voc_folder(tmp_path, entries, {"trainval": ["x1", "x2"]})
    write_image(str(tmp_path / "JPEGImages" / "photo 1.jpg"), 60, 80)
    write_image(str(tmp_path / "JPEGImages" / "p2.jpg"), 60, 80)
    source = load_voc_folder(tmp_path, "trainval")
    assert not source.problems
    assert [e["image/filename"].decode() for e in examples(source)] == ["photo 1.jpg", "p2.jpg"]


def test_two_annotation_files_of_one_image_are_one_example(tmp_path, caplog):
    """``000001 - Copy.xml`` beside ``000001.xml``, both naming ``000001.jpg`` (a copy made in a
    file manager; found through its <filename>): one example of the image's objects, the copy's
    repeats kept once and the copy's own additions kept, warned with both files named."""
    boxes = [("cat", (10, 10, 30, 30), False)]
    write_voc_folder(tmp_path, {"000001": {"objects": boxes}, "000002": {"objects": boxes}}, {})
    copy = voc_xml("000001.jpg", 80, 60, boxes + [("dog", (40, 20, 70, 50), False)])
    (tmp_path / "Annotations" / "000001 - Copy.xml").write_text(copy)
    with caplog.at_level(logging.WARNING):
        source = load_voc_folder(tmp_path, split=None)
    assert source.num_examples == 2 and source.num_objects == 3
    assert source.problems["image listed twice"] == 1
    annotations = tmp_path / "Annotations"
    assert (f"000001.jpg: listed 2 times ({annotations / '000001.xml'}, {annotations / '000001 - Copy.xml'}); "
            "read once, with every listing's objects: 2 (1 repeated exactly, kept once)") in caplog.text
    assert sorted(len(example["objects/label"]) for example in examples(source)) == [1, 2]


def test_split_ids_that_lost_their_leading_zeros_are_the_annotation_files_ids(tmp_path, caplog):
    """A split file opened and saved in a spreadsheet, "1" for 000001: read as 000001 (it stopped
    with an error about "an unlabelled test set"), warned once; an id of digits whose number names
    no annotation file, or two (1.xml beside 000001.xml), is left as written."""
    entries = {i: {"objects": [("dog", (1, 1, 9, 9), False)]} for i in ("000001", "000002", "000010", "7", "07")}
    write_voc_folder(tmp_path, entries, {"trainval": ["1", "2", "10", "7", "000003"]})
    with caplog.at_level(logging.WARNING, logger="keras_frcnn.data"):
        source = load_voc_folder(tmp_path, "trainval")
    assert "trainval.txt: 3 ids written without their leading zeros (e.g. 1 for 000001.xml" in caplog.text
    assert [e["image/filename"].decode() for e in examples(source)] == ["000001.jpg", "000002.jpg", "000010.jpg",
                                                                      "7.jpg"]
    assert source.problems == {"missing annotation file": 1}  # (000003)


def test_names_in_the_other_unicode_form_are_found(tmp_path):
    """macOS writes file names decomposed (NFD: e and its accent), while a split file typed, or an
    annotation written, elsewhere has the composed é (NFC): the files were reported missing."""
    import unicodedata

    nfc, nfd = "café", unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    entries = {nfd: {"objects": [("dog", (1, 1, 9, 9), False)]}, "b": {"objects": [("dog", (1, 1, 9, 9), False)]},
               "crème": {"objects": [("dog", (1, 1, 9, 9), False)]}}
    write_voc_folder(tmp_path, entries, {"trainval": [nfc, "b", "crème"]})
    images = tmp_path / "JPEGImages"
    (images / "crème.jpg").rename(images / unicodedata.normalize("NFD", "crème.jpg"))  # (copied apart)
    source = load_voc_folder(tmp_path, "trainval")
    assert source.problems == {} and source.num_examples == 3
