#!/usr/bin/env bash
# Tidepool and Slurm side by side on this machine (performance.md P1, P2, P3, P10): brings up the
# shared Slurm peer (../shared/bench/slurm, needs root), runs its srun/sbatch/cloud benchmarks and
# ours, prints both with the ratios, and tears the Slurm cluster down. Raw outputs are kept in
# $OUT (default /tmp/tidepool-vs-slurm-<time>/).
#   bench/compare-slurm.sh          (build first: ./scripts/build.sh)
# Knobs: RUNS (P1, 50), N_SUBMIT (P2, 1000 each side), SUBMITTERS (P2's second row: that many
#        concurrent submitters each side, 4; 0 skips it), N_TASKS (P3, 1000 each side),
#        BOOT_DELAY (P10, 2 s), SLURM_DIR, SETTLE (5 s).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SLURM_DIR="${SLURM_DIR:-$ROOT/../shared/bench/slurm}"
OUT="${OUT:-/tmp/tidepool-vs-slurm-$(date +%Y%m%d-%H%M%S)}"
RUNS="${RUNS:-50}"
N_SUBMIT="${N_SUBMIT:-1000}"
N_TASKS="${N_TASKS:-1000}"
SUBMITTERS="${SUBMITTERS:-4}"
BOOT_DELAY="${BOOT_DELAY:-2}"
[ "$(id -u)" -eq 0 ] || { echo "compare-slurm: the Slurm peer needs root" >&2; exit 2; }
[ -x "$SLURM_DIR/setup.sh" ] || { echo "compare-slurm: no Slurm peer at $SLURM_DIR" >&2; exit 2; }
mkdir -p "$OUT"
trap '(cd "$SLURM_DIR" && ./teardown.sh >/dev/null 2>&1) || true' EXIT

# Each side starts on a settled machine: what the one before left to write back (Slurm's job
# output and state files, its daemons exiting) would otherwise be flushed by the next side's
# fsyncs and counted against it.
settle() { sync; sleep "${SETTLE:-5}"; }

echo "compare-slurm: starting the Slurm peer (output in $OUT)" >&2
(cd "$SLURM_DIR" && ./setup.sh) > "$OUT/slurm-setup.txt" 2>&1
settle
(cd "$SLURM_DIR" && RUNS="$RUNS" STEPS=0 PAR=0 ./bench_srun.sh) > "$OUT/slurm-srun.txt" 2>&1
(cd "$SLURM_DIR" && N="$N_SUBMIT" PHASES="single" ./bench_sbatch.sh) > "$OUT/slurm-sbatch.txt" 2>&1
if [ "$SUBMITTERS" -gt 0 ]; then
  (cd "$SLURM_DIR" && N="$N_SUBMIT" SUBMITTERS="$SUBMITTERS" PHASES="single" ./bench_sbatch.sh) > "$OUT/slurm-sbatch-many.txt" 2>&1
fi
(cd "$SLURM_DIR" && BOOT_DELAY="$BOOT_DELAY" WARM_RUNS=5 ./bench_cloud.sh) > "$OUT/slurm-cloud.txt" 2>&1
(cd "$SLURM_DIR" && ./teardown.sh) > /dev/null 2>&1 || true

settle
echo "compare-slurm: Tidepool" >&2
# A failed script leaves its figure as "?" in the table (and says so) instead of hiding the rest.
failed=0
step() {
  local out="$1"; shift
  "$@" > "$out" 2>&1 || { echo "compare-slurm: exit $? from $*; see $out" >&2; failed=1; }
}
step "$OUT/tidepool-p1.txt" env RUNS="$RUNS" "$ROOT/bench/e2e/p1_vrun.sh"
step "$OUT/tidepool-p2.txt" env N="$N_SUBMIT" SUBMITTERS=1 "$ROOT/bench/e2e/p2_submit.sh"
if [ "$SUBMITTERS" -gt 0 ]; then
  step "$OUT/tidepool-p2-many.txt" env N="$N_SUBMIT" SUBMITTERS="$SUBMITTERS" "$ROOT/bench/e2e/p2_submit.sh"
fi
step "$OUT/tidepool-p3.txt" env N="$N_TASKS" "$ROOT/bench/e2e/p3_throughput.sh"
step "$OUT/tidepool-p10.txt" env BOOT_DELAY="$BOOT_DELAY" RUNS=3 "$ROOT/bench/e2e/p10_cold.sh"

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | head -n1; }
slurm_p1=$(grep 'srun -N1 -n1 true' "$OUT/slurm-srun.txt" | field median)
ours_p1=$(grep 'vrun true' "$OUT/tidepool-p1.txt" | field median)
sbatch_rate() { sed -n 's/.*submit: .* = \([0-9.]*\) jobs\/s.*/\1/p' "$1" 2>/dev/null | head -n1; }
vbatch_rate() { sed -n 's/.* = \([0-9.]*\) tasks\/s acknowledged.*/\1/p; s/.* = \([0-9.]*\) tasks\/s (.*listed.*/\1/p' "$1" 2>/dev/null | head -n1; }
slurm_p2=$(sbatch_rate "$OUT/slurm-sbatch.txt")
ours_p2=$(vbatch_rate "$OUT/tidepool-p2.txt")
slurm_p2m=$(sbatch_rate "$OUT/slurm-sbatch-many.txt")
ours_p2m=$(vbatch_rate "$OUT/tidepool-p2-many.txt")
slurm_p3=$(sed -n 's/.*complete: .* = \([0-9.]*\) completed jobs\/s.*/\1/p' "$OUT/slurm-sbatch.txt" | head -n1)
ours_p3=$(sed -n 's/.* = \([0-9.]*\) tasks\/s (parent.*/\1/p' "$OUT/tidepool-p3.txt" | head -n1)
slurm_p10=$(sed -n 's/.*Slurm overhead beyond boot delay: \([0-9-]*\) ms.*/\1/p' "$OUT/slurm-cloud.txt" | head -n1)
ours_p10=$(grep 'overhead beyond the boot' "$OUT/tidepool-p10.txt" | field median)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "?"; else printf "%.1fx", a / b }'; }
echo
echo "# Tidepool vs Slurm, $(date -u +%FT%TZ), $(nproc) cores, $(uname -r); raw outputs: $OUT"
printf '%-44s %14s %14s %10s\n' "figure" "Slurm" "Tidepool" "ratio"
printf '%-44s %14s %14s %10s\n' "P1 warm run of true, median ms (lower wins)" "${slurm_p1:-?}" "${ours_p1:-?}" "$(ratio "$slurm_p1" "$ours_p1")"
printf '%-44s %14s %14s %10s\n' "P2 submissions/s, 1 submitter (higher wins)" "${slurm_p2:-?}" "${ours_p2:-?}" "$(ratio "$ours_p2" "$slurm_p2")"
if [ "$SUBMITTERS" -gt 0 ]; then
  printf '%-44s %14s %14s %10s\n' "P2 submissions/s, $SUBMITTERS submitters" "${slurm_p2m:-?}" "${ours_p2m:-?}" "$(ratio "$ours_p2m" "$slurm_p2m")"
fi
printf '%-44s %14s %14s %10s\n' "P3 trivial tasks completed/s (higher wins)" "${slurm_p3:-?}" "${ours_p3:-?}" "$(ratio "$ours_p3" "$slurm_p3")"
printf '%-44s %14s %14s %10s\n' "P10 cold start overhead beyond ${BOOT_DELAY}s boot, ms" "${slurm_p10:-?}" "${ours_p10:-?}" "$(ratio "$slurm_p10" "$ours_p10")"
exit "$failed"
