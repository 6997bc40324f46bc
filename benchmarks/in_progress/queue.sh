#!/bin/bash
# The long runs of issue #11, one after the other (two jobs on two cores run far slower than
# twice). Each starts where its carried copy in benchmarks/in_progress/ stopped, or from zero;
# a finished run (eval/test_metrics.json written) is skipped. Run from anywhere, in the background:
#
#   nohup bash benchmarks/in_progress/queue.sh > runs/queue.log 2>&1 &
#
# and save the one training (save.sh) before the session ends.
set -euo pipefail
# The whole script is one block, read before it runs: editing this file (a git pull) while the
# queue trains cannot change what the running queue does next.
{
cd "$(dirname "$0")/../.."
mkdir -p runs

PROTOCOL=(--set data.dataset=folder --set data.root=../shared/data/cifar10-jpeg
      --set train.seed=1 --set data.subset_seed=1 --set train.eval_every=50)

run() {
    local name=$1; shift
    if [ -f "runs/$name/eval/test_metrics.json" ]; then
        echo "$name: finished"; return
    fi
    if [ ! -d "runs/$name" ] && [ -d "benchmarks/in_progress/$name" ]; then
        cp -r "benchmarks/in_progress/$name" runs/
    fi
    if [ -d "runs/$name" ] && [ ! -f "runs/$name/checkpoints/last.pt" ]; then
        # A start killed before its first epoch: nothing to resume; keep it aside, start again.
        local aside="runs/$name.no-checkpoint.$(date -u +%Y%m%dT%H%M%SZ)"
        mv "runs/$name" "$aside"
        echo "$name: no checkpoint to resume; moved to $aside"
    fi
    if [ -d "runs/$name" ]; then
        echo "$name: resuming ($(date -u +%FT%TZ))"
        longtail train --resume --out "runs/$name" --no-progress
    else
        echo "$name: starting ($(date -u +%FT%TZ))"
        longtail train "$@" --out "runs/$name" --no-progress
    fi
}

# The logit-adjustment authors' protocol (1241 epochs): its LA-loss run has finished
# (benchmarks/results/la_authors_protocol/), and so has the LDAM-DRW authors' 200-epoch run that
# came before in this queue (benchmarks/results/ldam_authors_e200/); its ERM run (about 10 hours)
# is what is left.

# The authors' grey crop padding (the config's default), unlike the LA-loss run, which started
# before data.crop_fill existed and pads black: their protocol counts more than the pair, since
# the grey padding brought ours level with their code at 31 epochs (results/la_authors_vs_ours/).
run la_authors_erm cifar10_lt_la_authors --set loss.name=ce --set "loss.args={}" "${PROTOCOL[@]}"
exit
}
