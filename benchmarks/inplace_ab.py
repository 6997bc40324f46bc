"""In-place ReLU and residual sum in training (issue #16 item 3): the training step of ResNet-32
with the backbones' in-place forward against the plain one (a new tensor at every op), in one
process, alternating rounds so that both see the same machine state (a shared CPU's speed drifts
by more than the effect between runs minutes apart).

    python benchmarks/inplace_ab.py --rounds 12 --out benchmarks/results/speed/inplace_relu

Each round times ``--steps`` steps of each variant on one fixed random batch (the order within a
round alternates). Reported per setting: the median images/s of each, the median of the per-round
ratios, and in how many rounds in-place was the faster. ``tests/test_models.py`` checks that both
forwards give bitwise the same features, gradients and BatchNorm statistics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from longtail.models.backbones import BasicBlock, CifarResNet
from longtail.models.resnet32_la import LogitAdjustmentResNet32, ThreeConvBlock
from longtail.speed import TrainStep, resnet32
from longtail.speed.machine import describe_device

SETTINGS = [("bf16", True, 256), ("bf16", True, 128), ("fp32", False, 256)]


def out_of_place_forward(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual blocks written the plain way, a new tensor at every op (the reference)."""
    if isinstance(block, ThreeConvBlock):
        out = F.relu(block.bn1(block.conv1(x)))
        if block.stride != 1:
            out = F.pad(out, (0, 1, 0, 1))
        out = block.bn3(block.conv3(F.relu(block.bn2(block.conv2(out)))))
        return F.relu(out + block.shortcut(x))
    out = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    short = block.shortcut(x)
    if block.pad:
        short = F.pad(short, (0, 0, 0, 0, block.pad // 2, block.pad - block.pad // 2))
    return F.relu(out + short)


def _plain_feature_map(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.layer3(net.layer2(net.layer1(F.relu(net.bn1(net.conv1(x))))))
    if isinstance(net, LogitAdjustmentResNet32):
        return net.final_bn(x)
    if net.two_branch:
        return torch.cat([net.branch_a(x), net.branch_b(x)], dim=1)
    return x


def make_plain(model: torch.nn.Module) -> torch.nn.Module:
    """This model instance (only it) with the plain forward in every block and in the stem."""
    for module in model.modules():
        if isinstance(module, (BasicBlock, ThreeConvBlock)):
            module.forward = types.MethodType(out_of_place_forward, module)
        elif isinstance(module, (CifarResNet, LogitAdjustmentResNet32)):
            module.feature_map = types.MethodType(_plain_feature_map, module)
    return model


def measure(precision: str, channels_last: bool, batch_size: int, rounds: int,
            steps: int) -> dict:
    device = torch.device("cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    runs = {}
    for name in ("in_place", "plain"):
        torch.manual_seed(0)
        model = resnet32().to(memory_format=fmt)
        runs[name] = TrainStep(make_plain(model) if name == "plain" else model, device,
                               precision)
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch_size,))
    for step in runs.values():  # warm-up: kernels built, caches filled
        for _ in range(3):
            step(images, labels)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in (("in_place", "plain") if r % 2 == 0 else ("plain", "in_place")):
            started = time.perf_counter()
            for _ in range(steps):
                runs[name](images, labels)
            rates[name].append(steps * batch_size / (time.perf_counter() - started))
    ratios = [a / b for a, b in zip(rates["in_place"], rates["plain"])]
    return {"precision": precision, "channels_last": channels_last, "batch_size": batch_size,
            "rounds": rounds, "steps": steps, "images_per_second": rates,
            "median_in_place": statistics.median(rates["in_place"]),
            "median_plain": statistics.median(rates["plain"]),
            "median_ratio": statistics.median(ratios),
            "rounds_in_place_faster": sum(x > 1 for x in ratios)}


def markdown(results: dict) -> str:
    dev = results["device"]
    lines = ["# In-place ReLU and residual sum in training: an interleaved A/B", "",
             "```", results["command"], "```", "",
             f"{dev['name']}, torch {dev['torch']}, {dev['torch_threads']} threads; "
             f"{results['date']}. ResNet-32 + linear head, model-only training step (forward, "
             "cross-entropy, backward, SGD) on one fixed random batch; per round "
             f"{results['steps']} steps of each variant, {results['rounds']} rounds.", "",
             "| precision | memory format | batch | plain img/s (median) | in-place img/s "
             "(median) | median per-round ratio | rounds in-place faster |",
             "|---|---|---|---|---|---|---|"]
    for r in results["settings"]:
        fmt = "channels-last" if r["channels_last"] else "channels-first"
        lines.append(f"| {r['precision']} | {fmt} | {r['batch_size']} | "
                     f"{r['median_plain']:.1f} | {r['median_in_place']:.1f} | "
                     f"{r['median_ratio']:.3f} | {r['rounds_in_place_faster']} of {r['rounds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=6, help="steps per variant and round")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be >= 1")
    results = {"command": "python " + " ".join(["benchmarks/inplace_ab.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "device": describe_device(torch.device("cpu")), "rounds": args.rounds,
               "steps": args.steps, "settings": []}
    for precision, channels_last, batch_size in SETTINGS:
        row = measure(precision, channels_last, batch_size, args.rounds, args.steps)
        results["settings"].append(row)
        print(f"{precision} {'CL' if channels_last else 'CF'} b{batch_size}: plain "
              f"{row['median_plain']:.1f}, in-place {row['median_in_place']:.1f} img/s, ratio "
              f"{row['median_ratio']:.3f} ({row['rounds_in_place_faster']}/{args.rounds})",
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
