"""Reading data from disk: CIFAR python batches, class folders, list files, digits; and the
one-line errors for bad input (each names the file, line or value)."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CIFAR_TEST_PER_CLASS,
    CIFAR_TRAIN_PER_CLASS,
    TREE_CLASSES,
    TREE_TEST_COUNTS,
    TREE_TRAIN_COUNTS,
    cifar_pixel,
    tree_image,
    write_pickle,
)

from longtail.config import DataConfig
from longtail.data import DataError, build_data, sources
from longtail.data.sources import (
    check_readable,
    decode_images,
    load_cifar,
    load_digits,
    load_into_memory,
    read_list_file,
    scan_class_folder,
)

# ../shared/data/cifar10-jpeg, seen from the repository root
REAL_CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------
# CIFAR python batches


def expected_cifar_images(ids: list[int]) -> np.ndarray:
    """(N, 32, 32, 3) from the pixel rule, by broadcasting over (n, h, w, c)."""
    n = np.asarray(ids).reshape(-1, 1, 1, 1)
    h = np.arange(32).reshape(1, -1, 1, 1)
    w = np.arange(32).reshape(1, 1, -1, 1)
    c = np.arange(3).reshape(1, 1, 1, -1)
    return ((n * 31 + h * 7 + w * 3 + c * 101) % 256).astype(np.uint8)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_cifar_layout_and_labels(name, fake_cifar10, fake_cifar100):
    root, written = fake_cifar10 if name == "cifar10" else fake_cifar100
    train, test = load_cifar(name, str(root))
    assert train.classes == written["classes"] == test.classes
    assert train.images.dtype == torch.uint8
    assert tuple(train.images.shape) == (10 * CIFAR_TRAIN_PER_CLASS, 32, 32, 3)
    assert tuple(test.images.shape) == (10 * CIFAR_TEST_PER_CLASS, 32, 32, 3)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == written["train"][1]
    assert test.labels.tolist() == written["test"][1]
    # One known pixel: image 5, row 3, column 7, blue channel.
    assert train.images[5, 3, 7, 2].item() == cifar_pixel(5, 3, 7, 2)
    assert train.images[5, 7, 3, 2].item() == cifar_pixel(5, 7, 3, 2)
    # Every pixel of every image.
    np.testing.assert_array_equal(train.images.numpy(), expected_cifar_images(written["train"][0]))
    np.testing.assert_array_equal(test.images.numpy(), expected_cifar_images(written["test"][0]))


@pytest.fixture
def cifar_copy(fake_cifar10, tmp_path) -> Path:
    """A private copy of the fake CIFAR-10 root, free to damage."""
    root, _ = fake_cifar10
    shutil.copytree(root, tmp_path / "root")
    return tmp_path / "root"


def test_missing_cifar_root(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", str(tmp_path / "nowhere"))
    assert "cifar-10-batches-py" in one_line(err) and "does not exist" in str(err.value)


def test_missing_cifar_batch_is_named(cifar_copy):
    (cifar_copy / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3' is missing") as err:
        load_cifar("cifar10", str(cifar_copy))
    one_line(err)


def test_truncated_cifar_batch_is_named(cifar_copy):
    path = cifar_copy / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])  # an interrupted download
    with pytest.raises(DataError, match="data_batch_2' is corrupt") as err:
        load_cifar("cifar10", str(cifar_copy))
    one_line(err)


def test_garbage_cifar_batch_is_named(cifar_copy):
    (cifar_copy / "cifar-10-batches-py" / "test_batch").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="test_batch' is corrupt"):
        load_cifar("cifar10", str(cifar_copy))


class _RunsCode:
    def __reduce__(self):  # noqa: ANN204
        return (os.getcwd, ())


def test_pickle_that_would_run_code_is_refused(cifar_copy):
    write_pickle(cifar_copy / "cifar-10-batches-py" / "data_batch_1", _RunsCode())
    with pytest.raises(DataError, match="data_batch_1' is corrupt: refusing to load"):
        load_cifar("cifar10", str(cifar_copy))


@pytest.mark.parametrize("protocol", [4, 5])
def test_cifar_batches_pickled_by_python3(cifar_copy, protocol):
    folder = cifar_copy / "cifar-10-batches-py"
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    _, test = load_cifar("cifar10", str(cifar_copy))
    np.testing.assert_array_equal(test.images.numpy(), expected_cifar_images(list(
        range(1000, 1000 + 10 * CIFAR_TEST_PER_CLASS))))


def test_cifar_batch_without_data_is_named(cifar_copy):
    write_pickle(cifar_copy / "cifar-10-batches-py" / "data_batch_4", {"labels": [0, 1]})
    with pytest.raises(DataError, match="data_batch_4' is corrupt"):
        load_cifar("cifar10", str(cifar_copy))


def test_cifar_batch_with_wrong_shape_is_named(cifar_copy):
    write_pickle(cifar_copy / "cifar-10-batches-py" / "data_batch_5",
                 {"labels": [0, 1], "data": np.zeros((2, 1024), dtype=np.uint8)})
    with pytest.raises(DataError, match=r"data_batch_5': expected data of shape \(N, 3072\)"):
        load_cifar("cifar10", str(cifar_copy))


def test_cifar_label_out_of_range(cifar_copy):
    write_pickle(cifar_copy / "cifar-10-batches-py" / "test_batch",
                 {"labels": [3, 10], "data": np.zeros((2, 3072), dtype=np.uint8)})
    with pytest.raises(DataError, match=r"label 10 out of range \[0, 10\)") as err:
        load_cifar("cifar10", str(cifar_copy))
    assert "cifar-10-batches-py" in one_line(err)


def test_build_data_on_fake_cifar(fake_cifar10):
    root, _ = fake_cifar10
    cfg = DataConfig(dataset="cifar10", root=str(root), profile="exp", imbalance_ratio=5,
                     val_per_class=1)
    data = build_data(cfg)
    # n_max = 6 per class - 1 validation = 5; 5 · 5^(-i/9) = 5, 4.18, 3.50, 2.92, 2.45, 2.04,
    # 1.71, 1.43, 1.20, 1
    expected = [5, 4, 3, 2, 2, 2, 1, 1, 1, 1]
    assert CIFAR_TRAIN_PER_CLASS - 1 == expected[0]
    assert data.split.counts == expected
    assert data.train.class_counts().tolist() == expected
    assert data.val.class_counts().tolist() == [1] * 10
    assert len(data.test) == 10 * CIFAR_TEST_PER_CLASS
    assert data.image_shape == (3, 32, 32)
    assert data.mean == [0.4914, 0.4822, 0.4465] and data.std == [0.2023, 0.1994, 0.2010]
    # The training images are the pool's images at the split's indices.
    full_train, _ = load_cifar("cifar10", str(root))
    assert torch.equal(data.train.images, full_train.images[data.split.train])


# ------------------------------------------------------------------------------------------------
# Class folders


def test_scan_class_folder(image_tree):
    train = scan_class_folder(str(image_tree / "train"))
    assert train.classes == TREE_CLASSES
    assert train.class_counts().tolist() == TREE_TRAIN_COUNTS
    assert train.images is None and len(train.paths) == sum(TREE_TRAIN_COUNTS)
    assert not any(p.endswith(".txt") for p in train.paths)
    for path, label in zip(train.paths, train.labels.tolist()):
        assert Path(path).parent.name == TREE_CLASSES[label]
    test = scan_class_folder(str(image_tree / "test"), classes=train.classes)
    assert test.class_counts().tolist() == TREE_TEST_COUNTS


def test_test_classes_must_match_train(image_tree, tmp_path):
    shutil.copytree(image_tree / "test", tmp_path / "test")
    shutil.copytree(tmp_path / "test" / "cat", tmp_path / "test" / "cow")
    with pytest.raises(DataError, match=r"class folders differ from the training classes: "
                                        r"\['cow'\]"):
        scan_class_folder(str(tmp_path / "test"), classes=TREE_CLASSES)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        scan_class_folder(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in one_line(err)


def test_root_without_class_folders(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="has no class folders"):
        scan_class_folder(str(tmp_path))


def test_empty_class_folder(image_tree, tmp_path):
    shutil.copytree(image_tree / "train", tmp_path / "train")
    (tmp_path / "train" / "eel").mkdir()
    (tmp_path / "train" / "eel" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        scan_class_folder(str(tmp_path / "train"))
    assert f"class folder '{tmp_path / 'train' / 'eel'}' has no images" == one_line(err)


def test_decode_images_pixels(image_tree):
    train = scan_class_folder(str(image_tree / "train"))
    images = decode_images(train.paths)
    assert images.dtype == torch.uint8
    assert tuple(images.shape) == (sum(TREE_TRAIN_COUNTS), 8, 8, 3)
    for k, (path, label) in enumerate(zip(train.paths, train.labels.tolist())):
        index = int(Path(path).stem.split("_")[1])
        expected = tree_image("train", label, index)
        if path.endswith(".png"):  # lossless
            np.testing.assert_array_equal(images[k].numpy(), expected)
        else:  # JPEG: close, not equal
            diff = np.abs(images[k].numpy().astype(int) - expected.astype(int))
            assert diff.mean() < 8


def test_decode_cache_is_used(image_tree, tmp_path, monkeypatch):
    paths = scan_class_folder(str(image_tree / "test")).paths
    cache = tmp_path / "cache"
    first = decode_images(paths, str(cache))
    cached = list(cache.glob("decoded-*.pt"))
    assert len(cached) == 1

    def no_decoding(path: str) -> np.ndarray:
        raise AssertionError(f"decoded '{path}' although it is cached")

    monkeypatch.setattr(sources, "_decode", no_decoding)
    second = decode_images(paths, str(cache))
    assert torch.equal(first, second)
    assert list(cache.glob("decoded-*.pt")) == cached


def test_decode_cache_notices_a_changed_file(image_tree, tmp_path):
    shutil.copytree(image_tree / "test", tmp_path / "test")
    paths = scan_class_folder(str(tmp_path / "test")).paths
    cache = tmp_path / "cache"
    decode_images(paths, str(cache))
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # a different modification time, whatever the clock
    images = decode_images(paths, str(cache))
    assert (images[0] == 7).all()
    assert len(list(cache.glob("decoded-*.pt"))) == 2


def test_grayscale_is_converted_to_rgb(tmp_path):
    from PIL import Image

    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    Image.fromarray(pixels, mode="L").save(tmp_path / "g.png")
    images = decode_images([str(tmp_path / "g.png")])
    assert tuple(images.shape) == (1, 4, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(images[0, :, :, c].numpy(), pixels)


def test_images_of_different_sizes(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="images differ in size"):
        decode_images([str(tmp_path / "a.png"), str(tmp_path / "b.png")])


def test_unreadable_image_is_named(image_tree, tmp_path):
    shutil.copytree(image_tree / "train", tmp_path / "train")
    bad = tmp_path / "train" / "dog" / "img_0.png"
    bad.write_bytes(b"\x89PNG but not really")
    paths = scan_class_folder(str(tmp_path / "train")).paths
    with pytest.raises(DataError) as err:
        decode_images(paths)
    assert one_line(err).startswith(f"cannot read image '{bad}'")


def test_load_into_memory_and_build_data_folder(image_tree, tmp_path):
    scanned = scan_class_folder(str(image_tree / "test"))
    loaded = load_into_memory(scanned, str(tmp_path / "cache"))
    assert tuple(loaded.images.shape) == (sum(TREE_TEST_COUNTS), 8, 8, 3)
    assert torch.equal(loaded.labels, scanned.labels)

    cfg = DataConfig(dataset="folder", root=str(image_tree), profile="none",
                     cache_dir=str(tmp_path / "cache"))
    data = build_data(cfg)
    assert data.num_classes == 3 and data.image_shape == (3, 8, 8)
    assert data.split.counts == TREE_TRAIN_COUNTS
    assert data.train.class_counts().tolist() == TREE_TRAIN_COUNTS
    assert data.test.class_counts().tolist() == TREE_TEST_COUNTS
    assert data.val is None


# ------------------------------------------------------------------------------------------------
# List files: "<relative path> <integer label>"


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_list_file(tmp_path):
    listing = write_list(tmp_path / "train.txt", [
        "# ImageNet-LT style",
        "",
        "train/n01/a.jpg 0",
        "train/my dir/b 1.jpg 2",  # spaces in the path: the label is the last field
        "  train/n02/c.jpg   1  ",
    ])
    images = read_list_file(str(listing), "/data/root")
    assert images.paths == ["/data/root/train/n01/a.jpg", "/data/root/train/my dir/b 1.jpg",
                            "/data/root/train/n02/c.jpg"]
    assert images.labels.tolist() == [0, 2, 1]
    assert images.classes == ["0", "1", "2"]
    assert read_list_file(str(listing), "/r", num_classes=5).num_classes == 5


@pytest.mark.parametrize("bad", ["train/a.jpg", "train/a.jpg cat", "train/a.jpg 1.5"])
def test_bad_list_line_names_the_line(tmp_path, bad):
    listing = write_list(tmp_path / "train.txt", ["# header", "a.jpg 0", "", bad, "b.jpg 1"])
    with pytest.raises(DataError) as err:
        read_list_file(str(listing), ".")
    message = one_line(err)
    assert f"list file '{listing}', line 4" in message and bad in message


def test_list_label_out_of_range(tmp_path):
    listing = write_list(tmp_path / "test.txt", ["a.jpg 0", "b.jpg 5"])
    with pytest.raises(DataError, match=r"line 2: label 5 out of range \[0, 3\)") as err:
        read_list_file(str(listing), ".", num_classes=3)
    assert str(listing) in one_line(err)
    negative = write_list(tmp_path / "neg.txt", ["a.jpg -1"])
    with pytest.raises(DataError, match="line 1: label -1 out of range >= 0"):
        read_list_file(str(negative), ".")


def test_missing_and_empty_list_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_list_file(str(tmp_path / "nope.txt"), ".")
    empty = write_list(tmp_path / "empty.txt", ["# nothing", ""])
    with pytest.raises(DataError, match="has no entries"):
        read_list_file(str(empty), ".")


def test_missing_image_of_a_list_is_named(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError) as err:
        check_readable([str(tmp_path / "a.jpg"), str(tmp_path / "gone.jpg")])
    assert one_line(err) == f"image '{tmp_path / 'gone.jpg'}' does not exist"


def test_build_data_from_list_files(image_tree, tmp_path):
    train_lines = [f"train/{name}/img_0.png {label}" for label, name in enumerate(TREE_CLASSES)]
    test_lines = [f"test/{name}/img_1.png {label}" for label, name in enumerate(TREE_CLASSES)]
    cfg = DataConfig(dataset="list", root=str(image_tree), profile="none",
                     train_list=str(write_list(tmp_path / "train.txt", train_lines)),
                     test_list=str(write_list(tmp_path / "test.txt", test_lines)),
                     cache_dir=str(tmp_path / "cache"))
    data = build_data(cfg)
    assert data.split.counts == [1, 1, 1]
    np.testing.assert_array_equal(data.test.images[2].numpy(), tree_image("test", 2, 1))
    cfg.test_list = str(write_list(tmp_path / "bad.txt", ["test/cat/missing.png 0"]))
    with pytest.raises(DataError, match="missing.png' does not exist"):
        build_data(cfg)


# ------------------------------------------------------------------------------------------------
# Digits (the quick start's data)


def test_digits_test_split_is_balanced():
    train, test = load_digits(test_per_class=50, seed=0)
    assert test.class_counts().tolist() == [50] * 10
    # scikit-learn's digits: 178 182 177 183 181 182 181 179 174 180 images per class
    sizes = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert train.class_counts().tolist() == [n - 50 for n in sizes]
    assert tuple(train.images.shape[1:]) == (8, 8, 1) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255  # 0..16 scaled to 0..255
    again, _ = load_digits(test_per_class=50, seed=0)
    assert torch.equal(again.images, train.images)


def test_digits_cannot_hold_out_a_whole_class():
    with pytest.raises(DataError, match="class 8 has 174 images"):
        load_digits(test_per_class=174)


# ------------------------------------------------------------------------------------------------
# The real JPEG copy of CIFAR-10, when this machine has it


@pytest.mark.skipif(not REAL_CIFAR10_JPEG.is_dir(), reason=f"no {REAL_CIFAR10_JPEG}")
def test_real_cifar10_jpeg_folder():
    train = scan_class_folder(str(REAL_CIFAR10_JPEG / "train"))
    assert train.classes == CIFAR10_NAMES
    assert train.class_counts().tolist() == [5000] * 10
    test = scan_class_folder(str(REAL_CIFAR10_JPEG / "test"), classes=train.classes)
    assert test.class_counts().tolist() == [1000] * 10
    images = decode_images([train.paths[0], train.paths[-1], test.paths[0]])
    assert tuple(images.shape) == (3, 32, 32, 3)


def test_channel_stats_by_hand():
    from longtail.data import channel_stats

    # Two flat images: red 0 and 255 (mean 0.5, std 0.5), green 255 in both (mean 1, std 0,
    # floored at 1e-4 so normalising never divides by 0), blue 51 = 0.2 in both.
    images = torch.zeros(2, 3, 4, 3, dtype=torch.uint8)
    images[1, ..., 0] = 255
    images[..., 1] = 255
    images[..., 2] = 51
    assert channel_stats(images) == ([0.5, 1.0, 0.2], [0.5, 0.0001, 0.0001])


def test_a_folder_run_normalises_with_its_own_statistics(image_tree, tmp_path):
    import yaml

    from longtail.config import load_config
    from longtail.data import build_data, channel_stats
    from longtail.train import train

    overrides = ["data.dataset=folder", f"data.root={image_tree}", "data.profile=none",
                 f"data.cache_dir={tmp_path / 'cache'}", "model.backbone=small_cnn",
                 "train.epochs=1", "train.device=cpu", "data.val_per_class=0"]
    config = load_config("quickstart", overrides)
    data = build_data(config.data)
    expected = channel_stats(data.train.images)
    assert (data.mean, data.std) == expected and data.mean != [0.485, 0.456, 0.406]
    train(config, tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert (saved["mean"], saved["std"]) == (list(expected[0]), list(expected[1]))


# ------------------------------------------------------------------------------------------------
# In-memory image files of mixed sizes: data.resize (shorter side to data.image_size, centre crop)


def ramp(h: int, w: int, offset: int = 0) -> np.ndarray:
    """An h×w RGB image whose every pixel differs from its neighbours (so a crop shows where)."""
    rows = np.arange(h).reshape(-1, 1, 1)
    cols = np.arange(w).reshape(1, -1, 1)
    chans = np.arange(3).reshape(1, 1, -1)
    return ((offset + 17 * rows + 5 * cols + 60 * chans) % 256).astype(np.uint8)


@pytest.fixture
def mixed_tree(tmp_path) -> Path:
    """root/{train,test}/<class>/*.png with 2 (train) and 3 (test) sizes; image_size 6 below."""
    from PIL import Image

    sizes = {"train": {"a": [(10, 6), (6, 6)], "b": [(10, 6), (6, 6), (6, 6)]},
             "test": {"a": [(10, 6), (8, 12)], "b": [(6, 6), (4, 4)]}}
    for split, classes in sizes.items():
        for name, shapes in classes.items():
            (tmp_path / "root" / split / name).mkdir(parents=True)
            for i, (h, w) in enumerate(shapes):
                Image.fromarray(ramp(h, w, 10 * i)).save(tmp_path / "root" / split / name /
                                                         f"{i}.png")
    return tmp_path / "root"


def test_mixed_sizes_are_resized_and_centre_cropped(mixed_tree):
    from PIL import Image

    paths = scan_class_folder(str(mixed_tree / "test")).paths  # a/0 10×6, a/1 8×12, b/0, b/1
    images, resized = sources.decode_counted(paths, None, "auto", 6)
    assert tuple(images.shape) == (4, 6, 6, 3)
    assert resized == 3  # b/0 is 6×6 already: kept as it is
    # 10×6 (H×W): the shorter side is 6 already, so no interpolation; the centre 6 of the 10
    # rows are rows 2..7.
    np.testing.assert_array_equal(images[0].numpy(), ramp(10, 6)[2:8])
    np.testing.assert_array_equal(images[2].numpy(), ramp(6, 6))
    # 8×12: the shorter side 8 -> 6, so 12 -> 9 columns (PIL bilinear, as the large-image test
    # transform), then columns 2..7 of the 9 (left = round((9 - 6) / 2) = 2).
    wide = np.asarray(Image.fromarray(ramp(8, 12, 10)).resize((9, 6), Image.BILINEAR))
    np.testing.assert_array_equal(images[1].numpy(), wide[:, 2:8])
    # 4×4 is scaled up to 6×6.
    small = np.asarray(Image.fromarray(ramp(4, 4, 10)).resize((6, 6), Image.BILINEAR))
    np.testing.assert_array_equal(images[3].numpy(), small)


def no_decoding(path: str) -> np.ndarray:
    raise AssertionError(f"decoded '{path}' although it is cached")


def test_resized_decode_is_cached_per_size(mixed_tree, tmp_path, monkeypatch, capsys):
    paths = scan_class_folder(str(mixed_tree / "train")).paths
    cache = tmp_path / "cache"
    first = decode_images(paths, str(cache), "auto", 6)
    assert tuple(first.shape) == (5, 6, 6, 3)
    (entry,) = cache.glob("decoded-*.pt")
    with monkeypatch.context() as patch:
        patch.setattr(sources, "_decode", no_decoding)
        again, resized = sources.decode_counted(paths, str(cache), "auto", 6)
        assert torch.equal(again, first) and resized == 2  # the count comes from the cache too
        with pytest.raises(AssertionError, match="although it is cached"):
            decode_images(paths, str(cache), "auto", 5)  # another size: not that entry
    other = decode_images(paths, str(cache), "auto", 5)
    assert tuple(other.shape) == (5, 5, 5, 3)
    assert len(list(cache.glob("decoded-*.pt"))) == 2
    # never: the mixed sizes are an error (no un-resized entry was ever written for them).
    with pytest.raises(DataError, match="images differ in size.*data.resize: auto") as err:
        decode_images(paths, str(cache), "never")
    one_line(err)
    # A damaged resized entry is rebuilt like any other.
    entry.write_bytes(entry.read_bytes()[:100])
    assert torch.equal(decode_images(paths, str(cache), "auto", 6), first)
    assert "corrupt" in capsys.readouterr().err


def test_resize_auto_keeps_one_size_and_always_resizes_it(image_tree, tmp_path, monkeypatch):
    paths = scan_class_folder(str(image_tree / "test")).paths  # all 8×8
    cache = tmp_path / "cache"
    plain = decode_images(paths, str(cache), "never")
    # auto: one size, nothing to do; the un-resized entry is the right one, and is reused.
    with monkeypatch.context() as patch:
        patch.setattr(sources, "_decode", no_decoding)
        assert torch.equal(decode_images(paths, str(cache), "auto", 6), plain)
    # always: every image, to 6×6, in its own cache entry (the un-resized one is not reused).
    images, resized = sources.decode_counted(paths, str(cache), "always", 6)
    assert tuple(images.shape) == (len(paths), 6, 6, 3) and resized == len(paths)
    assert len(list(cache.glob("decoded-*.pt"))) == 2
    _, already = sources.decode_counted(paths, None, "always", 8)
    assert already == 0  # images of the target size are not counted as resized


def test_build_data_resizes_a_mixed_folder_and_says_so(mixed_tree, tmp_path, capsys):
    cfg = DataConfig(dataset="folder", root=str(mixed_tree), profile="none", image_size=6,
                     cache_dir=str(tmp_path / "cache"))
    data = build_data(cfg)
    assert data.image_shape == (3, 6, 6)
    assert tuple(data.test.images.shape) == (4, 6, 6, 3)
    out = capsys.readouterr().out
    assert out.count("longtail: data: resized") == 1
    assert "resized 5 of 9 images to 6×6 (shorter side to 6, centre crop; data.resize: auto)" \
        in out
    with pytest.raises(DataError, match="images differ in size"):
        build_data(DataConfig(dataset="folder", root=str(mixed_tree), profile="none",
                              resize="never", cache_dir=str(tmp_path / "cache")))


def test_resize_config_values_are_checked():
    from longtail.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.resize must be auto, always or never"):
        load_config("quickstart", ["data.resize=sometimes"])
    with pytest.raises(ConfigError, match="data.resize: always resizes image files"):
        load_config("quickstart", ["data.resize=always"])  # digits
    assert load_config("quickstart").data.resize == "auto"
