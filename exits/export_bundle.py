"""``python -m exits.export_bundle``: an exit configuration (or a switchable table) as ONNX graphs plus a manifest.

The model is cut at the positions of the exits the configurations enable (for a table: the union of them, so
every configuration can run) and of their partners where a configuration decides with a rule reading one
(``agree``, ``ensemble``). Each run of backbone segments between two cuts becomes one graph (segments that no
enabled exit separates are fused), each served head one graph (enabled exits' and those partners'; the manifest
names each served exit's served partner), the saver (when a configuration enables one of its exits) one graph per
run of its segments up to its last enabled exit, and the whole backbone one more graph, ``base`` (the plain model:
what the router runs for the base configuration and what validation times the bundle against). Other heads are not
exported. Every graph takes one float32 tensor with a dynamic batch axis.

The head of an exit that every configuration of the table enables is not a graph of its own: it runs inside the
segment graph ending at its position (with the base graph exported; the manifest's exit names that graph), which
then outputs the state that goes on, the logits and their scores. Every graph ending at an exit's logits also
outputs the top-k of their softmax (``probs``, ``ids``; k = the largest any rule of the table reads, at least 2):
the router reads the scores from the session (``exits/onnx_graphs.py``).

Each graph is checked against PyTorch at export: on random images (batch 1 and 3, other sizes than the
example the exporter traced at batch 2) its onnxruntime output must match the PyTorch output of the same
input within ``|ort - torch| <= atol + rtol * |torch|`` (default rtol 1e-3, atol 1e-4; the manifest records
them and each graph's largest difference). The manifest (``bundle.manifest``) records the exitconfig it
serves, the SHA-256 of every graph, input size and normalisation, exporter and opset, and each graph's
MACs from the cache's unit table. The folder follows the output policy (``docs/outputs.md``): a non-empty
folder is refused unless ``--overwrite``, and then replaced only when its own manifest says it is an
``exitbundle/1`` bundle and lists every file in it; it may not be, hold or lie inside an input (the cache,
the configuration, the checkpoint). The bundle is built in a work folder beside it and renamed over a
placeholder reserved at the start, so two exports to one folder never both succeed.

Exporters: ``dynamo`` (``torch.onnx.export(dynamo=True)``, torch >= 2.5 with onnxscript; the default where
available) or ``torchscript`` (the older tracer, deprecated since torch 2.9 but faster to export).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.manifest import BUNDLE_FORMAT, GRAPHS_DIR, MANIFEST, seal_manifest, sha256_bytes
from contract import ExitConfig, partner_exit, reads_partner, rule_class
from data_cache.outputs import atomic_folder, check_output_folder, cli_entry, write_text_atomic

from .errors import ExitsError
from .model import ExitModel
from .onnx_graphs import (
    BundleExportError,
    _check_graph,
    _check_packages,
    _export_graph,
    _Part,
    _probe,
    default_exporter,
    plan_parts,
)
from .runtime import ExitRuntime, on_saver

__all__ = ["BundleExportError", "EXPORTERS", "DEFAULT_OPSET", "RTOL", "ATOL", "default_exporter", "export_bundle",
           "main"]

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
RTOL, ATOL = 1e-3, 1e-4
CHECK_BATCHES = (1, 3)


def _file_name(i: int, name: str) -> str:
    return f"{GRAPHS_DIR}/{i:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.onnx"


def _served(model: ExitModel, configs: Sequence[ExitConfig]) -> list[int]:
    """The exits (indices into ``model.exits``) any of ``configs`` enables, and the partner of each exit one of them
    decides at with a rule reading it (its head graph, cut at its position), in execution order."""
    served = {i for c in configs for i in c.exits}
    served |= {p for c in configs for i, r in zip(c.exits, c.rule_names, strict=True)
               if reads_partner(r) and (p := partner_exit(model.exits, i)) is not None}
    return sorted(served, key=lambda i: model.exits[i].position)


def _fused(model: ExitModel, configs: Sequence[ExitConfig], base: bool) -> list[int]:
    """The exits whose head runs inside their segment graph: those every configuration enables (with a head of
    their own), when the base graph is exported (the base configuration then never runs the chain's graphs); one per
    position, the first served."""
    if not base:
        return []
    always = set.intersection(*(set(c.exits) for c in configs)) if configs else set()
    out, taken = [], set()
    for i in sorted(always, key=lambda i: model.exits[i].position):
        spec = model.exits[i]
        where = (on_saver(model, spec), spec.position)
        if spec.key is not None and where not in taken:
            out.append(i)
            taken.add(where)
    return out


def _score_k(model: ExitModel, configs: Sequence[ExitConfig]) -> int:
    """How many top classes the graphs' scores carry: the most any rule of the table reads, at least 2, at most the
    number of classes."""
    ks = [rule_class(r).k for c in configs for r in (c.score, *c.rule_names)]
    return max(1, min(model.num_classes, max([2, *ks])))


def _onnx_opset(data: bytes) -> int | None:
    import onnx

    model = onnx.load_from_string(data)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _bundle_files(manifest: dict) -> list[str]:
    """The files a bundle's manifest lists (its graphs), relative to the bundle folder."""
    graphs = manifest.get("graphs")
    return [g["file"] for g in graphs if isinstance(g, dict) and isinstance(g.get("file"), str)] \
        if isinstance(graphs, list) else []


def _check_out(out: str | Path, overwrite: bool, inputs, announce: bool = True) -> Path:
    return check_output_folder(out, overwrite=overwrite, option="--out", format=BUNDLE_FORMAT, listed=_bundle_files,
                               inputs=inputs, announce=announce)


def export_bundle(model: ExitModel, configs: Mapping[str, Any] | str | Path, out: str | Path, *, cache: Any,
                  ids: Sequence[str] | None = None, data_config: Mapping[str, Any] | None = None,
                  data: Mapping[str, Any] | None = None, exporter: str | None = None, opset: int = DEFAULT_OPSET,
                  base: bool = True, rtol: float = RTOL, atol: float = ATOL, overwrite: bool = False, seed: int = 0,
                  progress: Callable[[str], None] | None = None, announce: bool = True) -> dict[str, Any]:
    """Export the configurations of ``configs`` (an ``exitconfig/1`` document or file, searched on ``cache``;
    ``ids``: only these) for ``model`` into the bundle folder ``out``; return the manifest.

    ``data_config`` (input size and normalisation; default the model's) and ``data`` (the dataset and split the
    heads were trained with, from the checkpoint) go into the manifest for whoever runs or validates the bundle.
    ``overwrite`` replaces a bundle at ``out`` (announced in one ``warning:`` line unless not ``announce``).
    """
    say = progress or (lambda msg: None)
    exporter = exporter or default_exporter()
    if exporter not in EXPORTERS:
        raise BundleExportError(f"unknown exporter {exporter!r}; choose one of {list(EXPORTERS)}")
    _check_packages(exporter)
    inputs = [("--cache", getattr(cache, "path", None)),
              ("--config", configs if isinstance(configs, (str, Path)) else None)]
    out = _check_out(out, overwrite, inputs, announce=announce)
    runtime = ExitRuntime(model, configs, cache=cache, device="cpu")
    chosen = runtime.configs if ids is None else list({i: runtime.set_config(i) for i in ids}.values())
    if not chosen:
        raise BundleExportError("the configuration file holds no configuration to export")
    parts = plan_parts(model, _served(model, chosen), base=base, fuse=_fused(model, chosen, base),
                       k=_score_k(model, chosen))
    g = torch.Generator().manual_seed(seed)
    example = _probe(parts, torch.randn(2, *model.input_size, generator=g))
    checks = [_probe(parts, torch.randn(b, *model.input_size, generator=g)) for b in CHECK_BATCHES]
    graphs = []
    with atomic_folder(out, option="--out", overwrite=overwrite, format=BUNDLE_FORMAT, listed=_bundle_files) as tmp:
        (tmp / GRAPHS_DIR).mkdir()
        for i, part in enumerate(parts):
            say(f"graph {part.name}: {len(part.units)} unit(s)")
            file = _file_name(i, part.name)
            _export_graph(part, example[part.name][0], tmp / file, opset=opset, exporter=exporter)
            data_bytes = (tmp / file).read_bytes()
            worst = _check_graph(part, data_bytes, [c[part.name] for c in checks], rtol=rtol, atol=atol)
            inp, outp = example[part.name]
            graphs.append({"name": part.name, "file": file, "kind": part.kind, "chain": part.chain,
                           "position": part.position, "final": part.final, "units": list(part.units),
                           "macs": float(sum(runtime.unit_macs[u] for u in part.units)),
                           "input_shape": list(inp.shape[1:]), "output_shape": list(outp[0].shape[1:]),
                           "sha256": sha256_bytes(data_bytes), "opset": _onnx_opset(data_bytes),
                           "max_abs_diff": worst,
                           **({"outputs": list(part.outputs)} if len(part.outputs) > 1 else {})})
        chained = _chained(parts, chosen)
        if chained:
            say(f"graph chain: {len(chained)} stages in one batch-1 graph")
            graphs.append(_write_chain(tmp, len(graphs), chained, graphs, model, runtime,
                                       torch.randn(4, *model.input_size, generator=g).numpy()))
        manifest = seal_manifest(_manifest(model, runtime, chosen, parts, graphs, cache, exporter, rtol, atol,
                                           data_config, data))
        write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n", option="--out")
        from bundle.router import BundleRouter

        # the bundle loads as written: fingerprints, graphs, configurations (no timing of the batch-1 graph here)
        BundleRouter(tmp, threads=1, one_graph=True)
    say(f"bundle written to {out}: {len(graphs)} graphs")
    return manifest


def _chained(parts: Sequence[_Part], chosen: Sequence[ExitConfig]) -> list[_Part]:
    """The backbone's segment parts when they can form a batch-1 graph (``exits/onnx_chain.py``): every one but the
    last ends at a fused exit, no saver, and every configuration decides with ``max_prob`` alone; else none."""
    backbone = [p for p in parts if p.kind == "segment" and p.chain == "backbone"]
    if (any(p.chain == "saver" for p in parts) or len(backbone) < 2 or any(p.fused is None for p in backbone[:-1])
            or any(r != "max_prob" for c in chosen for r in (c.score, *c.rule_names))):
        return []
    return backbone


def _write_chain(tmp: Path, i: int, chained: Sequence[_Part], graphs: list[dict[str, Any]], model: ExitModel,
                 runtime: ExitRuntime, images: Any) -> dict[str, Any]:
    """The batch-1 graph of the segment graphs ``chained`` (already in ``graphs``), written, checked against them
    and described for the manifest."""
    import onnx

    from .onnx_chain import CHAIN_OUTPUTS, chain_model, check_chain

    entries = {g["name"]: g for g in graphs}
    stages = [(tmp / entries[p.name]["file"]).read_bytes() for p in chained]
    data = chain_model([onnx.load_from_string(b) for b in stages], model.input_size).SerializeToString()
    worst = check_chain(data, stages, images)
    file = _file_name(i, "chain")
    (tmp / file).write_bytes(data)
    units = [u for p in chained for u in p.units]
    return {"name": "chain", "file": file, "kind": "chain", "chain": None, "position": chained[-1].position,
            "final": True, "units": units, "macs": float(sum(runtime.unit_macs[u] for u in units)),
            "input_shape": list(model.input_size), "output_shape": entries[chained[-1].name]["output_shape"],
            "sha256": sha256_bytes(data), "opset": _onnx_opset(data),
            # its stages' largest difference from PyTorch, plus its own from them
            "max_abs_diff": max(entries[p.name]["max_abs_diff"] for p in chained) + worst,
            "outputs": list(CHAIN_OUTPUTS)}


def _manifest(model: ExitModel, runtime: ExitRuntime, chosen: Sequence[ExitConfig], parts: Sequence[_Part],
              graphs: list[dict[str, Any]], cache: Any, exporter: str, rtol: float, atol: float,
              data_config: Mapping[str, Any] | None, data: Mapping[str, Any] | None) -> dict[str, Any]:
    import onnx

    doc = dict(runtime.doc or {})
    entries = {str(entry.get("id", i)): entry for i, entry in enumerate(doc.get("configs", []))}
    doc["configs"] = [dict(entries[c.id], id=c.id) for c in chosen]  # ids kept as the router reads them
    graph_of = {p.name: p for p in parts}
    fused = {p.fused: p.name for p in parts if p.fused is not None}
    indices = _served(model, chosen)
    partner = {i: model.exits[p].name for i in indices if (p := partner_exit(model.exits, i)) in indices}
    exits = [{"name": e.name, "index": i, "position": e.position, "head": e.head,
              "chain": "saver" if on_saver(model, e) else "backbone",
              "graph": fused.get(e.name, f"head:{e.name}" if f"head:{e.name}" in graph_of else None),
              **({"partner": partner[i]} if i in partner else {})} for i, e in ((i, model.exits[i]) for i in indices)]
    cfg = dict(data_config if data_config is not None else model.data_config)
    final = model.exits[-1]
    return {
        "format": BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"name": model.model_name, "fingerprint": model.fingerprint(),
                  "heads_fingerprint": model.head_fingerprint(),
                  "saver": None if model.saver is None else {"name": model.saver_name,
                                                              "fingerprint": model.saver_fingerprint()}},
        "cache": {"fingerprint": cache.fingerprint},
        "input": {"shape": list(model.input_size), "dtype": "float32",
                  **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k != "input_size"}},
        "data": dict(data or {}),
        "num_classes": model.num_classes,
        "final_exit": {"name": final.name, "index": len(model.exits) - 1},
        "base_macs": runtime.base_macs,
        "macs_convention": "MACs = FLOPs / 2, per sample, from the cache's unit table",
        "onnx": {"exporter": exporter, "opset": graphs[0]["opset"], "torch": torch.__version__,
                 "onnx": onnx.__version__,
                 "check": {"rtol": rtol, "atol": atol, "batch_sizes": list(CHECK_BATCHES),
                           "max_abs_diff": max(g["max_abs_diff"] for g in graphs)}},
        "graphs": graphs,
        "exits": exits,
        "exitconfig": doc,
    }


# -- command line --------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import CommandParser, int_at_least, non_negative_float

    p = CommandParser(prog="python -m exits.export_bundle",
                      description="Export an exit configuration (or a table of them) as ONNX graphs "
                                  "plus a manifest, runnable with onnxruntime and numpy (docs/bundle.md).")
    p.add_argument("--checkpoint", required=True, help="head checkpoint (python -m exits.train / exits.pipeline)")
    p.add_argument("--config", required=True, help="exitconfig/1 file (python -m search.pareto --export / "
                                                   "--export-choice)")
    p.add_argument("--out", required=True, help="bundle folder to write (must be empty or absent)")
    p.add_argument("--id", action="append", default=None,
                   help="export only the configuration with this id (repeat for several; default: all)")
    p.add_argument("--cache", default=None, help="the cache the configurations were searched on "
                                                 "(default: the bundled cache, if it is that one)")
    p.add_argument("--model", default=None, help="timm name of the backbone (checked against the checkpoint)")
    p.add_argument("--backbone-weights", default=None, help="when the checkpoint holds no backbone weights")
    p.add_argument("--exporter", choices=EXPORTERS, default=None,
                   help="torch.onnx exporter (default: dynamo where available, else torchscript)")
    p.add_argument("--opset", type=int_at_least(7, "an ONNX opset >= 7"), default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--no-base", action="store_true", help="do not export the whole model as the base graph")
    p.add_argument("--rtol", type=non_negative_float, default=RTOL,
                   help=f"relative tolerance of the check against PyTorch (default {RTOL:g})")
    p.add_argument("--atol", type=non_negative_float, default=ATOL, help=f"absolute tolerance (default {ATOL:g})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from bundle.errors import BundleError
    from data_cache import CacheError
    from data_cache.bundled import bundled_cache_path
    from data_cache.outputs import OutputError

    from .checkpoints import model_from_checkpoint, read_checkpoint
    from .runtime import read_config_file
    from .validation_inputs import open_searched_cache, warning_lines

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        _check_out(args.out, args.overwrite, [("--cache", args.cache or bundled_cache_path()),
                                              ("--config", args.config),
                                              ("--checkpoint", args.checkpoint),
                                              ("--backbone-weights", args.backbone_weights)])
        doc = read_config_file(args.config)
        ckpt = read_checkpoint(args.checkpoint)
        model = model_from_checkpoint(ckpt, model_name=args.model, backbone_weights=args.backbone_weights)
        cache = open_searched_cache(args.cache, (doc.get("cache") or {}).get("fingerprint"))
        with warning_lines():   # what the verification of the table against the cache has to say
            manifest = export_bundle(model, args.config, args.out, cache=cache, ids=args.id,
                                     data_config=ckpt.get("data_config"), data=ckpt.get("data"),
                                     exporter=args.exporter, opset=args.opset, base=not args.no_base, rtol=args.rtol,
                                     atol=args.atol, overwrite=args.overwrite, progress=say, announce=False)
    except (CacheError, ExitsError, OutputError, BundleError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = manifest["onnx"]["check"]
    print(f"{args.out}: {len(manifest['graphs'])} graphs, {len(manifest['exitconfig']['configs'])} configuration(s), "
          f"{manifest['onnx']['exporter']} exporter, opset {manifest['onnx']['opset']}; largest difference from "
          f"PyTorch {check['max_abs_diff']:.2g} (tolerance {check['atol']:g} + {check['rtol']:g} x |value|)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line on bad input."""
    return cli_entry(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
