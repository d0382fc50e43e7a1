"""The recorder's guarantees: same tensors as FX, copies, per-call names, cleanup, model state."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet34, vgg11
from torchvision.models.feature_extraction import create_feature_extractor

from helpers.hooks import ActivationRecorder, FiringEvent, conv_layers, firing_trace, format_trace, hooks_on
from tests.toy_net import DEFINITION_ORDER, FIRING_ORDER, OutOfOrderNet, forward_by_hand, toy_input


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return resnet34(weights=None).eval()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_resnet34_has_36_convs_in_named_modules_order(resnet):
    layers = conv_layers(resnet)
    assert len(layers) == 36
    assert [n for n, _ in layers] == [n for n, m in resnet.named_modules() if isinstance(m, nn.Conv2d)]
    assert layers[0][0] == "conv1" and layers[15][0] == "layer2.3.conv2"


def test_recorder_matches_torchvision_feature_extractor(resnet):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    names = [n for n, _ in conv_layers(resnet)]
    extractor = create_feature_extractor(resnet, return_nodes=names)
    with torch.no_grad():
        expected = extractor(x)
        with ActivationRecorder(resnet) as rec:
            resnet(x)
    assert sorted(rec.names) == sorted(expected)
    for name in names:
        torch.testing.assert_close(rec[name], expected[name], rtol=1e-5, atol=1e-5)
    assert rec["conv1"].shape == (2, 64, 112, 112)


def test_firing_order_puts_downsample_after_conv2(resnet, image):
    with torch.no_grad(), ActivationRecorder(resnet) as rec:
        resnet(image)
    assert rec.names.index("layer2.0.downsample.0") == rec.names.index("layer2.0.conv2") + 1
    assert [rec.names.index(f"layer{i}.0.downsample.0") for i in (2, 3, 4)] == [9, 18, 31]


def test_inplace_relu_after_conv_does_not_change_the_record():
    torch.manual_seed(0)
    model = vgg11(weights=None).eval()
    assert isinstance(model.features[1], nn.ReLU) and model.features[1].inplace
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), ActivationRecorder(model) as rec:
        model(x)
    assert len(rec) == 8
    for name, out in rec:
        assert (out < 0).any(), f"{name} was overwritten by the in-place ReLU that follows it"


def test_records_are_detached_copies_and_mode_is_unchanged(resnet, image):
    resnet.train()
    try:
        x = image.clone().requires_grad_(True)
        with ActivationRecorder(resnet) as rec:
            out = resnet(x)
        assert resnet.training, "the recorder switched the model to eval"
        assert torch.is_grad_enabled()
        assert out.requires_grad
        for t in rec.outputs:
            assert not t.requires_grad and t.grad_fn is None and t.device.type == "cpu"
        # A copy, not a view of the live tensor: changing one leaves the other.
        with ActivationRecorder(resnet, names=["conv1"]) as rec2:
            live = {}
            handle = resnet.conv1.register_forward_hook(lambda m, a, o: live.setdefault("o", o))
            resnet(x)
            handle.remove()
        assert rec2["conv1"].data_ptr() != live["o"].data_ptr()
    finally:
        resnet.eval()
    with torch.no_grad(), ActivationRecorder(resnet):
        resnet(image)
        assert not torch.is_grad_enabled()
    assert not resnet.training and torch.is_grad_enabled()


def test_shared_relu_is_recorded_once_per_call(resnet, image):
    with torch.no_grad(), ActivationRecorder(resnet, names=["relu", "layer1.0.relu", "layer2.1.relu"]) as rec:
        resnet(image)
    assert rec.names == ["relu", "layer1.0.relu", "layer1.0.relu_1", "layer2.1.relu", "layer2.1.relu_1"]
    assert rec["layer1.0.relu"].shape == rec["layer1.0.relu_1"].shape == (1, 64, 56, 56)
    assert not torch.equal(rec["layer1.0.relu"], rec["layer1.0.relu_1"])
    # A ReLU module sees all 33 calls of ResNet34's 17 ReLU modules.
    with torch.no_grad(), ActivationRecorder(resnet, layer_type=nn.ReLU) as rec:
        resnet(image)
    assert len(rec.layers) == 17 and len(rec) == 33


def test_each_forward_starts_a_fresh_record(resnet, image):
    with torch.no_grad(), ActivationRecorder(resnet) as rec:
        resnet(image)
        first = rec["layer3.2.conv1"].clone()
        resnet(image)
        assert len(rec) == 36, "a second forward pass must not double the record"
    assert torch.equal(first, rec["layer3.2.conv1"])
    assert rec.nbytes == sum(t.numel() * 4 for t in rec.outputs)


def test_hooks_removed_after_normal_exit(resnet, image):
    assert hooks_on(resnet) == []
    with torch.no_grad(), ActivationRecorder(resnet) as rec:
        assert len(hooks_on(resnet)) == 37  # 36 convs + the model's own pre-hook
        assert rec.is_active
        resnet(image)
    assert hooks_on(resnet) == [] and not rec.is_active


def test_hooks_removed_when_forward_raises(resnet):
    with pytest.raises(RuntimeError):
        with ActivationRecorder(resnet):
            resnet(torch.randn(1, 5, 64, 64))  # wrong channel count: conv1 raises
    assert hooks_on(resnet) == []


def test_constructing_registers_nothing_and_restart_replaces_stale_hooks(resnet, image):
    ActivationRecorder(resnet)
    assert hooks_on(resnet) == []
    interrupted = ActivationRecorder(resnet)
    interrupted.start()  # as if the cell was interrupted before stop()
    rerun = ActivationRecorder(resnet).start()
    try:
        assert len(hooks_on(resnet)) == 37, "hooks of the interrupted recorder piled up"
        assert not interrupted.is_active and rerun.is_active
        with torch.no_grad():
            resnet(image)
        assert len(rerun) == 36 and len(interrupted) == 0
    finally:
        rerun.stop()
    assert hooks_on(resnet) == []


def test_unknown_names_get_a_helpful_error(resnet):
    with pytest.raises(KeyError, match="layer2.0.conv3.*layer2.0.conv1"):
        ActivationRecorder(resnet, names=["layer2.0.conv3"])
    with pytest.raises(TypeError, match="list of module names"):
        ActivationRecorder(resnet, names="conv1")
    rec = ActivationRecorder(resnet)
    with pytest.raises(KeyError, match="nothing yet"):
        rec["conv1"]


def test_firing_trace_shows_order_and_repeated_calls(resnet, image):
    events = firing_trace(resnet, image, names=["layer2.0.conv2", "layer2.0.downsample.0", "layer1.0.relu"])
    assert [(e.name, e.call) for e in events] == [
        ("layer1.0.relu", 1), ("layer1.0.relu", 2), ("layer2.0.conv2", 1), ("layer2.0.downsample.0", 1)
    ]
    assert events[3].input_shapes == ((1, 64, 56, 56),) and events[3].output_shape == (1, 128, 28, 28)
    table = format_trace(events)
    assert "layer2.0.downsample.0" in table and "64×56×56" in table
    assert hooks_on(resnet) == []
    all_leaves = firing_trace(resnet, image)
    assert sum(e.name.endswith("relu") for e in all_leaves) == 33


# -- a model whose forward pass calls its modules in another order than __init__ defines them --------


def test_toy_net_really_fires_out_of_definition_order():
    net = OutOfOrderNet()
    assert [name for name, _ in net.named_modules()][1:] == DEFINITION_ORDER
    assert [name for name, _ in conv_layers(net)] == ["head", "mix", "stem"]  # definition order, as documented


def test_firing_trace_lists_every_call_in_firing_order_with_exact_numbers():
    net, x = OutOfOrderNet(), toy_input()
    small, wide, out = (1, 2, 5, 5), (1, 4, 5, 5), (1, 3, 5, 5)
    assert firing_trace(net, x) == [
        FiringEvent(0, "stem", 1, (small,), wide),
        FiringEvent(1, "act", 1, (wide,), wide),
        FiringEvent(2, "mix", 1, (wide,), wide),
        FiringEvent(3, "act", 2, (wide,), wide),
        FiringEvent(4, "mix", 2, (wide,), wide),
        FiringEvent(5, "head", 1, (wide,), out),
    ]
    # Names given in definition order still come back in firing order, numbered from 0.
    assert [(e.order, e.name, e.call) for e in firing_trace(net, x, names=["head", "mix"])] == [
        (0, "mix", 1), (1, "mix", 2), (2, "head", 1)
    ]
    assert hooks_on(net) == []


def test_format_trace_prints_the_table_a_student_reads():
    table = format_trace(firing_trace(OutOfOrderNet(), toy_input(), names=["stem", "act", "head"]))
    assert table.splitlines() == [
        "order  module  call  input    output",
        "0      stem    1     1×2×5×5  1×4×5×5",
        "1      act     1     1×4×5×5  1×4×5×5",
        "2      act     2     1×4×5×5  1×4×5×5",
        "3      head    1     1×4×5×5  1×3×5×5",
    ]


def test_recorder_names_and_values_follow_the_firing_order():
    net, x = OutOfOrderNet(), toy_input()
    expected = forward_by_hand(net, x)
    with torch.no_grad(), ActivationRecorder(net, layer_type=(nn.Conv2d, nn.ReLU)) as rec:
        net(x)
    assert rec.names == FIRING_ORDER
    for name, value in rec:
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(rec["mix"], rec["mix_1"])
    with torch.no_grad(), ActivationRecorder(net, names=["head", "mix"]) as convs:
        net(x)
    assert convs.names == ["mix", "mix_1", "head"]
