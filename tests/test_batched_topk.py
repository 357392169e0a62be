"""The batched trainer gives the SAEs that sae-lens's own MultiSAETrainer gives: same
initialisation, same stream of batches, same optimiser and schedule."""

import copy

import pytest
import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.multi_sae_trainer import MultiSAETrainer

from cgclib.batched_topk import BatchedTopKTrainer

D_IN, D_SAE, K, BATCH = 8, 32, 3, 64
NAMES = ["a", "b", "c"]


def _stream(dtype: torch.dtype, seed: int = 0):
    """Endless batches per name: sparse combinations of a few directions plus noise, with
    a different scale per name (so the scale estimate matters)."""
    g = torch.Generator().manual_seed(seed)
    directions = {n: torch.randn(12, D_IN, generator=g, dtype=torch.float64) for n in NAMES}
    while True:
        batch = {}
        for i, n in enumerate(NAMES):
            codes = torch.rand(BATCH, 12, generator=g, dtype=torch.float64)
            codes = codes * (torch.rand(BATCH, 12, generator=g, dtype=torch.float64) < 0.2)
            noise = 0.05 * torch.randn(BATCH, D_IN, generator=g, dtype=torch.float64)
            batch[n] = ((codes @ directions[n] + noise) * (1 + i)).to(dtype)
        yield batch


def _saes(dtype: str, normalize: str) -> dict[str, TopKTrainingSAE]:
    torch.manual_seed(0)
    cfg = dict(d_in=D_IN, d_sae=D_SAE, k=K, dtype=dtype, normalize_activations=normalize)
    return {n: TopKTrainingSAE(TopKTrainingSAEConfig(**cfg)) for n in NAMES}


def _trainer_cfg(steps: int) -> SAETrainerConfig:
    return SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=3e-3,
        lr_end=3e-4,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=5,
        device="cpu",
        n_batches_for_norm_estimate=4,
        dead_feature_window=6,  # short, so that the auxiliary loss on dead latents is exercised
        feature_sampling_window=9,
    )


def _both(dtype: torch.dtype, steps: int, normalize: str = "expected_average_only_in"):
    saes = _saes(str(dtype).removeprefix("torch."), normalize)
    cfg = _trainer_cfg(steps)
    reference = MultiSAETrainer(cfg, copy.deepcopy(saes), {n: n for n in NAMES}, _stream(dtype)).fit()
    batched = BatchedTopKTrainer(cfg, copy.deepcopy(saes), _stream(dtype)).fit()
    return reference, batched


@pytest.mark.parametrize("normalize", ["expected_average_only_in", "none"])
def test_batched_training_equals_sae_lens_in_float64(normalize):
    reference, batched = _both(torch.float64, steps=60, normalize=normalize)
    for n in NAMES:
        for attr in ("W_enc", "b_enc", "W_dec", "b_dec"):
            torch.testing.assert_close(getattr(batched[n], attr), getattr(reference[n], attr), rtol=1e-9, atol=1e-11)
        assert batched[n].cfg.normalize_activations == reference[n].cfg.normalize_activations == "none"
        assert batched[n].cfg.metadata.l0 == pytest.approx(reference[n].cfg.metadata.l0)
        assert batched[n].cfg.metadata.num_dead_features == reference[n].cfg.metadata.num_dead_features
    # the comparison is not vacuous: training moved the weights and some latents died
    assert not torch.allclose(reference["a"].W_dec, _saes("float64", normalize)["a"].W_dec)
    assert any(reference[n].cfg.metadata.num_dead_features > 0 for n in NAMES)


def test_batched_training_equals_sae_lens_in_float32_within_float_tolerance():
    reference, batched = _both(torch.float32, steps=25)
    for n in NAMES:
        for attr in ("W_enc", "b_enc", "W_dec", "b_dec"):
            torch.testing.assert_close(getattr(batched[n], attr), getattr(reference[n], attr), rtol=1e-4, atol=1e-5)


def test_a_mixed_batch_of_saes_is_refused():
    saes = _saes("float32", "none")
    saes["b"] = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=2 * D_SAE, k=K))
    with pytest.raises(ValueError, match="'b' differs from the first SAE"):
        BatchedTopKTrainer(_trainer_cfg(3), saes, _stream(torch.float32))


@pytest.mark.parametrize("d_in", [8, 12])  # d_in // 2 = 6 is not a power of two: the scale must not round
def test_auxiliary_loss_and_its_gradient_equal_sae_lens_per_sae(d_in):
    """Three SAEs with 0, 5 and 30 dead latents in one batched step: each gets the loss and
    the gradient that sae-lens's own auxiliary loss gives it alone."""
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    cfg = dict(d_in=d_in, d_sae=D_SAE, k=K, dtype="float64")
    saes = {n: TopKTrainingSAE(TopKTrainingSAEConfig(**cfg)) for n in NAMES}
    trainer = BatchedTopKTrainer(_trainer_cfg(1), copy.deepcopy(saes), iter(()))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(NAMES), BATCH, d_in, generator=g, dtype=torch.float64)
    dead = torch.zeros(len(NAMES), D_SAE, dtype=torch.bool)
    dead[1, torch.randperm(D_SAE, generator=g)[:5]] = True
    dead[2, torch.randperm(D_SAE, generator=g)[:30]] = True
    norms = trainer._decoder_norms()
    hidden_pre = (x - trainer.b_dec[:, None]) @ trainer.W_enc + trainer.b_enc[:, None]
    hidden_pre = hidden_pre * norms[:, None]
    out = x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)  # any reconstruction
    batched = trainer._aux_loss(x, out, hidden_pre, dead, norms)
    batched.backward()
    for i, name in enumerate(NAMES):
        sae = saes[name]
        pre = (x[i] - sae.b_dec) @ sae.W_enc + sae.b_enc
        pre = pre * sae.W_dec.norm(dim=-1)
        step = TrainStepInput(
            sae_in=x[i], coefficients={}, dead_neuron_mask=dead[i], n_training_steps=0, is_logging_step=False
        )
        alone = sae.calculate_aux_loss(step, None, pre, out[i])["auxiliary_reconstruction_loss"]
        if alone.requires_grad:
            alone.backward()
        grad = sae.W_dec.grad if sae.W_dec.grad is not None else torch.zeros_like(sae.W_dec)
        torch.testing.assert_close(trainer.W_dec.grad[i], grad, rtol=1e-12, atol=1e-14)
        grad = sae.W_enc.grad if sae.W_enc.grad is not None else torch.zeros_like(sae.W_enc)
        torch.testing.assert_close(trainer.W_enc.grad[i], grad, rtol=1e-12, atol=1e-14)
    assert float(batched.detach()) > 0 and trainer.W_dec.grad[0].abs().max() == 0  # no dead latents, no gradient


def test_a_short_batch_is_refused():
    saes = _saes("float32", "none")
    stream = iter([{n: torch.zeros(BATCH - 1, D_IN) for n in NAMES}])
    with pytest.raises(ValueError, match=f"hold {BATCH} rows per SAE"):
        BatchedTopKTrainer(_trainer_cfg(3), saes, stream).fit()
