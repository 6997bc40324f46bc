#!/bin/bash
# Issue #16 item 4 on a lent GPU machine, one stage per `device` call (each under its 10 minutes):
#   bash benchmarks/gpu/check.sh speed    # longtail speed: model-only, end-to-end, compile
#                                         # (batch 256 only, to keep the call short), SGD
#   bash benchmarks/gpu/check.sh train    # the paper-budget TDE run, bf16 + channels-last, compiled
# Needs gpu_pack/ (benchmarks/gpu/pack_split.py; carried: `carry: ["gpu_pack"]`). Writes under
# $OUT (the device tool's folder that comes back) or runs/gpu. Extra arguments go to longtail,
# e.g. `DEVICE=cpu bash benchmarks/gpu/check.sh train --set train.epochs=1` as a smoke test here.
set -uo pipefail
stage=${1:?"stage: speed or train"}; shift
out=${OUT:-runs/gpu}
device=${DEVICE:-cuda}
config=benchmarks/gpu/cifar10_lt_tde_pack.yaml
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f gpu_pack/train.txt ]; then
  echo "check.sh: gpu_pack/ is missing: run benchmarks/gpu/pack_split.py and carry gpu_pack" >&2
  exit 2
fi
mkdir -p "$out"
{ nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"; } | tee "$out/machine.txt"
case $stage in
  speed)
    python3 -m longtail speed --device "$device" --config $config --compile \
      --compile-batch-sizes 256 --batch-size 256 --repeats 3 --sgd --out "$out/speed" "$@" \
      2>&1 | tee "$out/speed.log" ;;
  train)
    python3 -m longtail train $config --device "$device" --no-progress --out "$out/tde_paper" "$@" \
      2>&1 | tee "$out/train.log" ;;
  *) echo "check.sh: unknown stage '$stage' (speed or train)" >&2; exit 2 ;;
esac
