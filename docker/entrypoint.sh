#!/bin/sh
# The image's entrypoint: serve the model repository at $MODEL_REPOSITORY (default /models: mount an exported one
# there) with preset $PRESET and network runtime $RUNTIME (default auto: torch on a visible GPU, else onnxruntime on
# the CPU; tensorrt builds any missing engine into the repository first, so mount it writable) through the project's
# launcher, python -m server, on every interface, with model control
# "none" (the whole repository loads at start; nothing can be loaded or unloaded through the API: README, "Security").
# Refuses, with the reason, to start on a missing, empty or unexported repository. Arguments are passed to the
# launcher (python -m server --help).
set -eu
REPOSITORY="${MODEL_REPOSITORY:-/models}"

fail() {
    echo "error: $1" >&2
    echo "Mount an exported model repository, e.g. docker run -v \$PWD/model_repository:/models ... after" \
         "'make export' (or python -m export ... for real weights), or build the image with --build-arg TINY=true" \
         "for the tiny demo models." >&2
    exit 2
}

found() {  # found DEPTH NAME: a file NAME that deep in the repository, e.g. found 2 config.pbtxt
    find "$REPOSITORY/" -mindepth "$1" -maxdepth "$1" -name "$2" 2>/dev/null | grep -q .
}
[ -d "$REPOSITORY" ] || fail "no model repository at $REPOSITORY"
found 2 config.pbtxt || fail "$REPOSITORY holds no Triton model (no <model>/config.pbtxt)"
# every network is exported to ONNX first (TensorRT plans are built from it)
found 3 model.onnx || found 3 '*.plan' \
    || fail "$REPOSITORY has configs but no exported network (no <model>/1/model.onnx or <model>/1/*.plan)"

exec "${PYTHON:-python3}" -m server --repository "$REPOSITORY" --preset "${PRESET:-balanced}" \
    --runtime "${RUNTIME:-auto}" --address 0.0.0.0 \
    --model-control none --log - "$@"
