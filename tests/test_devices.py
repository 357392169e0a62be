"""Models split by an accelerate device map: the statistics code finds the input device,
its hooks see every block, and its results equal those of the model in one piece.

A CPU-only machine cannot hold two GPUs, so the split here is the one accelerate makes
when a model does not fit: some blocks (and the Llama embedding) are offloaded to disk,
kept as `meta` tensors and brought in by accelerate's hooks for each forward pass."""

import pytest
import torch
from accelerate import dispatch_model

from cgclib import components, devices, linear_blocks, pruning, subspaces
from cgclib.hooks import head_outputs, residual_stream
from cgclib.models import load_model

from .tiny_models import TINY

PAD = 2


def _split(model, offload_dir):
    """Block 1 and the token embedding offloaded to disk, everything else on the CPU."""
    base_name = "transformer" if hasattr(model, "transformer") else "model"
    device_map = {}
    for name, child in getattr(model, base_name).named_children():
        if isinstance(child, torch.nn.ModuleList):
            for i in range(len(child)):
                device_map[f"{base_name}.{name}.{i}"] = "disk" if i == 1 else "cpu"
        else:
            device_map[f"{base_name}.{name}"] = "disk" if child is model.get_input_embeddings() else "cpu"
    device_map["lm_head"] = "cpu"
    return dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(offload_dir))


def _ids():
    ids = torch.randint(3, 64, (6, 12), generator=torch.Generator().manual_seed(0))
    ids[:2, -3:] = PAD
    return ids


@pytest.fixture(params=["gpt2", "llama"])
def pair(request, tmp_path):
    """(the model in one piece, the same weights split by a device map)."""
    make = TINY[request.param]
    return make(), _split(make(), tmp_path)


def test_split_model_has_offloaded_weights_and_a_real_input_device(pair):
    whole, split = pair
    offloaded = devices.offloaded_parameters(split)
    assert any(".1." in name for name in offloaded), offloaded
    assert devices.input_device(split) == torch.device("cpu")
    assert devices.execution_device(components.block(split, 1)) == torch.device("cpu")
    assert torch.equal(whole(_ids()).logits, split(_ids()).logits)


def test_hooks_see_every_block_of_a_split_model(pair):
    whole, split = pair
    seen = {}
    for name, model in (("whole", whole), ("split", split)):
        store = {}
        with (
            residual_stream(model, lambda l, where, h, store=store: store.__setitem__((l, where), h)),
            head_outputs(model, lambda l, z, store=store: store.__setitem__((l, "heads"), z)),
            torch.no_grad(),
        ):
            model(input_ids=_ids())
        seen[name] = store
    assert seen["whole"].keys() == seen["split"].keys()
    for key, value in seen["whole"].items():
        assert torch.equal(value, seen["split"][key]), key


def test_streamed_statistics_of_a_split_model_equal_the_whole_model(pair):
    whole, split = pair
    ids = _ids()
    results = {}
    for name, model in (("whole", whole), ("split", split)):
        modules = components.linear_layers(model, 1)
        results[name] = (
            linear_blocks.block_moments(model, ids, PAD, batch_sequences=4),
            subspaces.next_token_moments(model, ids, PAD, batch_sequences=4),
            pruning.input_square_sums(model, ids, PAD, modules, batch_sequences=4),
        )
    for layer, m in results["whole"][0].items():
        assert torch.allclose(m.xy, results["split"][0][layer].xy, rtol=1e-12, atol=0)
    for layer, m in results["whole"][1].items():
        assert torch.allclose(m.xx, results["split"][1][layer].xx, rtol=1e-12, atol=0)
    for name, sums in results["whole"][2].items():
        assert torch.equal(sums, results["split"][2][name])


def test_editing_an_offloaded_weight_is_refused_by_name(pair):
    _, split = pair
    name = next(n for n in components.all_linear_layers(split) if n.startswith("1."))
    weight = components.weight(components.all_linear_layers(split)[name])
    with (
        pytest.raises(components.ComponentError, match="offloaded"),
        components.replaced_weights(split, {name: torch.zeros(weight.shape)}),
    ):
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_device_map_strategy_without_gpus_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model("testbed-gpt2", device="balanced")
