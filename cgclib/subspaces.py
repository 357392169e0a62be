"""High-variance and predictive directions of the residual stream, and how far apart they are.

At a layer, the *variance* directions of rank k are the top-k principal directions of the
hidden state h. The *predictive* directions of rank k are the top-k canonical directions of
h against the next token's target vector t = W_U[next token] (the row of the unembedding
the model must align with to predict it): canonical correlation analysis finds the
directions a of h and b of t whose variates h . a and t . b correlate most. Both come from
the moments of (h, t) alone.

The two sets are compared through their variates, which does not depend on how the
directions are scaled: how much of the predictive variates the principal components
explain (`shared_with_principal`). To test which directions the model needs, the stream is
replaced by its reconstruction from k variates of either kind (`keep_variates`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from . import components, devices
from .hooks import replace_block_output, residual_stream
from .moments import CrossMoments, ridge_scale, token_batches


@torch.no_grad()
def next_token_moments(
    model,
    ids: torch.Tensor,
    pad_token_id: int | None,
    layers: list[int] | None = None,
    batch_sequences: int = 16,
    progress: bool = False,
) -> dict[int, CrossMoments]:
    """Moments of (block output h at position i, W_U row of the token at i + 1) per layer,
    over the positions whose next token is a real token."""
    n_layers = components.layout(model).n_layers
    layers = list(range(n_layers)) if layers is None else [components.check_layer(model, l) for l in layers]
    d = components.layout(model).d_model
    device = devices.input_device(model)
    unembed = components.unembedding(model).weight
    moments = {l: CrossMoments.zeros(d, unembed.shape[1], device, with_yy=True) for l in layers}
    state = {}

    def grab(layer, where, h):
        if where == "out":
            moments[layer].update(h[:, :-1][state["keep"]], state["targets"])

    with residual_stream(model, grab, layers):
        for chunk, mask, attention in token_batches(
            model, ids, pad_token_id, batch_sequences, progress, "next-token moments"
        ):
            keep = mask[:, :-1] & mask[:, 1:]
            state.update(keep=keep, targets=unembed[chunk[:, 1:][keep]])
            model(input_ids=chunk, attention_mask=attention)
    return moments


def variance_basis(cov: torch.Tensor, k: int) -> torch.Tensor:
    """(d, k) orthonormal basis of the top-k principal directions of covariance `cov`."""
    _check_rank(k, len(cov))
    _, vectors = torch.linalg.eigh(cov)
    return vectors[:, -k:].flip(1)


def canonical_correlations(m: CrossMoments, ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """All canonical correlations (descending) and the matching canonical directions of x
    as the columns of a (dim_x, r) matrix: the variate of direction a is x . a. Both
    covariances get a small ridge (relative to their mean variance) so that a
    rank-deficient stream is still whitened stably."""
    cxx, cyy, cxy = m.cov_xx(), m.cov_yy(), m.cov_xy()
    cxx = cxx + ridge_scale(cxx, ridge) * torch.eye(len(cxx), dtype=cxx.dtype, device=cxx.device)
    cyy = cyy + ridge_scale(cyy, ridge) * torch.eye(len(cyy), dtype=cyy.dtype, device=cyy.device)
    lx, ly = torch.linalg.cholesky(cxx), torch.linalg.cholesky(cyy)
    # whitened cross-covariance Lx^-1 Cxy Ly^-T; its singular values are the correlations
    whitened = torch.linalg.solve_triangular(lx, cxy, upper=False)
    whitened = torch.linalg.solve_triangular(ly, whitened.T, upper=False).T
    u, s, _ = torch.linalg.svd(whitened, full_matrices=False)
    directions = torch.linalg.solve_triangular(lx.T, u, upper=True)
    return s.clamp(max=1.0), directions


def shared_with_principal(cov: torch.Tensor, directions: torch.Tensor) -> float:
    """How much of the top-k canonical variates the top-k principal components explain:
    the mean, over the k variates x . a_j, of the R^2 of regressing it on the k principal
    components (uncorrelated, so R^2 is the sum of squared correlations). 1 - this is the
    share of the predictive signal the high-variance directions miss; for random
    directions it is k / d on average."""
    k = directions.shape[1]
    v = variance_basis(cov, k)
    between = v.T @ cov @ directions
    scale = torch.sqrt(torch.outer(torch.diagonal(v.T @ cov @ v), torch.diagonal(directions.T @ cov @ directions)))
    return float((between / scale).square().sum() / k)


def keep_variates(cov: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The matrix P of the least-squares reconstruction of a centred state from its
    variates z = D^T x: x_hat = P x with P = C D (D^T C D)^-1 D^T. The variates are kept
    exactly and the rest of the state is its best linear guess from them; for orthonormal
    principal directions this is the orthogonal projection V V^T."""
    gram = directions.T @ cov @ directions
    return cov @ directions @ torch.linalg.solve(gram, directions.T)


def variance_share(cov: torch.Tensor, keep: torch.Tensor) -> float:
    """Share of the total variance the reconstruction x_hat = P x retains."""
    return float(torch.trace(keep @ cov @ keep.T) / torch.trace(cov))


def rank_for_variance(cov: torch.Tensor, share: float) -> int:
    """Smallest k whose top-k principal directions hold at least `share` of the variance."""
    if not 0 < share <= 1:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    values = torch.linalg.eigvalsh(cov).flip(0).clamp(min=0)
    cumulative = torch.cumsum(values, 0) / values.sum()
    return int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype) - 1e-12)) + 1


@contextmanager
def reconstructed_stream(model, layer: int, keep: torch.Tensor, mean: torch.Tensor) -> Iterator[None]:
    """The residual stream leaving block `layer` is replaced by its reconstruction from
    the kept variates (`keep_variates`), around the stream's mean: h -> mean + P (h - mean)."""
    device = devices.input_device(model)
    keep, mean = keep.to(device), mean.to(device)

    def project(x, h):
        return (mean + (h.double() - mean) @ keep.T).to(h.dtype)

    with replace_block_output(model, layer, project):
        yield


def _check_rank(k: int, d: int) -> None:
    if not 1 <= k <= d:
        raise ValueError(f"subspace rank must lie in [1, {d}], got {k}")
