#!/usr/bin/env bash
# Start-up of the frozen bundle against the source install, measured in the same run, alternating:
#   time to a visible window (Xvfb; xdotool polls, so about 0.5 s resolution) and
#   time to the first result (`--self-test`: analyse the bundled sample and write a PDF).
#
#   bash installer/build.sh && bash benchmarks/startup.sh [FROZEN_PROGRAM] [RUNS]
#
# Needs xvfb and xdotool (apt-get install xvfb xdotool) and the source install's `asdesk` on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FROZEN="${1:-$ROOT/dist/asdesk/asdesk}"
RUNS="${2:-3}"
SOURCE="$(command -v asdesk)"
for tool in Xvfb xdotool; do command -v "$tool" >/dev/null || { echo "startup.sh: $tool is missing" >&2; exit 2; }; done
[[ -x "$FROZEN" ]] || { echo "startup.sh: no frozen program at $FROZEN (bash installer/build.sh)" >&2; exit 2; }
export ASDESK_HOME="$(mktemp -d)" TF_CPP_MIN_LOG_LEVEL=2
display=":$((90 + RANDOM % 100))"
Xvfb "$display" -screen 0 1600x1000x24 >/dev/null 2>&1 & xvfb=$!
trap 'kill $xvfb 2>/dev/null; rm -rf "$ASDESK_HOME"' EXIT
sleep 2

seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$@"; }
window_time() {
    local start end pid
    start=$(date +%s.%N)
    DISPLAY=$display "$1" >/dev/null 2>&1 & pid=$!
    DISPLAY=$display timeout 120 xdotool search --sync --onlyvisible --name asdesk >/dev/null 2>&1 || true
    end=$(date +%s.%N)
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    seconds "$start" "$end"
}
result_time() {
    local start end
    start=$(date +%s.%N)
    QT_QPA_PLATFORM=offscreen "$1" --self-test >/dev/null 2>&1
    end=$(date +%s.%N)
    seconds "$start" "$end"
}
declare -a fw sw fr sr
for ((i = 0; i < RUNS; i++)); do
    fw+=("$(window_time "$FROZEN")"); sw+=("$(window_time "$SOURCE")")
    fr+=("$(result_time "$FROZEN")"); sr+=("$(result_time "$SOURCE")")
done
python3 - "${fw[*]}" "${sw[*]}" "${fr[*]}" "${sr[*]}" "$(du -sh "$(dirname "$FROZEN")" | cut -f1)" <<'PY'
import statistics, sys
fw, sw, fr, sr = ([float(v) for v in arg.split()] for arg in sys.argv[1:5])
print(f"bundle size: {sys.argv[5]}; {len(fw)} alternating runs each; medians (min-max)")
for name, frozen, source in (("time to window", fw, sw), ("time to first result", fr, sr)):
    f, s = statistics.median(frozen), statistics.median(source)
    print(f"{name:22s} frozen {f:6.2f} s ({min(frozen):.2f}-{max(frozen):.2f})   "
          f"source {s:6.2f} s ({min(source):.2f}-{max(source):.2f})   frozen/source {f / s:.2f}")
PY
