#!/bin/bash
# Copy a training run from runs/NAME into benchmarks/in_progress/NAME (without the live
# process's lock) so that it can be committed and resumed in another session.
#
#   bash benchmarks/in_progress/save.sh la_authors_protocol
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:?usage: save.sh RUN_NAME (a folder in runs/)}
[ -f "runs/$name/config.yaml" ] || { echo "save.sh: runs/$name is not a run directory" >&2; exit 1; }
rm -rf "benchmarks/in_progress/$name"
cp -r "runs/$name" benchmarks/in_progress/
rm -f "benchmarks/in_progress/$name/.longtail.lock"
python - "$name" <<'PY'
import sys
import torch
name = sys.argv[1]
ckpt = torch.load(f"benchmarks/in_progress/{name}/checkpoints/last.pt", weights_only=True,
                  map_location="cpu")
print(f"{name}: saved at epoch {ckpt['epoch']} (commit benchmarks/in_progress/{name})")
PY
