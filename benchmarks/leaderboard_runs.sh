#!/usr/bin/env bash
# Quoted by docs/results.md (section 1). Issue 38, part 3: the leaderboard on two data sets,
# every strategy `xal run` offers, 10 seeds, paired by seed, at the package's current
# defaults, from scratch and from the warm start (SimCLR on each seed's pool, the probe
# head). Each line is one resumable `xal run` folder: run this again after an
# interruption (a session's end, Ctrl-C) and it finishes what is left; a finished folder
# only prints its report again. Then summarise with
#   python benchmarks/leaderboard.py --set "MRI=$OUT/mri_scratch" --set "MRI warm=$OUT/mri_warm" \
#       --set "BUSI=$OUT/busi_scratch" --set "BUSI warm=$OUT/busi_warm" --figures FIGS
# MRI: 64 px, 90 + 8 x 60 = 570 labels. BUSI: 64 px, 60 + 8 x 30 = 300 labels, about
# half of its 610-image pools (the rest stays unlabelled). SETS=mri or SETS=busi runs one.
set -euo pipefail
OUT=${OUT:?set OUT to the folder the results go to}
MRI=${MRI:-../shared/data/brain-tumor-figshare}
BUSI=${BUSI:-../shared/data/busi}
SEEDS=${SEEDS:-10}
JOBS=${JOBS:-2}
SETS=${SETS:-mri busi}
XAL=${XAL:-xal}
ARMS=random,entropy,margin,least_confident,bald,badge,coreset,typiclust,probcover,dual,dual_kcenter,dual_cluster,random+roi,dual+roi,dual_cluster+roi
mkdir -p "$OUT"
for set in $SETS; do
    if [ "$set" = mri ]; then
        args=(--data "brain-tumor-figshare:$MRI" --initial 90 --query-size 60 --budget 570)
    else
        args=(--data "folder:$BUSI" --initial 60 --query-size 30 --budget 300)
    fi
    common=(run "${args[@]}" --image-size 64 --strategies "$ARMS" --alpha 0.3
            --seeds "$SEEDS" --epochs 20 --n-jobs "$JOBS" --roi-loss rank)
    $XAL "${common[@]}" --out "$OUT/${set}_scratch" > "$OUT/${set}_scratch.log" 2>&1
    $XAL "${common[@]}" --pretrain simclr --pretrain-epochs 50 --out "$OUT/${set}_warm" \
        > "$OUT/${set}_warm.log" 2>&1
done
