"""load_resnet34: local files, cache, bounded download, offline fallback, clear errors."""

import functools
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, resnet34

from helpers.models import (
    WEIGHTS,
    WeightsError,
    WeightsInfo,
    imagenet_categories,
    load_resnet34,
    pick_device,
    weights_info,
)
from tests import local_web

NOTICE_PREFIX = "NOTICE: pretrained ResNet34 weights unavailable"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One fake ResNet34 checkpoint (seed 7) on disk, with its state dict and SHA-256."""
    torch.manual_seed(7)
    state_dict = resnet34(weights=None).state_dict()
    path = tmp_path_factory.mktemp("checkpoint") / "fake_resnet34.pth"
    torch.save(state_dict, path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, state_dict, sha256


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME, the offline switch cleared, and no proxy for 127.0.0.1."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("CNN_HOOKS_LAB_OFFLINE", raising=False)
    monkeypatch.delenv("CNN_HOOKS_LAB_WEIGHTS", raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    return home


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server for a folder; yields (base_url, folder, stop)."""
    folder = tmp_path / "served"
    folder.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = False

    def stop():
        nonlocal stopped
        if not stopped:
            server.shutdown()
            server.server_close()
            thread.join()
            stopped = True

    yield f"http://127.0.0.1:{server.server_address[1]}", folder, stop
    stop()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_params_equal(model, state_dict):
    loaded = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    for key, tensor in state_dict.items():
        assert torch.equal(loaded[key].cpu(), tensor), key


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_offline_switch_gives_seeded_random_untrained_model(torch_home, monkeypatch, capsys):
    monkeypatch.setenv("CNN_HOOKS_LAB_OFFLINE", "1")
    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    first = load_resnet34(device="cpu")
    assert torch.equal(torch.rand(4), expected_next), "load_resnet34 disturbed the global RNG"

    second = load_resnet34(device="cpu")
    assert_params_equal(second, first.state_dict())
    info = weights_info(first)
    assert (info.source, info.pretrained) == ("random", False)
    assert "CNN_HOOKS_LAB_OFFLINE" in info.detail
    assert not first.training and not any(module.training for module in first.modules())
    assert all(param.device.type == "cpu" for param in first.parameters())

    notices = [line for line in capsys.readouterr().out.splitlines() if line.startswith(NOTICE_PREFIX)]
    assert len(notices) == 2  # one line per call
    assert "UNTRAINED" in notices[0] and "seed 0" in notices[0]
    assert files_under(torch_home) == []


def test_different_seeds_give_different_weights(torch_home):
    seed0 = load_resnet34(pretrained=False, device="cpu", seed=0)
    seed1 = load_resnet34(pretrained=False, device="cpu", seed=1)
    assert not torch.equal(seed0.conv1.weight, seed1.conv1.weight)


def test_pretrained_false_never_tries_the_network(torch_home, capsys):
    model = load_resnet34(pretrained=False, device="cpu", url=f"http://127.0.0.1:{closed_port()}/resnet34-b627a593.pth")
    info = weights_info(model)
    assert (info.source, info.pretrained, info.seed) == ("random", False, 0)
    assert "pretrained=False" in info.detail
    assert capsys.readouterr().out == ""


def test_unreachable_server_falls_back_fast_without_touching_torch_home(torch_home, capsys):
    url = f"http://127.0.0.1:{closed_port()}/resnet34-b627a593.pth"
    start = time.perf_counter()
    model = load_resnet34(device="cpu", url=url, timeout=10.0)
    assert time.perf_counter() - start < 5
    info = weights_info(model)
    assert info.source == "random" and not info.pretrained
    assert "offline" in info.detail
    out = capsys.readouterr().out
    assert out.count(NOTICE_PREFIX) == 1 and "UNTRAINED" in out
    assert files_under(torch_home) == [] and list(torch_home.iterdir()) == []


def test_stalled_server_times_out_and_falls_back(torch_home, capsys):
    # Accepts connections (via the backlog) but never answers, like a network that drops replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/resnet34-b627a593.pth"
        result = {}
        worker = threading.Thread(target=lambda: result.update(model=load_resnet34(device="cpu", url=url, timeout=1.0)), daemon=True)
        start = time.perf_counter()
        worker.start()
        worker.join(timeout=20)
    assert not worker.is_alive(), "load_resnet34 hung on a server that never answers"
    assert time.perf_counter() - start < 5
    assert weights_info(result["model"]).source == "random"
    assert NOTICE_PREFIX in capsys.readouterr().out
    assert list(torch_home.iterdir()) == []


def test_http_error_falls_back_without_creating_folders(torch_home, weights_server, capsys):
    base_url, _, _ = weights_server
    model = load_resnet34(device="cpu", url=f"{base_url}/resnet34-b627a593.pth")
    assert weights_info(model).detail == "offline (HTTP 404 File not found)"
    assert NOTICE_PREFIX in capsys.readouterr().out
    assert list(torch_home.iterdir()) == []


def test_local_file_is_loaded(checkpoint, torch_home):
    path, state_dict, _ = checkpoint
    model = load_resnet34(device="cpu", weights_path=path)
    assert_params_equal(model, state_dict)
    info = weights_info(model)
    assert (info.source, info.pretrained) == ("file", True)
    assert info.path == str(path.resolve())
    assert not model.training


def test_weights_env_var_is_loaded_like_weights_path_even_offline(checkpoint, torch_home, monkeypatch, capsys):
    path, state_dict, _ = checkpoint
    monkeypatch.setenv("CNN_HOOKS_LAB_WEIGHTS", str(path))
    monkeypatch.setenv("CNN_HOOKS_LAB_OFFLINE", "1")  # a shared file needs no network
    model = load_resnet34(device="cpu")
    assert_params_equal(model, state_dict)
    info = weights_info(model)
    assert (info.source, info.pretrained, info.path) == ("file", True, str(path.resolve()))
    assert "CNN_HOOKS_LAB_WEIGHTS" in info.detail
    assert NOTICE_PREFIX not in capsys.readouterr().out
    assert files_under(torch_home) == []


def test_weights_env_var_yields_to_explicit_choices(checkpoint, torch_home, monkeypatch):
    path, state_dict, _ = checkpoint
    monkeypatch.setenv("CNN_HOOKS_LAB_WEIGHTS", str(torch_home / "missing.pth"))
    random_model = load_resnet34(pretrained=False, device="cpu", seed=3)
    assert weights_info(random_model).source == "random"
    assert_params_equal(load_resnet34(device="cpu", weights_path=path), state_dict)


def test_weights_env_var_pointing_nowhere_raises_naming_the_variable(torch_home, monkeypatch):
    monkeypatch.setenv("CNN_HOOKS_LAB_WEIGHTS", str(torch_home / "missing.pth"))
    with pytest.raises(WeightsError, match="CNN_HOOKS_LAB_WEIGHTS is set to .*missing.pth.*no file there"):
        load_resnet34(device="cpu")


@pytest.mark.parametrize("wrapper_key", ["state_dict", "model"])
def test_wrapped_state_dict_is_accepted(checkpoint, tmp_path, wrapper_key):
    _, state_dict, _ = checkpoint
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper_key: state_dict, "epoch": 3}, path)
    model = load_resnet34(device="cpu", weights_path=path)
    assert_params_equal(model, state_dict)


@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), b"these are not weights\n"],
    ids=["random-bytes", "text"],
)
def test_unreadable_file_raises_weights_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint") as error:
        load_resnet34(device="cpu", weights_path=path)
    assert "broken.pth" in str(error.value)


def test_truncated_checkpoint_raises_weights_error(checkpoint, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(checkpoint[0].read_bytes()[: 1 << 20])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint") as error:
        load_resnet34(device="cpu", weights_path=path)
    assert "truncated.pth" in str(error.value)


def test_resnet18_checkpoint_raises_weights_error_listing_missing_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"not a ResNet34 checkpoint: missing \d+ keys, e\.g\. layer1\.2\.") as error:
        load_resnet34(device="cpu", weights_path=path)
    assert "resnet18.pth" in str(error.value)


def test_wrong_head_size_raises_weights_error_naming_the_tensor(checkpoint, tmp_path):
    state_dict = dict(checkpoint[1])
    state_dict["fc.weight"] = torch.zeros(10, 512)
    state_dict["fc.bias"] = torch.zeros(10)
    path = tmp_path / "ten_classes.pth"
    torch.save(state_dict, path)
    with pytest.raises(WeightsError, match=r"size mismatch for fc\.weight \(file \[10, 512\], model \[1000, 512\]\)"):
        load_resnet34(device="cpu", weights_path=path)


def test_missing_file_raises_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_resnet34(device="cpu", weights_path=tmp_path / "nowhere.pth")


def test_download_then_cache(checkpoint, torch_home, weights_server, capsys):
    path, state_dict, sha256 = checkpoint
    base_url, served, stop_server = weights_server
    name = f"resnet34-{sha256[:8]}.pth"
    os.link(path, served / name)

    downloaded = load_resnet34(device="cpu", url=f"{base_url}/{name}", progress=True)
    info = weights_info(downloaded)
    assert (info.source, info.pretrained) == ("download", True)
    checkpoints = torch_home / "hub" / "checkpoints"
    assert files_under(checkpoints) == [checkpoints / name]
    assert_params_equal(downloaded, state_dict)
    assert f"Downloading ResNet34 weights from {base_url}/{name} ..." in capsys.readouterr().out

    stop_server()
    cached = load_resnet34(device="cpu", url=f"{base_url}/{name}")
    assert weights_info(cached).source == "cache"
    assert_params_equal(cached, state_dict)


def test_download_with_wrong_checksum_raises_and_leaves_nothing(checkpoint, torch_home, weights_server):
    base_url, served, _ = weights_server
    os.link(checkpoint[0], served / "resnet34-deadbeef.pth")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_resnet34(device="cpu", url=f"{base_url}/resnet34-deadbeef.pth", progress=False)
    assert files_under(torch_home) == []


def test_cached_file_with_wrong_hash_raises(checkpoint, torch_home, monkeypatch):
    # A loadable checkpoint, but not the file its name promises: only the hash check catches it.
    monkeypatch.setenv("CNN_HOOKS_LAB_OFFLINE", "1")
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.link(checkpoint[0], checkpoints / Path(WEIGHTS.url).name)
    with pytest.raises(WeightsError, match="Delete or replace") as error:
        load_resnet34(device="cpu")
    assert "b627a593" in str(error.value)


def test_weights_info_text_never_shows_absolute_paths(checkpoint, torch_home, monkeypatch):
    absolute = "/home/teacher/secret/resnet34-b627a593.pth"
    infos = [
        WeightsInfo("cache", True, absolute, "from https://example.org/resnet34-b627a593.pth"),
        WeightsInfo("download", True, absolute, "from https://example.org/resnet34-b627a593.pth"),
        WeightsInfo("file", True, absolute, "loaded from resnet34-b627a593.pth"),
        WeightsInfo("random", False, None, "offline (no network)", 0),
        weights_info(load_resnet34(device="cpu", weights_path=checkpoint[0])),
    ]
    for info in infos:
        assert "/home" not in str(info) and str(checkpoint[0].parent) not in str(info)
    assert str(infos[0]) == "ImageNet pretrained (IMAGENET1K_V1, from cache)"
    assert "UNTRAINED" in str(infos[3]) and "seed 0" in str(infos[3])


def test_weights_info_requires_a_model_from_load_resnet34():
    with pytest.raises(ValueError, match="load_resnet34"):
        weights_info(resnet18(weights=None))


def test_imagenet_categories():
    categories = imagenet_categories()
    assert len(categories) == 1000
    assert categories[281] == "tabby"  # torchvision's name for "tabby cat"


def test_pick_device_matches_cuda_availability():
    device = pick_device()
    assert isinstance(device, torch.device)
    assert (device.type == "cuda") == torch.cuda.is_available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_moves_to_cuda(torch_home):
    model = load_resnet34(pretrained=False, device="cuda")
    assert all(param.device.type == "cuda" for param in model.parameters())


# -- the reported seed, the offline switch, broken downloads and proxies: real behaviour -------------


@pytest.mark.parametrize("seed", [0, 5])
def test_random_weights_are_resnet34_built_right_after_manual_seed_of_the_reported_seed(torch_home, monkeypatch,
                                                                                      capsys, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        expected = resnet34(weights=None).state_dict()
    monkeypatch.setenv("CNN_HOOKS_LAB_OFFLINE", "1")
    offline = load_resnet34(device="cpu", seed=seed)
    requested = load_resnet34(pretrained=False, device="cpu", seed=seed)
    for model in (offline, requested):
        assert weights_info(model).seed == seed
        assert_params_equal(model, expected)
    assert f"using seeded random weights (seed {seed})" in capsys.readouterr().out
    assert f"(seed {seed})" in str(weights_info(offline))


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes", " 1 ", "true\n"])
def test_offline_switch_values_that_switch(torch_home, monkeypatch, value):
    monkeypatch.setenv("CNN_HOOKS_LAB_OFFLINE", value)
    model = load_resnet34(device="cpu", url=f"http://127.0.0.1:{closed_port()}/resnet34-b627a593.pth")
    assert weights_info(model).detail == "offline (CNN_HOOKS_LAB_OFFLINE is set)"


@pytest.mark.parametrize("value", ["", " ", "0", "false", "no", "False"])
def test_offline_switch_values_that_do_not_switch(torch_home, monkeypatch, value):
    monkeypatch.setenv("CNN_HOOKS_LAB_OFFLINE", value)
    port = closed_port()
    model = load_resnet34(device="cpu", url=f"http://127.0.0.1:{port}/resnet34-b627a593.pth")
    # The network was tried: the reason is the closed port, not the switch.
    assert weights_info(model).detail.startswith(f"offline (cannot connect to 127.0.0.1:{port}")


@pytest.fixture
def dropping_server():
    """A server that promises Content-Length bytes, sends half of them and hangs up; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)  # so that the loop sees `stopped` soon after the test
    stopped = threading.Event()
    requests = []

    def serve():
        while not stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(10)
            with connection:
                request = connection.recv(65536)
                if not request:
                    continue  # load_resnet34's reachability probe connects and hangs up at once
                requests.append(request)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"\0" * 1_000_000)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    stopped.set()
    thread.join()
    listener.close()


@pytest.mark.parametrize("name", ["resnet34-b627a593.pth", "resnet34.pth"], ids=["hash-in-name", "no-hash"])
def test_download_dropped_half_way_falls_back_and_leaves_nothing(torch_home, dropping_server, capsys, name):
    base_url, requests = dropping_server
    model = load_resnet34(device="cpu", url=f"{base_url}/{name}", progress=False)
    info = weights_info(model)
    assert len(requests) == 1, "the download was not even tried"
    assert (info.source, info.pretrained) == ("random", False)
    assert info.detail == "offline (connection lost after 1.0 of 2.0 MB)"
    assert NOTICE_PREFIX in capsys.readouterr().out
    assert files_under(torch_home) == []


@pytest.fixture
def forwarding_proxy():
    """A local HTTP proxy (tests.local_web); yields (proxy URL, requested URLs)."""
    with local_web.forwarding_proxy() as proxy:
        yield proxy


@pytest.fixture
def proxy_env(monkeypatch):
    for variable in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_download_goes_through_the_proxy_in_http_proxy(checkpoint, torch_home, weights_server, forwarding_proxy,
                                                         proxy_env):
    path, state_dict, sha256 = checkpoint
    base_url, served, _ = weights_server
    proxy_url, requested = forwarding_proxy
    name = f"resnet34-{sha256[:8]}.pth"
    os.link(path, served / name)
    proxy_env.setenv("http_proxy", proxy_url)
    model = load_resnet34(device="cpu", url=f"{base_url}/{name}", progress=False)
    assert requested == [f"{base_url}/{name}"]
    assert weights_info(model).source == "download"
    assert_params_equal(model, state_dict)


@pytest.mark.parametrize(("variable", "url"), [
    ("http_proxy", "http://127.0.0.1:{server_port}/resnet34-b627a593.pth"),
    ("https_proxy", "https://download.example.invalid/resnet34-b627a593.pth"),
])
def test_unreachable_proxy_falls_back_fast_and_says_so(torch_home, weights_server, proxy_env, capsys,
                                                       variable, url):
    base_url, served, _ = weights_server
    (served / "resnet34-b627a593.pth").write_bytes(b"never fetched: the proxy is down")
    port = closed_port()
    proxy_env.setenv(variable, f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    model = load_resnet34(device="cpu", url=url.format(server_port=base_url.rsplit(":", 1)[1]), timeout=10.0)
    assert time.perf_counter() - start < 5
    info = weights_info(model)
    assert info.source == "random"
    assert info.detail.startswith(f"offline (cannot connect to proxy 127.0.0.1:{port}")
    assert NOTICE_PREFIX in capsys.readouterr().out
    assert files_under(torch_home) == []
