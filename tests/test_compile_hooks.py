"""What torch.compile does with hooks on the installed PyTorch, as notebook 09 states it.

These tests pin behaviour that PyTorch may change in an upgrade (hooks registered after the first
compiled call, graph breaks of printing hooks). When one fails, the behaviour changed: update
notebook 09's text and this file together. Dynamo only (a counting backend, or backend="eager"),
so each test takes about a second.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn


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
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        return torch._dynamo.explain(net)(x).graph_break_count


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
