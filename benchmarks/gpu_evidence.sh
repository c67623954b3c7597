#!/usr/bin/env bash
# Quoted by docs/results.md and docs/benchmarks.md (the runs on a lent GPU).
# Issue 17 part 5 at 128 px on a lent GPU: the brain-MRI protocol (90 initial labels,
# 60 a round, 570 in all, 20 epochs, 5 seeds, paired by seed) with random, entropy and
# the full method, from scratch and from a SimCLR warm start (50 epochs on each seed's
# pool), both as `xal run --device cuda`. Run from the repository root on the GPU
# machine, with the data and the packages it lacks carried beside the code:
#
#   .venv/bin/python benchmarks/resized_copy.py ../shared/data/brain-tumor-figshare \
#       .gpu/mri128 --size 128                      # 24 MB: the folder itself is 108 MB
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .gpu/whl \
#       skorch==1.4.0 captum==0.9.0 modAL-python==0.4.1 scikit-activeml==1.0.1 makefun
#   pip download ... -d .gpu/whl_sklearn scikit-learn==1.9.1   # used if the machine's is older
#   OUT=/some/folder bash benchmarks/gpu_evidence.sh
#
# Results land in $OUT/mri128_scratch and $OUT/mri128_warm (results folders of
# `xal run`: resumable, so a second call finishes what a first one left). Settings can
# be shrunk for a dry run on the CPU: DEVICE=cpu SEEDS=1 BUDGET=150 EPOCHS=1 PRE_EPOCHS=1.
set -uo pipefail
OUT=${OUT:?set OUT to the folder the results go to}
DATA=${DATA:-.gpu/mri128}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-5}
BUDGET=${BUDGET:-570}
EPOCHS=${EPOCHS:-20}
PRE_EPOCHS=${PRE_EPOCHS:-50}
JOBS=${JOBS:-8}
LIMIT=${LIMIT:-400}   # seconds each run may take; a run cut short resumes next time
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
common=(run --data "brain-tumor-figshare:$DATA" --image-size 128
        --strategies random,entropy,dual+roi --alpha 0.3 --initial 90 --query-size 60
        --budget "$BUDGET" --seeds "$SEEDS" --epochs "$EPOCHS" --n-jobs "$JOBS"
        --device "$DEVICE")
start=$(date +%s)
timeout -s INT "$LIMIT" bash -c "$(declare -f xal); PY=$PY; xal ${common[*]@Q} \
    --out $OUT/mri128_scratch" > "$OUT/scratch.log" 2>&1 &
scratch=$!
timeout -s INT "$LIMIT" bash -c "$(declare -f xal); PY=$PY; xal ${common[*]@Q} \
    --pretrain simclr --pretrain-epochs $PRE_EPOCHS --out $OUT/mri128_warm" \
    > "$OUT/warm.log" 2>&1
warm_rc=$?
wait $scratch
scratch_rc=$?
echo "scratch rc $scratch_rc, warm rc $warm_rc, $(( $(date +%s) - start )) s in all"
for f in scratch warm; do echo "== $f"; tail -n 12 "$OUT/$f.log"; done
grep -h "pretrained seed" "$OUT/warm.log"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv 2>/dev/null
# What pretraining costs on this GPU at 64 px, the issue's size (the copy read at 64 px)
timeout 60 $PY benchmarks/bench_pretrain.py --mri "$DATA" --image-size 64 \
    --epochs "$PRE_EPOCHS" --device "$DEVICE" 2>&1 | tee "$OUT/bench_pretrain64.log"
