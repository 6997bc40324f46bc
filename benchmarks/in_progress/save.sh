#!/bin/bash
# Copy a training run from runs/NAME into benchmarks/in_progress/NAME so that it can be
# committed and resumed in another session: a longtail run directory without the live
# process's lock, or the LDAM authors' run (queue.sh) without its link to the data.
#
#   bash benchmarks/in_progress/save.sh la_authors_erm
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:?usage: save.sh RUN_NAME (a folder in runs/)}
src=runs/$name
if [ -f "$src/checkpoints/last.pt" ]; then
    ckpt=checkpoints/last.pt
elif ckpt=$(cd "$src" 2>/dev/null && ls checkpoint/*/ckpt.pth.tar 2>/dev/null); then
    :
else
    echo "save.sh: $src has no checkpoint to carry (checkpoints/last.pt or checkpoint/*/ckpt.pth.tar)" >&2
    exit 1
fi
dst=benchmarks/in_progress/$name
rm -rf "$dst"
mkdir -p "$dst"
# The data link and the lock are this machine's; the checkpoint is written atomically by both
# codes, so the copy is whole.
(cd "$src" && find . -mindepth 1 -maxdepth 1 ! -name data ! -name .longtail.lock \
    -exec cp -r {} "$OLDPWD/$dst/" \;)
find "$dst" -name ckpt.best.pth.tar -delete  # their best-on-test copy: best_acc1 is in ckpt
python - "$dst/$ckpt" <<'PY'
import sys
import torch
path = sys.argv[1]
epoch = torch.load(path, weights_only=True, map_location="cpu")["epoch"]
print(f"saved {path} at epoch {epoch}: commit it")
PY
