"""Loading models: shipped test beds (checked against their cards), local folders, hub
names that fail fast offline, and clear errors for corrupt or mismatched checkpoints."""

import shutil
import time

import pytest
import torch

from cgclib import models
from cgclib.models import (
    TESTBEDS,
    CheckpointError,
    ModelUnavailableError,
    load_model,
    resolve_device,
    resolve_dtype,
)

from .tiny_models import tiny_gpt2, tiny_llama


@pytest.mark.parametrize("name", TESTBEDS)
def test_testbeds_load_on_cpu_with_their_card(name):
    loaded = load_model(name, device="cpu")
    assert loaded.device.type == "cpu" and loaded.dtype == torch.float32
    assert loaded.card["name"] == name
    assert not loaded.model.training
    ids = loaded.tokenizer("copy: a b = a b <eos>", return_tensors="pt")["input_ids"]
    assert loaded.model(input_ids=ids).logits.shape[-1] == len(loaded.tokenizer)


def test_fused_gelu_computes_the_same_function_with_the_same_fingerprint():
    model = tiny_gpt2()
    ids = torch.randint(0, 64, (2, 16))
    reference = model(input_ids=ids).logits
    fingerprint = models.model_fingerprint(model)
    assert models.use_fused_gelu(model) == model.config.n_layer  # one activation per MLP
    assert models.use_fused_gelu(model) == 0
    torch.testing.assert_close(model(input_ids=ids).logits, reference, rtol=1e-5, atol=1e-5)
    assert models.model_fingerprint(model) == fingerprint
    assert models.use_fused_gelu(tiny_llama()) == 0  # SiLU models are left as they are


def test_loaded_gpt2_uses_the_fused_gelu():
    from transformers.activations import NewGELUActivation

    model = load_model("testbed-gpt2", device="cpu").model
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())


def test_the_fingerprint_does_not_depend_on_where_the_checkpoint_lies(tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(models.testbed_dir("testbed-gpt2"), copy)
    shipped, moved = load_model("testbed-gpt2", device="cpu").model, load_model(str(copy), device="cpu").model
    assert models.model_fingerprint(moved) == models.model_fingerprint(shipped)
    with torch.no_grad():
        next(moved.parameters())[0, 0] += 1.0
    assert models.model_fingerprint(moved) != models.model_fingerprint(shipped)


def test_a_corrupt_testbed_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "testbed-gpt2"
    shutil.copytree(models.testbed_dir("testbed-gpt2"), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("CGC_DATA_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="does not match its model card"):
        load_model("testbed-gpt2", device="cpu")
    (copy / "card.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_model("testbed-gpt2", device="cpu")


def test_hub_name_offline_fails_fast_with_a_way_forward(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(ModelUnavailableError, match="not available.*testbed-gpt2.*local folder"):
        load_model("gpt2-medium", device="cpu")
    assert time.time() - start < 5


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_local_folders_load_and_corrupt_ones_are_named(tmp_path, make):
    from cgclib.suite import CapabilitySuite

    model = make(vocab=len(CapabilitySuite(0).vocabulary))
    model.save_pretrained(tmp_path / "m")
    CapabilitySuite(0).tokenizer().save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu")
    for a, b in zip(loaded.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="could not load model weights"):
        load_model(str(tmp_path / "m"), device="cpu")


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
