"""The CUDA path: models and inputs on the GPU, recordings back on the CPU.

Skipped (with the reason shown by `pytest -ra`) where no CUDA device exists;
tools/gpu_check.py runs these on a GPU machine.
"""

import numpy as np
import pytest
import torch

from helpers.hooks import ActivationRecorder, hooks_on
from helpers.images import load_image, preprocess, sample_image_path
from helpers.models import load_resnet34
from helpers.viz import feature_grid

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.fixture(scope="module")
def cuda_model():
    return load_resnet34(pretrained=False, device="cuda")


@pytest.fixture(scope="module")
def cat_on_cuda():
    return preprocess(load_image(sample_image_path())).to("cuda")


def test_recordings_of_a_cuda_model_come_back_on_the_cpu(cuda_model, cat_on_cuda):
    assert next(cuda_model.parameters()).device.type == "cuda"
    with torch.no_grad(), ActivationRecorder(cuda_model) as rec:
        logits = cuda_model(cat_on_cuda)
    assert logits.device.type == "cuda"
    assert len(rec) == 36 and all(t.device.type == "cpu" for t in rec.outputs)
    cpu_model = load_resnet34(pretrained=False, device="cpu")
    with torch.no_grad(), ActivationRecorder(cpu_model) as cpu_rec:
        cpu_model(cat_on_cuda.cpu())
    # cuDNN may use TF32 on Ampere and newer: compare at its precision, relative to the layer's scale.
    for name in ("conv1", "layer2.3.conv2", "layer4.2.conv2"):
        scale = cpu_rec[name].abs().max().item()
        torch.testing.assert_close(rec[name], cpu_rec[name], rtol=0, atol=2e-2 * scale)
    assert hooks_on(cuda_model) == []


def test_gradients_on_cuda_come_back_on_the_cpu(cuda_model, cat_on_cuda):
    with ActivationRecorder(cuda_model, names=["layer4.2.conv2"], gradients=True) as rec:
        logits = cuda_model(cat_on_cuda)
        logits[0, logits[0].argmax()].backward()
    grad = rec.gradient("layer4.2.conv2")
    assert grad.device.type == "cpu" and grad.shape == (1, 512, 7, 7) and grad.abs().sum() > 0
    cuda_model.zero_grad(set_to_none=True)


def test_feature_grid_accepts_a_cuda_tensor(cat_on_cuda):
    activation = torch.randn(1, 64, 8, 8, device="cuda")
    assert np.array_equal(feature_grid(activation), feature_grid(activation.cpu()))


def test_grad_cam_on_cuda_matches_the_cpu(cuda_model, cat_on_cuda):
    from helpers.attribution import grad_cam_for

    on_gpu = grad_cam_for(cuda_model, cat_on_cuda, layer="layer4")
    cpu_model = load_resnet34(pretrained=False, device="cpu")
    on_cpu = grad_cam_for(cpu_model, cat_on_cuda.cpu(), layer="layer4", target=on_gpu.target)
    assert on_gpu.cam.device.type == "cpu"
    torch.testing.assert_close(on_gpu.cam, on_cpu.cam, rtol=0, atol=0.05)
    assert hooks_on(cuda_model) == []


def test_explorer_upload_reruns_the_cuda_model_once(cuda_model, cat_on_cuda):
    from helpers.widgets import feature_explorer

    with torch.no_grad(), ActivationRecorder(cuda_model) as rec:
        cuda_model(cat_on_cuda)
    explorer = feature_explorer(rec, model=cuda_model)
    assert explorer.use_photo(sample_image_path()) and explorer.forward_runs == 1
    assert not explorer.use_photo(b"not an image", name="notes.jpg") and explorer.forward_runs == 1
    assert "notes.jpg" in explorer.message_text


def test_gradient_saliency_of_a_cuda_model_takes_a_cpu_image_and_returns_a_cpu_map(cuda_model, cat_on_cuda):
    from helpers.attribution import gradient_saliency

    image = cat_on_cuda.cpu()
    on_gpu = gradient_saliency(cuda_model, image, target=281)
    assert on_gpu.device.type == "cpu" and on_gpu.shape == (224, 224)
    cpu_model = load_resnet34(pretrained=False, device="cpu")
    on_cpu = gradient_saliency(cpu_model, image, target=281)
    # cuDNN may use TF32: compare relative to the map's scale
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=5e-2 * on_cpu.max().item())
    assert hooks_on(cuda_model) == []
