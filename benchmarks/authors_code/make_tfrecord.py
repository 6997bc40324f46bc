"""Write the images of one longtail run as the TFRecords the logit-adjustment authors' code reads
(google-research ``logit_adjustment/``: ``cifar10-lt_train.tfrecord``, ``cifar10_test.tfrecord``,
``cifar10-lt_base_probs.txt``), so their code trains on exactly the images and labels our run
trained on. Needs tensorflow, numpy and Pillow (their environment, not longtail's):

    python make_tfrecord.py --split RUN/split.json --root ../shared/data/cifar10-jpeg --out DIR

The images are decoded with PIL as longtail decodes them and stored as their records expect: the
raw 32x32x3 uint8 bytes (``image/encoded``, read with ``tf.io.decode_raw``) and an int64 label
(``image/class/label``). Their own TFRecords (a subset of their making) are not used: the point
is the same images for both codes.

The training records are written in a seeded random order (``--order-seed``), not class by class:
their loader shuffles through a buffer of 10,000 records, smaller than the 12,406 of the set, so
from a class-sorted file the rarest classes would come only at the end of every epoch.
"""

import argparse
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


def class_folder(root: str) -> tuple[list[str], list[str], list[int]]:
    """Classes sorted by name, files sorted within a class: longtail's ``scan_class_folder``."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, name))
                       if os.path.splitext(f)[1].lower() in SUFFIXES)
        paths += [os.path.join(root, name, f) for f in files]
        labels += [label] * len(files)
    return classes, paths, labels


def write(path: str, paths: list[str], labels: list[int]) -> None:
    with tf.io.TFRecordWriter(path + ".tmp") as out:
        for p, y in zip(paths, labels):
            with Image.open(p) as im:
                pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if pixels.shape != (32, 32, 3):
                raise SystemExit(f"{p}: expected a 32x32 RGB image, got {pixels.shape}")
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[pixels.tobytes()])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[y])),
            }
            out.write(tf.train.Example(features=tf.train.Features(feature=feature))
                      .SerializeToString())
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", required=True, help="a longtail run's split.json")
    parser.add_argument("--root", required=True, help="class-folder CIFAR-10 (train/, test/)")
    parser.add_argument("--out", required=True, help="folder for the records (their data_home)")
    parser.add_argument("--order-seed", type=int, default=0,
                        help="seed of the training records' order in the file (default 0)")
    args = parser.parse_args()
    with open(args.split) as f:
        split = json.load(f)
    classes, paths, labels = class_folder(os.path.join(args.root, "train"))
    if classes != split["classes"]:
        raise SystemExit(f"{args.split}: classes {split['classes']} are not {classes}")
    order = np.random.default_rng(args.order_seed).permutation(split["train"])
    train_paths = [paths[i] for i in order]
    train_labels = [labels[i] for i in order]
    counts = np.bincount(train_labels, minlength=len(classes))
    if counts.tolist() != split["counts"]:
        raise SystemExit(f"{args.split}: counts {split['counts']} are not {counts.tolist()}")
    test_classes, test_paths, test_labels = class_folder(os.path.join(args.root, "test"))
    if test_classes != classes:
        raise SystemExit(f"{args.root}/test: classes {test_classes} are not {classes}")
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "cifar10-lt_train.tfrecord"), train_paths, train_labels)
    write(os.path.join(args.out, "cifar10_test.tfrecord"), test_paths, test_labels)
    # Their base probabilities: the training class frequencies, one per line.
    np.savetxt(os.path.join(args.out, "cifar10-lt_base_probs.txt"), counts / counts.sum())
    print(f"{args.out}: {len(train_paths)} training images {counts.tolist()}, "
          f"{len(test_paths)} test images")


if __name__ == "__main__":
    main()
