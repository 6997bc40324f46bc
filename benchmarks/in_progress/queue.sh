#!/bin/bash
# The long runs of issue #11, one after the other (two jobs on two cores run far slower than
# twice). Each starts where its carried copy in benchmarks/in_progress/ stopped, or from zero;
# a finished run (test_metrics.json written) is skipped. Run from anywhere, in the background:
#
#   nohup bash benchmarks/in_progress/queue.sh > runs/queue.log 2>&1 &
#
# and save the one training (save.sh) before the session ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p runs

JPEG=(--set data.dataset=folder --set data.root=../shared/data/cifar10-jpeg
      --set train.seed=1 --set data.subset_seed=1 --set train.eval_every=50)

run() {
    local name=$1; shift
    if [ -f "runs/$name/test_metrics.json" ]; then
        echo "$name: finished"; return
    fi
    if [ ! -d "runs/$name" ] && [ -d "benchmarks/in_progress/$name" ]; then
        cp -r "benchmarks/in_progress/$name" runs/
    fi
    if [ -d "runs/$name" ]; then
        echo "$name: resuming ($(date -u +%FT%TZ))"
        longtail train --resume --out "runs/$name" --no-progress
    else
        echo "$name: starting ($(date -u +%FT%TZ))"
        longtail train "$@" --out "runs/$name" --no-progress
    fi
}

# The logit-adjustment authors' protocol (1241 epochs): LA loss, then ERM.
run la_authors_protocol cifar10_lt_la_authors "${JPEG[@]}"
run la_authors_erm cifar10_lt_la_authors --set loss.name=ce "${JPEG[@]}"
