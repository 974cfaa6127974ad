"""Start, wait for and stop a real `tritonserver` on a model repository with a chosen preset.

The server binary comes from $TRITONSERVER, else `tritonserver` on PATH (the NGC container), else the one bundled in
the nvidia-pytriton wheel. The pytriton build ships its python-backend stubs per Python version in a side folder, so
for it we assemble a backend directory holding the library plus the stub that matches this interpreter.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"
PRESETS = ["quality", "balanced", "ultra_fast", "low_memory"]  # configs/<preset>.pbtxt; config.pbtxt is balanced


def preset_parameters(preset: str, model: str = "objectclear_inpaint",
                      repository: Path = DEFAULT_MODEL_REPOSITORY) -> dict[str, str]:
    """The `parameters` of a model's preset config (steps, short_side, guidance_scale, ...): the configs are the
    one place preset values live. For an ensemble (flux_generate), those of the model its one step forwards to."""
    path = Path(repository) / model / "configs" / f"{preset}.pbtxt"
    if not path.exists():
        steps = model_config(Path(repository) / model / "config.pbtxt").ensemble_scheduling.step
        if len(steps) == 1:
            return preset_parameters(preset, steps[0].model_name, repository)
    return {key: value.string_value for key, value in model_config(path).parameters.items()}


def model_config(path: Path):
    """A config.pbtxt as Triton's ModelConfig message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


# GPU tensors between the python-backend stubs and the server go through Triton's CUDA memory pool (64 MB by default,
# then a slower CUDA IPC fallback): one SAM 3 image's hand-off is ~290 MB at full size, times concurrent requests.
CUDA_MEMORY_POOL_BYTES = 2 << 30


def gpu_server_arguments(gpus: list[int] | None = None) -> list[str]:
    """tritonserver options for networks and pipelines on GPUs: a CUDA memory pool sized for their hand-offs."""
    return [f"--cuda-memory-pool-byte-size={gpu}:{CUDA_MEMORY_POOL_BYTES}" for gpu in (gpus or [0])]


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pytriton_root() -> Path | None:
    """The server inside the nvidia-pytriton wheel, found without importing pytriton (whose own dependencies we
    do not need, and which a bare environment may lack)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return root if (root / "bin" / "tritonserver").exists() else None


def _pytriton_backend_dir(root: Path) -> Path:
    """A backend directory whose python/ holds libtriton_python.so next to this interpreter's stub."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"pytriton ships no python-backend stub for Python {version}")
    target = Path(tempfile.gettempdir()) / f"triton-backends-py{version}-{os.getuid()}" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for src in [stub, *(root / "backends" / "python").iterdir()]:
        link = target / src.name
        if not link.exists() or link.resolve() != src.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(src)
    return target.parent


def locate_tritonserver() -> tuple[str, Path | None]:
    """(binary, backend directory or None for the binary's default)."""
    if os.environ.get("TRITONSERVER"):
        return os.environ["TRITONSERVER"], None
    if shutil.which("tritonserver"):
        return shutil.which("tritonserver"), None
    root = _pytriton_root()
    if root is None:
        raise ServerError("no tritonserver found: install nvidia-pytriton or set $TRITONSERVER")
    return str(root / "bin" / "tritonserver"), _pytriton_backend_dir(root)


def _server_env() -> dict[str, str]:
    """The python-backend stub imports model code from this interpreter's environment (venv first on PATH) and
    must load the libpython of the same build, not whichever the system linker finds first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    # ONNX Runtime sessions inside the stubs choose their own thread counts; keep torch from oversubscribing.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class TritonServer:
    """A tritonserver process bound to `address` (127.0.0.1 unless told otherwise). Use as a context manager or call
    start()/stop()."""

    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    preset: str | None = None
    models: list[str] | None = None  # None: every model in the repository
    http_port: int = 0  # 0: pick a free port
    grpc_port: int = 0
    metrics_port: int = 0
    log_path: Path | None = None  # None: a temporary file; "-": this process's own output (a container's log)
    extra_args: list[str] = field(default_factory=list)
    address: str = "127.0.0.1"  # the interface to listen on; clients here always connect over loopback
    # "explicit": exactly `models` load, and the repository API can load more; "none": every model in the repository
    # loads at start and nothing can be loaded later (a server others can reach: README, "Security")
    model_control: str = "explicit"
    # once Triton is ready, one end-to-end request per public model instance before start() returns (server/warmup.py)
    warm_up: bool = False
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        binary, backend_dir = locate_tritonserver()
        cmd = [
            binary,
            f"--model-repository={Path(self.model_repository).resolve()}",
            f"--http-address={self.address}", f"--http-port={self.http_port}",
            f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
            f"--model-control-mode={self.model_control}",
            # model imports (torch, diffusers) can take longer than the default 30 s on a loaded CI machine
            "--backend-config=python,stub-timeout-seconds=120",
            "--exit-timeout-secs=30",
        ]
        if backend_dir is not None:
            cmd.append(f"--backend-directory={backend_dir}")
        if self.preset:
            cmd.append(f"--model-config-name={self.preset}")
        if self.model_control == "explicit":
            cmd += [f"--load-model={model}" for model in (self.models if self.models is not None
                                                           else self.repository_models())]
        elif self.models is not None:
            raise ServerError("model control 'none' loads the whole repository; choose models with 'explicit'")
        return cmd + list(self.extra_args)

    def repository_models(self) -> list[str]:
        return sorted(p.name for p in Path(self.model_repository).iterdir() if (p / "config.pbtxt").exists())

    def start(self, timeout: float = 300.0) -> "TritonServer":
        for name in ("http_port", "grpc_port", "metrics_port"):
            if not getattr(self, name):
                setattr(self, name, free_port())
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        log = None if str(self.log_path) == "-" else open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=_server_env(),
                                        start_new_session=True)
        if log:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                if self.warm_up:
                    from server.warmup import warm_up
                    loaded = self.models if self.model_control == "explicit" and self.models is not None \
                        else self.repository_models()
                    warm_up(self.http_url, self.model_repository, loaded, self.preset)
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # graceful: in-flight requests finish, stubs are shut down
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path or str(self.log_path) == "-" or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
