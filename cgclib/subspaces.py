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
from torch import nn

from . import components, devices
from .hooks import replace_block_output, residual_stream
from .moments import RESOLUTION, CrossMoments, DegenerateMomentsError, token_batches, varying


@torch.no_grad()
def next_token_moments(
    model: nn.Module,
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
    unembed = components.weight(components.unembedding(model))
    moments = {l: CrossMoments.zeros(d, unembed.shape[1], device, with_yy=True) for l in layers}
    state: dict[str, torch.Tensor] = {}

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
    as the columns of a (dim_x, r) matrix: the variate of direction a is x . a.

    Every variable is standardised by its own streamed variance, and `ridge` times the
    identity is added to both correlation matrices. CCA does not change when one variable
    is rescaled, and this keeps it so: the penalty is the same share of every variable's
    variance (a per-variable ridge, ridge * diag(C)), whereas a ridge scaled by the mean
    variance is set by a residual stream's outlier dimensions and swamps all the others.
    Standardising rather than adding ridge * diag(C) keeps the Cholesky factors well
    conditioned when variances span orders of magnitude. The ridge shrinks every
    correlation by a factor between sqrt(mu_x mu_y / ((mu_x + ridge) (mu_y + ridge))) and
    1, with mu the smallest eigenvalues of the two correlation matrices; ridge = 0 is
    exact CCA.

    Degenerate moments:

    - a constant variable (`moments.varying`) has no variate: it is left out and has weight
      0 in every direction; r = min(varying x, varying y);
    - linearly dependent variables (a duplicated column; fewer distinct next tokens than
      dimensions) make a correlation matrix singular: the ridge regularises it, and with
      ridge = 0 (or below `moments.RESOLUTION`) this raises `DegenerateMomentsError`;
    - n pairs span at most n - 1 dimensions, so with n <= varying x + varying y some
      correlations would be 1 whatever the data: `DegenerateMomentsError`.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    cxx, cyy, cxy = m.cov_xx(), m.cov_yy(), m.cov_xy()
    vx, vy = varying(cxx, m.mean_x), varying(cyy, m.mean_y)
    dims = int(vx.sum()) + int(vy.sum())
    if m.n <= dims:
        raise DegenerateMomentsError(
            f"CCA of {dims} varying variables needs more than {dims} pairs, got {m.n}: "
            "n pairs span only n - 1 dimensions, so some correlations would be 1 whatever the data"
        )
    sx, sy = torch.diagonal(cxx)[vx].sqrt(), torch.diagonal(cyy)[vy].sqrt()
    lx = _ridge_cholesky(cxx[vx][:, vx] / torch.outer(sx, sx), ridge, "x")
    ly = _ridge_cholesky(cyy[vy][:, vy] / torch.outer(sy, sy), ridge, "y")
    # whitened cross-correlation Lx^-1 Rxy Ly^-T; its singular values are the correlations
    whitened = torch.linalg.solve_triangular(lx, cxy[vx][:, vy] / torch.outer(sx, sy), upper=False)
    whitened = torch.linalg.solve_triangular(ly, whitened.T, upper=False).T
    u, s, _ = torch.linalg.svd(whitened, full_matrices=False)
    directions = cxx.new_zeros(len(cxx), len(s))
    directions[vx] = torch.linalg.solve_triangular(lx.T, u, upper=True) / sx[:, None]
    return s.clamp(max=1.0), directions


def _ridge_cholesky(corr: torch.Tensor, ridge: float, name: str) -> torch.Tensor:
    """Cholesky factor L of corr + ridge I. L_jj^2 is the share of variable j's variance
    that the previous variables do not explain, so one below `RESOLUTION` means the
    variables are linearly dependent and the ridge too small to regularise them."""
    factor, info = torch.linalg.cholesky_ex(corr + ridge * torch.eye(len(corr), dtype=corr.dtype, device=corr.device))
    if int(info) != 0 or not bool((torch.diagonal(factor).square() > RESOLUTION).all()):
        raise DegenerateMomentsError(
            f"the correlation matrix of {name} is singular (linearly dependent variables, e.g. a duplicated "
            f"column) and ridge {ridge:g} does not regularise it: use ridge > 0"
        )
    return factor


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


def random_direction_share(cov: torch.Tensor, k: int, draws: int = 20, seed: int = 0) -> float:
    """`shared_with_principal` for k directions drawn at random in the raw coordinates of the
    stream, averaged over `draws` draws: the chance level when "random" means a generic
    direction of the stream rather than of its whitened space. Random directions in whitened
    coordinates (the space canonical variates live in) give exactly k / d on average, whatever
    the covariance; raw ones give about the share of variance the top k components hold, so
    the two nulls differ as much as the spectrum is uneven."""
    generator = torch.Generator().manual_seed(seed)
    d = len(cov)
    shares = [
        shared_with_principal(cov, torch.randn(d, k, generator=generator, dtype=cov.dtype).to(cov.device))
        for _ in range(draws)
    ]
    return float(sum(shares) / draws)


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
def reconstructed_stream(model: nn.Module, layer: int, keep: torch.Tensor, mean: torch.Tensor) -> Iterator[None]:
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
