"""TensorRT engines build from the exported graphs and agree with ONNX Runtime. Needs a GPU and tensorrt."""
from __future__ import annotations

import numpy as np
import pytest

tensorrt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on the CPU machines)")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("TensorRT engines need a CUDA GPU; none is visible", allow_module_level=True)

from export.tensorrt import build_engine, engine_plans  # noqa: E402
from pipelines.ort import ort_session  # noqa: E402


def test_vae_decoder_engine_matches_onnx_runtime(model_repository, tmp_path):
    onnx_path = model_repository / "objectclear_vae_decoder" / "1" / "model.onnx"
    _, profile = engine_plans(model_repository, "objectclear_vae_decoder")["ultra_fast"]
    plan = build_engine(onnx_path, tmp_path / "model.plan", profile, precision="fp32")
    runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    latents = torch.randn(1, 4, 32, 48, device="cuda")
    context.set_input_shape("latents", tuple(latents.shape))
    out = torch.empty(tuple(context.get_tensor_shape("image")), device="cuda")
    context.set_tensor_address("latents", latents.data_ptr())
    context.set_tensor_address("image", out.data_ptr())
    assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    want = ort_session(onnx_path).run(["image"], {"latents": latents.cpu().numpy()})[0]
    np.testing.assert_allclose(out.cpu().numpy(), want, atol=1e-3 * max(1.0, np.abs(want).max()))
