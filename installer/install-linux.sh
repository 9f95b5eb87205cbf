#!/usr/bin/env bash
# Install a built asdesk bundle for the current user, without network and without root:
#
#   bash installer/install-linux.sh [BUNDLE]      # BUNDLE: default dist/asdesk (from installer/build.sh)
#   bash installer/install-linux.sh --uninstall
#
# Copies the bundle to $PREFIX/opt/asdesk (PREFIX: $ASDESK_PREFIX or ~/.local), links $PREFIX/bin/asdesk,
# and installs the desktop entry and the icon under $XDG_DATA_HOME (default ~/.local/share), so asdesk shows
# up in the desktop's application menu. Then runs the installed program's --self-test (skip with
# ASDESK_SKIP_SELF_TEST=1).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PREFIX="${ASDESK_PREFIX:-$HOME/.local}"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
TARGET="$PREFIX/opt/asdesk"
LINK="$PREFIX/bin/asdesk"
DESKTOP="$DATA/applications/asdesk.desktop"
ICON_PNG="$DATA/icons/hicolor/256x256/apps/asdesk.png"
ICON_SVG="$DATA/icons/hicolor/scalable/apps/asdesk.svg"

log() { printf 'install-linux.sh: %s\n' "$*" >&2; }

refresh_menus() {
    command -v update-desktop-database >/dev/null && update-desktop-database -q "$DATA/applications" || true
    command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$DATA/icons/hicolor" || true
}

if [[ "${1:-}" == "--uninstall" ]]; then
    rm -rf "$TARGET"
    rm -f "$DESKTOP" "$ICON_PNG" "$ICON_SVG"
    [[ -L "$LINK" ]] && rm -f "$LINK"
    refresh_menus
    log "removed asdesk from $TARGET (user settings, logs and model packs are kept)"
    exit 0
fi

BUNDLE="$(cd "${1:-$ROOT/dist/asdesk}" 2>/dev/null && pwd)" || {
    log "no bundle at ${1:-$ROOT/dist/asdesk}; build it first: bash installer/build.sh"
    exit 2
}
if [[ ! -x "$BUNDLE/asdesk" ]]; then
    log "$BUNDLE is not an asdesk one-folder bundle (no executable $BUNDLE/asdesk)"
    exit 2
fi

# Copy next to the old installation, then swap, so a failed copy never leaves a half-installed program.
mkdir -p "$PREFIX/opt" "$PREFIX/bin" "$(dirname "$DESKTOP")" "$(dirname "$ICON_PNG")" "$(dirname "$ICON_SVG")"
staging="$(mktemp -d "$PREFIX/opt/.asdesk-install.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
cp -a "$BUNDLE/." "$staging/"
rm -rf "$TARGET"
mv "$staging" "$TARGET"
trap - EXIT
ln -sfn "$TARGET/asdesk" "$LINK"

icons="$TARGET/_internal/resources/icons"
[[ -d "$icons" ]] || icons="$ROOT/resources/icons"
install -m 644 "$icons/asdesk.png" "$ICON_PNG"
[[ -f "$icons/asdesk.svg" ]] && install -m 644 "$icons/asdesk.svg" "$ICON_SVG"
sed -e "s|^Exec=.*|Exec=\"$TARGET/asdesk\" %F|" -e "s|^TryExec=.*|TryExec=$TARGET/asdesk|" \
    "$HERE/asdesk.desktop" > "$DESKTOP"
chmod 644 "$DESKTOP"
refresh_menus

log "installed $("$TARGET/asdesk" --version) in $TARGET"
log "command: $LINK$(case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) printf ' (add %s to PATH)' "$PREFIX/bin" ;; esac)"
log "menu entry: $DESKTOP"
if [[ -z "${ASDESK_SKIP_SELF_TEST:-}" ]]; then
    QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" "$TARGET/asdesk" --self-test
fi
