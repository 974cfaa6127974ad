#!/usr/bin/env bash
# Installs Triton's perf_analyzer into artifacts/perf_analyzer/ without touching .venv.
#
# The tritonclient[all]==2.50.0 manylinux wheel carries bin/perf_analyzer (newer wheels need glibc 2.38 or no
# longer ship it). It cannot be pip-installed beside onnx (protobuf pins clash), so we only unzip the binary. It
# needs libb64 (Debian's libb64-0d) and libcudart.so.12 (from the nvidia-cuda-runtime-cu12 wheel) even on CPU.
# Leaves artifacts/perf_analyzer/perf_analyzer, a wrapper that sets LD_LIBRARY_PATH. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=artifacts/perf_analyzer
PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP="python3 -m pip"
TRITONCLIENT_VERSION=2.50.0
CUDART_VERSION=${CUDART_VERSION:-12.4.127}
mkdir -p "$ROOT/wheels" "$ROOT/bin" "$ROOT/lib"

if [ ! -x "$ROOT/bin/perf_analyzer" ]; then
    ls "$ROOT"/wheels/tritonclient-"$TRITONCLIENT_VERSION"-*manylinux*x86_64.whl >/dev/null 2>&1 || \
        $PIP download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
            --dest "$ROOT/wheels" "tritonclient==$TRITONCLIENT_VERSION"
    wheel=$(ls "$ROOT"/wheels/tritonclient-"$TRITONCLIENT_VERSION"-*manylinux*x86_64.whl | head -1)
    unzip -q -o -j "$wheel" "tritonclient-$TRITONCLIENT_VERSION.data/data/bin/perf_analyzer" -d "$ROOT/bin"
    chmod +x "$ROOT/bin/perf_analyzer"
fi

if [ ! -e "$ROOT/lib/libcudart.so.12" ]; then
    ls "$ROOT"/wheels/nvidia_cuda_runtime_cu12-*.whl >/dev/null 2>&1 || \
        $PIP download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
            --dest "$ROOT/wheels" "nvidia-cuda-runtime-cu12==$CUDART_VERSION"
    wheel=$(ls "$ROOT"/wheels/nvidia_cuda_runtime_cu12-*.whl | head -1)
    unzip -q -o -j "$wheel" 'nvidia/cuda_runtime/lib/libcudart.so.12' -d "$ROOT/lib"
fi

if LD_LIBRARY_PATH="$ROOT/lib" ldd "$ROOT/bin/perf_analyzer" | grep -q 'libb64.*not found'; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "perf_analyzer needs libb64-0d: run 'apt-get install -y libb64-0d' as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq libb64-0d >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libb64-0d; }
fi

cat > "$ROOT/perf_analyzer" <<'WRAPPER'
#!/usr/bin/env bash
# perf_analyzer from the tritonclient 2.50.0 wheel, with libcudart.so.12 beside it (scripts/install_perf_analyzer.sh)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/bin/perf_analyzer" "$@"
WRAPPER
chmod +x "$ROOT/perf_analyzer"
"$ROOT/perf_analyzer" --version >/dev/null 2>&1 || "$ROOT/perf_analyzer" --help >/dev/null 2>&1 || {
    echo "perf_analyzer does not run:" >&2; LD_LIBRARY_PATH="$ROOT/lib" ldd "$ROOT/bin/perf_analyzer" | grep 'not found' >&2; exit 1; }
echo "$ROOT/perf_analyzer"
