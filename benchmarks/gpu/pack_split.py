"""Pack the images one run trains, validates and tests on, so the run can be repeated elsewhere.

A GPU machine lent through the `device` tool receives only the working tree (64 MiB in all);
the whole JPEG copy of CIFAR-10 does not fit, but CIFAR-10-LT does (12,280 training, 500
validation and 10,000 test images, about 20 MB). This copies exactly the images of a finished
run's ``split.json`` (its seeded long-tailed subset and validation split, indices into the class
folders' ``train/``) and the whole ``test/`` folder, byte for byte, and writes list files, so that

    longtail train CONFIG $(cat PACK/overrides.txt)

trains on the same images with the same labels as the run it came from (``data.profile: none``:
the list is the subset already). ``overrides.txt`` holds those ``--set`` options.

    python benchmarks/gpu/pack_split.py --split RUN/split.json --root ../shared/data/cifar10-jpeg \\
        --out gpu_pack
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from longtail.data.sources import DataError, scan_class_folder


def pack(split_file: Path, root: Path, out: Path) -> dict:
    """Copy the split's images and write ``train.txt``, ``val.txt``, ``test.txt``,
    ``overrides.txt`` and ``pack.json`` (what was packed, from where) under ``out``."""
    split = json.loads(split_file.read_text())
    pool = scan_class_folder(str(root / "train"))
    test = scan_class_folder(str(root / "test"), classes=pool.classes)
    if pool.classes != split["classes"]:
        raise DataError(f"{split_file}: classes {split['classes']} are not the class folders of "
                        f"'{root / 'train'}' {pool.classes}")
    parts = {"train": [pool.paths[i] for i in split["train"]],
             "val": [pool.paths[i] for i in split["val"]],
             "test": list(test.paths)}
    labels = {"train": [int(pool.labels[i]) for i in split["train"]],
              "val": [int(pool.labels[i]) for i in split["val"]],
              "test": test.labels.tolist()}
    counts = [labels["train"].count(c) for c in range(len(pool.classes))]
    if counts != split["counts"]:
        raise DataError(f"{split_file}: class counts {split['counts']} do not match the images "
                        f"its indices pick in '{root / 'train'}' ({counts})")
    out.mkdir(parents=True, exist_ok=True)
    for part, paths in parts.items():
        lines = []
        for path, label in zip(paths, labels[part]):
            # the source's train/ or test/ folder, then <class>/<file>
            relative = Path(path).relative_to(root)
            target = out / "images" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            lines.append(f"images/{relative.as_posix()} {label}")
        (out / f"{part}.txt").write_text("\n".join(lines) + "\n")
    overrides = ["data.dataset=list", f"data.root={out}", f"data.train_list={out}/train.txt",
                 f"data.val_list={out}/val.txt", f"data.test_list={out}/test.txt",
                 "data.profile=none", "data.val_per_class=0"]
    (out / "overrides.txt").write_text(" ".join(f"--set {o}" for o in overrides) + "\n")
    info = {"split": str(split_file), "root": str(root), "subset_seed": split.get("seed"),
            "classes": pool.classes, "counts": counts,
            "images": {part: len(paths) for part, paths in parts.items()}}
    (out / "pack.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, required=True, help="a run's split.json")
    parser.add_argument("--root", type=Path, required=True,
                        help="the class-folder data the run read (with train/ and test/)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (new or empty)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"pack_split: '{args.out}' is not empty; give a new folder", file=sys.stderr)
        return 2
    try:
        info = pack(args.split, args.root, args.out)
    except (DataError, OSError, KeyError, json.JSONDecodeError) as error:
        print(f"pack_split: {error}", file=sys.stderr)
        return 2
    print(f"packed {info['images']} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
