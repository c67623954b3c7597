#!/usr/bin/env bash
# Quoted by docs/results.md and docs/benchmarks.md (the runs on a lent GPU).
# Issue 38 part 6 at 128 px on a lent GPU: the leaderboard's top arms (random, entropy,
# least_confident) and the full method (dual+roi), 10 seeds paired by seed, on both data
# sets, from scratch and from a SimCLR warm start (50 epochs on each seed's pool, the
# probe head), each as `xal run --device cuda`, all four runs at once. Brain MRI: 90
# initial labels, 60 a round, 570 in all. BUSI: 60, 30 a round, 300 in all (half of a
# seed's pool stays unlabelled). Run from the repository root on the GPU machine, with
# the data and the packages it lacks carried beside the code:
#
#   .venv/bin/python benchmarks/resized_copy.py ../shared/data/brain-tumor-figshare \
#       .gpu/mri128 --size 128                      # 24 MB: the folder itself is 108 MB
#   .venv/bin/python benchmarks/resized_copy.py ../shared/data/busi .gpu/busi128 --size 128
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .gpu/whl \
#       skorch==1.4.0 captum==0.9.0 modAL-python==0.4.1 scikit-activeml==1.0.1 makefun
#   pip download ... -d .gpu/whl_sklearn scikit-learn==1.9.1   # used if the machine's is older
#   OUT=/some/folder bash benchmarks/gpu_evidence.sh
#
# Results land in $OUT/{mri,busi}128_{scratch,warm} (results folders of `xal run`:
# resumable, so a second call finishes what a first one left, each run cut at LIMIT
# seconds). Summarise with benchmarks/leaderboard.py --set "MRI 128=$OUT/mri128_scratch" ...
# Settings can be shrunk for a dry run on the CPU: DEVICE=cpu SEEDS=1 SETS=busi
# ARMS=random,entropy EPOCHS=1 PRE_EPOCHS=1 (BUDGET and ROUND scale both sets' budgets).
set -uo pipefail
OUT=${OUT:?set OUT to the folder the results go to}
SETS=${SETS:-mri busi}
ARMS=${ARMS:-random,entropy,least_confident,dual+roi}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-10}
EPOCHS=${EPOCHS:-20}
PRE_EPOCHS=${PRE_EPOCHS:-50}
JOBS=${JOBS:-4}       # per run; four runs at once
LIMIT=${LIMIT:-420}   # seconds each run may take; a run cut short resumes next time
PY=${PY:-python3}
mkdir -p "$OUT"

if [ -d .gpu/whl ]; then  # the packages the machine lacks, carried as wheels
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl/*.whl || exit 1
    if ! $PY -c "import sklearn, sys; sys.exit(tuple(map(int, sklearn.__version__.split('.')[:2])) < (1, 8))"; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .gpu/whl_sklearn/*.whl || exit 1
    fi
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null
$PY - <<'EOF' || exit 1
import sys, numpy, sklearn, torch, skorch, captum, xal_sklearn
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda",
      torch.cuda.is_available(), "| numpy", numpy.__version__, "| sklearn", sklearn.__version__,
      "| skorch", skorch.__version__, "| captum", captum.__version__, "| xal_sklearn",
      xal_sklearn.__version__)
EOF

xal() { $PY -c "import sys; from xal_sklearn.cli import main; sys.exit(main())" "$@"; }
start=$(date +%s)
pids=()
for set in $SETS; do
    if [ "$set" = mri ]; then
        data=(--data "brain-tumor-figshare:${MRI:-.gpu/mri128}" --initial 90 --query-size 60
              --budget "${BUDGET:-570}")
    else
        data=(--data "folder:${BUSI:-.gpu/busi128}" --initial 60 --query-size 30
              --budget "${BUDGET:-300}")
    fi
    common=(run "${data[@]}" --image-size 128 --strategies "$ARMS" --alpha 0.3
            --seeds "$SEEDS" --epochs "$EPOCHS" --n-jobs "$JOBS" --roi-loss rank
            --device "$DEVICE")
    for start_kind in scratch warm; do
        extra=()
        [ "$start_kind" = warm ] && extra=(--pretrain simclr --pretrain-epochs "$PRE_EPOCHS")
        timeout -s INT "$LIMIT" bash -c "$(declare -f xal); PY=$PY; xal ${common[*]@Q} \
            ${extra[*]@Q} --out $OUT/${set}128_$start_kind" > "$OUT/${set}_$start_kind.log" 2>&1 &
        pids+=($!)
    done
done
for pid in "${pids[@]}"; do wait "$pid"; echo "run $pid: rc $?"; done
echo "$(( $(date +%s) - start )) s in all"
for f in "$OUT"/*_scratch.log "$OUT"/*_warm.log; do echo "== $f"; tail -n 8 "$f"; done
grep -h "pretrained seed" "$OUT"/*_warm.log | head -4
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv 2>/dev/null
