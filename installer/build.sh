#!/usr/bin/env bash
# Build the asdesk desktop bundle with PyInstaller and check it with its own self-test.
#
#   bash installer/build.sh            # one-folder bundle: dist/asdesk/asdesk
#   ASDESK_ONEFILE=1 bash installer/build.sh   # one file: dist/asdesk (slower to start)
#
# Run from anywhere inside a checkout whose package is installed (pip install -e . or pip install .) in the
# Python that PYTHON names (default: python3). Installs PyInstaller with pip if it is missing, builds into
# build/ and dist/ at the repository root (both git-ignored), then runs the frozen program's --self-test and
# exits non-zero if the build or the self-test fails. Model packs found in models/ are bundled; with none, the
# self-test needs a pack in the user model folder (set ASDESK_HOME to a folder with data/models/<pack>).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"

log() { printf 'build.sh: %s\n' "$*" >&2; }

if ! "$PYTHON" -c "import asdesk" 2>/dev/null; then
    log "asdesk is not importable with $PYTHON; install it first: $PYTHON -m pip install -e ."
    exit 2
fi
if ! "$PYTHON" -c "import PyInstaller" 2>/dev/null; then
    log "PyInstaller is missing: installing it with pip"
    "$PYTHON" -m pip install --quiet "pyinstaller>=6.5"
fi
if ! compgen -G "models/*/card.json" >/dev/null; then
    log "WARNING: no model pack in $ROOT/models: the bundle will hold none"
fi

started=$(date +%s)
log "building with $("$PYTHON" -m PyInstaller --version) ($("$PYTHON" --version))"
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build" installer/asdesk.spec
log "built in $(( $(date +%s) - started )) s"

if [[ -n "${ASDESK_ONEFILE:-}" && "${ASDESK_ONEFILE}" != "0" ]]; then
    program="$ROOT/dist/asdesk"
else
    program="$ROOT/dist/asdesk/asdesk"
fi
case "$(uname -s)" in MINGW*|MSYS*|CYGWIN*) program="$program.exe" ;; esac
if [[ ! -x "$program" ]]; then
    log "the frozen program $program was not built"
    exit 1
fi
if [[ -d "$ROOT/dist/asdesk" ]]; then
    log "bundle size: $(du -sh "$ROOT/dist/asdesk" | cut -f1)"
fi

log "running $program --self-test"
status=0
QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" "$program" --self-test || status=$?
if [[ $status -ne 0 ]]; then
    log "SELF-TEST FAILED (exit status $status); the log is in \$ASDESK_HOME/logs or the user log folder"
    exit "$status"
fi
version_line="$("$program" --version)"
log "OK: $version_line in $program"

# The frozen program must judge like the source install: the bundled sample's probability to 1e-5 (issue 10).
compare_home="$(mktemp -d)"
frozen_json="$(ASDESK_HOME="$compare_home" QT_QPA_PLATFORM=offscreen "$program" analyze --json 2>/dev/null | head -n 1)"
source_json="$(ASDESK_HOME="$compare_home" "$PYTHON" -m asdesk analyze --json 2>/dev/null | head -n 1)"
rm -rf "$compare_home"
if ! "$PYTHON" - "$frozen_json" "$source_json" <<'PY'
import json
import sys

frozen, source = (json.loads(text)["images"][0] for text in sys.argv[1:3])
difference = abs(frozen["probability"] - source["probability"])
print(f"build.sh: bundled sample: frozen probability {frozen['probability']:.6f}, source install "
      f"{source['probability']:.6f} (|difference| {difference:.1e}); finding {frozen['finding']!r}", file=sys.stderr)
sys.exit(0 if difference <= 1e-5 and frozen["finding"] == source["finding"] else 1)
PY
then
    log "the frozen program's result differs from the source install's"
    exit 1
fi
log "bundle size: $(du -sb "$ROOT/dist/asdesk" 2>/dev/null | cut -f1) bytes"
