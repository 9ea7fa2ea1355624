"""The valid inputs every command-line fuzz case starts from, built once per test process under one folder.

``build_world(root)`` writes: Fashion-MNIST files with random images (``fm/``), a tiny random-init ResNet's
finished checkpoint (``ckpt.pt``), the cache dumped from it (``cache/``, with a calibration split), an
``exitconfig/1`` table searched on it (``front.json``) and a certified choice (``cert.json``), its ONNX
bundle (``bundle/``), a synthetic cache (``syn/``), DyCE records (``dyce/``), and odd paths (``odd/``: a
folder, an empty file, a file nobody may read, a link loop, a dangling link). Cases read these and write
only in their own fresh folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from data_cache import save_cache
from data_cache.synthetic import make_synthetic_cache
from tests.data_cache._helpers import dyce_arrays, macs_dict, write_json, write_records
from tests.exits._fashion import fashion_files
from tests.exits._runtime_fixtures import make_export, tiny_model
from tests.fuzz._fuzz import run_main

__all__ = ["World", "build_world"]


@dataclass(frozen=True)
class World:
    """Paths of the valid inputs (all under ``root``)."""
    root: Path

    def __getattr__(self, name: str) -> Path:
        if name not in _NAMES:
            raise AttributeError(name)
        return self.root / _NAMES[name]


_NAMES = {"fm": "fm", "ckpt": "ckpt.pt", "cache": "cache", "front": "front.json", "bundle": "bundle",
          "cert": "cert.json", "syn": "syn", "syn_front": "syn_front.json", "dyce": "dyce", "odd": "odd"}


def build_world(root: Path) -> World:
    from data_cache import open_cache
    from exits.checkpoints import save_checkpoint
    from exits.data import load_splits
    from exits.dump import dump_cache, dump_provenance
    from exits.export_bundle import export_bundle
    from search.pareto import main as pareto_main

    world = World(root)
    fashion_files(world.fm, 60, 24)
    model = tiny_model()
    data = {"dataset": "fashion_mnist", "search_fraction": 0.3, "seed": 0, "calibration_size": 24}
    save_checkpoint(world.ckpt, model, include_backbone=True, data=data)
    splits = load_splits("fashion_mnist", world.fm, data_config=model.data_config, search_fraction=0.3, seed=0,
                         calibration_size=24)
    prov = dump_provenance(model, data_config=model.data_config, dataset="fashion_mnist",
                           split_parameters=splits.parameters, seed=0)
    cache = dump_cache(model, splits.cache_splits(), world.cache, k=2, batch_size=16,
                       split_definitions=splits.definitions, provenance=prov)
    doc = make_export(cache)
    world.front.write_text(json.dumps(doc))
    export_bundle(model, doc, world.bundle, cache=open_cache(world.cache), exporter="torchscript")
    save_cache(world.syn, make_synthetic_cache(80, 3, n_head_types=2, k=2, seed=3))
    searched = run_main(pareto_main, [str(world.syn), "--methods", "dp", "--no-progress", "--export",
                                      str(world.syn_front)])
    assert searched.status == 0, searched.err
    chosen = run_main(pareto_main, [str(world.cache), "--methods", "dp", "--no-progress", "--max-drop", "20",
                                    "--risk", "0.5", "--export-choice", str(world.cert)])
    assert chosen.status == 0, chosen.err
    world.dyce.mkdir()
    write_records(world.dyce / "s.npz", dyce_arrays(3, 2, 30, seed=1))
    write_records(world.dyce / "h.npz", dyce_arrays(3, 2, 20, seed=2))
    write_json(world.dyce / "m.json", macs_dict(3, 2))
    odd = world.odd
    odd.mkdir()
    (odd / "adir").mkdir()
    (odd / "empty").write_bytes(b"")
    (odd / "unreadable").write_text("{}\n")
    (odd / "unreadable").chmod(0)
    os.symlink(odd / "loop", odd / "loop")
    os.symlink(odd / "nowhere", odd / "dangling")
    return world
