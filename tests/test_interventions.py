"""Hooks that change the network (helpers.interventions), streaming top-k (helpers.topk) and feature
visualisation (helpers.featurevis): values known by construction."""

import math
import warnings

import pytest
import torch
from torch import nn

from helpers.featurevis import dominant_orientation, nearest_class, visualize
from helpers.hooks import hooks_on
from helpers.interventions import ablate, mean_activation, patch
from helpers.toydata import gabor
from helpers.topk import StreamingTopK, channel_peaks, receptive_field

torch.set_num_threads(1)


def chain(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()


class Twice(nn.Module):
    """Calls ``act`` twice per forward pass, like ResNet's BasicBlock calls its ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(1, 3, 1), nn.Conv2d(3, 3, 1), nn.ReLU()

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x))))


def inputs(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed))


def record_input(module: nn.Module, store: list):
    """What the module receives: a pre-hook, so it sees the edited output of the module before."""
    return module.register_forward_pre_hook(lambda m, args: store.append(args[0].detach().clone()))


# -- ablate ---------------------------------------------------------------------------

def test_zero_ablation_zeroes_the_channel_right_after_the_hook_and_nothing_else():
    model, x = chain(), inputs()
    seen_clean, seen_ablated = [], []
    handle = record_input(model[1], seen_clean)
    with torch.no_grad():
        model(x)
    handle.remove()
    upstream = []
    handle = record_input(model[1], seen_ablated)
    handle_up = record_input(model[0], upstream)
    with torch.no_grad(), ablate(model, "0", [2, 0]) as record:
        model(x)
    handle.remove(), handle_up.remove()
    assert record.calls == 1
    after, before = seen_ablated[0], seen_clean[0]
    assert torch.count_nonzero(after[:, [0, 2]]) == 0 and torch.count_nonzero(before[:, 2]) > 0
    keep = [1, 3]
    assert torch.equal(after[:, keep], before[:, keep])
    assert torch.equal(upstream[0], x)  # the input of the ablated module is untouched
    assert hooks_on(model) == []


def test_ablation_changes_the_output_and_a_channel_list_and_an_int_agree():
    model, x = chain(), inputs()
    with torch.no_grad():
        clean = model(x)
        with ablate(model, "2", 1):
            one = model(x)
        with ablate(model, "2", [1]):
            listed = model(x)
    assert torch.equal(one, listed) and not torch.equal(one, clean)


def test_mean_ablation_writes_the_mean_per_channel_or_per_position():
    model, x = chain(), inputs(8)
    per_channel = mean_activation(model, "0", x)
    per_position = mean_activation(model, "0", x, per_position=True)
    with torch.no_grad():
        direct = model[0](x)
    assert torch.allclose(per_channel, direct.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(per_position, direct.mean(dim=0), atol=1e-6)
    for mean in (per_channel, per_position):
        seen = []
        handle = record_input(model[1], seen)
        with torch.no_grad(), ablate(model, "0", [0, 3], mode="mean", mean=mean):
            model(x)
        handle.remove()
        expected = mean[[0, 3]] if mean.dim() == 3 else mean[[0, 3]].view(2, 1, 1)
        assert torch.equal(seen[0][:, [0, 3]], expected.expand(8, 2, 6, 6))
        assert torch.equal(seen[0][:, [1, 2]], direct[:, [1, 2]])


def test_a_module_called_twice_is_edited_at_both_calls():
    model, x = Twice(), inputs()
    outputs = []
    with torch.no_grad(), ablate(model, "act", [1]) as record:
        handle = model.act.register_forward_hook(lambda m, a, out: outputs.append(out.clone()))
        model(x)
        handle.remove()
    assert record.calls == 2
    assert len(outputs) == 2 and all(torch.count_nonzero(o[:, 1]) == 0 for o in outputs)


def test_hooks_are_gone_after_an_exception_and_modes_are_left_as_found():
    model, x = chain(), inputs()
    for training, grad in [(True, True), (False, False), (False, True)]:
        model.train(training)
        torch.set_grad_enabled(grad)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                with ablate(model, "0", [0]):
                    assert len(hooks_on(model)) == 1
                    model(x)
                    raise RuntimeError("boom")
            with pytest.raises(IndexError):
                with ablate(model, "0", [9]):
                    model(x)  # the error is raised inside the hook, in the forward pass
            assert hooks_on(model) == []
            assert model.training is training and torch.is_grad_enabled() is grad
        finally:
            torch.set_grad_enabled(True)


def test_gradients_flow_through_kept_channels_and_not_through_ablated_ones():
    model, x = chain(), inputs()
    leaf = x.clone().requires_grad_(True)
    grads = []
    def watch(module, args, out):  # returns None: a lambda would return the handle, replacing the output
        out.register_hook(grads.append)

    handle = model[0].register_forward_hook(watch)
    with ablate(model, "0", [1]):  # registered after the recorder: the recorder sees the raw output
        model(leaf)[:, 0].sum().backward()
    handle.remove()
    assert torch.count_nonzero(grads[0][:, 1]) == 0 and torch.count_nonzero(grads[0][:, 0]) > 0


def test_clear_errors_for_bad_names_channels_and_means():
    model, x = chain(), inputs()
    with pytest.raises(KeyError, match=r"No module named 'conv3' in the model. Did you mean 'conv2', 'conv1'"):
        ablate(Twice(), "conv3", [0])
    with pytest.raises(KeyError, match=r"No module named 'O' in the model. See model.named_modules\(\)"):
        patch(model, "O", x)
    with pytest.raises(ValueError, match="negative"):
        ablate(model, "0", [-1])
    with pytest.raises(TypeError, match="integers"):
        ablate(model, "0", [1.5])
    with pytest.raises(ValueError, match="mode must be"):
        ablate(model, "0", [0], mode="one")
    with pytest.raises(ValueError, match="needs mean="):
        ablate(model, "0", [0], mode="mean")
    with pytest.raises(IndexError, match=r"'0' has 4 channels \(0 to 3\); channels \[4\] do not exist"):
        with ablate(model, "0", [4]):
            model(x)
    with pytest.raises(ValueError, match="give C=4 values"):
        with ablate(model, "0", [0], mode="mean", mean=torch.zeros(3)):
            model(x)
    assert hooks_on(model) == []


def test_a_non_tensor_output_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    model = nn.Sequential(Pair())
    with pytest.raises(TypeError, match="must return one N×C×… tensor"):
        with ablate(model, "0", [0]):
            model(inputs())
    assert hooks_on(model) == []


# -- patch ------------------------------------------------------------------------------

def test_patching_the_clean_activation_into_a_corrupted_run_gives_the_clean_output_exactly():
    model, clean_x, corrupt_x = chain(), inputs(seed=1), inputs(seed=2)
    with torch.no_grad():
        clean_act = model[:2](clean_x)
        clean_out = model(clean_x)
        with patch(model, "1", clean_act) as record:
            patched = model(corrupt_x)
        assert not torch.equal(model(corrupt_x), clean_out)
    assert record.calls == 1 and torch.equal(patched, clean_out)


def test_patching_channels_or_a_mask_replaces_only_there():
    model, clean_x, corrupt_x = chain(), inputs(seed=1), inputs(seed=2)
    with torch.no_grad():
        clean, corrupt = model[0](clean_x), model[0](corrupt_x)
    for kwargs, where in [({"channels": [2]}, (slice(None), [2])),
                          ({"mask": torch.zeros(1, 1, 6, 6, dtype=torch.bool).index_fill_(3, torch.tensor([4]), True)},
                           (slice(None), slice(None), slice(None), [4]))]:
        seen = []
        handle = record_input(model[1], seen)
        with torch.no_grad(), patch(model, "0", clean, **kwargs):
            model(corrupt_x)
        handle.remove()
        expected = corrupt.clone()
        expected[where] = clean[where]
        assert torch.equal(seen[0], expected)


def test_patch_errors():
    model, x = chain(), inputs()
    with pytest.raises(ValueError, match=r"the patch has shape \(1, 4, 6, 6\) but '0' outputs \(5, 4, 6, 6\)"):
        with patch(model, "0", torch.zeros(1, 4, 6, 6)):
            model(x)
    with pytest.raises(ValueError, match="not both"):
        patch(model, "0", torch.zeros(5, 4, 6, 6), channels=[0], mask=torch.ones(1, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        patch(model, "0", torch.zeros(5, 4, 6, 6), mask=torch.ones(1))
    assert hooks_on(model) == []


# -- streaming top-k ---------------------------------------------------------------------

def stable_top(scores: torch.Tensor, k: int):
    order = torch.sort(scores.T, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.T.gather(1, order), order


@pytest.mark.parametrize("batch", [1, 7, 64, 500])
def test_streaming_top_k_equals_the_whole_set_sorted_with_ties_to_the_earlier_image(batch):
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (500, 3), generator=g).float()  # many ties
    positions = torch.randint(0, 49, (500, 3), generator=g)
    top = StreamingTopK(k=20)
    for start in range(0, 500, batch):
        top.update(scores[start:start + batch], positions[start:start + batch])
    values, order = stable_top(scores, 20)
    assert torch.equal(top.values, values) and torch.equal(top.indices, order)
    assert torch.equal(top.positions, positions.T.gather(1, order))
    assert torch.equal(top.values, torch.topk(scores.T, 20, dim=1).values)


def test_without_ties_it_equals_torch_topk_indices_too():
    scores = torch.randn(1000, 8, generator=torch.Generator().manual_seed(3))
    top = StreamingTopK(k=5)
    for chunk in scores.split(128):
        top.update(chunk)
    expected = torch.topk(scores.T, 5, dim=1)
    assert torch.equal(top.values, expected.values) and torch.equal(top.indices, expected.indices)


def test_given_image_indices_in_any_order_keep_the_tie_rule():
    scores = torch.tensor([[1.0], [2.0], [1.0], [2.0]])
    top = StreamingTopK(k=3)
    top.update(scores[2:], indices=torch.tensor([3, 1]))
    top.update(scores[:2], indices=torch.tensor([2, 0]))  # scores of images 3, 1, then 2, 0
    assert top.values.tolist() == [[2.0, 2.0, 1.0]] and top.indices.tolist() == [[0, 1, 2]]


def test_memory_does_not_grow_with_the_number_of_images():
    top = StreamingTopK(k=4)
    held = []
    for chunk in torch.rand(4000, 16, generator=torch.Generator().manual_seed(0)).split(100):
        top.update(chunk)
        held.append(top.nbytes)
    assert held[0] == held[-1] == 16 * 4 * (4 + 8 + 8) and max(held) == held[0]
    assert top.seen == 4000


def test_fewer_images_than_k_and_bad_input():
    top = StreamingTopK(k=10)
    top.update(torch.tensor([[3.0, 1.0], [5.0, 0.0]]))
    assert top.values.tolist() == [[5.0, 3.0], [1.0, 0.0]] and top.indices.tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="earlier batches had 2"):
        top.update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        top.update(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="positive integer"):
        StreamingTopK(k=0)


def test_channel_peaks_gives_the_maximum_and_the_first_position_of_it():
    activation = torch.zeros(2, 2, 3, 4)
    activation[0, 0, 1, 2] = 5.0
    activation[1, 1, 2, 0] = activation[1, 1, 0, 3] = 7.0  # a tie: row-major order picks (0, 3)
    values, positions = channel_peaks(activation)
    assert values.tolist() == [[5.0, 0.0], [0.0, 7.0]]
    assert positions[0, 0] == 1 * 4 + 2 and positions[1, 1] == 0 * 4 + 3


def test_receptive_field_matches_where_the_gradient_reaches():
    model = nn.Sequential(nn.Conv2d(1, 1, 5, stride=2, padding=2), nn.Conv2d(1, 1, 3, padding=1),
                          nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, stride=2, padding=1))
    for module in model:
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0)
    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    for layer, index in [("0", 0), ("1", 1), ("3", 3)]:
        rf = receptive_field(model, layer)
        out = model[:index + 1](x)
        for row, col in [(0, 0), (1, 2), (out.shape[-2] - 1, out.shape[-1] - 1)]:
            (grad,) = torch.autograd.grad(out[0, 0, row, col], x, retain_graph=True)
            rows, cols = torch.nonzero(grad[0, 0], as_tuple=True)
            box_rows, box_cols = rf.box(row, col, 40, 40)
            if layer != "3":  # max-pooling passes the gradient to one pixel per window: a subset
                assert (int(rows.min()), int(rows.max()) + 1) == (box_rows.start, box_rows.stop)
                assert (int(cols.min()), int(cols.max()) + 1) == (box_cols.start, box_cols.stop)
            assert box_rows.start <= rows.min() and rows.max() < box_rows.stop
    assert receptive_field(model, "1") == receptive_field(model, "1")  # frozen dataclass
    assert (receptive_field(model, "0").size, receptive_field(model, "1").size) == (5, 9)


# -- feature visualisation ------------------------------------------------------------------

def test_dominant_orientation_reads_the_angle_of_gabor_stripes():
    for k in range(4):
        for degrees in (k * 45 - 8, k * 45, k * 45 + 8):
            one = lambda v: torch.tensor([float(v)])  # noqa: E731
            image = gabor(one(math.radians(degrees)), one(6), one(0.5), one(16), one(14), one(6), one(1))
            angle, strength = dominant_orientation(image[0])
            difference = (angle - degrees + 90) % 180 - 90
            assert abs(difference) < 3 and strength > 0.8 and nearest_class(angle) == k
    noise = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert dominant_orientation(noise)[1] < 0.1
    assert dominant_orientation(torch.ones(8, 8)) == (0.0, 0.0)


def test_visualize_is_seeded_touches_no_parameter_and_leaves_no_hook():
    model = chain()
    first = visualize(model, "2", 1, shape=(1, 1, 6, 6), steps=5)
    again = visualize(model, "2", 1, shape=(1, 1, 6, 6), steps=5)
    assert torch.equal(first, again) and first.shape == (1, 1, 6, 6)
    assert all(p.grad is None for p in model.parameters()) and hooks_on(model) == []
    assert not model.training
    with pytest.raises(IndexError, match="3 channels"):
        visualize(model, "2", 3, shape=(1, 1, 6, 6), steps=1)
    assert hooks_on(model) == []


def test_visualize_starts_from_init_std_times_seeded_noise():
    # Adam's first step moves every pixel by at most lr, so after one step the picture is the start ± lr.
    model = chain()
    for init_std in (0.0, 0.5, 2.0):
        picture = visualize(model, "2", 0, shape=(1, 1, 6, 6), steps=1, lr=1e-4, init_std=init_std, seed=3)
        start = init_std * torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(3))
        assert (picture - start).abs().max() <= 1e-4 + 1e-6  # + float32 rounding at |x| ≈ 2
    with pytest.raises(ValueError, match="init_std"):
        visualize(model, "2", 0, shape=(1, 1, 6, 6), steps=1, init_std=-1.0)


def threshold_unit() -> nn.Sequential:
    """One unit, relu(x - 1) averaged over positions: exactly 0 (gradient 0) while every pixel is below 1."""
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-1.0)
    return nn.Sequential(conv, nn.ReLU()).eval()


def test_a_unit_that_is_zero_on_the_start_warns_and_a_larger_start_moves_it():
    model = threshold_unit()
    with pytest.warns(RuntimeWarning, match="gradient 0 on the starting image"):
        stuck = visualize(model, "1", 0, shape=(1, 1, 6, 6), steps=20, l2=0.0, jitter=0, init_std=0.01)
    start = 0.01 * torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(stuck, start)  # gradient 0 and no penalty: Adam never moves it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = visualize(model, "1", 0, shape=(1, 1, 6, 6), steps=20, l2=0.0, jitter=0, init_std=2.0)
    with torch.no_grad():
        assert float(model(moved).mean()) > float(model(2.0 * start / 0.01).mean())


def test_the_l2_penalty_sets_the_brightness_of_a_linear_unit():
    # For a linear unit a·x̄ the optimum of mean(a·x) - l2·Σx² is x = a / (2·l2·n) in every pixel (n pixels).
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    for l2 in (0.05, 0.5):
        picture = visualize(model, "0", 0, shape=(1, 1, 4, 4), steps=600, lr=0.02, l2=l2, jitter=0, init_std=0.0)
        assert torch.allclose(picture, torch.full_like(picture, 3.0 / (2 * l2 * 16)), atol=0.02)
