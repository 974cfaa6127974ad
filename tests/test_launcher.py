"""The launcher starts a real tritonserver on loopback, reports failures with the server's log, stops cleanly."""
from __future__ import annotations

import socket

import pytest
import tritonclient.http as httpclient

from server.launcher import ServerError, TritonServer

pytestmark = pytest.mark.server


def test_start_serves_on_loopback_and_stop_frees_the_ports(model_repository):
    server = TritonServer(model_repository, preset="ultra_fast", models=["objectclear_object_encoder"])
    with server:
        with httpclient.InferenceServerClient(server.http_url) as client:
            assert client.is_model_ready("objectclear_object_encoder")
            assert not client.is_model_ready("objectclear_unet")  # only the requested models are loaded
        assert server.http_url.startswith("127.0.0.1:")
    assert server.process.poll() is not None
    for port in (server.http_port, server.grpc_port):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore the client's TIME_WAIT, not a listener
            s.bind(("127.0.0.1", port))  # fails if the server still listens there


def test_failure_to_start_raises_with_the_server_log(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text('backend: "python"\nthis is not protobuf text\n')
    with pytest.raises(ServerError, match="broken"):
        TritonServer(tmp_path).start(timeout=60)


def test_a_container_binds_every_interface_and_loads_the_whole_repository_with_no_model_control(model_repository):
    """What docker/entrypoint.sh asks for: no --load-model list (Triton loads the repository), no loading later."""
    command = TritonServer(model_repository, preset="quality", address="0.0.0.0", model_control="none").command()
    assert {"--http-address=0.0.0.0", "--grpc-address=0.0.0.0", "--metrics-address=0.0.0.0",
            "--model-control-mode=none", "--model-config-name=quality"} <= set(command)
    assert not [arg for arg in command if arg.startswith("--load-model")]
    default = TritonServer(model_repository).command()
    assert "--http-address=127.0.0.1" in default and "--model-control-mode=explicit" in default
    with pytest.raises(ServerError, match="explicit"):
        TritonServer(model_repository, models=["sam3_segment"], model_control="none").command()
