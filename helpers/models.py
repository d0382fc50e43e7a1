"""Load torchvision's ResNet34 for the lab, with a clear offline fallback.

Weights come from (in order) a local file, the torch.hub cache, or a
bounded-time download. When none is reachable the model gets seeded random
weights and a one-line notice says so, so notebooks still run in a classroom
without internet.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import torch
from torchvision.models import ResNet34_Weights, resnet34

# Pinned to V1: ResNet34_Weights.DEFAULT may point elsewhere in a later release.
WEIGHTS = ResNet34_Weights.IMAGENET1K_V1

OFFLINE_ENV_VAR = "CNN_HOOKS_LAB_OFFLINE"
# A teacher can point a whole class at one shared checkpoint: used like weights_path=.
WEIGHTS_ENV_VAR = "CNN_HOOKS_LAB_WEIGHTS"
_TRUE_VALUES = {"1", "true", "yes"}
# Same convention as torch.hub: "name-<sha256 prefix>.ext".
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")
_CHUNK_BYTES = 1 << 20
_MAX_KEYS_SHOWN = 3


class WeightsError(RuntimeError):
    """A weights file is missing, damaged, or belongs to a different model."""


class _Offline(Exception):
    """The weights server could not be reached; the message is the short reason."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from.

    source is "cache", "download", "file" or "random"; pretrained is True when
    the weights were loaded from a checkpoint; detail holds the seed or the
    reason for falling back to random weights.
    """

    source: str
    pretrained: bool
    path: str | None
    detail: str
    seed: int | None = None

    def __str__(self) -> str:
        if self.source == "cache":
            return f"ImageNet pretrained ({WEIGHTS.name}, from cache)"
        if self.source == "download":
            return f"ImageNet pretrained ({WEIGHTS.name}, downloaded)"
        if self.source == "file":
            name = Path(self.path).name if self.path else "?"
            return f"weights from local file '{name}'"
        return f"seeded random weights (seed {self.seed}) — UNTRAINED network: {self.detail}"


def pick_device() -> torch.device:
    """Return the CUDA device when one is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def imagenet_categories() -> list[str]:
    """Return the 1000 ImageNet class names, indexed like the model's outputs."""
    return list(WEIGHTS.meta["categories"])


def weights_info(model: torch.nn.Module) -> WeightsInfo:
    """Return the WeightsInfo that load_resnet34 attached to `model`."""
    info = getattr(model, "weights_info", None)
    if not isinstance(info, WeightsInfo):
        raise ValueError("this model was not created by load_resnet34(), so it carries no weights_info")
    return info


def load_resnet34(
    pretrained: bool = True,
    device: torch.device | str | None = None,
    weights_path: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    seed: int = 0,
    timeout: float = 10.0,
    progress: bool = True,
) -> torch.nn.Module:
    """Build ResNet34 in eval mode on `device`, with `model.weights_info` attached.

    Weights: `weights_path` if given; random if not `pretrained`; else the file
    named by the environment variable CNN_HOOKS_LAB_WEIGHTS, if set; else the
    torch.hub cache, else a download from `url` (default: the official one);
    offline, seeded random weights with a printed notice.
    """
    model = _seeded_model(seed)
    from_env = os.environ.get(WEIGHTS_ENV_VAR, "").strip() if pretrained and weights_path is None else ""
    if weights_path is not None or from_env:
        path = Path(weights_path if weights_path is not None else from_env).expanduser()
        if from_env and not path.is_file():
            raise WeightsError(
                f"{WEIGHTS_ENV_VAR} is set to '{from_env}', but there is no file there. "
                f"Fix the path, or unset {WEIGHTS_ENV_VAR} to use the torch.hub cache or a download."
            )
        _load_into(model, path)
        how = f"set by {WEIGHTS_ENV_VAR}" if from_env else "weights_path="
        info = WeightsInfo("file", True, str(path.resolve()), f"loaded from {path.name} ({how})")
    elif not pretrained:
        info = WeightsInfo("random", False, None, "requested with pretrained=False", seed)
    else:
        info = _load_pretrained(model, url or WEIGHTS.url, seed, timeout, progress)
    model.weights_info = info
    return model.to(device if device is not None else pick_device()).eval()


def _seeded_model(seed: int) -> torch.nn.Module:
    """Build ResNet34 with reproducible random init, leaving global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also reseed CUDA,
        # which fork_rng(devices=[]) does not restore.
        torch.default_generator.manual_seed(seed)
        return resnet34(weights=None)


def _load_pretrained(model: torch.nn.Module, url: str, seed: int, timeout: float, progress: bool) -> WeightsInfo:
    """Fill `model` from the cache or a download; fall back to random weights offline."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(url).path).name
    if cached.exists():
        _check_cached_hash(cached)
        _load_into(model, cached)
        return WeightsInfo("cache", True, str(cached), f"from {url}")
    try:
        if _offline_requested():
            raise _Offline(f"{OFFLINE_ENV_VAR} is set")
        _download(url, cached, timeout, progress)
    except _Offline as reason:
        print(
            f"NOTICE: pretrained ResNet34 weights unavailable (offline: {reason}); "
            f"using seeded random weights (seed {seed}). Feature maps will show an UNTRAINED network."
        )
        return WeightsInfo("random", False, None, f"offline ({reason})", seed)
    _load_into(model, cached)
    return WeightsInfo("download", True, str(cached), f"from {url}")


def _offline_requested() -> bool:
    return os.environ.get(OFFLINE_ENV_VAR, "").strip().lower() in _TRUE_VALUES


def _expected_hash_prefix(file_name: str) -> str | None:
    match = _HASH_IN_NAME.search(file_name)
    return match.group(1) if match else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_cached_hash(path: Path) -> None:
    """Catch truncated or wrong files copied into the cache by hand."""
    expected = _expected_hash_prefix(path.name)
    if expected is None:
        return
    actual = _sha256_of(path)
    if not actual.startswith(expected):
        raise WeightsError(
            f"cached weights file {path} is damaged or not the right file: its SHA-256 starts with "
            f"{actual[: len(expected)]}, but the name expects {expected}. Delete or replace it with a "
            f"correct copy (SHA-256 beginning with {expected}) and run again."
        )


def _download(url: str, destination: Path, timeout: float, progress: bool) -> None:
    """Download `url` to `destination` atomically, verifying the hash in its name.

    Network trouble, including a server that hangs up half-way, raises _Offline;
    a corrupt download raises WeightsError.
    Nothing is written until the server has answered successfully.
    """
    _check_reachable(url, min(timeout, 3.0))
    with _network_errors(timeout):
        # A new opener reads the proxy variables now; urlopen's global one keeps those of its first use.
        response = urllib.request.build_opener().open(url, timeout=timeout)
    with response:
        print(f"Downloading ResNet34 weights from {url} ...")
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=destination.name + ".", suffix=".partial")
        temp_path = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as file:
                digest = _copy_response(response, file, timeout, progress)
            expected = _expected_hash_prefix(destination.name)
            if expected is not None and not digest.startswith(expected):
                raise WeightsError(
                    f"checksum mismatch for weights downloaded from {url}: SHA-256 starts with "
                    f"{digest[: len(expected)]}, expected {expected}. The download is corrupt or the "
                    "server sent a different file; nothing was saved."
                )
            os.replace(temp_path, destination)
        finally:
            temp_path.unlink(missing_ok=True)


def _check_reachable(url: str, timeout: float) -> None:
    """Fail fast (DNS, refused, dropped packets) before urlopen, which could hang longer."""
    host, port, via_proxy = _connection_target(url)
    if host is None:
        return  # e.g. a file:// mirror: nothing to connect to
    what = "proxy " if via_proxy else ""
    target = f"{what}{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        raise _Offline(f"cannot resolve {what}{host}") from None
    except TimeoutError:
        raise _Offline(f"no answer from {target} within {timeout:g} s") from None
    except OSError as error:
        raise _Offline(f"cannot connect to {target}: {error.strerror or error}") from None


def _connection_target(url: str) -> tuple[str | None, int, bool]:
    """Return the host and port urllib will connect to, and whether that is a proxy (from http_proxy etc.)."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    via_proxy = bool(proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname))
    if via_proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname, parts.port or default_port, via_proxy


@contextmanager
def _network_errors(timeout: float) -> Iterator[None]:
    """Turn the ways a download fails on a bad network into _Offline with a short reason."""
    try:
        yield
    except urllib.error.HTTPError as error:
        raise _Offline(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _Offline(f"cannot download: {error.reason}") from None
    except TimeoutError:
        raise _Offline(f"no data for more than {timeout:g} s") from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise _Offline(f"connection lost: {type(error).__name__}") from None


def _copy_response(response: BinaryIO, file: BinaryIO, timeout: float, progress: bool) -> str:
    """Stream `response` into `file`; return the SHA-256 hex digest of what was written."""
    digest = hashlib.sha256()
    total = int(response.headers.get("Content-Length") or 0)
    received = 0
    try:
        with _network_errors(timeout):
            while chunk := response.read(_CHUNK_BYTES):
                file.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress:
                    _show_progress(received, total)
    finally:
        if progress and received:
            print(file=sys.stderr)
    if received < total:  # http.client ends a read quietly when the server hangs up early
        raise _Offline(f"connection lost after {received / 1e6:.1f} of {total / 1e6:.1f} MB")
    return digest.hexdigest()


def _show_progress(received: int, total: int) -> None:
    megabytes = f"{received / 1e6:.1f}" + (f" / {total / 1e6:.1f}" if total else "")
    print(f"\r  {megabytes} MB", end="", file=sys.stderr, flush=True)


def _load_into(model: torch.nn.Module, path: Path) -> None:
    """Load the checkpoint at `path` into `model`, or raise WeightsError saying why not."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist or is not a file. Check the path, or pass weights_path=None.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {_first_sentence(error)}). "
            "It may be corrupted, truncated or not a .pth file; copy or download it again. "
            "If it holds a whole pickled model, save model.state_dict() instead."
        ) from error
    state_dict = _unwrap_state_dict(checkpoint)
    if state_dict is None:
        raise WeightsError(f"{path} does not contain a state dict (found {type(checkpoint).__name__}).")
    problems = _describe_mismatch(model.state_dict(), state_dict)
    if problems:
        raise WeightsError(f"{path} is not a ResNet34 checkpoint: {problems}. Use weights saved from torchvision's resnet34.")
    model.load_state_dict(state_dict)


def _first_sentence(error: Exception) -> str:
    # torch's full unpickling message goes on to suggest weights_only=False, which is unsafe advice here.
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0][:200] if text else ""


def _unwrap_state_dict(checkpoint: object) -> Mapping[str, object] | None:
    """Accept a plain state dict or one wrapped under "state_dict" or "model"."""
    if not isinstance(checkpoint, Mapping):
        return None
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _describe_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, object]) -> str:
    """Summarise how `found` differs from `expected` ("" when it fits)."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    wrong_size = []
    for key, tensor in expected.items():
        value = found.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            wrong_size.append(f"{key} (not a tensor)")
        elif value.shape != tensor.shape:
            wrong_size.append(f"{key} (file {list(value.shape)}, model {list(tensor.shape)})")
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys, e.g. {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {_first(unexpected)}")
    if wrong_size:
        parts.append(f"size mismatch for {_first(wrong_size)}")
    return "; ".join(parts)


def _first(items: list[str]) -> str:
    return ", ".join(items[:_MAX_KEYS_SHOWN])
