"""The large-image path (ImageNet-LT style list files, DataLoader, torchvision transforms) end to
end on a generated tree of tiny JPEGs, with the shipped ImageNet-LT config; and bad list files,
each a one-line error naming the file, line or value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from longtail.cli import main
from longtail.config import load_config
from longtail.data import DataError, build_data
from longtail.models import build_model
from longtail.train import build_optimizer, train

TRAIN_COUNTS = [6, 4, 2]  # long-tailed already: the config keeps it as is (profile none)
TEST_PER_CLASS = 2
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def _write_tree(root: Path) -> dict[str, Path]:
    """root/images/c<k>/<split>_<i>.jpg (40×40, a class colour plus noise) and list files."""
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, colour in enumerate(COLOURS):
        folder = root / "images" / f"c{label}"
        folder.mkdir(parents=True)
        counts = {"train": TRAIN_COUNTS[label], "val": 1, "test": TEST_PER_CLASS}
        for split, count in counts.items():
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{split}_{i}.jpg")
                lists[split].append(f"images/c{label}/{split}_{i}.jpg {label}")
    paths = {}
    for split, lines in lists.items():
        paths[split] = root / f"{split}.txt"
        paths[split].write_text("# path label\n" + "\n".join(lines) + "\n")
    return paths


def _overrides(root: Path, lists: dict[str, Path]) -> list[str]:
    """The shipped ImageNet-LT config, shrunk to the tiny tree and one CPU epoch."""
    return [f"data.root={root}", f"data.train_list={lists['train']}",
            f"data.val_list={lists['val']}", f"data.test_list={lists['test']}",
            "data.image_size=32", "data.num_workers=1", "model.backbone=small_cnn",
            "train.epochs=1", "train.batch_size=4", "train.precision=fp32",
            "train.channels_last=false", "train.device=cpu", "train.log_every=0"]


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "data"
    return root, _write_tree(root)


def test_list_dataset_trains_end_to_end(tree: tuple[Path, dict[str, Path]],
                                        tmp_path: Path) -> None:
    root, lists = tree
    config = load_config("imagenet_lt", _overrides(root, lists))
    assert (config.data.dataset, config.data.in_memory, config.data.profile) == (
        "list", False, "none")
    metrics = train(config, tmp_path / "run", progress=False)

    assert metrics["num_samples"] == 3 * TEST_PER_CLASS
    outputs = torch.load(tmp_path / "run/eval/test_outputs.pt", weights_only=True)
    assert outputs["logits"].shape == (3 * TEST_PER_CLASS, 3)
    assert outputs["labels"].tolist() == [c for c in range(3) for _ in range(TEST_PER_CLASS)]
    assert (tmp_path / "run/eval/val_metrics.json").exists()
    row = json.loads((tmp_path / "run/metrics.jsonl").read_text())
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"])
    split = json.loads((tmp_path / "run/split.json").read_text())
    assert split["counts"] == TRAIN_COUNTS


def test_list_batches_are_resized_and_normalised(tree: tuple[Path, dict[str, Path]]) -> None:
    from longtail.data import make_loader

    root, lists = tree
    config = load_config("imagenet_lt", _overrides(root, lists) + ["data.num_workers=0"])
    data = build_data(config.data)
    loader = make_loader(data, "train", config.data, 4, torch.device("cpu"), train=True)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert len(loader) == 3  # 12 images, batches of 4


@pytest.mark.parametrize("split, line, message", [
    ("train", "images/c0/train_0.jpg",
     "line 3: expected '<path> <integer label>', got 'images/c0/train_0.jpg'"),
    ("train", "images/c0/train_0.jpg zero",
     "line 3: expected '<path> <integer label>', got 'images/c0/train_0.jpg zero'"),
    ("test", "images/c0/test_0.jpg 7", "line 3: label 7 out of range [0, 3)"),
    ("train", "images/c0/train_0.jpg -1", "line 3: label -1 out of range >= 0"),
])
def test_bad_list_line_is_a_one_line_error(tree: tuple[Path, dict[str, Path]], split: str,
                                           line: str, message: str) -> None:
    root, lists = tree
    text = lists[split].read_text().splitlines()
    text.insert(2, line)  # line 3 of the file (line 1 is the comment)
    lists[split].write_text("\n".join(text) + "\n")
    config = load_config("imagenet_lt", _overrides(root, lists))
    with pytest.raises(DataError) as err:
        build_data(config.data)
    assert str(err.value) == f"list file '{lists[split]}', {message}"


def test_missing_image_is_named(tree: tuple[Path, dict[str, Path]]) -> None:
    root, lists = tree
    with lists["test"].open("a") as f:
        f.write("images/c2/absent.jpg 2\n")
    config = load_config("imagenet_lt", _overrides(root, lists))
    with pytest.raises(DataError, match=r"^image '.*images/c2/absent\.jpg' does not exist$"):
        build_data(config.data)


def test_cli_reports_bad_input_in_one_line(tree: tuple[Path, dict[str, Path]], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root, lists = tree
    with lists["test"].open("a") as f:
        f.write("images/c0/test_0.jpg 3\n")
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({"base": "imagenet_lt"}))
    args = ["train", str(config_file), "--out", str(tmp_path / "run"), "--no-progress"]
    for override in _overrides(root, lists):
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"longtail train: error: list file '{lists['test']}', line 8: label 3 out of "
                   "range [0, 3)")


def test_unreadable_image_from_a_worker_is_one_line(tree: tuple[Path, dict[str, Path]],
                                                    tmp_path: Path) -> None:
    root, lists = tree
    broken = root / "images/c1/train_0.jpg"
    broken.write_bytes(b"not a jpeg")
    config = load_config("imagenet_lt", _overrides(root, lists))  # num_workers 1
    with pytest.raises(DataError) as err:
        train(config, tmp_path / "run", progress=False)
    assert str(err.value).startswith(f"cannot read image '{broken}'")
    assert "\n" not in str(err.value)


def test_large_dataset_configs() -> None:
    """The three shipped large-image configs load, and lr follows the global batch linearly."""
    expected = {"imagenet_lt": "resnext50_32x4d", "places_lt": "resnet50",
                "inaturalist2018": "resnet50"}
    for name, backbone in expected.items():
        config = load_config(name)
        assert config.model.backbone == backbone
        assert (config.data.dataset, config.data.in_memory, config.data.profile,
                config.data.augment) == ("list", False, "none", "imagenet")
        assert (config.train.epochs, config.train.batch_size, config.optim.lr,
                config.optim.lr_reference_batch, config.optim.schedule) == (
            90, 512, 0.2, 512, "cosine")
    assert load_config("inaturalist2018").data.val_list is None
    model = build_model(load_config("quickstart").model, 10, 1)
    optim = load_config("imagenet_lt").optim
    assert build_optimizer(model, optim, 512).param_groups[0]["lr"] == pytest.approx(0.2)
    assert build_optimizer(model, optim, 256).param_groups[0]["lr"] == pytest.approx(0.1)
    assert build_optimizer(model, optim, 2048).param_groups[0]["lr"] == pytest.approx(0.8)
    assert build_optimizer(model, load_config("quickstart").optim, 4096).param_groups[0][
        "lr"] == pytest.approx(0.05)  # no lr_reference_batch: lr as given


def test_crop_augmentation_never_flips_large_images():
    from torchvision.transforms import v2

    from longtail.data.loaders import imagenet_transforms

    kinds = [type(t) for t in imagenet_transforms(True, 32, [0.5] * 3, [0.5] * 3).transforms]
    assert v2.RandomHorizontalFlip in kinds and v2.RandomResizedCrop in kinds
    kinds = [type(t) for t in imagenet_transforms(True, 32, [0.5] * 3, [0.5] * 3,
                                                  flip=False).transforms]
    assert v2.RandomHorizontalFlip not in kinds and v2.RandomResizedCrop in kinds


@pytest.mark.parametrize("drop_last, sizes", [(False, [5, 5, 2]), (True, [5, 5])])
def test_drop_last_drops_only_the_training_epochs_partial_batch(
        tree: tuple[Path, dict[str, Path]], drop_last: bool, sizes: list[int]) -> None:
    from longtail.data import make_loader

    root, lists = tree
    config = load_config("imagenet_lt", _overrides(root, lists) + [
        "data.num_workers=0", f"data.drop_last={str(drop_last).lower()}"])
    data = build_data(config.data)
    cpu = torch.device("cpu")
    loader = make_loader(data, "train", config.data, 5, cpu, train=True)  # 12 images
    assert len(loader) == len(sizes)
    assert [len(y) for _, y in loader] == sizes
    test = make_loader(data, "test", config.data, 4, cpu)  # 6 images: never dropped
    assert [len(y) for _, y in test] == [4, 2]


def test_drop_last_with_less_than_one_batch_is_a_one_line_error(
        tree: tuple[Path, dict[str, Path]]) -> None:
    from longtail.data import make_loader

    root, lists = tree
    config = load_config("imagenet_lt", _overrides(root, lists) + [
        "data.num_workers=0", "data.drop_last=true"])
    data = build_data(config.data)
    with pytest.raises(DataError, match="data.drop_last: an epoch draws fewer images than one "
                                        "batch of 16"):
        make_loader(data, "train", config.data, 16, torch.device("cpu"), train=True)
