"""The pipelines' Prometheus metrics (pipelines/triton_observers.py), scraped from the session's test server by a
real Prometheus (Debian's package, `make prometheus`) and read back through Prometheus' HTTP API; the Grafana
dashboard's queries run against it; the compose file's parts exist and its Prometheus config passes promtool."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from client.api import Client, InvalidInput, Progress
from conftest import as_bytes, call, decode, png
from server.launcher import REPO_ROOT, free_port

DOCKER = REPO_ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "object-removal.json"
TOOLS = REPO_ROOT / "artifacts" / "prometheus"


def tool(name: str) -> str | None:
    local = TOOLS / name
    return str(local) if local.exists() else shutil.which(name)


def families() -> set[str]:
    """The metric families the pipelines create."""
    return set(re.findall(r'"(pipeline_[a-z_]+)"', (REPO_ROOT / "pipelines" / "triton_observers.py").read_text()))


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]


def test_dashboard_queries_name_only_series_that_exist():
    assert families() == {"pipeline_stage_duration_seconds", "pipeline_denoising_steps_total",
                          "pipeline_requests_total", "pipeline_nothing_found_total"}
    named = {re.sub(r"_(bucket|sum|count)$", "", name)
             for query in dashboard_queries() for name in re.findall(r"\b((?:pipeline|nv)_[a-z_]+)", query)}
    assert families() <= named, "a pipeline series the dashboard does not show"
    assert named - families() <= {"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                                  "nv_gpu_utilization"}


def test_compose_file_parts_exist_and_prometheus_config_is_valid():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"triton", "prometheus", "grafana"}
    assert (DOCKER / services["triton"]["build"]["context"] / services["triton"]["build"]["dockerfile"]).exists()
    for service in services.values():
        for volume in service.get("volumes", []):
            assert (DOCKER / volume.split(":")[0]).exists(), volume
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["triton:8002"] and "8002:8002" in services["triton"]["ports"]
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("no promtool: `make prometheus` unpacks Debian's prometheus package into artifacts/prometheus")
    checked = subprocess.run([promtool, "check", "config", str(DOCKER / "prometheus.yml")], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture(scope="module")
def prometheus(default_server, tmp_path_factory):
    """A real Prometheus scraping the session's test server every second: its HTTP API's base URL."""
    binary = tool("prometheus")
    if binary is None:
        pytest.skip("no prometheus: `make prometheus` unpacks Debian's prometheus package into artifacts/prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "triton",
                            "static_configs": [{"targets": [f"127.0.0.1:{default_server.metrics_port}"]}]}]}))
    port = free_port()
    log = open(folder / "prometheus.log", "wb")
    process = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def scraping() -> bool:
        assert process.poll() is None, (folder / "prometheus.log").read_text()[-3000:]
        try:
            return query(url, 'up{job="triton"}') == 1.0
        except urllib.error.URLError:  # not listening yet
            return False

    try:
        wait_for(scraping, "Prometheus scraping the server", lambda: (folder / "prometheus.log").read_text()[-3000:])
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def query_result(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}",
                                timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def query(url: str, promql: str) -> float | None:
    """A scalar-valued query (e.g. a sum) as a number; None when no series matches."""
    result = query_result(url, promql)
    return float(result[0]["value"][1]) if result else None


def wait_for(condition, what: str, detail=lambda: "", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{detail()}"
        time.sleep(0.5)


class Leave(Exception):
    pass


@pytest.mark.server
def test_prometheus_reads_the_pipeline_series(default_server, prometheus, coffee):
    series = {  # what each query must grow by after the requests below
        'sum(pipeline_requests_total{model="remove_object",engine="objectclear",outcome="ok",preset="balanced"})': 2,
        'sum(pipeline_nothing_found_total{model="remove_object",preset="balanced"})': 1,
        'sum(pipeline_stage_duration_seconds_count{model="remove_object",stage="segmentation"})': 2,
        'sum(pipeline_stage_duration_seconds_count{model="remove_object",stage="png"})': 2,
        **{f'sum(pipeline_stage_duration_seconds_count{{model="remove_object",stage="{stage}"}})': 1
           for stage in ("encode", "denoise", "decode", "fusion")},
        'sum(pipeline_denoising_steps_total{model="remove_object"})': 2,
        'sum(pipeline_requests_total{model="objectclear_inpaint",outcome="invalid"})': 1,
        'sum(pipeline_requests_total{model="objectclear_inpaint_stream",outcome="cancelled"})': 1,
        # flux_generate is an ensemble: its default variant's model runs the pipeline and counts
        'sum(pipeline_requests_total{model="flux_schnell_generate",engine="flux_schnell",outcome="ok"})': 1,
        'sum(pipeline_denoising_steps_total{model="flux_schnell_generate"})': 3,
    }
    # every denoising step counted is one UNet execution in Triton's own statistics, cancelled requests included
    unet_steps = 'sum(pipeline_denoising_steps_total{model=~"remove_object.*|objectclear_inpaint.*"})'
    unet_runs = 'sum(nv_inference_exec_count{model="objectclear_unet"})'
    watched = [*series, unet_steps, unet_runs]
    baseline = {promql: query(prometheus, promql) or 0.0 for promql in watched}

    photo = png(coffee[0])
    small = png(np.asarray(coffee[0])[::2, ::2].copy())
    with Client(default_server.grpc_url, "grpc") as client:
        client.remove(photo, "a cup", seed=1, steps=2)  # found: ObjectClear runs
        with pytest.raises(InvalidInput):
            client.inpaint(photo, small, steps=1)  # MASK of another size
        client.generate("a red bicycle", width=256, height=256, steps=3)

        def leave(progress: Progress) -> None:
            if progress.step == 1:
                raise Leave

        with pytest.raises(Leave):
            client.inpaint(small, png(np.full(np.asarray(coffee[0])[::2, ::2].shape[:2], 255, np.uint8)), steps=100,
                           on_progress=leave)
    # nothing found: a score threshold the tiny SAM 3 cannot reach
    (image,) = call(grpcclient, default_server.grpc_url, "remove_object", ["IMAGE"], IMAGE=as_bytes(photo),
                    PROMPT=as_bytes("a cup"), SCORE_THRESHOLD=(np.array([1.0], np.float32), "FP32"))
    assert np.array_equal(decode(image[0]), coffee[0])

    def grown() -> bool:
        return all((query(prometheus, promql) or 0.0) - baseline[promql] == delta for promql, delta in series.items())

    wait_for(grown, "the requests' series in Prometheus",
             lambda: "\n".join(f"{q}: {(query(prometheus, q) or 0) - baseline[q]} (want {d})" for q, d in series.items()))
    # the cancelled loop has stopped once its outcome is counted, so the two counts are final
    assert query(prometheus, unet_steps) - baseline[unet_steps] == query(prometheus, unet_runs) - baseline[unet_runs]
    buckets = query_result(prometheus, 'pipeline_stage_duration_seconds_bucket{model="remove_object",stage="denoise"}')
    assert {series["metric"]["le"] for series in buckets} >= {"0.1", "1", "10", "+Inf"}  # a histogram, not a summary

    # every panel of the Grafana dashboard evaluates, and those on the pipeline series show data (once a range holds
    # two samples of each series)
    for promql in dashboard_queries():
        concrete = promql.replace("$__rate_interval", "2m").replace("$model", ".*").replace("$preset", ".*")
        if "pipeline_" in promql:
            wait_for(lambda: query_result(prometheus, concrete), concrete, timeout=30)
        else:
            query_result(prometheus, concrete)
