"""Typed configs: YAML files, ``base:`` inheritance, ``--set`` overrides, errors that name the key
and suggest the closest valid one, and checks of impossible values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from longtail.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    save_config,
    shipped_configs,
)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------
# Unknown keys and types


def test_unknown_top_level_key_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        from_dict({"trian": {"epochs": 3}})
    assert one_line(err) == "unknown config key 'trian': did you mean 'train'?"


def test_unknown_nested_key_names_the_full_key():
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", ["train.epoch=3"])
    assert one_line(err) == "unknown config key 'train.epoch': did you mean 'epochs'?"


def test_unknown_key_in_a_file_is_reported(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        load_config(str(path))


def test_unknown_key_without_a_close_match_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        from_dict({"eval": {"zzzz": 1}})
    message = one_line(err)
    assert message.startswith("unknown config key 'eval.zzzz': valid: ") and "alpha" in message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=many", "config key 'train.epochs' expects an integer, got 'many'"),
        ("train.epochs=2.5", "config key 'train.epochs' expects an integer, got 2.5"),
        ("train.epochs=true", "config key 'train.epochs' expects an integer, got True"),
        ("train.epochs=null", "config key 'train.epochs' must not be null"),
        ("optim.lr=fast", "config key 'optim.lr' expects a number, got 'fast'"),
        ("data.in_memory=1", "config key 'data.in_memory' expects true/false, got 1"),
        ("model.backbone=3", "config key 'model.backbone' expects a string, got 3"),
        ("optim.milestones=5", "config key 'optim.milestones' expects a list, got 5"),
        ("model.head_args=[1]", "config key 'model.head_args' expects a mapping, got [1]"),
        ("train=5", "config key 'train' expects a mapping, got 5"),
    ],
)
def test_type_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", [override])
    assert one_line(err).startswith(message)


def test_integer_for_a_float_is_accepted_as_float():
    config = load_config("quickstart", ["optim.lr=1"])
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)


# ------------------------------------------------------------------------------------------------
# Overrides


def test_parse_override_values_are_yaml():
    assert parse_override("train.epochs=5") == (["train", "epochs"], 5)
    assert parse_override("optim.milestones=[3, 6]") == (["optim", "milestones"], [3, 6])
    assert parse_override("model.head_args={tau: 8, alpha: 1.5}") == (
        ["model", "head_args"], {"tau": 8, "alpha": 1.5})
    assert parse_override("data.root=null") == (["data", "root"], None)
    assert parse_override("name=a=b") == (["name"], "a=b")  # only the first '=' splits
    assert parse_override("data.root=") == (["data", "root"], "")


@pytest.mark.parametrize("bad", ["train.epochs", "=5"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError, match="override"):
        parse_override(bad)


def test_overrides_applied():
    config = load_config("quickstart", [
        "train.epochs=3", "optim.milestones=[3, 6]", "model.head_args={tau: 8}",
        "data.mean=[0.5]", "data.std=[0.25]", "model.head=cosine", "data.root=null",
        "name=my_run", "train.epochs=4",  # the last one wins
    ])
    assert config.train.epochs == 4
    assert config.optim.milestones == [3, 6]
    assert config.model.head_args == {"tau": 8}
    assert config.data.mean == [0.5] and config.data.std == [0.25]
    assert config.model.head == "cosine"
    assert config.data.root is None
    assert config.name == "my_run"
    # Everything not overridden keeps the file's value.
    assert config.optim.lr == 0.05 and config.train.batch_size == 32


def test_apply_overrides_does_not_touch_its_input():
    values = {"train": {"epochs": 1}}
    out = apply_overrides(values, ["train.epochs=2", "optim.lr=0.5"])
    assert values == {"train": {"epochs": 1}}
    assert out == {"train": {"epochs": 2}, "optim": {"lr": 0.5}}


# ------------------------------------------------------------------------------------------------
# Files, base: inheritance, names


def test_base_inheritance_from_a_relative_file(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "data:\n  dataset: cifar10\n  root: data\n  imbalance_ratio: 100\n"
        "train:\n  epochs: 200\n  batch_size: 128\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text(
        "base: ../parent.yaml\ndata:\n  imbalance_ratio: 50\ntrain:\n  epochs: 12\n")
    config = load_config(str(sub / "child.yaml"))
    assert config.data.imbalance_ratio == 50  # the child's value
    assert config.data.dataset == "cifar10" and config.data.root == "data"  # kept from the parent
    assert config.train.epochs == 12 and config.train.batch_size == 128
    assert config.name == "child"


def test_base_can_name_a_shipped_config(tmp_path):
    path = tmp_path / "r20.yaml"
    path.write_text("base: cifar10_lt\ndata:\n  imbalance_ratio: 20\n")
    config = load_config(str(path))
    assert config.name == "r20"
    assert config.data.dataset == "cifar10" and config.data.imbalance_ratio == 20
    assert config.train.epochs == 200  # from cifar10_lt


def test_chained_bases_keep_the_file_name(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epochs: 7\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  batch_size: 8\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    config = load_config(str(tmp_path / "c.yaml"))
    assert (config.name, config.train.epochs, config.train.batch_size) == ("c", 7, 8)


def test_explicit_name_wins_over_the_stem(tmp_path):
    (tmp_path / "parent.yaml").write_text("name: parent_name\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nname: mine\n")
    (tmp_path / "plain.yaml").write_text("base: parent.yaml\n")
    assert load_config(str(tmp_path / "child.yaml")).name == "mine"
    assert load_config(str(tmp_path / "parent.yaml")).name == "parent_name"
    assert load_config(str(tmp_path / "plain.yaml")).name == "plain"


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "my_experiment.yaml"
    path.write_text("train:\n  epochs: 3\n")
    assert load_config(str(path)).name == "my_experiment"


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(str(tmp_path / "a.yaml"))


def test_unknown_config_name_suggests_a_shipped_one():
    with pytest.raises(ConfigError) as err:
        load_config("cifar10lt")
    assert "did you mean 'cifar10_lt'?" in one_line(err)


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_yaml(str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys, got list"):
        load_yaml(str(listing))


def test_no_name_gives_the_quickstart():
    config = load_config()
    assert config.name == "quickstart"
    assert config.data.dataset == "digits" and config.model.backbone == "small_cnn"


def test_save_and_reload_round_trip(tmp_path):
    config = load_config("cifar10_lt_cpu", ["model.head_args={tau: 8}"])
    save_config(config, tmp_path / "config.yaml")
    again = from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == config


# ------------------------------------------------------------------------------------------------
# Shipped configs


def test_shipped_configs_listed():
    names = shipped_configs()
    assert {"quickstart", "cifar10_lt", "cifar100_lt", "cifar10_lt_cpu"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads_and_validates(name):
    from longtail.detection.config import DetectionConfig

    config = load_config(name)
    assert isinstance(config, DetectionConfig if config.task == "detection" else Config)
    assert config.name == name  # not the name of the config it starts from


SHIPPED_EXPECTATIONS = {
    # name: (dataset, imbalance ratio)
    "cifar10_lt": ("cifar10", 100), "cifar10_lt_r50": ("cifar10", 50),
    "cifar10_lt_r10": ("cifar10", 10), "cifar100_lt": ("cifar100", 100),
    "cifar100_lt_r50": ("cifar100", 50), "cifar100_lt_r10": ("cifar100", 10),
}


@pytest.mark.parametrize("name", sorted(SHIPPED_EXPECTATIONS))
def test_paper_configs_follow_the_recipe(name):
    """methods.md §8: ResNet-32, batch 128, lr 0.1, momentum 0.9, wd 5e-4, 200 epochs, crop+flip."""
    config = load_config(name)
    assert (config.data.dataset, config.data.imbalance_ratio) == SHIPPED_EXPECTATIONS[name]
    assert config.data.profile == "exp" and config.data.augment == "crop_flip"
    assert config.model.backbone == "resnet32"
    assert (config.train.epochs, config.train.batch_size) == (200, 128)
    assert (config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (0.1, 0.9, 5e-4)


def test_relative_yaml_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("local.yaml").write_text("train:\n  epochs: 9\n")
    assert load_config("local.yaml").train.epochs == 9


# ------------------------------------------------------------------------------------------------
# Impossible values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
        ("optim.lr=-0.1", "optim.lr must be > 0, got -0.1"),
        ("optim.momentum=1", "optim.momentum must be in [0, 1), got 1.0"),
        ("optim.momentum=-0.5", "optim.momentum must be in [0, 1)"),
        ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
        ("data.imbalance_ratio=0.5", "data.imbalance_ratio must be >= 1, got 0.5"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("data.step_fraction=1", "data.step_fraction must be in (0, 1)"),
        ("data.val_per_class=-1", "data.val_per_class must be >= 0"),
        ("data.max_per_class=0", "data.max_per_class must be >= 1"),
        ("data.profile=linear", "data.profile must be exp, step or none, got 'linear'"),
        ("data.augment=mixup", "data.augment must be"),
        ("data.crop_fill=gray", "data.crop_fill must be zero or mean, got 'gray'"),
        ("data.crop_fill=mean", "data.crop_fill: mean fills the in-memory random crop's padding; "
                                "it has no effect with data.augment 'none'"),
        ("optim.schedule=step", "optim.schedule must be multistep, cosine or constant"),
        ("train.precision=fp8", "train.precision must be bf16, fp16 or fp32, got 'fp8'"),
        ("train.compile=maybe", "train.compile must be true, false or auto, got 'maybe'"),
        ("train.compile=1", "train.compile must be true, false or auto, got 1"),
        ("train.compile_speed_json=speed.json",
         "train.compile_speed_json is read by train.compile: auto only"),
        ("optim.sgd_impl=fast", "optim.sgd_impl must be default, foreach or fused, got 'fast'"),
    ],
)
def test_impossible_values_are_rejected(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", [override])
    assert one_line(err).startswith(message)


@pytest.mark.parametrize(("value", "setting"), [("true", "true"), ("false", "false"),
                                                ("auto", "auto"), ("'True'", "true"),
                                                ("AUTO", "auto")])
def test_train_compile_accepts_yaml_booleans_and_words(value, setting):
    from longtail.config import compile_setting

    config = load_config("quickstart", [f"train.compile={value}"])
    assert compile_setting(config.train.compile) == setting
    assert load_config("quickstart").train.compile is False  # eager unless asked
    assert load_config("quickstart").optim.sgd_impl == "default"
