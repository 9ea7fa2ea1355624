"""Seeded synthetic caches with the structure of real ones.

Per sample a latent difficulty; per exit an ability rising with depth (deeper = more accurate),
head types of different strength; correctness correlated across exits of one sample (an AR(1)
noise along depth); the top-1 probability tracks correctness noisily (over-confident mistakes
happen). Costs: one backbone segment per position, heads a few percent of the base model, an
optional independent saver as the first exit (TinySaver).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta, ExitInfo, UnitInfo
from .memory import InMemoryCache

__all__ = ["SyntheticSpec", "make_synthetic_cache", "write_synthetic_cache", "as_generator"]


def as_generator(seed) -> np.random.Generator:
    """None, an int or a Generator -> a Generator; anything else is refused with the value quoted."""
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise ValueError(f"seed must be None, an int or a numpy Generator (got {seed!r})")


def _head_types(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, MACs (fraction of the base model) and accuracy gain of ``n`` head types."""
    names = ["linear", "mlp1", "mlp3", "conv", "mlp2"][:n] + [f"head{t}" for t in range(5, n)]
    frac = np.array([0.002, 0.01, 0.03, 0.02, 0.015] + [0.01] * max(0, n - 5))[:n]
    gain = np.array([0.0, 0.25, 0.4, 0.35, 0.3] + [0.2] * max(0, n - 5))[:n]
    return names, frac, gain


def _early_exits(
    rng: np.random.Generator,
    seg: np.ndarray,
    base: float,
    n_head_types: int,
    offset: int,
    lat: Callable[[float], float | None],
    units: list[UnitInfo],
    exits: list[ExitInfo],
    ability: list[float],
    sharp: list[float],
) -> None:
    """Append every early position's head units and exits, with each exit's ability and sharpness."""
    head_names, head_frac, head_gain = _head_types(n_head_types)
    depth = np.cumsum(seg)[:-1] / base
    for p in range(len(seg) - 1):
        for t, h in enumerate(head_names):
            name = f"blocks.{p}/{h}"
            macs = head_frac[t] * base * rng.uniform(0.8, 1.2)
            units.append(UnitInfo(name, "head", float(macs), lat(macs)))
            exits.append(
                ExitInfo(name, p + offset, h, tuple(f"segment{q}" for q in range(p + 1)) + (name,))
            )
            ability.append(-1.6 + 3.4 * depth[p] ** 0.7 + head_gain[t] * (1 - depth[p]))
            sharp.append(1.2 + 1.0 * depth[p] + 0.3 * head_gain[t])


class SyntheticSpec:
    """The fixed structure (exits, units, per-exit parameters) of a synthetic cache."""

    def __init__(
        self,
        n_positions: int,
        *,
        n_head_types: int = 1,
        n_classes: int = 10,
        k: int = 5,
        saver: bool = False,
        seed: int = 0,
        with_latency: bool = False,
    ):
        if n_positions < 0 or n_head_types < 1 or n_classes < 2 or not 1 <= k <= n_classes:
            raise ValueError(
                f"invalid synthetic spec: n_positions={n_positions}, n_head_types={n_head_types}, "
                f"n_classes={n_classes}, k={k}"
            )
        rng = np.random.default_rng([seed, 7919])
        self.n_classes, self.k, self.seed = n_classes, k, seed
        base = 4.0e9
        seg = rng.uniform(0.6, 1.4, n_positions + 1)
        seg = seg / seg.sum() * base
        lat = (
            (lambda m: float(m * 2.5e-12 * rng.uniform(0.8, 1.6)))
            if with_latency
            else (lambda m: None)
        )
        units = [
            UnitInfo(f"segment{p}", "segment", float(seg[p]), lat(seg[p]))
            for p in range(n_positions + 1)
        ]
        exits, ability, sharp = [], [], []
        offset = 0
        if saver:
            macs = 0.08 * base
            units.append(UnitInfo("saver", "saver", macs, lat(macs)))
            exits.append(ExitInfo("saver", 0, "saver", ("saver",)))
            ability.append(0.9)
            sharp.append(2.2)
            offset = 1
        _early_exits(rng, seg, base, n_head_types, offset, lat, units, exits, ability, sharp)
        exits.append(
            ExitInfo(
                "head",
                n_positions + offset,
                "final",
                tuple(f"segment{q}" for q in range(n_positions + 1)),
                final=True,
            )
        )
        ability.append(2.0)
        sharp.append(2.4)
        self.units, self.exits = tuple(units), tuple(exits)
        self.ability, self.sharp = np.array(ability), np.array(sharp)
        self.depth_rank = np.array([e.position for e in exits], dtype=float)
        self.saver = saver

    def meta(self, splits: dict[str, int]) -> CacheMeta:
        return CacheMeta(
            exits=self.exits,
            units=self.units,
            n_classes=self.n_classes,
            k=self.k,
            splits=dict(splits),
            split_definitions={s: f"synthetic rows of split {s!r}" for s in splits},
            costs={
                "macs_counter": "synthetic",
                "latency_device": "synthetic" if self.units[0].latency_s else None,
            },
            provenance={
                "model": {"name": "synthetic", "fingerprint": f"synthetic-seed{self.seed}"},
                "dataset": "synthetic",
                "seed": self.seed,
            },
        )

    def rows(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` samples: labels ``(n,)``, topk_ids / topk_probs ``(n_exits, k, n)``."""
        e, c, k = len(self.exits), self.n_classes, self.k
        labels = rng.integers(0, c, n)
        difficulty = rng.normal(0.0, 1.0, n)
        rho = 0.95
        noise = np.empty((e, n))
        prev = rng.normal(size=n)
        for j in range(e):
            if self.saver and j == 0:  # independent model: its own noise
                noise[j] = rng.normal(size=n)
                continue
            prev = rho * prev + np.sqrt(1 - rho**2) * rng.normal(size=n)
            noise[j] = prev
        z = self.ability[:, None] - 1.3 * difficulty[None, :] + 0.9 * noise
        correct = z > 0
        conf = self.sharp[:, None] * z + 0.8 * rng.normal(size=(e, n))
        top1 = 1.0 / c + (1 - 1.0 / c) / (1 + np.exp(-conf))
        # the rest of the mass over k-1 other classes, geometric, capped below top-1
        rest = (1 - top1)[:, None, :] * (0.5 ** np.arange(1, k))[None, :, None]
        rest = np.minimum(rest, top1[:, None, :])
        probs = np.concatenate([top1[:, None, :], rest], axis=1).astype(np.float32)
        probs = -np.sort(-probs, axis=1)
        # class ids: a random permutation offset from the label; the label first when correct,
        # else in a lower rank (or absent)
        shift = rng.integers(1, c, (e, 1, n))
        ranks = np.arange(k)[None, :, None]
        ids = (labels[None, None, :] + shift * ranks) % c
        wrong_ids = (labels[None, None, :] + shift * (ranks + 1)) % c
        label_rank = rng.integers(1, k + 1, (e, n))  # k means "not in top-k"
        wrong = np.where(ranks == label_rank[:, None, :], labels[None, None, :], wrong_ids)
        ids = np.where(correct[:, None, :], ids, wrong).astype(np.int32)
        return {fmt.LABELS: labels.astype(np.int64), fmt.TOPK_IDS: ids, fmt.TOPK_PROBS: probs}


def make_synthetic_cache(
    n_samples: int,
    n_positions: int,
    *,
    n_head_types: int = 1,
    n_classes: int = 10,
    k: int = 5,
    saver: bool = False,
    holdout_fraction: float = 0.5,
    seed: int = 0,
    with_latency: bool = False,
    calibration_fraction: float = 0.0,
) -> InMemoryCache:
    """An in-memory cache with ``search`` and ``holdout`` splits (``n_samples`` in all), and a
    ``calibration`` split of ``calibration_fraction`` of them when that is above 0."""
    spec = SyntheticSpec(
        n_positions,
        n_head_types=n_head_types,
        n_classes=n_classes,
        k=k,
        saver=saver,
        seed=seed,
        with_latency=with_latency,
    )
    n_hold = int(round(n_samples * holdout_fraction))
    n_cal = int(round(n_samples * calibration_fraction))
    sizes = {"search": n_samples - n_hold - n_cal, "holdout": n_hold}
    if n_cal:
        sizes["calibration"] = n_cal
    if min(sizes.values()) < 1:
        raise ValueError(
            f"n_samples={n_samples} with holdout_fraction={holdout_fraction} and calibration_fraction="
            f"{calibration_fraction} leaves a split empty"
        )
    arrays, start = {}, 0
    for i, (split, n) in enumerate(sizes.items()):
        a = spec.rows(n, np.random.default_rng([seed, i]))
        a[fmt.SAMPLE_INDEX] = np.arange(start, start + n, dtype=np.int64)
        start += n
        arrays[split] = a
    return InMemoryCache(spec.meta(sizes), arrays)


def write_synthetic_cache(
    path: str | Path,
    n_samples: int,
    n_positions: int,
    *,
    n_head_types: int = 1,
    n_classes: int = 10,
    k: int = 5,
    saver: bool = False,
    holdout_fraction: float = 0.5,
    seed: int = 0,
    with_latency: bool = False,
    chunk: int = 1 << 15,
    overwrite: bool = False,
):
    """Stream a large synthetic cache to disk in chunks (bounded memory); return the reader."""
    from .writer import create_cache

    spec = SyntheticSpec(
        n_positions,
        n_head_types=n_head_types,
        n_classes=n_classes,
        k=k,
        saver=saver,
        seed=seed,
        with_latency=with_latency,
    )
    n_hold = int(round(n_samples * holdout_fraction))
    sizes = {"search": n_samples - n_hold, "holdout": n_hold}
    w = create_cache(path, spec.meta(sizes), overwrite=overwrite)
    start = 0
    for i, (split, n) in enumerate(sizes.items()):
        for j, a in enumerate(range(0, n, chunk)):
            b = min(n, a + chunk)
            r = spec.rows(b - a, np.random.default_rng([seed, i, j]))
            w.write(
                split,
                a,
                labels=r[fmt.LABELS],
                sample_index=np.arange(start + a, start + b),
                topk_ids=np.transpose(r[fmt.TOPK_IDS], (2, 0, 1)),
                topk_probs=np.transpose(r[fmt.TOPK_PROBS], (2, 0, 1)),
            )
        start += n
    return w.finalize()
