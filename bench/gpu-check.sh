#!/usr/bin/env bash
# The WebGPU check for a machine with a real GPU; prints JSON lines on stdout, progress on stderr:
#   {"check":"adapter", ...}   the adapter Dawn picked (vendor, architecture, device, description)
#   {"check":"tests", ...}     test/webgpu-grad.test.ts and test/webgpu-train.test.ts on it (pass/fail counts)
#   bench rows                 bench/train.ts and bench/forward.ts, --backends webgpu, r18/r50/mbf at batch
#                              64 and 128 (samples/s, ms per step, the adapter's description)
# Needs node_modules installed (npm ci) and the GPU's Vulkan driver (Linux: libvulkan1 and the vendor ICD,
# e.g. the NVIDIA driver's nvidia_icd.json); no network. Exits 1 where there is no hardware adapter
# (GPU_CHECK_ALLOW_SOFTWARE=1 runs it on SwiftShader/lavapipe anyway, with tiny models: a dry run).
#   bash bench/gpu-check.sh [--quick]      --quick: batch 64 only, 10 s per row
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
say() { echo "gpu-check: $*" >&2; }

adapter=$(node --import tsx -e "
import('./src/backend/webgpu.ts').then(async ({ setupWebgpu, describeAdapter }) => {
  const p = await setupWebgpu();
  console.log(JSON.stringify(p.ok
    ? { check: 'adapter', ok: true, ...p.adapter, adapter: describeAdapter(p.adapter), node: process.version }
    : { check: 'adapter', ok: false, missing: p.missing, node: process.version }));
});" 2>/dev/null | tail -1)
[ -n "$adapter" ] || adapter='{"check":"adapter","ok":false,"missing":"the probe did not run (node_modules installed?)"}'
echo "$adapter"
case "$adapter" in
  *'"ok":true'*) ;;
  *) say "no WebGPU adapter"; exit 1 ;;
esac
software=0
case "$adapter" in *'"software":true'*) software=1 ;; esac
if [ "$software" = 1 ] && [ "${GPU_CHECK_ALLOW_SOFTWARE:-0}" != 1 ]; then
  say "the adapter is a software one; set GPU_CHECK_ALLOW_SOFTWARE=1 for a dry run"
  exit 1
fi

say "gradient and training tests on the adapter"
t0=$(date +%s)
tap=$(node --import tsx --test --test-concurrency=1 --test-reporter=tap test/webgpu-grad.test.ts test/webgpu-train.test.ts 2>&1)
rc=$?
count() { local n; n=$(echo "$tap" | sed -n "s/^# $1 \([0-9]*\)$/\1/p" | tail -1); echo "${n:-null}"; }
failed=$(echo "$tap" | grep '^not ok' | sed 's/"/\\"/g' | head -5 | paste -sd ';' -)
echo "{\"check\":\"tests\",\"exit\":$rc,\"pass\":$(count pass),\"fail\":$(count fail),\"skipped\":$(count skipped),\"seconds\":$(( $(date +%s) - t0 )),\"failed\":\"$failed\"}"

if [ "$software" = 1 ]; then
  models=mbf; batches=2; seconds=1; budget=300
else
  models=r18,r50,mbf; batches="64 128"; seconds=20; budget=900
  [ "$quick" = 1 ] && batches=64 && seconds=10
fi
for b in $batches; do
  say "training rows at batch $b"
  node --import tsx bench/train.ts --backends webgpu --models "$models" --batch "$b" --seconds "$seconds" --budget "$budget" --warmup 3
done
say "forward rows"
node --import tsx bench/forward.ts --backends webgpu --models "$models" --batches "$(echo $batches | tr ' ' ',')" --seconds "$seconds" --budget "$budget"
