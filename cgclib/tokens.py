"""Which token positions a statistic is computed over.

Every streamed statistic (SAE training, input norms, moments, importance) reads activations
at the positions this mask selects, so that one rule decides what counts as a token.
"""

from __future__ import annotations

import torch


def token_mask(ids: torch.Tensor, pad_token_id: int | None, first_token: bool = False) -> torch.Tensor:
    """Positions whose activations are used: not padding, and not the first position
    (whose activations are outliers in most models: nothing to attend to but itself).
    With `first_token`, position 0 is kept too (padding is still left out), for statistics
    whose reference implementation uses every token, such as Wanda's input norms."""
    mask = torch.ones_like(ids, dtype=torch.bool) if pad_token_id is None else ids != pad_token_id
    if not first_token:
        mask[:, 0] = False
    return mask
