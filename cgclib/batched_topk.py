"""Many TopK SAEs trained as one batch of tensors: sae-lens's TopK training, step for step.

sae-lens's `MultiSAETrainer` trains several SAEs on one activation stream, but each SAE
keeps its own optimiser and takes its own step: for every attention head of GPT-2 Medium
(384 heads, about 600 steps each) that is hundreds of thousands of small kernel launches.
`BatchedTopKTrainer` stacks the SAEs' weights into tensors with a leading SAE axis
(encoders `(n, d_in, d_sae)`, decoders `(n, d_sae, d_in)`), so that one batched matrix
product, one backward pass and one optimiser step serve them all.

It replaces `MultiSAETrainer(cfg, saes, names, stream).fit()` for TopK SAEs whose stream
names are their own names, without checkpoints, logging or evaluators (settings it refuses),
and reproduces what sae-lens 6.x does to each SAE: the activation scale estimated on
the first batches (which are then not trained on), the decoder-norm rescaling of the TopK
pre-activations, the auxiliary loss on dead latents (its own number of dead latents per
SAE), gradient clipping to norm 1 per SAE, Adam, the same learning-rate schedule, the
dead-latent bookkeeping and the final folding of the scale. The SAEs are initialised by
sae-lens itself (they are passed in), so the initialisation is the same by construction.
`tests/test_batched_topk.py` trains the same SAEs both ways on the same stream and finds
the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from sae_lens import TopKTrainingSAE
from sae_lens.config import SAETrainerConfig
from sae_lens.training.optim import get_lr_scheduler
from tqdm.auto import tqdm

GRADIENT_CLIP_NORM = 1.0  # sae-lens clips every SAE's gradient to this norm (fixed there)
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s guard against a zero norm


class BatchedTopKTrainer:
    """Train the TopK SAEs of `saes` (keyed by their name in each stream batch) together."""

    def __init__(
        self,
        cfg: SAETrainerConfig,
        saes: Mapping[str, TopKTrainingSAE],
        data_provider: Iterator[dict[str, torch.Tensor]],
    ):
        self.cfg = cfg
        self.names = list(saes)
        self.saes = dict(saes)
        self.data_provider = data_provider
        first = self.saes[self.names[0]].cfg
        for name, sae in self.saes.items():
            _check_supported(name, sae, first, cfg)
        self.k = first.k
        self.rescale = first.rescale_acts_by_decoder_norm
        self.apply_b_dec_to_input = first.apply_b_dec_to_input
        self.aux_coefficient = first.aux_loss_coefficient
        self.device = torch.device(cfg.device)
        stack = lambda attr: torch.stack([getattr(self.saes[n], attr).detach() for n in self.names]).to(self.device)  # noqa: E731
        self.W_enc = stack("W_enc").requires_grad_()
        self.b_enc = stack("b_enc").requires_grad_()
        self.W_dec = stack("W_dec").requires_grad_()
        self.b_dec = stack("b_dec").requires_grad_()
        self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.lr_scheduler = get_lr_scheduler(
            cfg.lr_scheduler_name,
            lr=cfg.lr,
            optimizer=self.optimizer,
            warm_up_steps=cfg.lr_warm_up_steps,
            decay_steps=cfg.lr_decay_steps,
            training_steps=cfg.total_training_steps,
            lr_end=cfg.lr_end,
            num_cycles=cfg.n_restart_cycles,
        )
        n, d_sae = len(self.names), first.d_sae
        self.steps_since_fired = torch.zeros(n, d_sae, device=self.device)
        self.fired_counts = torch.zeros(n, d_sae, device=self.device)
        self.samples_in_window = 0
        self.scaling: torch.Tensor | None = None

    def _stacked(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = {len(batch[n]) for n in self.names}
        if rows != {self.cfg.train_batch_size_samples}:
            raise ValueError(f"every batch must hold {self.cfg.train_batch_size_samples} rows per SAE, got {rows}")
        return torch.stack([batch[n].to(self.device, self.W_enc.dtype) for n in self.names])

    @torch.no_grad()
    def _estimate_scaling(self) -> None:
        """sae-lens's "expected_average_only_in": scale so that the mean norm is sqrt(d_in)."""
        totals = [0.0] * len(self.names)
        count = 0
        for _ in range(self.cfg.n_batches_for_norm_estimate):
            batch = self._stacked(next(self.data_provider))  # checked like every training batch
            for i in range(len(self.names)):
                totals[i] += batch[i].norm(dim=-1).float().sum().item()
            count += batch.shape[1]
        d_in = self.W_enc.shape[1]
        self.scaling = torch.tensor([d_in**0.5 / (t / count) for t in totals], dtype=torch.float64, device=self.device)

    def _decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1)  # (n, d_sae)

    def _decode(self, acts: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        if self.rescale:
            acts = acts * (1 / norms)[:, None, :]
        return acts @ self.W_dec

    def _step(self, x: torch.Tensor) -> None:
        dead = self.steps_since_fired > self.cfg.dead_feature_window
        sae_in = x - self.b_dec[:, None, :] * self.apply_b_dec_to_input
        hidden_pre = sae_in @ self.W_enc + self.b_enc[:, None, :]
        norms = self._decoder_norms()
        if self.rescale:
            hidden_pre = hidden_pre * norms[:, None, :]
        top_values, top_indices = torch.topk(hidden_pre, k=self.k, dim=-1, sorted=False)
        acts = torch.zeros_like(hidden_pre).scatter(-1, top_indices, top_values.relu())
        out = self._decode(acts, norms) + self.b_dec[:, None, :]
        loss = (out - x).pow(2).sum(dim=-1).mean(dim=-1).sum() + self._aux_loss(x, out, hidden_pre, dead, norms)
        with torch.no_grad():
            fired = acts.bool().float()
            self.steps_since_fired += 1
            self.steps_since_fired[fired.sum(dim=1).bool()] = 0
            self.fired_counts += fired.sum(dim=1)
            self.samples_in_window += self.cfg.train_batch_size_samples
        loss.backward()
        self._clip_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.lr_scheduler.step()

    def _aux_loss(
        self, x: torch.Tensor, out: torch.Tensor, hidden_pre: torch.Tensor, dead: torch.Tensor, norms: torch.Tensor
    ) -> torch.Tensor:
        """sae-lens's TopK auxiliary loss, per SAE: its top dead latents (up to d_in / 2 of
        them) reconstruct the residual, scaled down when few latents are dead."""
        n_dead = dead.sum(dim=-1)  # (n,)
        if int(n_dead.max()) == 0:
            return out.new_zeros(())
        k_aux_max = x.shape[-1] // 2
        k_aux = n_dead.clamp(max=k_aux_max)  # per SAE
        scale = (n_dead.to(x.dtype) / k_aux_max).clamp(max=1.0)
        residual = (x - out).detach()
        candidates = torch.where(dead[:, None, :], hidden_pre, -torch.inf)
        values, indices = candidates.topk(int(k_aux.max()), dim=-1, sorted=True)
        kept = torch.arange(values.shape[-1], device=x.device) < k_aux[:, None, None]
        aux_acts = torch.zeros_like(hidden_pre).scatter(-1, indices, torch.where(kept, values, 0.0))
        per_sae = (self._decode(aux_acts, norms) - residual).pow(2).sum(dim=-1).mean(dim=-1)
        return (self.aux_coefficient * scale * per_sae).sum()

    @torch.no_grad()
    def _clip_gradients(self) -> None:
        """torch's `clip_grad_norm_(sae.parameters(), 1)`, for every SAE separately."""
        per_param = torch.stack([p.grad.flatten(start_dim=1).norm(dim=1) for p in self.params])  # type: ignore[union-attr]
        total = per_param.norm(dim=0)  # (n,)
        factor = (GRADIENT_CLIP_NORM / (total + CLIP_EPS)).clamp(max=1.0)
        for p in self.params:
            p.grad.mul_(factor.view(-1, *[1] * (p.dim() - 1)))  # type: ignore[union-attr]

    def fit(self) -> dict[str, TopKTrainingSAE]:
        """Train, then write each SAE's weights back into its sae-lens object, with the
        activation scale folded in (as sae-lens does at the end of training)."""
        if self.saes[self.names[0]].cfg.normalize_activations == "expected_average_only_in":
            self._estimate_scaling()
        steps = self.cfg.total_training_samples // self.cfg.train_batch_size_samples
        steps += self.cfg.total_training_samples % self.cfg.train_batch_size_samples > 0
        window = self.cfg.feature_sampling_window
        for step in tqdm(range(steps), desc=f"Training {len(self.names)} SAEs at once", leave=False):
            if step > 0 and step % window == 0:  # sae-lens restarts its firing statistics
                self.fired_counts.zero_()
                self.samples_in_window = 0
            x = self._stacked(next(self.data_provider))
            if self.scaling is not None:
                x = x * self.scaling[:, None, None].to(x.dtype)
            self._step(x)
        return self._write_back()

    @torch.no_grad()
    def _write_back(self) -> dict[str, TopKTrainingSAE]:
        dead = self.steps_since_fired > self.cfg.dead_feature_window
        for i, name in enumerate(self.names):
            sae = self.saes[name].to(self.device)
            for attr in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(sae, attr).data.copy_(getattr(self, attr)[i])
            if self.scaling is not None:
                sae.fold_activation_norm_scaling_factor(float(self.scaling[i]))
            if self.samples_in_window > 0:
                sae.cfg.metadata.l0 = (self.fired_counts[i] / self.samples_in_window).sum().item()
                sae.cfg.metadata.num_dead_features = int(dead[i].sum())
        return self.saes


def _check_supported(name: str, sae: TopKTrainingSAE, first, cfg: SAETrainerConfig) -> None:
    """Refuse what this trainer does not reproduce, rather than train something else."""
    if not isinstance(sae, TopKTrainingSAE):
        raise TypeError(f"SAE {name!r} is a {type(sae).__name__}; the batched trainer trains TopK SAEs only")
    c = sae.cfg
    shared = ["d_in", "d_sae", "k", "dtype", "aux_loss_coefficient", "rescale_acts_by_decoder_norm"]
    shared += ["apply_b_dec_to_input", "normalize_activations"]
    if any(getattr(c, field) != getattr(first, field) for field in shared):
        raise ValueError(f"SAE {name!r} differs from the first SAE in shape or setup; batched SAEs must share them")
    if c.normalize_activations not in ("none", "expected_average_only_in"):
        raise ValueError(f"SAE {name!r}: normalize_activations={c.normalize_activations!r} is not supported here")
    if c.use_sparse_activations or cfg.autocast:
        raise ValueError("sparse activations and autocast are not supported by the batched trainer")
    if cfg.n_checkpoints or cfg.save_final_checkpoint or cfg.logger.log_to_wandb:
        raise ValueError(
            "the batched trainer keeps no checkpoints and logs nowhere: "
            "set n_checkpoints=0, save_final_checkpoint=False and no wandb logging"
        )
