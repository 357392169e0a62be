"""Forward hooks on the components of `cgclib.components`, always removed on exit.

Activations are handed to a callback as they are computed, so statistics can be
accumulated over any number of tokens without storing activations. When a model is split
over several devices (`cgclib.devices`), the callbacks receive every activation on the
device of the model's inputs, where the token masks and the accumulators live.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from . import components, devices


@contextmanager
def registered(handles_factory: Callable[[], list]) -> Iterator[None]:
    """Register hooks made by `handles_factory` and remove them on exit, error or not."""
    handles = []
    try:
        handles = handles_factory()
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def head_outputs(
    model: nn.Module, callback: Callable[[int, torch.Tensor], None], layers: Iterable[int] | None = None
) -> Iterator[None]:
    """Call `callback(layer, z)` with each head's output z of shape (batch, seq, heads,
    head_dim): the input of the attention output projection, split by head."""
    lay = components.layout(model)
    layers = range(lay.n_layers) if layers is None else [components.check_layer(model, l) for l in layers]
    home = devices.input_device(model)

    def make(layer):
        def hook(module, args):
            x = args[0].to(home)
            callback(layer, x.view(*x.shape[:-1], lay.n_heads, lay.head_dim))

        return hook

    with registered(lambda: [components.attention_output(model, l).register_forward_pre_hook(make(l)) for l in layers]):
        yield


@contextmanager
def linear_inputs(
    model: nn.Module, modules: Mapping[str, nn.Module], callback: Callable[[str, torch.Tensor], None]
) -> Iterator[None]:
    """Call `callback(name, x)` with the input x (..., in_features) of each named module."""
    home = devices.input_device(model)

    def make(name):
        def hook(module, args):
            callback(name, args[0].to(home))

        return hook

    with registered(lambda: [m.register_forward_pre_hook(make(n)) for n, m in modules.items()]):
        yield


@contextmanager
def residual_stream(
    model: nn.Module, callback: Callable[[int, str, torch.Tensor], None], layers: Iterable[int] | None = None
) -> Iterator[None]:
    """Call `callback(layer, "in" | "out", h)` with the residual stream entering and
    leaving each block, h of shape (batch, seq, d_model)."""
    n = components.layout(model).n_layers
    layers = range(n) if layers is None else [components.check_layer(model, l) for l in layers]
    home = devices.input_device(model)

    def make_pre(layer):
        def hook(module, args):
            callback(layer, "in", args[0].to(home))

        return hook

    def make_post(layer):
        def hook(module, args, output):
            callback(layer, "out", _first_tensor(output).to(home))

        return hook

    def factory():
        handles = []
        for l in layers:
            b = components.block(model, l)
            handles.append(b.register_forward_pre_hook(make_pre(l)))
            handles.append(b.register_forward_hook(make_post(l)))
        return handles

    with registered(factory):
        yield


class _ForwardStopped(Exception):
    """Raised by `stopped_after`'s hook to end a forward pass early."""


@contextmanager
def stopped_after(model: nn.Module, layer: int | None) -> Iterator[Callable[..., None]]:
    """Yield a function that runs `model(*args, **kwargs)` only up to the end of block
    `layer` (all of it for None): the blocks after it, the final norm and the unembedding
    are skipped, for statistics that need nothing past that block."""

    def stop(module, args, output):
        raise _ForwardStopped

    def run(*args, **kwargs) -> None:
        with contextlib.suppress(_ForwardStopped):
            model(*args, **kwargs)

    where = [] if layer is None else [components.block(model, components.check_layer(model, layer))]
    with registered(lambda: [b.register_forward_hook(stop) for b in where]):
        yield run


@contextmanager
def replace_block_output(
    model: nn.Module, layer: int, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the output of block `layer` by `fn(block_input, block_output)` (both given
    on the device of the model's inputs; the result goes back to the block's device)."""
    b = components.block(model, layer)
    home = devices.input_device(model)
    saved = {}

    def pre(module, args):
        saved["in"] = args[0].to(home)

    def post(module, args, output):
        out = _first_tensor(output)
        new = fn(saved.pop("in"), out.to(home)).to(out.device)
        if isinstance(output, (tuple, list)):
            return (new, *output[1:])
        return new

    with registered(lambda: [b.register_forward_pre_hook(pre), b.register_forward_hook(post)]):
        yield


@contextmanager
def scaled_heads(model: nn.Module, scales: dict[tuple[int, int], float]) -> Iterator[None]:
    """Multiply the output of head (layer, head) by `scales[(layer, head)]`; scale 0 ablates
    it, exactly as removing its slice of the output projection would."""
    lay = components.layout(model)
    by_layer: dict[int, dict[int, float]] = {}
    for (layer, head), s in scales.items():
        components.check_head(model, layer, head)
        by_layer.setdefault(layer, {})[head] = float(s)

    def make(heads):
        def hook(module, args):
            x = args[0]
            factor = torch.ones(lay.n_heads, device=x.device, dtype=x.dtype)
            for h, s in heads.items():
                factor[h] = s
            z = x.view(*x.shape[:-1], lay.n_heads, lay.head_dim) * factor[:, None]
            return (z.view_as(x), *args[1:])

        return hook

    with registered(
        lambda: [components.attention_output(model, l).register_forward_pre_hook(make(h)) for l, h in by_layer.items()]
    ):
        yield


@contextmanager
def replaced_heads(model: nn.Module, values: Mapping[tuple[int, int], torch.Tensor]) -> Iterator[None]:
    """Replace the output of head (layer, head) at every position by the fixed vector
    `values[(layer, head)]` of length head_dim (its slice of the input of the attention
    output projection, as in `scaled_heads`)."""
    lay = components.layout(model)
    by_layer: dict[int, dict[int, torch.Tensor]] = {}
    for (layer, head), value in values.items():
        components.check_head(model, layer, head)
        if value.shape != (lay.head_dim,):
            raise ValueError(
                f"head ({layer}, {head}) needs a vector of {lay.head_dim} numbers, got {tuple(value.shape)}"
            )
        by_layer.setdefault(layer, {})[head] = value.detach()

    def make(heads):
        def hook(module, args):
            x = args[0]
            replaced = torch.zeros(lay.n_heads, dtype=torch.bool, device=x.device)
            fixed = torch.zeros(lay.n_heads, lay.head_dim, dtype=x.dtype, device=x.device)
            for h, value in heads.items():
                replaced[h] = True
                fixed[h] = value.to(x.device, x.dtype)
            z = torch.where(replaced[:, None], fixed, x.view(*x.shape[:-1], lay.n_heads, lay.head_dim))
            return (z.view_as(x), *args[1:])

        return hook

    with registered(
        lambda: [components.attention_output(model, l).register_forward_pre_hook(make(h)) for l, h in by_layer.items()]
    ):
        yield


def ablated_heads(
    model: nn.Module,
    heads: Iterable[tuple[int, int]],
    means: Mapping[tuple[int, int], torch.Tensor] | None = None,
) -> AbstractContextManager[None]:
    """Ablate the given heads for the duration of the context: zero ablation when `means`
    is None (the same as pruning each head's slice of the output projection), else mean
    ablation, each head's output replaced by its mean `means[(layer, head)]` (e.g. from
    `head_statistics.head_output_moments(...).means()`), which keeps the next layers on
    their input distribution. The replacement applies at every position, the first one
    included, although the means leave the first position out (`tokens.token_mask`): there
    a mean-ablated head is as far from its usual output as the first token's outliers are."""
    if means is None:
        return scaled_heads(model, {(layer, head): 0.0 for layer, head in heads})
    heads = [(int(layer), int(head)) for layer, head in heads]
    missing = [h for h in heads if h not in means]
    if missing:
        raise KeyError(f"no mean for head(s) {missing}: mean ablation needs the mean output of every ablated head")
    return replaced_heads(model, {h: means[h] for h in heads})


@contextmanager
def ablated_heads_by_variant(
    model: nn.Module, layer: int, heads: list[int], means: Mapping[tuple[int, int], torch.Tensor] | None = None
) -> Iterator[None]:
    """For a batch that stacks `len(heads)` copies of the same rows (variant-major, as
    `evaluation.score_row_variants` builds it), ablate head `heads[v]` of block `layer` in
    copy v: zero ablation when `means` is None, else its output replaced by its mean, as
    `ablated_heads` does for one head in a whole batch."""
    lay = components.layout(model)
    for head in heads:
        components.check_head(model, layer, head)
    if means is not None:
        missing = [(layer, h) for h in heads if (layer, h) not in means]
        if missing:
            raise KeyError(f"no mean for head(s) {missing}: mean ablation needs the mean output of every ablated head")

    def hook(module, args):
        x = args[0]
        if x.shape[0] % len(heads):
            raise ValueError(f"a batch of {x.shape[0]} rows does not hold {len(heads)} equal copies")
        z = x.view(len(heads), -1, *x.shape[1:-1], lay.n_heads, lay.head_dim).clone()
        for v, head in enumerate(heads):
            z[v, ..., head, :] = 0.0 if means is None else means[(layer, head)].to(x.device, x.dtype)
        return (z.view_as(x), *args[1:])

    with registered(lambda: [components.attention_output(model, layer).register_forward_pre_hook(hook)]):
        yield
