"""Recorded gradients and Grad-CAM: equal to autograd, independent of hook order, cleaned up."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torch import nn
from torchvision.models import resnet34

from helpers.attribution import (cam_weights, grad_cam, grad_cam_for, gradient_saliency, normalize_map,
                                 overlay, top_k)
from helpers.hooks import ActivationRecorder, hooks_on
from helpers.images import to_displayable
from helpers.models import imagenet_categories
from tests.toy_net import FIRING_ORDER, OutOfOrderNet, forward_by_hand, toy_input

# Convs early and late (two in layer4, one a downsample) and a ReLU module that
# BasicBlock calls twice per forward pass.
WATCHED = ["conv1", "layer2.0.conv1", "layer3.1.conv2", "layer4.0.downsample.0", "layer4.2.conv2",
           "layer2.1.relu"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet34(weights=None).eval()


def make_input(size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def capture_live(model, names):
    """Plain forward hooks keeping the live (non-detached) outputs, one per call, named like the recorder."""
    modules = dict(model.named_modules())
    live: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def make(name):
        def hook(module, args, output):
            k = calls.get(name, 0)
            calls[name] = k + 1
            live[name if k == 0 else f"{name}_{k}"] = output

        return hook

    handles = [modules[n].register_forward_hook(make(n)) for n in names]
    return live, handles


def independent_grad_cam(activation, gradient, size):
    """Grad-CAM written another way: einsum for the weighted sum, interpolate, explicit min/max."""
    alpha = gradient.sum(dim=(2, 3)) / (gradient.shape[2] * gradient.shape[3])
    weighted = torch.einsum("nc,nchw->nhw", alpha, activation).clamp(min=0)
    up = F.interpolate(weighted[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(dim=1).values[:, None, None]
    hi = up.flatten(1).max(dim=1).values[:, None, None]
    return (up - lo) / (hi - lo)


def record_cam(model, x, names, layer="layer4", target=None, extra_hook_first=False, extra_hook_last=False):
    """Forward + backward with a recorder on ``names``; optionally an unrelated hook before/after it."""
    extra = []

    def unrelated(module, args, output):
        extra.append(output.shape)  # reads, returns None

    handles = []
    if extra_hook_first:
        handles.append(model.layer4.register_forward_hook(unrelated))
    rec = ActivationRecorder(model, layer_type=nn.Module, names=names, gradients=True)
    with rec:
        if extra_hook_last:
            handles.append(model.layer4.register_forward_hook(unrelated))
        logits = model(x)
        target = int(logits[0].argmax()) if target is None else target
        logits[0, target].backward()
    for handle in handles:
        handle.remove()
    model.zero_grad(set_to_none=True)
    assert len(extra) == int(extra_hook_first or extra_hook_last)
    return rec, grad_cam(rec[layer], rec.gradient(layer), size=tuple(x.shape[-2:])), target


def test_recorded_gradients_equal_autograd_grad(model):
    x = make_input(64)
    with ActivationRecorder(model, layer_type=nn.Module, names=WATCHED, gradients=True) as rec:
        logits = model(x)
        target = int(logits[0].argmax())
        logits[0, target].backward()
    model.zero_grad(set_to_none=True)
    assert "layer2.1.relu_1" in rec.names and "layer4.2.conv2" in rec.names

    # A fresh forward pass: autograd.grad of the same score w.r.t. the live activations.
    live, handles = capture_live(model, WATCHED)
    try:
        score = model(x)[0, target]
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(live) == sorted(rec.names)
    expected = dict(zip(live, torch.autograd.grad(score, list(live.values()))))
    for index, name in enumerate(rec.names):
        got = rec.gradients[index]
        assert got is rec.gradient(name)
        assert got.device.type == "cpu" and not got.requires_grad
        assert got.shape == rec.outputs[index].shape
        torch.testing.assert_close(got, expected[name], rtol=1e-5, atol=1e-6, msg=name)
        assert got.abs().sum() > 0, f"{name}: an all-zero gradient would make this test vacuous"
    # The two calls of the shared ReLU got their own gradients.
    assert not torch.equal(rec.gradient("layer2.1.relu"), rec.gradient("layer2.1.relu_1"))


def test_gradient_of_output_changed_in_place_is_for_the_recorded_value(model):
    # bn1's output is overwritten by ReLU(inplace=True); the recorded copy is the value
    # before the ReLU, and so must be its gradient: relu's gradient where bn1 > 0, else 0.
    x = make_input(64)
    with ActivationRecorder(model, layer_type=nn.Module, names=["layer1.0.bn1", "layer1.0.relu"],
                            gradients=True) as rec:
        logits = model(x)
        logits[0, int(logits[0].argmax())].backward()
    model.zero_grad(set_to_none=True)
    before, after = rec["layer1.0.bn1"], rec.gradient("layer1.0.relu")
    assert (after * (before <= 0)).abs().sum() > 0, "the mask must matter for this test to mean something"
    torch.testing.assert_close(rec.gradient("layer1.0.bn1"), after * (before > 0))


def test_every_relu_call_gets_its_gradient(model):
    x = make_input(64)
    with ActivationRecorder(model, layer_type=nn.ReLU, gradients=True) as rec:
        logits = model(x)
        logits[0, 3].backward()
    model.zero_grad(set_to_none=True)
    assert len(rec) == 33 and len(rec.gradients) == 33
    assert rec.names[:3] == ["relu", "layer1.0.relu", "layer1.0.relu_1"]
    for name, out, grad in zip(rec.names, rec.outputs, rec.gradients):
        assert grad is not None and grad.shape == out.shape, name


def test_grad_cam_equals_an_independent_computation(model):
    x = make_input(112)
    for layer, target in (("layer4", None), ("layer3", 0)):
        rec, cam, target = record_cam(model, x, [layer], layer=layer, target=target)
        activation, gradient = rec[layer], rec.gradient(layer)
        raw = grad_cam(activation, gradient, normalize=False)
        assert raw.max() > 0 and raw.min() < raw.max(), "need a non-constant map to compare"
        expected = independent_grad_cam(activation, gradient, size=(112, 112))
        assert cam.shape == (1, 112, 112)
        torch.testing.assert_close(cam, expected, rtol=1e-5, atol=1e-5)
        assert cam.min() == 0 and cam.max() == 1
        # Unbatched inputs give an unbatched map.
        torch.testing.assert_close(grad_cam(activation[0], gradient[0], size=(112, 112)), expected[0],
                                   rtol=1e-5, atol=1e-5)


def test_grad_cam_for_matches_the_recorder_and_backward(model):
    x = make_input(112)
    _, expected, target = record_cam(model, x, ["layer4"])
    before = [p.grad for p in model.parameters()]
    result = grad_cam_for(model, x, layer="layer4")
    assert result.target == target and result.layer == "layer4"
    torch.testing.assert_close(result.cam, expected[0], rtol=1e-5, atol=1e-5)
    assert result.raw.shape == (4, 4) and result.weights.shape == (512,)
    assert result.logits.shape == (1, 1000) and not result.logits.requires_grad
    assert result.score == pytest.approx(float(result.logits[0, target]))
    assert [p.grad for p in model.parameters()] == before, "grad_cam_for must not touch .grad"
    assert hooks_on(model) == []


def test_grad_cam_is_invariant_to_hook_registration_order(model):
    x = make_input(112)
    _, reference, target = record_cam(model, x, ["layer4"])
    _, hook_before, _ = record_cam(model, x, ["layer4"], target=target, extra_hook_first=True)
    _, hook_after, _ = record_cam(model, x, ["layer4"], target=target, extra_hook_last=True)
    rec_a, names_a, _ = record_cam(model, x, ["layer4", "layer3", "layer2.0.conv1"], target=target)
    rec_b, names_b, _ = record_cam(model, x, ["layer2.0.conv1", "layer3", "layer4"], target=target)
    for cam in (hook_before, hook_after, names_a, names_b):
        torch.testing.assert_close(cam, reference, rtol=0, atol=1e-6)
    # Records follow the firing order, not the order the names were given in.
    assert rec_a.names == rec_b.names == ["layer2.0.conv1", "layer3", "layer4"]
    for name in rec_a.names:
        torch.testing.assert_close(rec_a.gradient(name), rec_b.gradient(name), rtol=0, atol=0)


def test_hooks_are_removed_after_backward_and_tensor_hooks_stop_firing(model):
    x = make_input(64)
    control_calls = []

    def control_hook(module, args, output):
        output.register_hook(lambda g: control_calls.append(g.clone()))

    with ActivationRecorder(model, names=["layer4.2.conv2", "layer1.0.conv1"], gradients=True) as rec:
        # A plain tensor hook on another activation, outside the recorder: it proves that
        # the second backward below really runs through the network.
        control = model.layer4.register_forward_hook(control_hook)
        try:
            logits = model(x)
        finally:
            control.remove()
        score = logits[0, int(logits[0].argmax())]
        score.backward(retain_graph=True)
        assert len(hooks_on(model)) == 3  # the model's pre-hook and two forward hooks
    assert hooks_on(model) == []
    saved = [g.clone() for g in rec.gradients]
    (2 * score).backward()  # the retained graph, after stop()
    model.zero_grad(set_to_none=True)
    assert len(control_calls) == 2 and torch.equal(control_calls[1], 2 * control_calls[0])
    for before, after in zip(saved, rec.gradients):
        assert torch.equal(before, after), "a tensor hook fired after the recorder stopped"


def test_gradients_need_grad_mode_and_cleanup_still_happens(model):
    with pytest.raises(RuntimeError, match="does not require grad"):
        with torch.no_grad(), ActivationRecorder(model, names=["layer4"], gradients=True):
            model(make_input(64))
    assert hooks_on(model) == []


def test_constant_maps_become_zero_not_nan():
    activation = torch.rand(1, 8, 4, 4)
    for gradient in (torch.zeros(1, 8, 4, 4), -torch.ones(1, 8, 4, 4)):  # no weight, all suppressed
        cam = grad_cam(activation, gradient, size=(32, 32))
        assert torch.isfinite(cam).all() and torch.equal(cam, torch.zeros(1, 32, 32))
    assert torch.equal(normalize_map(torch.full((3, 5), 2.0)), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        grad_cam(activation, torch.zeros(1, 8, 2, 2))


def test_grad_cam_highlights_where_a_positive_weight_channel_fires():
    activation = torch.zeros(1, 2, 4, 4)
    activation[0, 0, 1, 2] = 3.0       # channel 0 fires at one place
    activation[0, 1] = 1.0             # channel 1 everywhere, but its weight is negative
    gradient = torch.stack([torch.full((4, 4), 0.5), torch.full((4, 4), -0.1)])[None]
    cam = grad_cam(activation, gradient)  # no resizing
    assert cam[0].argmax() == 1 * 4 + 2 and cam[0].max() == 1
    assert cam[0, 0, 0] == 0  # 0.5*0 - 0.1*1 < 0, removed by the ReLU, then the minimum


def test_top_k_names_and_probabilities():
    categories = imagenet_categories()
    logits = torch.zeros(1, 1000)
    logits[0, 281], logits[0, 285], logits[0, 7] = 10.0, 9.0, 8.0
    pairs = top_k(logits, k=3)
    assert [name for name, _ in pairs] == [categories[281], categories[285], categories[7]]
    expected = logits[0].softmax(0)[[281, 285, 7]]
    assert [p for _, p in pairs] == pytest.approx(expected.tolist())
    assert len(top_k(logits[0])) == 5
    with pytest.raises(ValueError):
        top_k(torch.zeros(10))


def test_overlay_blends_colormap_and_image():
    image = np.full((6, 8, 3), 0.25, dtype=np.float32)
    cam = torch.linspace(0, 1, 48).reshape(6, 8)
    assert np.allclose(overlay(image, cam, alpha=0.0), image)
    colors = colormaps["viridis"](cam.numpy())[..., :3]
    assert np.allclose(overlay(image, cam, alpha=1.0), colors, atol=1e-6)
    assert np.allclose(overlay(image, cam, alpha=0.4), 0.6 * image + 0.4 * colors, atol=1e-6)
    tensor = make_input(8)[:, :, :6, :]
    assert np.allclose(overlay(tensor, cam, alpha=0.0), to_displayable(tensor))
    with pytest.raises(ValueError, match="size"):
        overlay(image, torch.zeros(3, 3))


def test_each_call_of_a_reused_module_gets_its_own_gradient_equal_to_autograd():
    net, x = OutOfOrderNet(), toy_input()
    score_weights = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    with ActivationRecorder(net, layer_type=(nn.Conv2d, nn.ReLU), gradients=True) as rec:
        (net(x) * score_weights).sum().backward()
    net.zero_grad(set_to_none=True)
    # Independently: the same score written with torch.nn.functional, differentiated by autograd.grad.
    values = forward_by_hand(net, x)
    score = (values["head"] * score_weights).sum()
    expected = dict(zip(values, torch.autograd.grad(score, list(values.values()))))
    assert rec.names == FIRING_ORDER
    for name in FIRING_ORDER:
        torch.testing.assert_close(rec.gradient(name), expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.allclose(rec.gradient("mix"), rec.gradient("mix_1"))
    assert not torch.allclose(rec.gradient("act"), rec.gradient("act_1"))


def test_cam_weights_are_spatial_means_known_by_construction():
    ramp = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # mean 5.5
    gradient = torch.stack([torch.full((3, 4), 2.0), ramp, -ramp, torch.zeros(3, 4)])
    assert cam_weights(gradient).tolist() == [2.0, 5.5, -5.5, 0.0]
    assert cam_weights(gradient[None]).tolist() == [[2.0, 5.5, -5.5, 0.0]]
    # With these weights, the raw map is 2·A₀ + 5.5·A₁ − 5.5·A₂, then the ReLU.
    activation = torch.stack([torch.ones(3, 4), torch.eye(3, 4), 2 * torch.eye(3, 4), torch.full((3, 4), 9.0)])
    raw = grad_cam(activation, gradient, normalize=False)
    assert torch.equal(raw, (2 - 5.5 * torch.eye(3, 4)).clamp(min=0))


def test_grad_cam_for_weights_and_raw_map_equal_an_independent_computation(model):
    x = make_input(112)
    result = grad_cam_for(model, x, layer="layer4", target=281)
    live, handles = capture_live(model, ["layer4"])
    try:
        score = model(x)[0, 281]
    finally:
        for handle in handles:
            handle.remove()
    (gradient,) = torch.autograd.grad(score, live["layer4"])
    activation = live["layer4"].detach()
    means = gradient.sum(dim=(2, 3))[0] / (gradient.shape[2] * gradient.shape[3])
    torch.testing.assert_close(result.weights, means, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(result.raw, torch.einsum("c,chw->hw", means, activation[0]).clamp(min=0),
                               rtol=1e-4, atol=1e-6)
    assert result.score == pytest.approx(score.item(), rel=1e-5)


def test_overlay_alpha_0_is_the_photo_and_alpha_1_the_map_pixel_for_pixel():
    photo = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    cam = torch.linspace(0, 1, 35).reshape(5, 7)
    assert np.array_equal(overlay(photo, cam, cmap="gray", alpha=0.0), photo)
    grey = np.repeat(cam.numpy()[..., None], 3, axis=2)  # the "gray" map draws v as (v, v, v)
    np.testing.assert_allclose(overlay(photo, cam, cmap="gray", alpha=1.0), grey, atol=1 / 255)


def test_gradient_saliency_runs_on_the_models_device_and_returns_a_cpu_map():
    """A model on the meta device and a CPU image, under torch's FakeTensorMode (shapes and devices, no data):
    the image must be moved to the model's device and the map brought back, as on a CUDA model."""
    fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).to("meta")
    with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
        saliency = gradient_saliency(model, torch.zeros(1, 3, 6, 9), target=1)
    assert saliency.device.type == "cpu" and tuple(saliency.shape) == (6, 9)


def test_gradient_saliency_is_the_largest_absolute_gradient_over_channels():
    """A linear model: the gradient of logit t is row t of the weight. Channel 1 holds -3 where channel 0
    holds +1: abs-then-max gives 3 (max-then-abs would give 1, a sum -2)."""
    weight = torch.zeros(2, 2, 2, 3)
    weight[1, 0] = torch.tensor([[1.0, 0.0, -0.5], [2.0, 0.25, 0.0]])
    weight[1, 1] = torch.tensor([[-3.0, 0.1, 0.2], [1.0, -0.75, 0.0]])
    weight[0] = 0.01
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        model[1].weight.copy_(weight.view(2, 12))
        model[1].bias.copy_(torch.tensor([100.0, 0.0]))  # class 0 is the top class
    image = torch.ones(1, 2, 2, 3)
    expected = torch.tensor([[3.0, 0.1, 0.5], [2.0, 0.75, 0.0]])
    torch.testing.assert_close(gradient_saliency(model, image, target=1), expected)
    torch.testing.assert_close(gradient_saliency(model, image), torch.full((2, 3), 0.01))  # top class: 0
    with pytest.raises(ValueError, match="one image"):
        gradient_saliency(model, torch.ones(2, 2, 2, 3))
