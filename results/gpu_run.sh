#!/usr/bin/env bash
# The GPU runs of issues 23 and 24 in one command, sized for a 10-minute lease on one GPU:
#   1. benchmarks/search.py --device cuda (lenet5), alone on the GPU, with a torch.profiler table
#   2. then side by side, one thread each: the vicious classifiers' Table 1 cells at the paper's
#      50 epochs (results/vicious.sh table; seed 0; VICIOUS_JOBS at once) and the query frontier's
#      studies (results/frontier/run.sh; one process per model and precision; FRONTIER_JOBS at once)
#   3. at BUDGET seconds whatever still runs is stopped; everything finished is packed into $OUT.
# Resumable like its parts: rerun with the same runs/ to continue. Needs the target models of
# results/reproduce.sh and results/defenses/run.sh under runs/ and HESIG_DATA set.
# Usage: OUT=<folder> [BUDGET=520] [VICIOUS_SEEDS=0] [VICIOUS_JOBS=7] [FRONTIER_JOBS=6]
#        [FRONTIER_PARTS="mnist fashion wide"] [CIFAR_JOBS=4] [SEARCH_TF32=1] [SEARCH_FP32=1] [MPS=0]
#        [LEARNED="K:EPOCHS:BALANCE:N_TRAIN:N_TEST ..."] bash results/gpu_run.sh
# FRONTIER_PARTS="" leaves the frontier out, CIFAR_JOBS=0 the CIFAR table, SEARCH_TF32=0 / SEARCH_FP32=0
# the search benchmark with / without TF32. LEARNED runs results/frontier/learned.py once per entry,
# all at once, beside the rest (its learned.json comes back).
# The lease of 2026-11-27 (H200): the device image has torch but not hesig's platformdirs, and no
# `hesig` or `python` on its PATH, so the command carried a folder .gpu/ (git-ignored) holding the
# platformdirs wheel, the MNIST / Fashion-MNIST .gz files, the trained models under runs/ and two
# shims (.gpu/bin/hesig: `exec python3 -m hesig "$@"`; .gpu/bin/python: `exec python3 "$@"`):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl &&
#   export PYTHONPATH=$PWD:/tmp/site PATH=$PWD/.gpu/bin:$PATH HESIG_DATA=$PWD/.gpu/data &&
#   cp -r .gpu/runs/. runs/ && BUDGET=500 VICIOUS_JOBS=7 FRONTIER_JOBS=3 FRONTIER_PARTS=mnist bash results/gpu_run.sh
# (A rehearsal on a CPU at toy scale: DEVICE=cpu SEARCH_ARGS="--device cpu --rows 50 --job-rows 100
#  --seconds 0.3 --repeats 1" VICIOUS_EPOCHS=1 TRAIN_LIMIT=300 N_TRAIN=300 N_TEST=50.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
BUDGET=${BUDGET:-520}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
start=$SECONDS
log() { echo "[$((SECONDS - start)) s] $*" | tee -a "$OUT/gpu_run.log"; }
mkdir -p "$OUT"

python3 - <<'EOF' 2>&1 | tee -a "$OUT/gpu_run.log"
import torch, hesig
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None, "hesig", hesig.__version__)
from hesig.data import load_dataset  # extract each dataset once, before two dozen processes want it
for name in ("mnist", "fashion-mnist"):
    for split in ("train", "test"):
        load_dataset(name, split)
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT/gpu_run.log" 2>&1

if [[ ${SEARCH_TF32:-1} == 1 ]]; then  # SEARCH_TF32=0 skips it (a lease that has it already)
  log "search benchmark (alone on the GPU)"
  timeout 150 python3 benchmarks/search.py --model runs/mnist-lenet5/model ${SEARCH_ARGS:---device cuda --seconds 2 --repeats 3} \
    --profile "$OUT/search_cuda_profile.txt" > "$OUT/search_cuda.json" 2> "$OUT/search_cuda.err"
  log "search benchmark exit $?"
fi
if [[ ${SEARCH_FP32:-1} == 1 ]]; then  # the same with cuDNN's TF32 convolutions off: speed and GPU-CPU agreement
  timeout 150 python3 benchmarks/search.py --model runs/mnist-lenet5/model ${SEARCH_ARGS:---device cuda --seconds 2 --repeats 3} \
    --no-tf32 > "$OUT/search_cuda_fp32.json" 2>> "$OUT/search_cuda.err"
  log "search benchmark, TF32 off, exit $?"
fi

# Many small processes share the GPU: with CUDA MPS (MPS=1) their kernels can run side by side
# instead of taking turns. Off by default: the one lease that tried it with 24 processes
# (2026-11-27, H200) stopped answering and returned nothing; the cause is unknown.
mps=0
if [[ ${MPS:-0} == 1 ]] && command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c "import torch; assert torch.ones(4, device='cuda').sum().item() == 4"; then
    mps=1
  else
    echo quit | nvidia-cuda-mps-control 2> /dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
log "MPS: $mps"
nvidia-smi dmon -s u -d 10 > "$OUT/gpu_utilisation.log" 2>&1 &
monitor=$!
log "vicious Table 1 (50 epochs) and frontier studies, side by side"
PROGRESS=1 TQDM_MININTERVAL=20 EPOCHS=${VICIOUS_EPOCHS:-50} JOBS=${VICIOUS_JOBS:-7} SEEDS=${VICIOUS_SEEDS:-0} RUNS=runs/vicious50 setsid bash results/vicious.sh table \
  > "$OUT/vicious.log" 2>&1 &
vicious=$!
frontier=0  # FRONTIER_PARTS="" leaves the frontier out
if [[ -n ${FRONTIER_PARTS-mnist fashion wide} ]]; then
  DEVICE=${DEVICE:-cuda} JOBS=${FRONTIER_JOBS:-6} PARTS=${FRONTIER_PARTS-mnist fashion wide} setsid bash results/frontier/run.sh > "$OUT/frontier.log" 2>&1 &
  frontier=$!
fi
cifar=0  # He et al.'s CIFAR-10 columns, when the archive came along (results/gpu_cifar_chunks.sh)
if [[ -f ${HESIG_DATA:-/nonexistent}/cifar10/cifar10.npz && ${CIFAR_JOBS:-4} -gt 0 ]]; then
  log "He et al. on CIFAR-10 beside them"
  DATASET=cifar10 ARCH=cifar_cnn TABLE_SPLITS="conv11 ReLU22 ReLU32" RUNS=runs/collab-cifar10 DEVICE=${DEVICE:-cuda} \
    JOBS=${CIFAR_JOBS:-4} setsid bash results/collab_inference.sh table > "$OUT/cifar.log" 2>&1 &
  cifar=$!
fi
learned=0  # learned query points (results/frontier/learned.py), LEARNED="K:EPOCHS:BALANCE:N_TRAIN:N_TEST ..."
if [[ -n ${LEARNED:-} ]]; then
  log "learned query points beside them: $LEARNED"
  setsid bash -c 'for run in $0; do IFS=: read -r k e b ntr nte <<< "$run"
      LEARNED_DEVICE=${DEVICE:-cuda} N_TRAIN=$ntr N_TEST=$nte python3 results/frontier/learned.py $k $e $b &
    done; wait' "$LEARNED" > "$OUT/learned.log" 2>&1 &
  learned=$!
fi
last=$SECONDS
running() { for group in "$@"; do (( group > 0 )) && kill -0 $group 2>/dev/null && return 0; done; return 1; }
while (( SECONDS - start < BUDGET )) && running $vicious $frontier $cifar $learned; do
  sleep 5
  if (( SECONDS - last >= 60 )); then  # progress, for a lease that ends before its parts do
    last=$SECONDS
    log "finished: vicious $(ls runs/vicious50/*/*/seed*/metrics.json 2>/dev/null | wc -l), frontier cells $(ls runs/frontier/*/steps/cell-*.json 2>/dev/null | wc -l), cifar cells $(ls runs/collab-cifar10/table/*/metrics.json 2>/dev/null | wc -l)"
  fi
done
for group in $vicious $frontier $cifar $learned; do (( group > 0 )) && kill -0 $group 2>/dev/null && { log "stopping group $group at the budget"; kill -TERM -- -$group; }; done
sleep 3
kill $monitor 2>/dev/null
(( mps )) && echo quit | nvidia-cuda-mps-control
log "packing"
# what came back: cell records and logs (no fingerprint or reconstruction files: 10,000 test images
# make 31 MB per cell, and a lease returns at most 16 MiB per file); the vicious
# runs whole (F and G: detection and output defenses run on them elsewhere), one archive per dataset
if (( frontier > 0 )); then
  python3 results/frontier/report.py runs/frontier/*/ > "$OUT/frontier_table.md" 2>> "$OUT/gpu_run.log"
  tar czf "$OUT/frontier.tgz" --exclude='fp_*' --exclude='recon_*' --exclude='*.chunks' runs/frontier results/frontier 2>> "$OUT/gpu_run.log"
fi
for ds in mnist fashion-mnist; do
  [ -d runs/vicious50/$ds ] && tar czf "$OUT/vicious50_$ds.tgz" runs/vicious50/$ds 2>> "$OUT/gpu_run.log"
done
# the CIFAR cells' records and 10-image protocol figures, not the reconstructions (an inverse
# network's 10,000 make 123 MB); the target model (6.4 MB) in an archive of its own, so that each
# stays under the 16 MiB a lease returns per file
[ -d runs/collab-cifar10 ] && tar czf "$OUT/collab_cifar10.tgz" --exclude='*.chunks' --exclude='chunks' \
  --exclude='reconstructions*' --exclude='target' runs/collab-cifar10 2>> "$OUT/gpu_run.log"
[ -d runs/collab-cifar10/target ] && tar czf "$OUT/cifar10_target.tgz" runs/collab-cifar10/target 2>> "$OUT/gpu_run.log"
(( learned > 0 )) && cp results/frontier/learned.json "$OUT/learned.json"
ls -la "$OUT" >> "$OUT/gpu_run.log"
log "done"
# at most eight files come back from a lease: the logs travel as one archive
(cd "$OUT" && logs=$(ls gpu_run.log gpu_utilisation.log vicious.log frontier.log frontier_table.md search_cuda.err cifar.log learned.log 2>/dev/null)
  tar czf logs.tgz $logs && rm -f $logs)
