"""Loading a model and its tokenizer: a shipped test bed, a local folder, or a Hugging Face
hub name, with device and dtype resolution.

`load_model("testbed-gpt2")` loads a checkpoint from `data/` after checking its weights
against the sha256 recorded in its model card. Any other name is tried as a local folder,
then as a hub name; offline with no cached copy, a hub name fails at once with a message
that says what to do instead (rather than after a minute of retries).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from . import devices
from .paths import data_dir

TESTBEDS = ("testbed-gpt2", "testbed-llama")  # the shipped test beds, the ones the book loads
TESTBED_PREFIX = "testbed-"  # every test bed of `cgclib.testbed.CONFIGS`, shipped or not
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


class ModelUnavailableError(RuntimeError):
    """The requested weights cannot be obtained here."""


class CheckpointError(RuntimeError):
    """A checkpoint that is corrupt or does not match its model card."""


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str = "auto", device: torch.device | None = None) -> torch.dtype:
    """`auto` is bfloat16 on a GPU that supports it, float32 otherwise."""
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype == "auto":
        if device is not None and device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    return names[dtype]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """The identity of a model's weights: its config and every tensor in full, so that a
    pruned or otherwise edited model never reuses what was cached for the original (SAEs,
    ablation effects). The folder the model was loaded from (`_name_or_path`) is left out:
    the same checkpoint in another checkout is the same model."""
    model_config: Any = model.config  # a transformers config
    config = {k: v for k, v in model_config.to_dict().items() if k != "_name_or_path"}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def use_fused_gelu(model: torch.nn.Module) -> int:
    """Compute GPT-2's tanh-approximated GELU ("gelu_new") with PyTorch's fused kernel
    instead of transformers' Python formula; return how many activations were replaced.

    Both compute 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); they differ only by
    rounding (about 1e-7 relative in float32). The Python formula makes seven passes over
    the MLP's hidden activations; the fused kernel makes a whole evaluation of the GPT-2
    test bed about 18% faster on a 2-core CPU. The config and the weights (hence
    `model_fingerprint`) are unchanged: another implementation of the same function, not
    another model."""
    from transformers.activations import GELUTanh, NewGELUActivation

    replaced = 0
    for module in list(model.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, child_name, GELUTanh())
                replaced += 1
    return replaced


def is_testbed(name: str) -> bool:
    """Whether `name` is a test bed: a shipped one, or another that `cgclib.testbed` trains
    into the data folder."""
    return name in TESTBEDS or name.startswith(TESTBED_PREFIX)


def testbed_dir(name: str) -> Path:
    return data_dir() / name


def verify_checkpoint(folder: Path) -> dict:
    """Check the weights of a test-bed checkpoint against its card; return the card."""
    card_path, weights = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"test bed at {folder} is incomplete (needs {CARD_FILE} and {WEIGHTS_FILE}); rebuild it with `make testbed`"
        )
    card = json.loads(card_path.read_text())
    expected = card.get("weights_sha256")
    actual = sha256_file(weights)
    if actual != expected:
        raise CheckpointError(
            f"{weights} does not match its model card (sha256 {actual[:12]}... != {str(expected)[:12]}...): "
            "the file is corrupt or from another training run; restore it from git or rerun `make testbed`"
        )
    return card


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within `timeout` seconds (False when
    HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    dtype: torch.dtype
    card: dict | None = None


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load `name` (a test bed, a local folder, or a hub name) in eval mode.

    `device` is one device (`auto`, `cpu`, `cuda`, `cuda:1`) or an accelerate device-map
    strategy (`balanced`, `balanced_low_0`, `sequential`) that spreads the blocks of a model
    too large for one GPU over every visible GPU (see `cgclib.devices`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device_map = device if devices.is_device_map_strategy(device) else None
    if device_map and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} spreads a model over GPUs, but CUDA is not available on this machine")
    dev = torch.device("cuda") if device_map else resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    card = None
    if is_testbed(name):
        folder = testbed_dir(name)
        if name not in TESTBEDS and not folder.exists():
            raise ModelUnavailableError(
                f"test bed {name!r} has not been trained yet (only {', '.join(TESTBEDS)} are shipped): "
                f"train it with `python -m cgclib.testbed train {name}`, or every test bed with `make testbed`"
            )
        card = verify_checkpoint(folder)
        source = str(folder)
    elif Path(name).expanduser().is_dir():
        source = str(Path(name).expanduser())
    else:
        if not _hub_cached(name) and not hub_reachable():
            raise ModelUnavailableError(
                f"the weights of {name!r} are not available: there is no cached copy and the "
                "Hugging Face hub cannot be reached from this machine. Use a shipped test bed "
                f"({', '.join(TESTBEDS)}), a local folder with the weights, or run where the hub "
                "is reachable (and HF_HUB_OFFLINE is unset)."
            )
        source = name
    try:
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(source, dtype=dt, device_map=device_map)
    except Exception as exc:  # corrupt files surface as many different exception types
        raise CheckpointError(f"could not load model weights from {source}: {exc}") from exc
    tokenizer = AutoTokenizer.from_pretrained(source)
    if device_map is None:
        model.to(dev)
    use_fused_gelu(model)
    model.eval()
    return LoadedModel(model, tokenizer, name, devices.input_device(model), dt, card)
