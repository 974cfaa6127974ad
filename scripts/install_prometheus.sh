#!/usr/bin/env bash
# Puts Debian's Prometheus server into artifacts/prometheus/ for tests/test_metrics.py (a real Prometheus scraping the
# test server). The Debian package's binaries are static, so we unpack the package instead of installing it: no
# service is started, no system user or config is created, nothing outside artifacts/ changes. Uses `prometheus` from
# PATH when there is one. Needs apt's package lists (`apt-get update`, run here when the download fails and we are
# root). Leaves artifacts/prometheus/prometheus (and promtool). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=artifacts/prometheus
mkdir -p "$ROOT"

if [ ! -x "$ROOT/prometheus" ]; then
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
        binaries=$(dirname "$(command -v prometheus)")
    else
        mkdir -p "$ROOT/deb"
        download() { (cd "$ROOT/deb" && apt-get download prometheus 2>/dev/null); }
        if ! download; then
            if [ "$(id -u)" -ne 0 ]; then
                echo "cannot download Debian's prometheus package: run 'apt-get update' as root, or put prometheus on PATH" >&2
                exit 1
            fi
            apt-get update -qq && download
        fi
        dpkg-deb -x "$(ls "$ROOT"/deb/prometheus_*.deb | head -1)" "$ROOT/package"
        rm -rf "$ROOT/deb"
        binaries='$here/package/usr/bin'
    fi
    # wrappers rather than links, so that make sees them newer than this script
    for tool in promtool prometheus; do
        printf '#!/usr/bin/env bash\nhere="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\nexec "%s/%s" "$@"\n' \
            "$binaries" "$tool" > "$ROOT/$tool"
        chmod +x "$ROOT/$tool"
    done
fi
"$ROOT/prometheus" --version 2>&1 | head -1
