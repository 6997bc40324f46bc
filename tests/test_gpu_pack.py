"""benchmarks/gpu/pack_split.py: the packed list data is the run's own data, image for image."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script

from longtail.config import load_config
from longtail.data import build_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack_split():
    return load_script("benchmarks/gpu/pack_split.py")


def _folder_config(root: Path) -> list[str]:
    return ["data.dataset=folder", f"data.root={root}", "data.imbalance_ratio=2",
            "data.val_per_class=1", "data.subset_seed=3", f"data.cache_dir={root}/cache",
            "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


def _split_file(data, path: Path) -> Path:
    # what `longtail train` writes as split.json
    path.write_text(json.dumps({"seed": 3, "classes": data.train.classes,
                                **data.split.to_dict()}))
    return path


def test_packed_lists_give_the_same_images_labels_and_counts(image_tree, tmp_path, pack_split):
    original = build_data(load_config("quickstart", _folder_config(image_tree)).data)
    split_file = _split_file(original, tmp_path / "split.json")
    info = pack_split.pack(split_file, image_tree, tmp_path / "pack")
    assert info["images"] == {"train": len(original.train), "val": len(original.val),
                              "test": len(original.test)}
    overrides = (tmp_path / "pack" / "overrides.txt").read_text().split()[1::2]
    packed = build_data(load_config("quickstart", overrides + [
        f"data.cache_dir={tmp_path}/cache", "data.mean=[0.5,0.5,0.5]",
        "data.std=[0.25,0.25,0.25]"]).data)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(packed, part).images, getattr(original, part).images), part
        assert torch.equal(getattr(packed, part).labels, getattr(original, part).labels), part
    assert packed.split.counts == original.split.counts
    # the list's lines name the source's own relative paths, class folder included
    first = (tmp_path / "pack" / "train.txt").read_text().splitlines()[0]
    assert first.startswith("images/train/") and first.split()[-1].isdigit()


def test_a_split_of_other_data_is_refused_in_one_line(image_tree, tmp_path, pack_split, capsys):
    original = build_data(load_config("quickstart", _folder_config(image_tree)).data)
    split_file = _split_file(original, tmp_path / "split.json")
    values = json.loads(split_file.read_text())
    values["counts"] = [c + 1 for c in values["counts"]]
    split_file.write_text(json.dumps(values))
    code = pack_split.main(["--split", str(split_file), "--root", str(image_tree),
                            "--out", str(tmp_path / "pack")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "class counts" in err and "do not match" in err


def test_a_folder_that_is_not_empty_is_not_written(image_tree, tmp_path, pack_split, capsys):
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "other.txt").write_text("someone's file\n")
    code = pack_split.main(["--split", str(tmp_path / "split.json"), "--root", str(image_tree),
                            "--out", str(tmp_path / "pack")])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "pack").iterdir()] == ["other.txt"]


def test_the_gpu_config_is_the_paper_tde_recipe_on_the_pack():
    config = load_config(str(REPO / "benchmarks" / "gpu" / "cifar10_lt_tde_pack.yaml"))
    shipped = load_config("cifar10_lt_tde")
    assert (config.data.dataset, config.data.profile, config.data.val_per_class) == \
        ("list", "none", 0)
    assert config.data.train_list == "gpu_pack/train.txt"
    assert config.model == shipped.model and config.optim == shipped.optim
    assert config.train.epochs == shipped.train.epochs == 200
    assert (config.train.compile, config.train.precision, config.train.channels_last) == \
        (True, "bf16", True)


def test_the_gpu_la_config_is_the_carried_la_run_on_its_pack():
    config = load_config(str(REPO / "benchmarks" / "gpu" / "cifar10_lt_la_authors_pack.yaml"))
    shipped = load_config("cifar10_lt_la_authors")
    assert (config.data.dataset, config.data.profile, config.data.val_list) == \
        ("list", "none", None)
    assert config.data.train_list == "gpu_pack_la/train.txt"
    assert config.model == shipped.model and config.optim == shipped.optim
    assert config.loss == shipped.loss and config.train.epochs == 1241
    # the protocol's padding and dropped batch; the carried run's training seed and evaluations
    assert (config.data.crop_fill, config.data.drop_last) == ("mean", True)
    assert (config.train.seed, config.train.eval_every) == (1, 50)
