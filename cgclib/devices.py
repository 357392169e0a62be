"""Where a model's tensors live when it may be split across devices.

A model loaded with one device has every weight there. A model too large for one GPU is
loaded with an accelerate device map (`load_model(..., device="balanced")`): each block sits
on its own GPU, and accelerate's hooks move activations from one to the next; weights that
do not fit may be offloaded to CPU memory or disk, where they are kept as `meta` tensors
and brought in for each forward pass. The functions here answer the two questions the
statistics code asks: where do the input ids go, and on which device does a given module
compute (so that a per-layer accumulator sits next to the activations it sums).
"""

from __future__ import annotations

from typing import Literal, TypeGuard, get_args

import torch
from torch import nn

DeviceMapStrategy = Literal["balanced", "balanced_low_0", "sequential"]
"""Accelerate's strategies for spreading a model's blocks over every visible GPU."""

DEVICE_MAP_STRATEGIES: tuple[DeviceMapStrategy, ...] = get_args(DeviceMapStrategy)


def execution_device(module: nn.Module) -> torch.device:
    """The device on which `module` computes: accelerate's execution device when the module
    is dispatched (its own weights may then be offloaded, i.e. on `meta`), else the device
    of its first parameter or buffer (the CPU for a module with neither)."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    for child in module.modules():
        device = getattr(getattr(child, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where input ids should be placed: the device of the token embedding (of the whole
    module, for a model without one)."""
    embeddings = getattr(model, "get_input_embeddings", None)
    return execution_device(embeddings() if embeddings is not None else model)


def offloaded_parameters(model: nn.Module) -> list[str]:
    """Names of parameters that accelerate keeps off-device (on `meta` between forward
    passes). Such weights cannot be edited in place."""
    return [name for name, p in model.named_parameters() if p.device.type == "meta"]


def is_device_map_strategy(device: str) -> TypeGuard[DeviceMapStrategy]:
    return device in DEVICE_MAP_STRATEGIES
