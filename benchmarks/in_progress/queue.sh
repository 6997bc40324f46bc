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
# (benchmarks/results/la_authors_protocol/); its ERM run (about 9 hours) comes last, after the
# 3-hour LDAM authors' run.

# The LDAM-DRW authors' code on the same JPEG copy, 200 epochs (benchmarks/README.md), when
# their repository is given: LDAM_AUTHORS=<kaidic/LDAM-DRW checkout>, EXTRA_PATH=<a folder with
# tensorboardX>. Their checkpoint and logs live in runs/ldam_authors_e200 (save.sh carries it).
if [ -n "${LDAM_AUTHORS:-}" ]; then
    work=runs/ldam_authors_e200
    if [ ! -d "$work" ] && [ -d benchmarks/in_progress/ldam_authors_e200 ]; then
        cp -r benchmarks/in_progress/ldam_authors_e200 runs/
    fi
    # Their code names the folder after its arguments (store_name); there is one.
    ckpt=$(ls "$work"/checkpoint/*/ckpt.pth.tar 2>/dev/null | head -n 1 || true)
    [ -d /tmp/cifar/cifar-10-batches-py ] ||
        python benchmarks/authors_code/make_pickle.py ../shared/data/cifar10-jpeg /tmp/cifar/cifar-10-batches-py
    done_epochs=0
    [ -n "$ckpt" ] && done_epochs=$(python -c "import sys, torch; print(torch.load(sys.argv[1], \
        map_location='cpu', weights_only=True)['epoch'])" "$ckpt")
    if [ "$done_epochs" -ge 200 ]; then
        echo "ldam_authors_e200: finished"
    else
        resume=()
        [ "$done_epochs" -gt 0 ] && resume=(--resume "$PWD/$ckpt")  # they chdir to WORK
        echo "ldam_authors_e200: from epoch $done_epochs ($(date -u +%FT%TZ))"
        mkdir -p "$work"
        AUTHORS=$LDAM_AUTHORS PICKLES=/tmp/cifar WORK=$work EVAL_EVERY=10 \
            python benchmarks/authors_code/drive_ldam.py --loss_type LDAM --train_rule DRW \
            --seed 1 --rand_number 1 -j 0 --exp_str e200 "${resume[@]}" \
            >> "$work/stdout.log" 2>&1
    fi
fi
# The authors' grey crop padding (the config's default), unlike the LA-loss run, which started
# before data.crop_fill existed and pads black: their protocol counts more than the pair, since
# the grey padding brought ours level with their code at 31 epochs (results/la_authors_vs_ours/).
run la_authors_erm cifar10_lt_la_authors --set loss.name=ce "${PROTOCOL[@]}"
exit
}
