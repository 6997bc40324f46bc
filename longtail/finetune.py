"""Fine-tuning from a finished run: ``longtail train CONFIG --init RUN`` for a config without a
stage2 section (``train.init``), e.g. OLTR's stage 2 on a plain stage-1 run (methods.md §11).

The new run takes from RUN what must match for the comparison to mean anything: the exact split
(its ``split.json``) and data settings, and the backbone's weights. The rest (head, loss, sampler,
optimiser, schedule) is this config's. A head that defines ``initialize(features, labels,
stage1_head)`` is then initialised from the stage-1 model: OLTR's memory becomes the class
centroids of the stage-1 features. On ``--resume`` none of this happens again: the run's own
split and checkpoint carry it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from longtail.checkpoint import load_checkpoint
from longtail.config import Config, ConfigError, load_run_config
from longtail.data import DataBundle, LongTailSplit, make_loader
from longtail.models import LongTailModel, build_model
from longtail.models.model import trunk_of
from longtail.runtime import autocast, load_split


def check_finished(init_dir: Path, stage1: Config) -> None:
    """A stage-1 run killed half-way would give stage 2 a half-trained backbone."""
    path = init_dir / "metrics.jsonl"
    lines = [line for line in path.read_text().splitlines() if line] if path.exists() else []
    last = json.loads(lines[-1])["epoch"] if lines else 0
    if last < stage1.train.epochs:
        raise ValueError(f"--init: run '{init_dir}' stopped at epoch {last} of "
                         f"{stage1.train.epochs}; finish it first (longtail train --resume)")


@dataclass
class InitRun:
    run_dir: Path
    config: Config  # the init run's own

    @classmethod
    def open(cls, run_dir: Path, config: Config) -> InitRun:
        """Check that ``run_dir`` is a finished run this config can start from."""
        run_dir = run_dir.resolve()
        for name in ("config.yaml", "split.json", "checkpoints/last.pt"):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"train.init: '{run_dir}' is not a run directory (no "
                                        f"{name})")
        if config.model.pretrained is not False:
            raise ConfigError("train.init and model.pretrained both give the backbone's weights: "
                              "set one of them")
        stage1 = load_run_config(run_dir)
        check_finished(run_dir, stage1)
        if stage1.model.backbone != config.model.backbone or \
                stage1.model.backbone_args != config.model.backbone_args:
            raise ConfigError(f"train.init: run '{run_dir}' has backbone {stage1.model.backbone} "
                              f"{stage1.model.backbone_args or ''}, this config "
                              f"{config.model.backbone} {config.model.backbone_args or ''}: "
                              "fine-tuning needs the same backbone")
        if stage1.model.attention not in ("none", config.model.attention):
            raise ConfigError(f"train.init: run '{run_dir}' has model.attention "
                              f"{stage1.model.attention}, this config {config.model.attention}")
        return cls(run_dir, stage1)

    def adopt(self, config: Config) -> tuple[Config, LongTailSplit]:
        """This config with the init run's data settings, and the init run's split."""

        ours, theirs = dataclasses.asdict(config.data), dataclasses.asdict(self.config.data)
        changed = [k for k in ours if ours[k] != theirs.get(k) and k not in ("mean", "std")]
        if changed:
            print(f"longtail: note: data come from the init run; this config's "
                  f"{', '.join('data.' + k for k in changed)} differ and are not used", flush=True)
        config = copy.deepcopy(config)
        config.data = copy.deepcopy(self.config.data)
        config.train.init = str(self.run_dir)
        if self.config.model.attention == config.model.attention != "none":
            config.model.attention_args = copy.deepcopy(self.config.model.attention_args)
        return config, load_split(self.run_dir)

    def start(self, model: LongTailModel, data: DataBundle, config: Config,
              dev: torch.device, amp: torch.dtype | None) -> list[str]:
        """Load the init run's backbone into ``model`` and let the head initialise itself.
        Returns what was done (for the run's history and log)."""
        path = self.run_dir / "checkpoints" / "last.pt"
        state = load_checkpoint(path, map_location=dev)["model"]
        stage1 = build_model(self.config.model, data.num_classes, data.image_shape[0]).to(dev)
        try:
            stage1.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"train.init: checkpoint '{path}' does not fit its own config: "
                             f"{str(err).splitlines()[0]}") from None
        same = self.config.model.attention == config.model.attention
        target = model.backbone if same else trunk_of(model.backbone)
        target.load_state_dict(stage1.backbone.state_dict())
        done = [f"backbone from {self.run_dir}"]
        if hasattr(model.head, "initialize"):
            feats, labels = extract_features(model.backbone, data, "train", config, dev, amp)
            done += model.head.initialize(feats, labels.to(feats.device), stage1.head)
        print(f"longtail: init: {'; '.join(done)}", flush=True)
        return done


def extract_features(backbone: nn.Module, data: DataBundle, part: str, config: Config,
                     dev: torch.device, amp: torch.dtype | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (float32) and labels of ``part`` in dataset order: eval mode, no augmentation."""

    loader = make_loader(data, part, config.data, 2 * config.train.batch_size, dev,
                         channels_last=config.train.channels_last)
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    with torch.no_grad(), autocast(dev, amp):
        for images, targets in loader:
            feats.append(backbone(images).float())
            labels.append(targets)
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)

