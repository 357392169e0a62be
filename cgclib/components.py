"""Addressing the parts of a transformer in both supported families.

GPT-2 (`transformer.h[i]`, fused `attn.c_attn`, `Conv1D` layers whose weight is stored
(in, out)) and Llama/Mistral (`model.layers[i]`, separate q/k/v/o, SwiGLU MLP, `Linear`
layers stored (out, in)) name and lay out the same things differently. Everything else in
cgclib asks this module for: the blocks, the attention output projection (whose input,
split by head, is each head's output), the linear layers of a block, and a weight as an
(out, in) matrix, so that no other module needs to know which family it is looking at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Family = Literal["gpt2", "llama"]
"""The two architecture families cgclib addresses (see the module docstring)."""

GPT2_TYPES = {"gpt2"}
LLAMA_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


class ComponentError(LookupError):
    """A layer, head or linear layer that the model does not have."""


@dataclass(frozen=True)
class Layout:
    family: Family
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int

    @property
    def n_components(self) -> int:
        return self.n_layers * self.n_heads


def family(model: nn.Module) -> Family:
    model_type = getattr(model.config, "model_type", None)
    if model_type in GPT2_TYPES:
        return "gpt2"
    if model_type in LLAMA_TYPES:
        return "llama"
    raise ComponentError(
        f"unsupported architecture {model_type!r}: cgclib addresses GPT-2 ({sorted(GPT2_TYPES)}) "
        f"and Llama-family models ({sorted(LLAMA_TYPES)})"
    )


def layout(model: nn.Module) -> Layout:
    cfg: Any = model.config  # a transformers config: its fields depend on the family
    if family(model) == "gpt2":
        return Layout("gpt2", cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.n_embd)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return Layout("llama", cfg.num_hidden_layers, cfg.num_attention_heads, head_dim, cfg.hidden_size)


def blocks(model: nn.Module) -> nn.ModuleList:
    found = model.get_submodule("transformer.h" if family(model) == "gpt2" else "model.layers")
    if not isinstance(found, nn.ModuleList):
        raise ComponentError(f"the blocks of the model are a {type(found).__name__}, not a ModuleList")
    return found


def check_layer(model: nn.Module, layer: int) -> int:
    n = layout(model).n_layers
    if not isinstance(layer, int) or not 0 <= layer < n:
        raise ComponentError(f"layer {layer!r} does not exist: the model has {n} layers (0 to {n - 1})")
    return layer


def check_head(model: nn.Module, layer: int, head: int) -> tuple[int, int]:
    check_layer(model, layer)
    n = layout(model).n_heads
    if not isinstance(head, int) or not 0 <= head < n:
        raise ComponentError(f"head {head!r} does not exist: layer {layer} has {n} heads (0 to {n - 1})")
    return layer, head


def block(model: nn.Module, layer: int) -> nn.Module:
    return blocks(model)[check_layer(model, layer)]


def attention_output(model: nn.Module, layer: int) -> nn.Module:
    """The attention output projection; its input is the concatenated head outputs."""
    return block(model, layer).get_submodule("attn.c_proj" if family(model) == "gpt2" else "self_attn.o_proj")


def mlp_output(model: nn.Module, layer: int) -> nn.Module:
    """The MLP's output projection; its input columns are the MLP's hidden channels."""
    return block(model, layer).get_submodule("mlp.c_proj" if family(model) == "gpt2" else "mlp.down_proj")


def mlp_inputs(model: nn.Module, layer: int) -> list[nn.Module]:
    """The MLP's input projections, whose output rows are its hidden channels (GPT-2: c_fc;
    LLaMA-style: gate and up)."""
    names = ("mlp.c_fc",) if family(model) == "gpt2" else ("mlp.gate_proj", "mlp.up_proj")
    return [block(model, layer).get_submodule(n) for n in names]


def head_qkv_rows(model: nn.Module, layer: int, head: int) -> list[tuple[nn.Module, slice]]:
    """The (module, row slice) pairs of head `head`'s query, key and value weights, rows of
    the (out, in) matrices of `weight`. With grouped-query attention the key and value rows
    are those of the head's group, shared with the other heads of the group."""
    check_head(model, layer, head)
    lay = layout(model)
    d = lay.head_dim
    rows = slice(head * d, (head + 1) * d)
    b = block(model, layer)
    if lay.family == "gpt2":
        c_attn = b.get_submodule("attn.c_attn")
        return [(c_attn, slice(k * lay.d_model + head * d, k * lay.d_model + (head + 1) * d)) for k in range(3)]
    kv_head = head // (lay.n_heads // kv_heads(model))
    kv_rows = slice(kv_head * d, (kv_head + 1) * d)
    attn = b.get_submodule("self_attn")
    return [
        (attn.get_submodule("q_proj"), rows),
        (attn.get_submodule("k_proj"), kv_rows),
        (attn.get_submodule("v_proj"), kv_rows),
    ]


def kv_heads(model: nn.Module) -> int:
    """Number of key/value heads (fewer than query heads under grouped-query attention)."""
    lay = layout(model)
    return lay.n_heads if lay.family == "gpt2" else getattr(model.config, "num_key_value_heads", None) or lay.n_heads


LINEAR_NAMES: dict[Family, tuple[str, ...]] = {
    "gpt2": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    "llama": (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ),
}


def linear_layers(model: nn.Module, layer: int) -> dict[str, nn.Module]:
    """The block's linear layers by their name inside the block, in forward order."""
    b = block(model, layer)
    return {name: b.get_submodule(name) for name in LINEAR_NAMES[family(model)]}


def all_linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every block's linear layers, named `<layer>.<name>`."""
    return {f"{i}.{name}": m for i in range(layout(model).n_layers) for name, m in linear_layers(model, i).items()}


def is_transposed(module: nn.Module) -> bool:
    """GPT-2's Conv1D stores its weight as (in, out); nn.Linear as (out, in)."""
    if isinstance(module, nn.Linear):
        return False
    if type(module).__name__ == "Conv1D":
        return True
    raise ComponentError(f"not a linear layer: {type(module).__name__}")


def weight(module: nn.Module) -> torch.Tensor:
    """The weight as an (out, in) matrix; a view, so in-place edits reach the module."""
    w = module.weight
    if not isinstance(w, torch.Tensor):
        raise ComponentError(f"the weight of a {type(module).__name__} is not a tensor")
    return w.T if is_transposed(module) else w


def in_features(module: nn.Module) -> int:
    return weight(module).shape[1]


def final_norm(model: nn.Module) -> nn.Module:
    return model.get_submodule("transformer.ln_f" if family(model) == "gpt2" else "model.norm")


def unembedding(model: nn.Module) -> nn.Module:
    get_output_embeddings: Any = model.get_output_embeddings  # a transformers PreTrainedModel method
    return get_output_embeddings()


def token_embedding(model: nn.Module) -> nn.Module:
    get_input_embeddings: Any = model.get_input_embeddings  # a transformers PreTrainedModel method
    return get_input_embeddings()


def last_block_holding(model: nn.Module, modules: Iterable[nn.Module]) -> int | None:
    """The index of the last block that contains one of `modules`; None if any of them
    lies outside every block (e.g. the unembedding), or if there are none."""
    wanted = {id(m) for m in modules}
    last: int | None = None
    found: set[int] = set()
    for index, b in enumerate(blocks(model)):
        inside = wanted & {id(m) for m in b.modules()}
        if inside:
            last, found = index, found | inside
    return last if found == wanted else None


@contextmanager
def replaced_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Linear layers (named as in `all_linear_layers`) take the given (out, in)
    weights for the duration of the context; the originals are restored after."""
    modules = all_linear_layers(model)
    unknown = sorted(set(weights) - set(modules))
    if unknown:
        raise ComponentError(f"weights name linear layers the model does not have: {unknown[:5]}")
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, new in weights.items():
                w = weight(modules[name])
                if new.shape != w.shape:
                    raise ValueError(
                        f"replacement for {name} has shape {tuple(new.shape)}, the weight {tuple(w.shape)}"
                    )
                if w.device.type == "meta":
                    raise ComponentError(
                        f"the weight of {name} is offloaded by accelerate (kept off-device between forward "
                        "passes) and cannot be edited in place; load the model with a device map that keeps "
                        "every weight on a GPU (enough GPUs, or max_memory without CPU/disk offload)"
                    )
                saved[name] = w.clone()
                w.copy_(new)
        yield
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                weight(modules[name]).copy_(original)
