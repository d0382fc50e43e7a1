"""The training recorder, the procedural dataset, the small CNN and the sanity-check helpers."""

import gc
import time
import weakref

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from helpers.hooks import hooks_on  # noqa: E402
from helpers.attribution import grad_cam_for, gradient_saliency
from helpers.sanity import (attribution_maps, cascading_randomization, rank_rows, ranks, spearman,  # noqa: E402
                            spearman_rows)
from helpers.toydata import (CLASSES, gabor_patches, initialize, patch_parameters, small_cnn,  # noqa: E402
                             train_and_test)
from helpers.training import (STATS, TrainingRecorder, accuracy, fit, histogram_image,  # noqa: E402
                              one_thread, plot_dead_fraction, plot_histograms, plot_mean_std, summarize)

BLOCKS = ["block1", "block2", "block3", "block4", "block5"]


class Fixed(nn.Module):
    """Returns a tensor chosen by the test, whatever the input (a known activation)."""

    def __init__(self):
        super().__init__()
        self.value = torch.zeros(1, 1)

    def forward(self, x):
        return self.value.clone()


def wrapped():
    model = nn.Sequential()
    model.add_module("source", Fixed())
    return model


# -- summaries of known tensors ---------------------------------------------------

def test_summary_of_a_known_tensor():
    # 2 samples × 2 channels × 2 values; channel 1 is zero everywhere (a dead channel).
    x = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[3.0, 0.005], [0.0, 0.0]]])
    row = summarize(x, low=0.0, high=4.0, bins=4, near_zero=0.01)
    values = x.flatten().double()
    assert row[0] == pytest.approx(float(values.mean()))
    assert row[1] == pytest.approx(float(values.std(correction=0)))
    assert row[2] == pytest.approx(6 / 8)      # 0, 0.005 and the six zeros... minus 1.0 and 3.0
    assert row[3] == pytest.approx(1 / 2)      # channel 1 dead, channel 0 not
    assert row[4:].tolist() == [6.0, 1.0, 0.0, 1.0]  # [0,1): six, [1,2): 1.0, [3,4): 3.0


def test_histogram_bins_clamp_outliers_and_count_every_value():
    x = torch.tensor([[-5.0, 0.0, 0.99, 1.0, 1.5, 2.0, 3.999, 4.0, 100.0]])
    row = summarize(x, low=0.0, high=4.0, bins=4, near_zero=0.0)
    assert row[4:].tolist() == [3.0, 2.0, 1.0, 3.0]  # -5 → first bin; 4.0 and 100 → last bin
    assert row[4:].sum() == x.numel()


def test_std_has_no_cancellation_for_a_large_mean():
    x = 1000.0 + torch.tensor([[0.0, 0.002, 0.004, 0.006]])
    row = summarize(x, 0.0, 4.0, 4, 0.01)
    assert row[1] == pytest.approx(float(x.double().std(correction=0)), rel=1e-3)


def test_recorder_stores_each_step_of_known_activations():
    model = wrapped()
    steps = [torch.full((2, 3), 0.5), torch.tensor([[0.0, 2.0], [1.0, 1.0]])]
    with TrainingRecorder(model, names=["source"], bins=4, value_range=(0.0, 4.0)) as rec:
        for value in steps:
            model[0].value = value
            model(torch.zeros(1))
    assert rec.steps == 2
    np.testing.assert_allclose(rec.stat("mean", "source"), [0.5, 1.0])
    np.testing.assert_allclose(rec.stat("std", "source"), [0.0, float(steps[1].std(correction=0))])
    np.testing.assert_allclose(rec.stat("near_zero", "source"), [0.0, 0.25])
    np.testing.assert_array_equal(rec.histogram("source"), [[6, 1], [0, 2], [0, 1], [0, 0]])
    np.testing.assert_allclose(histogram_image(rec, "source"), np.log1p(rec.histogram("source")))


def test_eval_calls_are_not_steps_unless_asked():
    model = wrapped()
    with TrainingRecorder(model, names=["source"]) as rec:
        model(torch.zeros(1))
        model.eval()
        model(torch.zeros(1))
    assert rec.steps == 1 and len(rec.stat("mean", "source")) == 1
    with TrainingRecorder(model, names=["source"], training_only=False) as rec:
        model(torch.zeros(1))
    assert rec.steps == 1
    assert not model.training  # left as found


# -- hooks are removed --------------------------------------------------------------

def test_hooks_removed_after_the_block_and_when_training_raises():
    model = small_cnn()
    with TrainingRecorder(model, names=BLOCKS) as rec:
        assert len(hooks_on(model)) == len(BLOCKS) + 1  # + the model's pre-hook that counts steps
    assert hooks_on(model) == [] and not rec.is_active
    with pytest.raises(RuntimeError, match="boom"):
        with TrainingRecorder(model, names=BLOCKS, gradients=True):
            model(torch.zeros(2, 1, 32, 32)).sum().backward()
            raise RuntimeError("boom")
    assert hooks_on(model) == []


def test_a_second_recorder_replaces_the_first_instead_of_stacking():
    model = small_cnn()
    first = TrainingRecorder(model, names=BLOCKS).start()
    second = TrainingRecorder(model, names=BLOCKS).start()
    assert not first.is_active and len(hooks_on(model)) == len(BLOCKS) + 1
    second.stop()
    assert hooks_on(model) == []


def test_modes_are_left_as_found():
    model = small_cnn().eval()
    data = gabor_patches(64, seed=0)
    with torch.no_grad(), TrainingRecorder(model, names=BLOCKS):
        fit(model, data.images, data.labels, steps=2)
        assert not torch.is_grad_enabled()
    assert not model.training
    accuracy(model.train(), data.images, data.labels)
    assert model.training


# -- memory: summaries only --------------------------------------------------------------

def test_memory_is_flat_and_no_activation_survives_a_step():
    torch.manual_seed(0)
    model = small_cnn()
    batch = torch.randn(8, 1, 32, 32)
    alive = []
    # A watcher of our own keeps weak references only: it sees the same output tensors as the recorder.
    watchers = [getattr(model, b).register_forward_hook(lambda m, a, out: alive.append(weakref.ref(out)))
                for b in BLOCKS]
    try:
        with one_thread(), TrainingRecorder(model, names=BLOCKS, bins=40, gradients=True) as rec:
            sizes = []
            for step in range(1, 101):
                model(batch).sum().backward()
                if step in (10, 100):
                    sizes.append(rec.nbytes)
    finally:
        for handle in watchers:
            handle.remove()
    gc.collect()
    assert all(ref() is None for ref in alive), "an activation is still referenced after its step"
    per_step = len(BLOCKS) * (len(STATS) + 40) * 8 + len(BLOCKS) * 8  # summaries + one gradient norm per layer
    assert sizes == [10 * per_step, 100 * per_step]
    stored = [v for rows in rec._rows.values() for v in rows]
    assert len(stored) == 100 * len(BLOCKS)
    assert all(isinstance(v, np.ndarray) and v.shape == (len(STATS) + 40,) for v in stored)
    assert not any(isinstance(v, torch.Tensor) for v in vars(rec).values())
    assert len(rec.stat("grad_norm", "block3")) == 100 and (rec.stat("grad_norm", "block3") > 0).all()


def test_clear_errors():
    model = small_cnn()
    with pytest.raises(ValueError, match="value_range"):
        TrainingRecorder(model, names=BLOCKS, value_range=(1.0, 1.0))
    rec = TrainingRecorder(model, names=BLOCKS)
    with pytest.raises(KeyError, match="not watched"):
        rec.stat("mean", "fc")
    with pytest.raises(KeyError, match="Unknown statistic"):
        rec.stat("median", "block1")
    with pytest.raises(RuntimeError, match="gradients=True"):
        rec.stat("grad_norm", "block1")


# -- the dataset and the model -----------------------------------------------------------

def test_dataset_is_deterministic_balanced_and_quick():
    start = time.perf_counter()
    train, test = train_and_test(n_train=2048, n_test=512, seed=0)
    assert time.perf_counter() - start < 2.0 * 5  # ~0.1 s alone; generous for a loaded machine
    assert train.images.shape == (2048, 1, 32, 32) and train.images.dtype == torch.float32
    assert train.labels.bincount().tolist() == [512] * len(CLASSES)
    again = gabor_patches(2048, seed=0)
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert not torch.equal(train.images[:512], test.images)
    with pytest.raises(ValueError, match="multiple of 4"):
        gabor_patches(10, seed=0)


def test_classes_are_orientations():
    # Without noise, the mean image of a class carries its stripes: vertical stripes vary along x only.
    clean = gabor_patches(400, seed=3, noise=0.0)
    energy = {}
    for k in (0, 2):
        images = clean.images[clean.labels == k, 0]
        along_x = images.diff(dim=2).abs().mean()
        along_y = images.diff(dim=1).abs().mean()
        energy[k] = float(along_x / along_y)
    assert energy[0] < 0.6 and energy[2] > 1.6  # horizontal stripes change along y; vertical along x


def _change_along(images: torch.Tensor, step_x: int, step_y: int) -> float:
    """Mean |pixel(y + step_y, x + step_x) - pixel(y, x)| with row 0 at the top, as imshow draws it."""
    h, w = images.shape[-2:]
    moved = images[..., max(step_y, 0):h + min(step_y, 0), max(step_x, 0):w + min(step_x, 0)]
    base = images[..., max(-step_y, 0):h + min(-step_y, 0), max(-step_x, 0):w + min(-step_x, 0)]
    return float((moved - base).abs().mean())


@pytest.mark.parametrize("k, along", [(0, (1, 0)), (1, (1, -1)), (2, (0, 1)), (3, (1, 1))])
def test_every_class_runs_the_way_its_name_draws_it(k, along):
    # As displayed (row 0 at the top), a pixel keeps its value along the stripes: "/" runs to the right and up
    # (x + 1, y - 1), "\\" to the right and down (x + 1, y + 1). Across the stripes it changes most.
    clean = gabor_patches(400, seed=3, noise=0.0)
    images = clean.images[clean.labels == k, 0]
    step_x, step_y = along
    changes = {d: _change_along(images, *d) for d in [(1, 0), (0, 1), (1, -1), (1, 1)]}
    assert min(changes, key=changes.get) == (step_x, step_y), (CLASSES[k], changes)
    assert changes[(step_x, step_y)] < 0.5 * max(changes.values()), (CLASSES[k], changes)
    assert CLASSES[k] == ("horizontal", "diagonal /", "vertical", "diagonal \\")[k]


def test_kaiming_keeps_the_scale_and_small_std_collapses_it():
    x = gabor_patches(256, seed=0).images
    stds = {}
    for scheme in ("kaiming", "normal"):
        model = initialize(small_cnn(), scheme, std=0.01)
        with torch.no_grad(), TrainingRecorder(model, names=BLOCKS) as rec:
            model(x)
        stds[scheme] = [rec.stat("std", b)[0] for b in BLOCKS]
    assert 0.1 < min(stds["kaiming"]) and max(stds["kaiming"]) < 1.0
    assert stds["normal"][-1] < 1e-5


def test_training_reaches_well_above_chance_quickly_and_reproducibly():
    train, test = train_and_test()
    results = []
    for _ in range(2):
        model = initialize(small_cnn(batchnorm=True), "normal", std=0.01)
        start = time.perf_counter()
        with one_thread():
            losses = fit(model, train.images, train.labels, steps=100, lr=0.01)
        seconds = time.perf_counter() - start
        results.append((losses, accuracy(model, test.images, test.labels)))
    assert results[0] == results[1], "same seed, one thread: the same numbers"
    assert results[0][1] > 0.6, f"held-out accuracy {results[0][1]:.1%} after 100 steps"
    assert seconds < 30  # ~1-2 s on an idle core


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with pytest.raises(ZeroDivisionError):
        with one_thread():
            assert torch.get_num_threads() == 1
            1 / 0
    assert torch.get_num_threads() == before


# -- plots -------------------------------------------------------------------------------

def recorded(values_per_step):
    model = wrapped()
    with TrainingRecorder(model, names=["source"], bins=4, value_range=(0.0, 4.0)) as rec:
        for value in values_per_step:
            model[0].value = value
            model(torch.zeros(1))
    return rec


def test_histogram_plot_draws_the_log_counts_steps_along_x():
    rec = recorded([torch.zeros(1, 3), torch.full((1, 3), 3.5)])
    fig = plot_histograms({"run": rec})
    drawn = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(drawn, np.log1p([[3, 0], [0, 0], [0, 0], [0, 3]]))
    assert fig.axes[0].images[0].origin == "lower"  # bin 0 (lowest values) at the bottom
    assert fig.axes[-1].get_ylabel() == "log(1 + count)"  # the colorbar
    plt.close(fig)


def test_mean_std_and_dead_plots_draw_the_recorded_values():
    rec = recorded([torch.full((1, 2), 1.0), torch.tensor([[0.0, 2.0]])])
    fig = plot_mean_std({"a": rec, "b": rec})
    mean_ax, std_ax = fig.axes[0], fig.axes[2]
    np.testing.assert_allclose(mean_ax.lines[0].get_ydata(), [1.0, 1.0])
    np.testing.assert_allclose(std_ax.lines[0].get_ydata(), [0.0, 1.0])
    plt.close(fig)
    fig = plot_dead_fraction(rec)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [0.0, 0.5])
    plt.close(fig)


# -- the sanity check ---------------------------------------------------------------------

def test_ranks_average_ties_and_spearman_matches_known_values():
    np.testing.assert_array_equal(ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # monotone but not linear: Spearman 1, Pearson below 1
    assert spearman(np.arange(6), np.exp(np.arange(6))) == pytest.approx(1.0)
    # with ties: scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)
    assert np.isnan(spearman(np.zeros(4), np.arange(4)))


def test_cascading_randomization_redraws_from_the_top_and_leaves_the_model_alone():
    model = initialize(small_cnn(batchnorm=True), "kaiming", seed=0).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for name, randomized in cascading_randomization(model, ["fc", "block5"], seed=7):
        seen.append((name, randomized.fc.weight.clone(), randomized.block5[0].weight.clone()))
    assert [s[0] for s in seen] == ["original", "fc", "block5"]
    assert torch.equal(seen[0][1], model.fc.weight) and torch.equal(seen[0][2], model.block5[0].weight)
    assert not torch.equal(seen[1][1], model.fc.weight) and torch.equal(seen[1][2], model.block5[0].weight)
    assert torch.equal(seen[2][1], seen[1][1]) and not torch.equal(seen[2][2], model.block5[0].weight)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())
    with pytest.raises(KeyError, match="block9"):
        next(cascading_randomization(model, ["block9"]))


def test_gradient_saliency_is_the_input_gradient():
    model = initialize(small_cnn(), "kaiming", seed=0).eval()
    x = gabor_patches(4, seed=0).images[:1]
    leaf = x.clone().requires_grad_(True)
    model(leaf)[0, 2].backward()
    expected = leaf.grad[0].abs().amax(dim=0)
    model.zero_grad()
    got = gradient_saliency(model, x, target=2)
    torch.testing.assert_close(got, expected)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


# -- additions for notebook 07: patch geometry, batched maps, row-wise Spearman, a step callback ----------

def test_patch_parameters_are_what_gabor_patches_drew():
    n, seed = 64, 3
    params, drawn = patch_parameters(n, seed), gabor_patches(n, seed)
    assert torch.equal(params.labels, drawn.labels)
    # Without noise every image is contrast · window · stripes: its largest |value| lies within half a
    # wavelength (plus a pixel) of the centre that patch_parameters reports, and never beyond the window.
    clean = gabor_patches(n, seed, noise=0.0).images[:, 0]
    where = clean.abs().flatten(1).argmax(dim=1)
    row, col = (where // 32).float(), (where % 32).float()
    distance = torch.sqrt((row - params.centre_y) ** 2 + (col - params.centre_x) ** 2)
    assert (distance <= params.wavelength / 2 + 1).all()
    peak = clean.abs().flatten(1).amax(dim=1)
    assert (peak <= params.contrast + 1e-6).all() and (params.radius >= 3.5).all() and (params.radius <= 6).all()
    with pytest.raises(ValueError, match="multiple of 4"):
        patch_parameters(6, 0)


def test_rank_rows_and_spearman_rows_agree_with_the_one_map_versions():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(20, 30)).astype(float)   # many ties
    b = rng.normal(size=(20, 30))
    b[5] = 2.0                                              # a constant map: NaN
    expected_ranks = np.stack([ranks(row) for row in a])
    np.testing.assert_allclose(rank_rows(a), expected_ranks)
    np.testing.assert_array_equal(rank_rows([[10, 20, 20, 5]]), [[2, 3.5, 3.5, 1]])
    got = spearman_rows(a, b)
    np.testing.assert_allclose(got, [spearman(x, y) for x, y in zip(a, b)], equal_nan=True)
    assert np.isnan(got[5]) and np.isfinite(np.delete(got, 5)).all()
    maps = torch.rand(3, 8, 8)
    np.testing.assert_allclose(spearman_rows(maps, maps), 1.0)
    np.testing.assert_allclose(spearman_rows(maps, -maps), -1.0)
    with pytest.raises(ValueError, match="same number of maps"):
        spearman_rows(np.zeros((2, 4)), np.zeros((3, 4)))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_attribution_maps_equal_the_one_image_helpers_and_leave_the_model_as_found(batchnorm):
    model = initialize(small_cnn(batchnorm=batchnorm), "kaiming", seed=0)
    with torch.no_grad():  # non-trivial running statistics, so that eval and train mode differ
        model(gabor_patches(64, seed=5).images)
    model.train()
    data = gabor_patches(8, seed=2)
    targets = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    cams, raw, sals = attribution_maps(model, data.images, targets, layer="block4")
    assert model.training and hooks_on(model) == [] and torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    for i in range(8):
        one = grad_cam_for(model, data.images[i:i + 1], layer="block4", target=int(targets[i]))
        torch.testing.assert_close(cams[i], one.cam, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(raw[i], one.raw, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(sals[i], gradient_saliency(model, data.images[i:i + 1], int(targets[i])),
                                   atol=1e-7, rtol=1e-5)
    with pytest.raises(KeyError, match="block9"):
        attribution_maps(model, data.images, targets, layer="block9")
    with pytest.raises(ValueError, match="N targets"):
        attribution_maps(model, data.images, targets[:3], layer="block4")


def test_fit_calls_after_step_once_per_step_without_changing_training():
    data = gabor_patches(64, seed=0)
    plain, watched = (initialize(small_cnn(), "kaiming", seed=0) for _ in range(2))
    seen = []
    with one_thread():
        expected = fit(plain, data.images, data.labels, steps=4, batch_size=16)
        got = fit(watched, data.images, data.labels, steps=4, batch_size=16,
                  after_step=lambda step: seen.append((step, watched.fc.weight.detach().clone())))
    assert got == expected and [step for step, _ in seen] == [0, 1, 2, 3]
    assert torch.equal(seen[-1][1], watched.fc.weight) and not torch.equal(seen[0][1], seen[1][1])
