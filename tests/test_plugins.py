"""The user's own parts: ``longtail train --import MODULE_OR_FILE.py``, a config's ``imports:``
(re-imported by every command that reads the run) and the ``longtail.plugins`` entry points."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import yaml

import longtail.plugins as plugins
import longtail.train  # noqa: F401  (registers the built-in parts before a test copies them)
from longtail.cli import main
from longtail.config import ConfigError, load_config, load_run_config
from longtail.registry import HEADS, LOSSES

HEAD = "plugin_scaled_linear"
PLUGIN = f'''
from torch import nn

from longtail.registry import HEADS


@HEADS.register("{HEAD}")
class ScaledLinear(nn.Module):
    """A linear head times a fixed scale: a stand-in for a user's own head."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.scale = scale

    @property
    def weight(self):
        return self.fc.weight

    def forward(self, x):
        return self.scale * self.fc(x)
'''


@pytest.fixture(autouse=True)
def isolated_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test registers or imports is forgotten afterwards (a fresh process each time)."""
    for registry in (HEADS, LOSSES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(plugins, "_imported", {})
    monkeypatch.setattr(sys, "path", list(sys.path))


def forget_plugins() -> None:
    """As if the next command were a new process: the head and the import are gone."""
    HEADS._entries.pop(HEAD, None)
    plugins._imported.clear()


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_train_import_file_then_every_command_reimports_it(tmp_path, capsys):
    plugin = tmp_path / "my_heads.py"
    plugin.write_text(PLUGIN)
    run_dir = tmp_path / "run"
    code, _, err = run_main(["train", "--import", str(plugin), "--set", f"model.head={HEAD}",
                             "--set", "model.head_args={scale: 2.0}", "--set", "train.epochs=1",
                             "--set", "train.device=cpu", "--out", str(run_dir), "--no-progress"],
                            capsys)
    assert code == 0, err
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["imports"] == [str(plugin.resolve())] and saved["model"]["head"] == HEAD

    forget_plugins()
    assert load_run_config(run_dir).model.head == HEAD  # the one place that re-imports
    assert HEAD in HEADS

    for argv in (["eval", str(run_dir), "--device", "cpu"],
                 ["sweep", str(run_dir), "--tau", "0:1:0.5", "--method", "logit_adjust"]):
        forget_plugins()
        code, _, err = run_main(argv, capsys)
        assert code == 0, (argv, err)
    forget_plugins()
    import longtail

    assert longtail.load_run(run_dir, device="cpu").model.head.scale == 2.0

    # Resume: the run's own imports come back; an --import it does not have would change it.
    forget_plugins()
    code, _, err = run_main(["train", "--resume", "--out", str(run_dir), "--extend",
                             "train.epochs=2", "--no-progress"], capsys)
    assert code == 0, err
    other = tmp_path / "other.py"
    other.write_text("")
    code, _, err = run_main(["train", "--resume", "--out", str(run_dir), "--import", str(other)],
                            capsys)
    one_line(code, err, "--set/--import changes imports")


def test_config_imports_key_relative_to_the_yaml_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "heads_here.py").write_text(PLUGIN)
    (folder / "exp.yaml").write_text(f"base: quickstart\nimports: [heads_here.py]\n"
                                     f"model: {{head: {HEAD}}}\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder: the path is found next to the file
    config = load_config(str(folder / "exp.yaml"))
    assert config.imports == [str((folder / "heads_here.py").resolve())]
    assert HEAD in HEADS
    # --set imports=[...] works as well, and the same file twice is imported once.
    again = load_config(str(folder / "exp.yaml"), [f"imports=[{folder / 'heads_here.py'}]"])
    assert again.imports == config.imports


def test_a_dotted_module_on_the_path_or_in_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_pkg").mkdir()
    (tmp_path / "my_plugin_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_plugin_pkg" / "heads.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)  # the console script does not put the cwd on sys.path
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]
    monkeypatch.delitem(sys.modules, "my_plugin_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "my_plugin_pkg.heads", raising=False)
    config = load_config("quickstart", [f"model.head={HEAD}"], imports=["my_plugin_pkg.heads"])
    assert config.imports == ["my_plugin_pkg.heads"] and HEAD in HEADS


def test_a_missing_module_or_file_is_one_line(tmp_path, capsys):
    code, _, err = run_main(["train", "--import", "no_such_module_xyz", "--out",
                             str(tmp_path / "r")], capsys)
    one_line(code, err, "no module named 'no_such_module_xyz'")
    code, _, err = run_main(["train", "--import", str(tmp_path / "absent.py"), "--out",
                             str(tmp_path / "r")], capsys)
    one_line(code, err, "absent.py", "does not exist")
    assert not (tmp_path / "r").exists()


def test_an_error_inside_the_plugin_names_its_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import os\n\nraise RuntimeError('bad plugin')\n")
    code, _, err = run_main(["train", "--import", str(broken), "--out", str(tmp_path / "r")],
                            capsys)
    one_line(code, err, "RuntimeError: bad plugin", "broken.py:3")
    needs = tmp_path / "needs.py"
    needs.write_text("import not_installed_dependency_xyz\n")
    with pytest.raises(ConfigError, match="ModuleNotFoundError.*not_installed_dependency_xyz"):
        load_config("quickstart", imports=[str(needs)])


def test_an_unregistered_name_still_says_did_you_mean(tmp_path, capsys):
    plugin = tmp_path / "p.py"
    plugin.write_text(PLUGIN)
    code, _, err = run_main(["train", "--import", str(plugin), "--set",
                             "model.head=plugin_scaled_linea", "--out", str(tmp_path / "r")],
                            capsys)
    one_line(code, err, f"did you mean '{HEAD}'?")


class FakeEntryPoints:
    def __init__(self, entries: list[importlib.metadata.EntryPoint]) -> None:
        self.entries = entries
        self.calls = 0

    def __call__(self, group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == "longtail.plugins"
        self.calls += 1
        return self.entries


def test_entry_points_load_once_on_the_first_miss(tmp_path, monkeypatch):
    (tmp_path / "ep_heads_module.py").write_text(PLUGIN)
    (tmp_path / "ep_loss_module.py").write_text(
        "from torch import nn\nfrom longtail.registry import LOSSES\n\n\ndef register():\n"
        "    LOSSES.register('ep_loss')(nn.CrossEntropyLoss)\n")
    (tmp_path / "ep_broken_module.py").write_text("raise ImportError('broken plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = FakeEntryPoints([
        importlib.metadata.EntryPoint("heads", "ep_heads_module", "longtail.plugins"),
        importlib.metadata.EntryPoint("loss", "ep_loss_module:register", "longtail.plugins"),
        importlib.metadata.EntryPoint("broken", "ep_broken_module", "longtail.plugins")])
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)

    assert "linear" in HEADS and fake.calls == 0  # a hit never loads them
    with pytest.warns(UserWarning, match="'broken'.*broken plugin"):
        assert HEADS.get(HEAD).__name__ == "ScaledLinear"  # the miss loads all of them
    assert "ep_loss" in LOSSES  # the function entry point was called
    assert HEADS.hint("still_missing") is not None and fake.calls == 1  # once per process


def test_import_specs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="expects a list"):
        load_config("quickstart", ["imports=my_module"])
    with pytest.raises(ConfigError, match="neither a dotted module name"):
        load_config("quickstart", imports=["not a module"])
    assert plugins.resolve_spec("pkg.mod") == "pkg.mod"
    assert plugins.resolve_spec("x.py") == str(Path("x.py").resolve())
