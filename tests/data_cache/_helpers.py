"""Small builders shared by the data_cache tests: synthetic caches, DyCE record files, corruptions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_cache import format as fmt
from data_cache.fingerprint import array_digest, cache_fingerprint
from data_cache.synthetic import make_synthetic_cache


def small_cache(seed: int = 1, **kw):
    """A 120-sample synthetic cache: 3 positions x 2 head types, a saver and the final exit (8 exits)."""
    opts = dict(n_head_types=2, saver=True, seed=seed)
    opts.update(kw)
    return make_synthetic_cache(120, 3, **opts)


def rows_of(cache, split: str, a: int, b: int) -> dict:
    """Rows [a, b) of a reader in the writer's layout (sample-first)."""
    out = dict(labels=cache.labels(split)[a:b], sample_index=cache.sample_index(split)[a:b],
               topk_ids=np.transpose(cache.topk_ids(split)[:, :, a:b], (2, 0, 1)),
               topk_probs=np.transpose(cache.topk_probs(split)[:, :, a:b], (2, 0, 1)))
    if cache.has_logits(split):
        out["logits"] = np.transpose(cache.logits(split)[:, a:b], (1, 0, 2))
    return out


def rewrite(path: Path, split: str, fname: str, arr: np.ndarray, *, rehash: bool = True) -> None:
    """Replace one split file; with ``rehash`` also fix its checksum and the fingerprint, so only the
    content problem remains for the validator to find."""
    np.save(path / split / fname, arr)
    if rehash:
        m = json.loads((path / fmt.MANIFEST).read_text())
        m["splits"][split]["files"][fname]["sha256"] = array_digest(np.load(path / split / fname))
        m["fingerprint"] = cache_fingerprint(m)
        (path / fmt.MANIFEST).write_text(json.dumps(m))


def edit_manifest(path: Path, fn, *, refingerprint: bool = True) -> None:
    """Apply ``fn`` to the manifest dict and write it back, with a fingerprint that matches the edit
    when it can be computed (so only the edit itself is a problem)."""
    m = json.loads((path / fmt.MANIFEST).read_text())
    fn(m)
    if refingerprint:
        try:
            m["fingerprint"] = cache_fingerprint(m)
        except (KeyError, TypeError):
            pass
    (path / fmt.MANIFEST).write_text(json.dumps(m))


def dyce_arrays(n_positions: int, n_head_types: int, n: int, *, k: int = 3, n_classes: int = 10,
                seed: int = 0) -> dict[str, np.ndarray]:
    """DyCE record arrays: label (N, 1) int16, preds/confs (R, N, k), R = (P-1)*T + 1."""
    rng = np.random.default_rng(seed)
    r = (n_positions - 1) * n_head_types + 1
    prob = rng.dirichlet(np.full(n_classes, 0.3), size=(r, n))
    order = np.argsort(-prob, axis=-1)[..., :k]
    return {"label": rng.integers(0, n_classes, (n, 1)).astype(np.int16),
            "preds": order.astype(np.int16),
            "confs": np.take_along_axis(prob, order, -1).astype(np.float32)}


def write_records(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def macs_dict(n_positions: int, n_head_types: int, *, shared: bool = False) -> dict:
    """A macs_info dict: backbone 100 MACs per step, head t at position p costs 10*(t+1) + p."""
    d = {"head": [{"name": f"mlp{t}x{100 * (t + 1)}",
                   "macs": [10 * (t + 1) + p for p in range(n_positions - 1)] + [0]}
                  for t in range(n_head_types)],
         "backbone": {"name": "tinynet", "macs": [100 * (p + 1) for p in range(n_positions)],
                      "ori_macs": 100 * n_positions}}
    if shared:
        d["shared"] = {"macs": [3 * (p + 1) for p in range(n_positions)]}
    return d


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path
