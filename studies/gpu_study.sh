#!/usr/bin/env bash
# One device call (docs/findings.md, "the GPU studies"): the CUDA tests (cuda_check.sh) beside the
# learning study's variants x seeds as parallel float32 processes on the one GPU, both under a
# deadline so that whatever finished comes back (6 files: the device tool returns at most 8).
# Rows are appended to $OUT/learning.jsonl as each run ends.
#   OUT=/some/dir STUDY_S=420 FINESYN_CODE_VERSION=<sha> bash studies/gpu_study.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-studies/gpu_study}
mkdir -p "$out"
study_s=${STUDY_S:-420}
shards=${SHARDS:-12}
# most decision-relevant first: the shards take every n-th (variant, seed) pair in this order;
# VARIANTS=... SEEDS=... for another study (studies 2 and 3 of docs/findings.md)
variants=${VARIANTS:-default_mocov2,default_mocov2_t01,default_mocov2_lr4e3,default_mocov2_lr1e3,default_mocov2_crop48,default_mocov2_b32_e8,default_mocov2_b32_e8_lr14,default_mocov2_scale06,default_mocov2_noblur,default_mocov2_hue0,default_mocov2_nogray,default_mocov2_m095,default_mocov2_t05,default_mocov2_wd1e4,default_supervised,default_supervised_b32_e8,img48_mocov2,img48_supervised,default_mocov2_b32,default_mocov2_e30,img48_mocov2_e30,default_mocov2_e60}
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
(OUT=$out timeout $((study_s + 60)) bash benchmarks/cuda_check.sh > "$out/cuda_stdout.txt" 2>&1; echo "cuda_check rc=$?" >> "$out/cuda_stdout.txt") &
for i in $(seq 0 $((shards - 1))); do
    timeout "$study_s" python3 -m studies.learning --variants "$variants" --seeds ${SEEDS:-0 1 2} \
        --pretrain '{"amp": false, "threads": 1}' --shard "$i/$shards" --out "$out/learning.jsonl" > "/tmp/shard$i.txt" 2>&1 &
done
wait
for i in $(seq 0 $((shards - 1))); do echo "== shard $i"; cat "/tmp/shard$i.txt"; done > "$out/shards.txt"
grep -E "Error|error" "$out/shards.txt" | sort | uniq -c | head -n 5
grep -E "passed|failed|error|rc=" "$out/cuda_stdout.txt" | tail -n 5
wc -l "$out/learning.jsonl" 2>/dev/null
