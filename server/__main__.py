"""python -m server [--preset NAME] [--runtime NAME [--device cuda|cpu] [--gpus N ...]] [--http-port N] ...
                   [--address ADDRESS] [--model-control explicit|none] [--log FILE|-]

Starts tritonserver with the chosen preset and network runtime and keeps it in the foreground until Ctrl-C or
SIGTERM. The default runtime, onnxruntime, serves the exported repository as it is; another runtime first writes its
repository (server/repository.py) into artifacts/repositories/<runtime>/ (or a temporary folder where that cannot be
written), for tensorrt after building any missing engine; auto is torch where a GPU is visible, else onnxruntime. It listens on 127.0.0.1; a container (docker/entrypoint.sh) passes --address 0.0.0.0 --model-control none
--log -."""
from __future__ import annotations

import argparse
import os
import signal
import tempfile
import sys
from pathlib import Path

from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, TritonServer, gpu_server_arguments
from server.repository import DEFAULT_OUT, RUNTIMES, generate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--preset", choices=PRESETS, default="balanced")
    parser.add_argument("--runtime", choices=[*RUNTIMES, "auto"], default="onnxruntime",
                        help="where the networks run (default: %(default)s, on the CPU; auto: torch on a visible GPU, "
                             "else onnxruntime)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="torch runtime: where it runs")
    parser.add_argument("--gpus", type=int, nargs="+", default=[], help="GPU ids (default: what the process sees)")
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY, help="the exported repository")
    parser.add_argument("--models", nargs="*", help="models to load (default: every model in the repository)")
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on (0.0.0.0 in a container)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log", type=Path, help="server log file, or - for this output (default: a temporary file)")
    parser.add_argument("--model-control", choices=["explicit", "none"], default="explicit",
                        help="explicit (default): load --models, the repository API may load more; none: load the "
                             "whole repository and refuse loading later (for a server others can reach)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="report ready without first sending one request per public model instance")
    args = parser.parse_args()
    if args.runtime == "auto":
        import torch
        args.runtime = "torch" if torch.cuda.is_available() else "onnxruntime"
    repository = args.repository
    if args.runtime == "tensorrt":  # plans are built on the GPU that serves them, once, beside the graphs
        from export.tensorrt import build_engines
        build_engines(repository, missing_only=True)
    if args.runtime != "onnxruntime":
        repository = generate(args.runtime, generated_folder(args.runtime), args.repository, args.models,
                              device=args.device, gpus=args.gpus)
    gpu = args.runtime != "onnxruntime" and not (args.runtime == "torch" and args.device == "cpu")
    server = TritonServer(repository, args.preset, args.models, args.http_port, args.grpc_port, args.metrics_port,
                          args.log, extra_args=gpu_server_arguments(args.gpus) if gpu else [],
                          address=args.address, model_control=args.model_control, warm_up=args.warm_up)
    server.start()
    print(f"tritonserver ready, preset {args.preset}, runtime {args.runtime}, listening on {args.address}: HTTP port "
          f"{server.http_port}, gRPC {server.grpc_port}, metrics {server.metrics_port}; log {server.log_path}. "
          "Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def generated_folder(runtime: str) -> Path:
    """artifacts/repositories/<runtime> in a checkout; a temporary folder where that cannot be written (the installed
    package in a container, running as a non-root user)."""
    try:
        DEFAULT_OUT.mkdir(parents=True, exist_ok=True)
        if os.access(DEFAULT_OUT, os.W_OK):
            return DEFAULT_OUT / runtime
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "object-removal-repositories" / runtime


if __name__ == "__main__":
    sys.exit(main())
