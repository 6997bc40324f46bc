#!/bin/bash
# Issue #16 item 4 on a lent GPU machine, one stage per `device` call (each under its 10 minutes):
#   bash benchmarks/gpu/check.sh speed    # longtail speed: model-only, end-to-end, compile
#                                         # (batch 256 only, to keep the call short), SGD
#   bash benchmarks/gpu/check.sh train    # the paper-budget TDE run, bf16 + channels-last, compiled
#   bash benchmarks/gpu/check.sh la NAME [--set ...]   # issue #11: the LA authors' protocol
#                                         # (1241 epochs) as run NAME, e.g. `la la_authors_erm
#                                         # --set loss.name=ce --set 'loss.args={}'`; resumes runs/gpu/NAME if carried
# speed and train need gpu_pack/, la gpu_pack_la/ (benchmarks/gpu/pack_split.py; carried:
# `carry: ["gpu_pack"]` or `["gpu_pack_la", "runs/gpu/NAME"]`). Writes under $OUT (the device tool's folder that comes back) or
# runs/gpu. Extra arguments go to longtail, e.g. `DEVICE=cpu bash benchmarks/gpu/check.sh train
# --set train.epochs=1` as a smoke test here. LIMIT (seconds, default 540) stops the la stage
# inside the device tool's 10 minutes a call; it resumes from its last epoch next call.
set -uo pipefail
stage=${1:?"stage: speed, train or la"}; shift
out=${OUT:-runs/gpu}
device=${DEVICE:-cuda}
config=benchmarks/gpu/cifar10_lt_tde_pack.yaml
pack=gpu_pack
[ "$stage" = la ] && pack=gpu_pack_la
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f $pack/train.txt ]; then
  echo "check.sh: $pack/ is missing: run benchmarks/gpu/pack_split.py and carry $pack" >&2
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
  la)
    name=${1:?"la: give the run a name, e.g. la_authors_erm"}; shift
    run=$out/$name
    # A run carried back from an earlier call (its files, copied to runs/gpu/NAME) continues.
    [ ! -d "$run" ] && [ -d "runs/gpu/$name" ] && cp -r "runs/gpu/$name" "$run"
    # Stopped before its first epoch ended: nothing to resume; set aside, start again.
    [ -d "$run" ] && [ ! -f "$run/checkpoints/last.pt" ] && mv "$run" "$run.no-checkpoint.$(date +%s)"
    if [ -f "$run/checkpoints/last.pt" ]; then
      timeout "${LIMIT:-540}" python3 -m longtail train --resume --out "$run" --device "$device" \
        --no-progress 2>&1 | tee -a "$out/$name.log"
    else
      timeout "${LIMIT:-540}" python3 -m longtail train benchmarks/gpu/cifar10_lt_la_authors_pack.yaml \
        --device "$device" --no-progress --out "$run" "$@" 2>&1 | tee -a "$out/$name.log"
    fi
    rm -f "$run/.longtail.lock" ;;
  *) echo "check.sh: unknown stage '$stage' (speed, train or la)" >&2; exit 2 ;;
esac
