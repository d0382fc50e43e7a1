"""What torch.compile does with hooks on the installed PyTorch, as notebook 09 states it.

These tests pin behaviour that PyTorch may change in an upgrade (hooks registered after the first
compiled call, on a submodule and on the compiled module itself; graph breaks of printing hooks and
what the default logs say about them). When one fails, the behaviour changed: update notebook 09's
text and this file together. Dynamo only (a counting backend, backend="eager" or "aot_eager"),
so each test takes about a second.
"""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import ActivationRecorder


class TinyNet(nn.Module):
    """Notebook 09's network: a shared ReLU, a residual add, functional pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GraphCounter:
    """A torch.compile backend that counts the graphs it is given and runs them unchanged."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """No compile cache leaks into or out of a test; one thread, as the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.compiler.reset()
    yield
    torch.compiler.reset()
    torch.set_num_threads(threads)


@pytest.fixture
def x():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def _breaks(hook, x) -> int:
    net = _net()
    net.conv2.register_forward_hook(hook)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return torch._dynamo.explain(net)(x).graph_break_count


def _default_log(hook, x) -> str:
    """What PyTorch's default logging prints (torch's log handlers write to the current sys.stderr)."""
    net = _net()
    net.conv2.register_forward_hook(hook)
    torch._logging.set_logs()
    caught = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(caught):
        torch.compile(net, backend="eager")(x)
    return caught.getvalue()


def test_a_hook_registered_before_compiling_fires_and_edits_the_output_as_in_eager_mode(x):
    net, seen = _net(), []
    net.conv1.register_forward_hook(lambda m, a, out: seen.append(1))
    net.conv2.register_forward_hook(lambda m, a, out: 2 * out)
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net, backend="eager")(x)
    assert seen == [1, 1]
    assert torch.equal(compiled, eager)


def test_a_forward_hook_registered_after_the_first_compiled_call_is_silently_skipped(x):
    """Notebook 09, section 2.2 (pytorch/pytorch#117758). If this fails, PyTorch now guards on added hooks."""
    assert torch._dynamo.config.skip_nnmodule_hook_guards is True
    net, counter, seen = _net(), GraphCounter(), []
    compiled = torch.compile(net, backend=counter)
    with torch.no_grad():
        compiled(x)
        handle = net.conv2.register_forward_hook(lambda m, a, out: seen.append("late"))
        net(x)
        assert seen == ["late"], "the hook itself works in eager mode"
        compiled(x)
        torch.compile(net, backend=counter)(x)  # wrapping again reuses the cached code
        assert seen == ["late"], "the compiled call ran the hook: update notebook 09, section 2.2"
        assert counter.graphs == 1
        torch.compiler.reset()
        compiled(x)
        assert seen == ["late", "late"], "after torch.compiler.reset() the hook is compiled in"
        handle.remove()
        compiled(x)
    assert seen == ["late", "late"] and counter.graphs == 3, "removing a compiled-in hook recompiles"


def test_a_full_backward_hook_registered_after_the_first_compiled_call_is_skipped(x):
    net, seen = _net(), []
    compiled = torch.compile(net, backend="eager")
    compiled(x).sum().backward()
    net.conv2.register_full_backward_hook(lambda m, gin, gout: seen.append("late"))
    compiled(x).sum().backward()
    assert seen == []


def test_graph_breaks_of_hooks_on_conv2(x):
    """Notebook 09, section 2.4: the counts it prints and asserts."""
    assert _breaks(lambda m, a, out: print("conv2:", tuple(out.shape)), x) == 2
    assert _breaks(lambda m, a, out: out.mean().item(), x) > 0
    kept = {}
    assert _breaks(lambda m, a, out: kept.__setitem__("conv2", out.detach().clone()), x) == 0
    assert _breaks(lambda m, a, out: 2 * out, x) == 0


def test_a_hook_appending_to_a_list_recompiles_until_the_recompile_limit(x):
    net, counter, calls = _net(), GraphCounter(), []
    net.conv2.register_forward_hook(lambda m, a, out: calls.append(out.detach()))
    compiled = torch.compile(net, backend=counter)
    with torch.no_grad():
        for _ in range(12):
            compiled(x)
    assert len(calls) == 12
    assert counter.graphs == torch._dynamo.config.recompile_limit == 8


def test_late_hooks_on_the_compiled_module_itself_fire_without_recompiling_its_forward(x):
    """Notebook 09, section 2.2: OptimizedModule calls the module's __call__ outside the traced forward."""
    net, counter, seen = _net(), GraphCounter(), []
    compiled = torch.compile(net, backend=counter)
    with torch.no_grad():
        compiled(x)
        net.register_forward_pre_hook(lambda m, args: seen.append("pre"))
        net.register_forward_hook(lambda m, args, out: seen.append("forward"))
        net.conv2.register_forward_pre_hook(lambda m, args: seen.append("conv2 pre"))  # a submodule: skipped
        compiled(x)
    assert seen == ["pre", "forward"]
    assert counter.graphs == 1, "the hooks do no tensor work: no graph of their own, and forward was not recompiled"


def test_a_late_full_backward_hook_on_the_compiled_module_itself_fires(x):
    net, seen = _net(), []
    compiled = torch.compile(net, backend="eager")
    compiled(x).sum().backward()
    with pytest.warns(UserWarning, match="no inputs require gradients"):  # x does not require grad
        net.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
        compiled(x).sum().backward()
    assert seen == [torch.Size([2, 4])]


def test_with_hook_guards_on_a_late_submodule_hook_recompiles_and_fires(x):
    net, counter, seen = _net(), GraphCounter(), []
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False), torch.no_grad():
        compiled = torch.compile(net, backend=counter)
        compiled(x)
        net.conv2.register_forward_hook(lambda m, a, out: seen.append("late"))
        compiled(x)
    assert seen == ["late"] and counter.graphs == 2


def test_item_breaks_the_graph_only_by_default(x):
    means = {}

    def hook(m, a, out):
        means["conv2"] = out.mean().item()

    assert _breaks(hook, x) > 0
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        assert _breaks(hook, x) == 0


def test_default_logging_warns_about_the_item_break_only(x):
    """Notebook 09, section 2.4: print and data-dependent `if` split the graph without a log line by default."""
    assert logging.getLogger("torch").level == logging.WARNING
    assert _default_log(lambda m, a, out: print("conv2:", tuple(out.shape)), x) == ""
    assert _default_log(lambda m, a, out: 2 * out if out.mean() > 0 else None, x) == ""
    torch.compiler.reset()
    torch._dynamo.variables.tensor.TensorVariable._warn_capture_scalar_outputs.cache_clear()  # it warns once per process
    means = {}
    assert "Graph break from `Tensor.item()`" in _default_log(lambda m, a, out: means.update(conv2=out.mean().item()), x)


def test_activation_recorder_compiles_once_on_the_module_and_twice_inside_a_wrapper(x):
    """Notebook 09, section 2.3: its clearing pre-hook is traced only when the compiled code calls the model."""
    graphs = {}
    for case, wrap in [("module", lambda m: m), ("wrapper", lambda m: (lambda t: m(t)))]:
        torch.compiler.reset()
        net, counter = _net(), GraphCounter()
        with ActivationRecorder(net) as rec, torch.no_grad():
            run = torch.compile(wrap(net), backend=counter)
            for _ in range(5):
                run(x)
            assert rec.names == ["conv1", "conv2"]
        graphs[case] = counter.graphs
    assert graphs == {"module": 1, "wrapper": 2}


def test_backward_hooks_under_aot_eager_fire_as_under_eager(x):
    """Notebook 09, section 2.5: "not captured" by AOTAutograd does not mean "not run"."""
    eager, want = _net(), []
    eager.conv2.register_full_backward_hook(lambda m, gin, gout: want.append(gout[0].clone()))
    eager(x).sum().backward()
    net, got = _net(), []
    net.conv2.register_full_backward_hook(lambda m, gin, gout: got.append(gout[0].clone()))
    torch.compile(net, backend="aot_eager")(x).sum().backward()
    assert len(got) == 1 and torch.allclose(got[0], want[0])
    torch.compiler.reset()
    late_net, late = _net(), []
    compiled = torch.compile(late_net, backend="aot_eager")
    compiled(x).sum().backward()
    late_net.conv2.register_full_backward_hook(lambda m, gin, gout: late.append(1))
    compiled(x).sum().backward()
    assert late == []


def test_a_late_hook_on_a_compiled_builtin_sequential_itself_is_skipped():
    """Notebook 09, section 2.2 case (d): nn.Sequential's forward has a trace rule, so its whole call is traced."""
    seq, seen = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), []
    seq_x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(seq, backend="eager")
    with torch.no_grad():
        compiled(seq_x)
        seq.register_forward_hook(lambda m, a, out: seen.append("late"))
        seq(seq_x)
        assert seen == ["late"], "the hook itself works in eager mode"
        compiled(seq_x)
    assert seen == ["late"], "the compiled nn.Sequential ran its late hook: update notebook 09, case (d)"


def test_a_second_instance_reuses_the_hook_free_code_of_the_first(x):
    """Notebook 09, section 2.2 case (c): hooks registered before the second instance's own compile are skipped."""
    seen = []
    with torch.no_grad():
        torch.compile(_net(), backend="eager")(x)
        second = _net()
        second.conv2.register_forward_hook(lambda m, a, out: seen.append("conv2"))
        second.conv2.register_forward_hook(lambda m, a, out: 2 * out)
        eager = second(x)
        assert seen == ["conv2"]
        compiled = torch.compile(second, backend="eager")(x)
    assert seen == ["conv2"], "the second instance's hooks ran: update notebook 09, case (c)"
    assert not torch.allclose(compiled, eager), "the compiled output lacks the doubling hook"


def test_late_hooks_on_a_submodule_that_already_had_a_hook_fire(x):
    """Notebook 09, section 2.2 case (a): only hook-free modules skip the guard."""
    net, seen = _net(), []
    net.conv2.register_forward_hook(lambda m, a, out: seen.append("early"))
    compiled = torch.compile(net, backend="eager")
    with torch.no_grad():
        compiled(x)
        net.conv2.register_forward_hook(lambda m, a, out: seen.append("late"))
        net.conv2.register_forward_pre_hook(lambda m, a: seen.append("late pre"))
        seen.clear()
        compiled(x)
    assert seen == ["late pre", "early", "late"]


def test_a_new_compile_with_another_backend_compiles_a_late_hook_in(x):
    """Notebook 09, section 2.2 case (b): the same backend reuses the cached code, another one recompiles."""
    net, seen = _net(), []
    with torch.no_grad():
        torch.compile(net, backend="eager")(x)
        net.conv2.register_forward_hook(lambda m, a, out: seen.append("late"))
        torch.compile(net, backend="eager")(x)
        assert seen == []
        torch.compile(net, backend="aot_eager")(x)
    assert seen == ["late"]


def test_a_hook_writing_to_a_dict_recompiles_once_when_the_dict_is_not_cleared(x):
    """Notebook 09, the exercise's solution: fixed_hook keeps a tensor in `means`; Dynamo guards on that dict."""
    means, counter = {}, GraphCounter()
    net = _net()
    net.conv2.register_forward_hook(lambda m, a, out: means.__setitem__("conv2", out.detach().mean()))
    compiled = torch.compile(net, backend=counter)
    with torch.no_grad():
        for _ in range(5):
            compiled(x)
    assert counter.graphs == 2


def test_hooks_on_a_second_sequential_are_skipped_after_a_hook_free_sequential_was_compiled():
    """Notebook 09, section 2.2 case (d): the compiled code is shared by every nn.Sequential of the same layout."""
    seq_x, seen = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)), []
    with torch.no_grad():
        torch.compile(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), backend="eager")(seq_x)
        other = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        other.register_forward_hook(lambda m, a, out: seen.append("top"))
        other[0].register_forward_hook(lambda m, a, out: seen.append("first layer"))
        torch.compile(other, backend="eager")(seq_x)
        assert seen == []
        torch.compiler.reset()  # the control: without the earlier compile, both hooks run
        torch.compile(other, backend="eager")(seq_x)
    assert seen == ["first layer", "top"]
