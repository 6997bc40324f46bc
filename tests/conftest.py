"""Shared fixtures of the foundation tests: a tiny finished quick-start run, a fake CIFAR root
in the standard python-batch format, and a small class-folder image tree.

Everything is built under pytest's temporary directories; nothing is downloaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

# The tests use tiny tensors: one intra-op thread is as fast, and on a busy shared CPU it avoids
# the oversubscription that makes a 0.6 s training run take 10 s. Results do not depend on it.
torch.set_num_threads(1)

CIFAR_TRAIN_PER_CLASS = 6  # per class, over all training batches
CIFAR_TEST_PER_CLASS = 2


def cifar_pixel(n: int, h: int, w: int, c: int) -> int:
    """A pixel value that differs between neighbouring images, rows, columns and channels, so a
    layout mix-up (e.g. HWC read as CHW) cannot go unnoticed."""
    return (n * 31 + h * 7 + w * 3 + c * 101) % 256


def cifar_row(n: int) -> np.ndarray:
    """Image ``n`` in CIFAR's on-disk form: 3072 bytes, the red 32×32 plane row by row, then
    green, then blue (written with explicit loops, independently of the reader)."""
    row = np.zeros(3072, dtype=np.uint8)
    for c in range(3):
        for h in range(32):
            for w in range(32):
                row[c * 1024 + h * 32 + w] = cifar_pixel(n, h, w, c)
    return row


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the protocol of the real CIFAR batches


def make_fake_cifar(root: Path, name: str = "cifar10") -> dict:
    """Write a fake CIFAR-10 or CIFAR-100 (10 classes are enough for the reader) under ``root``.

    Returns what was written: {"train": (global image ids, labels), "test": (...), "classes"}.
    Image ``k`` of the training pool has pixels ``cifar_pixel(k, ...)``; test images use ids from
    1000 on.
    """
    num_classes = 10
    classes = [f"class_{c}" for c in range(num_classes)]
    # Labels interleaved (0, 1, ..., 9, 0, 1, ...) as in the real files, which are not sorted.
    train_labels = [k % num_classes for k in range(num_classes * CIFAR_TRAIN_PER_CLASS)]
    test_ids = list(range(1000, 1000 + num_classes * CIFAR_TEST_PER_CLASS))
    test_labels = [(k - 1000) % num_classes for k in test_ids]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        write_pickle(folder / "batches.meta", {"label_names": classes, "num_cases_per_batch": 12})
        ids = list(range(len(train_labels)))
        chunks = np.array_split(np.array(ids), 5)  # data_batch_1 .. data_batch_5
        for i, chunk in enumerate(chunks, start=1):
            write_pickle(folder / f"data_batch_{i}", {
                "batch_label": f"training batch {i} of 5",
                "labels": [train_labels[k] for k in chunk],
                "data": np.stack([cifar_row(int(k)) for k in chunk]),
            })
        write_pickle(folder / "test_batch", {
            "labels": test_labels, "data": np.stack([cifar_row(k) for k in test_ids])})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        write_pickle(folder / "meta", {"fine_label_names": classes,
                                       "coarse_label_names": ["everything"]})
        write_pickle(folder / "train", {
            "fine_labels": train_labels, "coarse_labels": [0] * len(train_labels),
            "data": np.stack([cifar_row(k) for k in range(len(train_labels))])})
        write_pickle(folder / "test", {
            "fine_labels": test_labels, "coarse_labels": [0] * len(test_labels),
            "data": np.stack([cifar_row(k) for k in test_ids])})
    return {"train": (list(range(len(train_labels))), train_labels),
            "test": (test_ids, test_labels), "classes": classes}


@pytest.fixture(scope="session")
def fake_cifar10(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar10_root")
    return root, make_fake_cifar(root, "cifar10")


@pytest.fixture(scope="session")
def fake_cifar100(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar100_root")
    return root, make_fake_cifar(root, "cifar100")


# ------------------------------------------------------------------------------------------------
# A class-folder tree: root/{train,test}/<class>/<image>, 8×8 RGB images.

TREE_CLASSES = ["cat", "dog", "frog"]  # sorted, as the scanner orders them
TREE_TRAIN_COUNTS = [5, 4, 3]
TREE_TEST_COUNTS = [2, 2, 2]


def tree_image(split: str, label: int, index: int) -> np.ndarray:
    """The exact pixels of one image of the tree (uint8, 8×8×3): a smooth ramp (so that JPEG
    keeps it close) from an offset that differs between images."""
    offset = (0 if split == "train" else 100) + 30 * label + 5 * index
    h = np.arange(8).reshape(-1, 1, 1)
    w = np.arange(8).reshape(1, -1, 1)
    c = np.arange(3).reshape(1, 1, -1)
    return (offset + 4 * h + 2 * w + 20 * c).astype(np.uint8)  # at most 247: no wrap-around


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PNG images (lossless, so pixels can be compared) plus one JPEG per training class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("image_tree")
    for split, counts in (("train", TREE_TRAIN_COUNTS), ("test", TREE_TEST_COUNTS)):
        for label, (name, count) in enumerate(zip(TREE_CLASSES, counts)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = tree_image(split, label, i)
                if split == "train" and i == count - 1:
                    Image.fromarray(pixels).save(folder / f"img_{i}.jpg", quality=95)
                else:
                    Image.fromarray(pixels).save(folder / f"img_{i}.png")
            (folder / "notes.txt").write_text("not an image: must be ignored\n")
    return root


# ------------------------------------------------------------------------------------------------
# A tiny finished quick-start run (digits-LT, 2 epochs, CPU), shared by the train/CLI tests.

TINY_OVERRIDES = ["train.epochs=2", "train.device=cpu"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(run directory, returned test metrics). Tests must not modify it: copy it first."""
    from longtail.config import load_config
    from longtail.train import train

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    metrics = train(load_config("quickstart", TINY_OVERRIDES), run_dir, progress=False)
    return run_dir, metrics


@pytest.fixture(scope="session")
def tiny_causal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished De-confound-TDE run (causal_norm head, 3 quick-start epochs) with its saved
    outputs and sweep cache. Tests must not modify it: copy it first (``shutil.copytree`` keeps
    file times, so the sweep cache stays valid in the copy)."""
    from longtail.config import load_config
    from longtail.train import train

    run_dir = tmp_path_factory.mktemp("causal") / "run"
    train(load_config("quickstart", ["train.epochs=3", "train.device=cpu",
                                     "model.head=causal_norm"]), run_dir, progress=False)
    return run_dir


def load_script(relative: str):  # noqa: ANN201
    """A benchmarks/ script (not a package module) imported by path, for its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
