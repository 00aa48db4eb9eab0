#!/usr/bin/env bash
# The module study's stage 2 on a device (studies/module_study_protocol.md, amendment 1; STAGE=3: the oracle
# pair of amendment 2, into the same rows file; STAGE=4: the second dataset of amendment 3, whose tree
# data/raw/digits_photos must be built first, on a machine with scikit-learn, and carried): SHARDS parallel
# float32 processes, each every n-th (seed, arm) pair in seed-major order, under a deadline so that whatever
# finished comes back. Rows are appended to $OUT/module_study_stage2.jsonl as each run ends (copy them to
# studies/ and commit; a rerun skips the (arm, seed) pairs already there).
#   OUT=/some/dir STUDY_S=540 SHARDS=16 [STAGE=3] FINESYN_CODE_VERSION=<sha> bash studies/gpu_module_study.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-studies/gpu_stage2}
mkdir -p "$out"
name=$([ "${STAGE:-2}" = 4 ] && echo module_study_digits.jsonl || echo module_study_stage2.jsonl)
rows="$out/$name"
[ -f "$rows" ] || cp "studies/$name" "$rows" 2>/dev/null || true
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src:.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
shards=${SHARDS:-16}
for i in $(seq 0 $((shards - 1))); do
    timeout "${STUDY_S:-540}" python3 -m studies.module_study --stage "${STAGE:-2}" --shard "$i/$shards" --out "$rows" > "/tmp/stage2_shard$i.txt" 2>&1 &
done
wait
for i in $(seq 0 $((shards - 1))); do echo "== shard $i"; cat "/tmp/stage2_shard$i.txt"; done > "$out/shards.txt"
grep -E "Error|error" "$out/shards.txt" | sort | uniq -c | head -n 5
wc -l "$rows"
