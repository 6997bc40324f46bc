"""``train.compile``: ``torch.compile`` of a model's backbone for training steps, and the rule
that decides it (``true``, ``false``, or ``auto`` from a ``longtail speed --compile`` measurement
or the per-device default below)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from longtail import distributed as dist
from longtail.checkpoint import read_json
from longtail.config import Config, ConfigError, compile_setting
from longtail.runtime import first_error_line, sync

# train.compile: auto without a measurement (train.compile_speed_json): on CUDA compiling is the
# usual gain; on CPU it is off until `longtail speed --compile` shows a gain on this machine
# (benchmarks/results/speed/). Change a device's entry here to change the rule.
COMPILE_AUTO: dict[str, bool] = {"cuda": True, "cpu": False}


def compile_decision(config: Config, dev: torch.device, steps: int) -> tuple[bool, str]:
    """Whether this run compiles its backbone, and why (the printed line, ``history.jsonl``).
    ``steps``: the optimizer steps left to run, which ``auto`` weighs the compile time against."""
    tcfg = config.train
    setting = compile_setting(tcfg.compile)
    if setting != "auto":
        return setting == "true", setting
    note = "no train.compile_speed_json"
    if tcfg.compile_speed_json:
        from longtail.speed import compile_verdict

        path = Path(tcfg.compile_speed_json)
        if not path.is_file():
            raise ConfigError(f"train.compile_speed_json: '{path}' is not a file (a speed.json "
                              "of `longtail speed --compile`)")
        verdict, note = compile_verdict(read_json(path, "speed file"), dev, tcfg.precision,
                                        tcfg.channels_last, dist.per_process_batch(
                                            tcfg.batch_size), config.model.backbone, steps)
        if verdict is not None:
            return verdict, f"auto: {'on' if verdict else 'off'} ({path}: {note})"
    on = COMPILE_AUTO.get(dev.type, False)
    return on, f"auto: {'on' if on else 'off'} on {dev.type} by default ({note})"


class CompiledBackbone:
    """``train.compile``: the backbone's forward compiled in place, for training steps only.

    Only the backbone: a head is a matrix product or two (little to gain), and TDE heads update
    their moving-average buffer in place during the forward, which is simplest left eager. The
    compiled forward is an instance attribute of the backbone, so the module tree, hence
    ``state_dict`` keys, checkpoints and DDP's wrapping, stay as they are (``torch.compile(module)``
    would return a wrapper whose keys start with ``_orig_mod.``); ``eager()`` and ``disable()``
    take it away (evaluation runs eagerly). A step on a batch shape not seen before compiles (the
    first step; the epoch's short last batch): ``step`` times it and, when compiling fails,
    restores what the failed attempt touched, goes back to eager for good and redoes the step."""

    def __init__(self, backbone: torch.nn.Module, device: torch.device,
                 report: Callable[..., None] | None = None) -> None:
        self.backbone, self.device = backbone, device
        self.report = report or (lambda line, **details: None)
        self.compiled: Callable | None = None
        self.failed: str | None = None  # the first line of the error, once compiling failed
        self.first_step_seconds: float | None = None
        self.shapes: set[tuple[int, ...]] = set()

    def enable(self) -> None:
        if self.compiled is None:
            self.compiled = torch.compile(self.backbone.forward)
        self.backbone.forward = self.compiled

    def disable(self) -> None:
        vars(self.backbone).pop("forward", None)  # the class's own forward again

    @contextmanager
    def eager(self) -> Iterator[None]:
        compiled = "forward" in vars(self.backbone)
        self.disable()
        try:
            yield
        finally:
            if compiled:
                self.enable()

    def new_shape(self, images: torch.Tensor) -> bool:
        """True when the next step may compile: a batch shape this backbone has not seen yet."""
        return self.failed is None and tuple(images.shape) not in self.shapes

    def step(self, forward_backward: Callable[..., Any], images: torch.Tensor,
             labels: torch.Tensor, stateful: Iterable[torch.nn.Module]) -> Any:
        """``forward_backward(images, labels)`` (forward, loss, backward; no optimizer step)
        with the compiled backbone, guarded: a failure to compile leaves no trace (the buffers of
        ``stateful`` and the random state are restored) and the step runs eagerly."""
        first = self.first_step_seconds is None
        # What the attempt may change before it fails: buffers (BatchNorm statistics, a TDE
        # head's moving average) and the random state; the optimizer has not stepped yet.
        buffers = [b for module in stateful for b in module.buffers()]
        saved = [b.detach().clone() for b in buffers]
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        sync(self.device)
        started = time.perf_counter()
        try:
            self.enable()
            result = forward_backward(images, labels)
            sync(self.device)
        except Exception as err:  # noqa: BLE001 - whatever the compiler raised, train eagerly
            # Under torchrun a process that fails in the forward redoes the step and its
            # gradient reduction still pairs with the others'. Inductor compiles the backward
            # lazily, though: a failure there, after some buckets were reduced, is not covered.
            self.disable()
            self.failed = first_error_line(err)
            with torch.no_grad():
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            self.report(f"torch.compile failed ({self.failed}); training eagerly",
                        compiled=False, error=self.failed)
            return forward_backward(images, labels)  # a genuine error of the model re-raises
        self.shapes.add(tuple(images.shape))
        seconds = time.perf_counter() - started
        if first:
            self.first_step_seconds = seconds
            self.report(f"compiled the backbone (first step {seconds:.1f} s)", compiled=True,
                        first_step_seconds=round(seconds, 3))
        return result
