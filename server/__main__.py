"""python -m server [--preset NAME] [--http-port N] [--grpc-port N] [--metrics-port N] [--repository DIR]

Starts tritonserver on 127.0.0.1 with the chosen preset and keeps it in the foreground until Ctrl-C."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, TritonServer


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--preset", choices=PRESETS, default="balanced")
    parser.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--models", nargs="*", help="models to load (default: every model in the repository)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log", type=Path, help="server log file (default: a temporary file)")
    args = parser.parse_args()
    server = TritonServer(args.repository, args.preset, args.models, args.http_port, args.grpc_port,
                          args.metrics_port, args.log)
    server.start()
    print(f"tritonserver ready, preset {args.preset}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
          f"metrics {server.metrics_url}; log {server.log_path}. Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
