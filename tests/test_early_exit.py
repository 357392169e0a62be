"""Exit heads: the last layer's head is the model itself, fitted translators are at least
as close to the model as the logit lens, and settling follows its definition."""

import numpy as np
import pytest
import torch

from cgclib import early_exit

from .tiny_models import TINY


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_last_exit_head_is_the_model_and_fitted_heads_beat_the_logit_lens_in_sample(family):
    model = TINY[family]().double()
    ids = torch.randint(3, 64, (16, 12), generator=torch.Generator().manual_seed(0))
    predicted = torch.ones_like(ids, dtype=torch.bool)
    predicted[:, 0] = False
    translators = early_exit.fit_exit_translators(model, ids, None, ridge=1e-8, batch_sequences=5)
    assert sorted(translators) == [0, 1]
    lens = early_exit.exit_divergences(model, ids, predicted, translators=None, batch_sequences=5)
    fitted = early_exit.exit_divergences(model, ids, predicted, translators=translators, batch_sequences=5)
    assert lens.shape == fitted.shape == (16 * 11, 3)
    assert np.abs(lens[:, -1]).max() < 1e-9 and np.abs(fitted[:, -1]).max() < 1e-9
    assert fitted[:, :2].mean() < lens[:, :2].mean()


def test_settling_follows_the_threshold():
    kl = np.array(
        [[0.5, 0.05, 0.2, 0.0], [0.01, 0.3, 0.3, 0.0], [0.9, 0.8, 0.7, 0.4]]
    )  # the last layer always counts as settled
    np.testing.assert_array_equal(early_exit.settling_layer(kl, 0.1), [1, 0, 3])
    assert early_exit.settled_share(kl, 0.1, by_layer=1) == pytest.approx(2 / 3)
    assert early_exit.settled_share(kl, 0.001, by_layer=2) == 0


def test_mask_shape_is_checked():
    model = TINY["gpt2"]()
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="shape"):
        early_exit.exit_divergences(model, ids, torch.ones(2, 4, dtype=torch.bool))


def test_token_sequences_name_the_sequence_of_each_divergence_row():
    model = TINY["gpt2"]().double()
    ids = torch.randint(3, 64, (7, 10), generator=torch.Generator().manual_seed(1))
    predicted = torch.rand(7, 10, generator=torch.Generator().manual_seed(2)) < 0.5
    predicted[:, 0] = False
    predicted[3] = False  # a sequence with no scored token
    kl = early_exit.exit_divergences(model, ids, predicted, batch_sequences=3)
    sequences = early_exit.token_sequences(predicted)
    assert len(sequences) == len(kl) and 3 not in sequences
    for j in range(7):
        alone = early_exit.exit_divergences(model, ids[j : j + 1], predicted[j : j + 1])
        np.testing.assert_allclose(kl[sequences == j], alone, atol=1e-9)
