"""Where a pipeline keeps its tensors: the served `device` parameter and outputs moved onto the pipeline's device."""
import pytest
import torch

from pipelines.components import OnDevice, pipeline_device


def test_pipeline_device_accepts_the_cpu():
    assert pipeline_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_pipeline_device_refuses_a_gpu_this_process_cannot_see():
    with pytest.raises(ValueError, match=r"device 'cuda': no CUDA device is visible"):
        pipeline_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pipeline_device_accepts_a_visible_gpu():
    assert pipeline_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize("name", ["gpu", "meta", ""])
def test_pipeline_device_names_the_bad_value(name):
    with pytest.raises(ValueError, match=f"device '{name}'"):
        pipeline_device(name)


def test_on_device_moves_outputs_and_passes_inputs_untouched():
    seen = {}

    def network(**inputs):
        seen.update(inputs)
        return {"out": inputs["x"].double() * 2}

    x = torch.arange(3.0)
    out = OnDevice(network, torch.device("meta"))(x=x)["out"]
    assert seen["x"] is x
    assert out.device.type == "meta" and out.dtype == torch.float64 and out.shape == (3,)
