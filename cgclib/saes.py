"""Sparse autoencoders per attention head, trained with sae-lens on streamed activations.

Each head's output (the input of the attention output projection, split by head) gets its
own TopK SAE. All heads are trained together with sae-lens's `MultiSAETrainer`: one model
forward pass yields a batch for every head. Activations are never dumped: every epoch
runs the model over the calibration tokens again and shuffles within a small buffer.

Trained SAEs are saved in sae-lens's format (`SAE.load_from_disk` reads them) under the
cache folder, keyed by everything that determines them: the model's weights, the
calibration tokens, the head, the SAE configuration and the sae-lens version. A rerun
reuses them; any changed setting trains new ones.

The SAEs that the book's default parameters need on the two test beds are shipped in
`data/saes/` under the same keys, with the sha256 of every file in its manifest, so that
the book builds without training them; `make saes` retrains them from scratch (by building
the book with an empty cache and the shipped ones ignored) and ships the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from . import components, devices
from .hooks import head_outputs
from .models import model_fingerprint, sha256_file
from .paths import cache_dir, data_dir
from .storage import computed_once
from .tokens import token_mask

if TYPE_CHECKING:  # for annotations only; the functions import sae_lens where they use it
    import sae_lens

Head = tuple[int, int]
MANIFEST = "MANIFEST.json"
IGNORE_SHIPPED = "CGC_IGNORE_SHIPPED_SAES"


class SAEFileError(RuntimeError):
    """A shipped SAE whose files do not match the manifest."""


@dataclass(frozen=True)
class HeadSAEConfig:
    """TopK SAE per head. The defaults scale the CGC paper's setup (dictionary 512 and
    k = 25 for 64-dimensional heads, 5 epochs) to any head size: dictionary 8 x head_dim,
    k = 25/64 x head_dim (rounded: 6 for 16-dimensional heads)."""

    expansion: int = 8
    k_fraction: float = 25 / 64
    epochs: int = 5
    batch_tokens: int = 1024
    lr: float = 1e-3
    seed: int = 0

    def d_sae(self, head_dim: int) -> int:
        return self.expansion * head_dim

    def k(self, head_dim: int) -> int:
        return max(2, round(self.k_fraction * head_dim))


def head_name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


@torch.no_grad()
def stream_head_activations(
    model: nn.Module, ids: torch.Tensor, heads: list[Head], pad_token_id: int | None, batch_sequences: int = 16
) -> Iterator[dict[Head, torch.Tensor]]:
    """For each chunk of sequences, every requested head's output at the used positions,
    as a (tokens, head_dim) float32 tensor on the model's device."""
    device = devices.input_device(model)
    layers = sorted({l for l, _ in heads})
    by_layer = {l: [h for ll, h in heads if ll == l] for l in layers}
    for start in range(0, len(ids), batch_sequences):
        chunk = ids[start : start + batch_sequences].to(device)
        mask = token_mask(chunk, pad_token_id)
        captured: dict[Head, torch.Tensor] = {}

        def grab(layer, z, captured=captured, mask=mask):
            for h in by_layer[layer]:
                captured[(layer, h)] = z[:, :, h, :][mask].float()

        with head_outputs(model, grab, layers=layers):
            model(input_ids=chunk, attention_mask=(chunk != pad_token_id).long() if pad_token_id is not None else None)
        yield captured


class _ShuffledHeadBatches:
    """Endless dict batches of exactly `batch_tokens` activations per head, shuffled within
    a buffer of model chunks, cycling over the calibration tokens epoch after epoch."""

    def __init__(
        self,
        model: nn.Module,
        ids: torch.Tensor,
        heads: list[Head],
        pad_token_id: int | None,
        batch_tokens: int,
        seed: int,
        buffer_chunks: int = 4,
    ):
        self.args = (model, ids, heads, pad_token_id)
        self.batch_tokens = batch_tokens
        self.buffer_chunks = buffer_chunks
        self.generator = torch.Generator().manual_seed(seed)
        self._batches: Iterator[dict[str, torch.Tensor]] = iter(())

    def _epoch(self):
        buffer: list[dict[Head, torch.Tensor]] = []
        for captured in stream_head_activations(*self.args):
            buffer.append(captured)
            if len(buffer) == self.buffer_chunks:
                yield from self._drain(buffer)
                buffer = []
        if buffer:
            yield from self._drain(buffer)

    def _drain(self, buffer):
        heads = buffer[0].keys()
        stacked = {h: torch.cat([b[h] for b in buffer]) for h in heads}
        n = len(next(iter(stacked.values())))
        order = torch.randperm(n, generator=self.generator).to(next(iter(stacked.values())).device)
        for start in range(0, n - self.batch_tokens + 1, self.batch_tokens):
            idx = order[start : start + self.batch_tokens]
            yield {head_name(h): stacked[h][idx] for h in heads}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        while True:
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = self._epoch()


def _cache_key(fingerprint: str, ids: torch.Tensor, pad_token_id: int | None, head: Head, cfg: HeadSAEConfig) -> str:
    import sae_lens

    ids_digest = hashlib.sha256(ids.cpu().numpy().tobytes()).hexdigest()
    spec = {
        "model": fingerprint,
        "tokens": ids_digest,
        "shape": list(ids.shape),
        "pad": pad_token_id,
        "head": list(head),
        "config": asdict(cfg),
        "sae_lens": sae_lens.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def train_head_saes(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    cfg: HeadSAEConfig = HeadSAEConfig(),
    heads: list[Head] | None = None,
    cache: Path | None = None,
) -> dict[Head, sae_lens.SAE]:
    """One trained TopK SAE per head, from the cache when available (see module docstring)."""
    from sae_lens import SAE

    lay = components.layout(model)
    heads = heads or [(l, h) for l in range(lay.n_layers) for h in range(lay.n_heads)]
    for l, h in heads:
        components.check_head(model, l, h)
    cache = Path(cache or cache_dir() / "saes")
    fingerprint = model_fingerprint(model)
    keys = {head: _cache_key(fingerprint, ids, pad_token_id, head, cfg) for head in heads}
    saes: dict[Head, SAE] = {}

    def load_stored() -> list[Head]:  # the heads still missing
        for head, key in keys.items():
            folder = None if head in saes else _stored(key, cache)
            if folder is not None:
                saes[head] = SAE.load_from_disk(folder, device=str(devices.input_device(model)))
        return [head for head in heads if head not in saes]

    if load_stored():
        with computed_once(cache / ".training"):  # one training at a time per cache folder
            missing = load_stored()  # another run may have trained them meanwhile
            if missing:
                _train(model, ids, pad_token_id, cfg, missing, keys, cache, saes)
    return {head: saes[head] for head in heads}


def _train(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    cfg: HeadSAEConfig,
    missing: list[Head],
    keys: dict[Head, str],
    cache: Path,
    saes: dict,
) -> None:
    """Train the SAEs of the `missing` heads together, store each in the cache under its
    key and add it to `saes`."""
    from sae_lens import SAE, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    lay = components.layout(model)
    device = devices.input_device(model)
    torch.manual_seed(cfg.seed)
    training = {
        head_name(head): TopKTrainingSAE(
            TopKTrainingSAEConfig(
                d_in=lay.head_dim,
                d_sae=cfg.d_sae(lay.head_dim),
                k=cfg.k(lay.head_dim),
                device=str(device),
                normalize_activations="expected_average_only_in",
            )
        )
        for head in missing
    }
    n_tokens = int(token_mask(ids, pad_token_id).sum())
    steps = max(1, cfg.epochs * n_tokens // cfg.batch_tokens)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=min(50, steps // 10),
        device=str(device),
        n_batches_for_norm_estimate=min(20, steps),
        dead_feature_window=max(50, steps // 5),
        feature_sampling_window=max(50, steps // 5),
    )
    stream = _ShuffledHeadBatches(model, ids, missing, pad_token_id, cfg.batch_tokens, cfg.seed)
    trained = MultiSAETrainer(trainer_cfg, training, {n: n for n in training}, stream).fit()
    for head in missing:
        final = cache / keys[head]
        tmp = cache / f".{keys[head]}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        trained[head_name(head)].save_inference_model(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        saes[head] = SAE.load_from_disk(final, device=str(device))


def shipped_dir() -> Path:
    return data_dir() / "saes"


def _shipped_manifest() -> dict[str, dict[str, str]]:
    path = shipped_dir() / MANIFEST
    if os.environ.get(IGNORE_SHIPPED) or not path.is_file():
        return {}
    return json.loads(path.read_text())


def _stored(key: str, cache: Path) -> Path | None:
    """The folder of a trained SAE with this key: the cache first, then the shipped SAEs
    (each file checked against the manifest); None if it has to be trained."""
    if (cache / key / "cfg.json").is_file():
        return cache / key
    files = _shipped_manifest().get(key)
    if files is None:
        return None
    folder = shipped_dir() / key
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            raise SAEFileError(
                f"shipped SAE {path} is missing or does not match {shipped_dir() / MANIFEST}; "
                "restore data/saes from git, or rerun `make saes`"
            )
    return folder


def ship(cache: Path, destination: Path | None = None) -> int:
    """Replace the shipped SAEs by every SAE in the cache folder `cache` (written by a book
    build with an empty cache) and write the manifest; the number shipped."""
    destination = Path(destination or shipped_dir())
    tmp = destination.with_name(f".{destination.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {}
    for folder in sorted(p for p in Path(cache).iterdir() if (p / "cfg.json").is_file()):
        shutil.copytree(folder, tmp / folder.name)
        manifest[folder.name] = {f.name: sha256_file(f) for f in sorted((tmp / folder.name).iterdir())}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    readme = destination / "README.md"
    if readme.is_file():
        shutil.copy(readme, tmp / "README.md")
    shutil.rmtree(destination, ignore_errors=True)
    tmp.rename(destination)
    return len(manifest)


@dataclass
class ReconstructionStats:
    """Streamed reconstruction quality of one SAE on held-out activations."""

    n: int = 0
    sum_x: torch.Tensor | None = None
    sum_sq: float = 0.0
    sum_err: float = 0.0
    fired: torch.Tensor | None = None
    sum_l0: float = 0.0

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        x, x_hat = x.double().cpu(), x_hat.double().cpu()
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_sq += float((x**2).sum())
        self.sum_err += float(((x - x_hat) ** 2).sum())
        fired = (codes > 0).cpu()
        self.fired = fired.any(0) if self.fired is None else self.fired | fired.any(0)
        self.sum_l0 += float(fired.sum())
        self.n += len(x)

    @property
    def fraction_variance_explained(self) -> float:
        if self.sum_x is None:
            raise ValueError("no activations recorded: call update() first")
        total = self.sum_sq - float(self.sum_x @ self.sum_x) / self.n
        return 1.0 - self.sum_err / total

    @property
    def dead_share(self) -> float:
        if self.fired is None:
            raise ValueError("no activations recorded: call update() first")
        return float(1.0 - self.fired.double().mean())

    @property
    def mean_l0(self) -> float:
        return self.sum_l0 / self.n


@torch.no_grad()
def head_feature_statistics(
    model: nn.Module,
    saes: dict[Head, sae_lens.SAE],
    ids: torch.Tensor,
    pad_token_id: int | None,
    batch_sequences: int = 16,
    progress: bool = False,
):
    """Stream `ids` through the model and every SAE; return per head the density
    statistics (`density.FeatureStats`) and the reconstruction quality."""
    from .density import FeatureStats

    feature_stats, recon = {}, {}
    for head, sae in saes.items():
        feature_stats[head] = FeatureStats(sae.cfg.d_sae, sae.cfg.k)
        recon[head] = ReconstructionStats()
    chunks = stream_head_activations(model, ids, list(saes), pad_token_id, batch_sequences)
    total = -(-len(ids) // batch_sequences)
    for captured in tqdm(chunks, total=total, desc="SAE features", disable=not progress, leave=False):
        for head, z in captured.items():
            sae = saes[head]
            codes = sae.encode(z.to(sae.W_enc.dtype))
            feature_stats[head].update(codes)
            recon[head].update(z, sae.decode(codes), codes)
    return feature_stats, recon


if __name__ == "__main__":
    # python -m cgclib.saes ship CACHE_FOLDER   (what `make saes` runs after its book build)
    if len(sys.argv) != 3 or sys.argv[1] != "ship":
        sys.exit("usage: python -m cgclib.saes ship CACHE_FOLDER")
    print(f"shipped {ship(Path(sys.argv[2]))} SAEs to {shipped_dir()}")
