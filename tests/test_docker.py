"""The container recipe without a Docker engine (none runs here): the entrypoint script itself, run for real against
missing, unexported and exported repositories; what the build context leaves out; the Dockerfile's choices."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.launcher import REPO_ROOT

ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = (REPO_ROOT / "docker" / "Dockerfile").read_text()


def entrypoint(repository: Path, *args: str) -> subprocess.CompletedProcess:
    """The entrypoint with `echo` as its Python: what it would exec, or why it refuses."""
    env = dict(os.environ, MODEL_REPOSITORY=str(repository), PYTHON="echo", PRESET="ultra_fast")
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30)


def configs_only(source: Path, target: Path) -> Path:
    """A copy of a repository's configs and model.py adapters, as a fresh clone has them: nothing exported."""
    for path in source.glob("*/config.pbtxt"):
        shutil.copytree(path.parent, target / path.parent.name,
                        ignore=lambda folder, names: [n for n in names if Path(folder).name == "1" and n != "model.py"])
    return target


@pytest.mark.parametrize("case", ["missing", "empty", "not exported"])
def test_entrypoint_refuses_a_repository_it_cannot_serve_and_says_why(tmp_path, model_repository, case):
    repository = tmp_path / "repository"
    if case == "empty":
        repository.mkdir()
    elif case == "not exported":
        configs_only(model_repository, repository)
    result = entrypoint(repository)
    assert result.returncode == 2 and not result.stdout  # nothing was started
    reason = {"missing": "no model repository at", "empty": "holds no Triton model",
              "not exported": "no exported network"}[case]
    assert f"error: {repository}" in result.stderr or f"error: {reason} {repository}" in result.stderr
    assert reason in result.stderr and "Mount an exported model repository" in result.stderr


def test_entrypoint_serves_an_exported_repository_through_the_launcher(model_repository):
    result = entrypoint(model_repository, "--http-port", "9000")
    assert result.returncode == 0, result.stderr
    args = result.stdout.split()
    assert args[:2] == ["-m", "server"]
    options = dict(zip(args[2::2], args[3::2]))
    assert options == {"--repository": str(model_repository), "--preset": "ultra_fast", "--runtime": "auto",
                       "--address": "0.0.0.0", "--model-control": "none", "--log": "-", "--http-port": "9000"}
    # the launcher takes exactly these options (argparse stops at --help having checked those before it)
    launcher = subprocess.run([sys.executable, *args, "--help"], capture_output=True, text=True, timeout=60)
    assert launcher.returncode == 0, launcher.stderr


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rules: Go filepath.Match per pattern (`*` within a path element, `**` across them), a
    match on a folder covers what it holds, `!` re-includes, the last matching pattern wins."""
    def regex(pattern: str) -> re.Pattern:
        out = ""
        for part in re.split(r"(\*\*|\*|\?)", pattern.strip("/")):
            out += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        return re.compile(out)
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!"))
        if any(compiled.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_build_context_holds_code_and_configs_but_no_weights_or_environment():
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    exported = ["objectclear_unet/1/model.onnx", "flux_transformer/1/model.onnx.data",
                "sam3_segment/1/processor/tokenizer.json", "remove_object/1/conditioning.npz",
                "flux_generate/1/pipeline/x.json", "objectclear_unet/1/model.balanced.plan"]
    for path in [".venv/bin/python", ".git/HEAD", "artifacts/tiny/sam3/config.json", "outputs/demo/result.png",
                 "pipelines/__pycache__/sam3.cpython-311.pyc", *(f"model_repository/{p}" for p in exported)]:
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ["pyproject.toml", "README.md", "pipelines/sam3.py", "server/launcher.py", "docker/entrypoint.sh",
                 "model_repository/remove_object/config.pbtxt", "model_repository/remove_object/configs/quality.pbtxt",
                 "model_repository/remove_object/1/model.py"]:
        assert not ignored(path, patterns), f"{path} is needed by the build"
    for copied in re.findall(r"^COPY (\S+)", DOCKERFILE, re.M):
        assert not ignored(copied, patterns), f"the Dockerfile copies {copied}, which the context leaves out"


def test_dockerfile_bakes_in_no_weights_unless_asked_and_runs_the_entrypoint_as_a_user():
    assert re.search(r"^ARG TINY=false$", DOCKERFILE, re.M)
    (loop,) = re.findall(r'for pipeline in ([\w -]+); do', DOCKERFILE)
    made = re.findall(r"-m export ([\w-]+) --source \$\(TINY_HUB\)", (REPO_ROOT / "Makefile").read_text())
    assert loop.split() == made, "TINY=true exports what `make export` does"
    assert "/usr/local/bin/object-removal-serve" in re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.M).group(1)
    assert "tritonserver " not in DOCKERFILE.split("FROM", 1)[1].split("ENTRYPOINT")[1]
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user and user[-1].split(":")[0].isdigit() and user[-1] != "0", "a numeric non-root user (runAsNonRoot)"
