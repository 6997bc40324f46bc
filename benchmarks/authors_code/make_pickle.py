"""Write a class-folder CIFAR-10 copy (train/<class>/*.jpg, test/<class>/...) as torchvision's
``cifar-10-batches-py``, decoded with PIL as longtail decodes it, so the TDE authors' code reads
exactly the pixels our runs read.

    python make_pickle.py ../shared/data/cifar10-jpeg /tmp/cifar/cifar-10-batches-py
"""

import os
import pickle
import sys

import numpy as np
from PIL import Image


def load(root: str, split: str, classes: list[str]) -> tuple[np.ndarray, list[int]]:
    data, labels = [], []
    for c, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        for f in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, f)) as im:
                data.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(c)
    # CIFAR's layout: one row per image, the R plane, then G, then B.
    return np.stack(data).transpose(0, 3, 1, 2).reshape(len(data), -1), labels


def main(src: str, dst: str) -> None:
    classes = sorted(os.listdir(os.path.join(src, "train")))  # alphabetical = CIFAR's order
    os.makedirs(dst, exist_ok=True)
    x, y = load(src, "train", classes)
    for i in range(5):
        with open(os.path.join(dst, f"data_batch_{i + 1}"), "wb") as f:
            pickle.dump({"data": x[i * 10000:(i + 1) * 10000],
                         "labels": y[i * 10000:(i + 1) * 10000]}, f)
    x, y = load(src, "test", classes)
    with open(os.path.join(dst, "test_batch"), "wb") as f:
        pickle.dump({"data": x, "labels": y}, f)
    with open(os.path.join(dst, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": classes}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
