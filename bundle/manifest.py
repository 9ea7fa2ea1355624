"""The bundle manifest (``exitbundle/1``): what a bundle holds, read and checked with the standard library.

A bundle is a folder::

    manifest.json        this document, sealed by its own fingerprint
    graphs/<name>.onnx   one ONNX graph per backbone segment run, per enabled head, per saver part, and the base model

The manifest lists every graph (file, kind, chain, the exit position its output stands at, the compute units
it fuses and their MACs, input and output shapes without the batch axis, SHA-256 of the file), the exits the
bundle serves (resolved to graphs; each with its served partner, for rules that read one), the ``exitconfig/1``
document whose configurations it runs, the input (size and normalisation), the exporter and opset, and the
tolerance every graph was checked to against PyTorch. ``fingerprint`` is the SHA-256 of the rest of the manifest
in canonical JSON, so an edited manifest is refused (:func:`read_manifest`); each graph's ``sha256`` catches an
altered graph (checked when loading).

A graph's ``outputs`` (absent: ``["output"]``) name what it gives: ``output`` first (what the next graph reads),
then for a graph ending at an exit's logits ``probs`` and ``ids`` (the top-k of their softmax), and for a segment
graph that runs an exit's head inside it ``logits`` before them; such an exit names that segment graph as its
``graph`` (a *fused* exit). A bundle whose backbone graphs all end at fused exits may hold one graph of kind
``chain``: those graphs chained into one for a single row (``exits/onnx_chain.py``), inputs ``input`` and ``cuts``,
outputs ``probs``, ``ids``, ``stage`` and ``finite``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import BundleError

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "GRAPHS_DIR",
    "GraphInfo",
    "ServedExit",
    "Manifest",
    "seal_manifest",
    "manifest_fingerprint",
    "read_manifest",
    "sha256_bytes",
]

BUNDLE_FORMAT = "exitbundle/1"
MANIFEST = "manifest.json"
GRAPHS_DIR = "graphs"
GRAPH_KINDS = ("segment", "head", "base", "chain")
CHAINS = ("saver", "backbone")
PLAIN_OUTPUTS = ("output",)
SCORED_OUTPUTS = ("output", "probs", "ids")
FUSED_OUTPUTS = ("output", "logits", "probs", "ids")
CHAIN_OUTPUTS = ("probs", "ids", "stage", "finite")


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_fingerprint(doc: Mapping[str, Any]) -> str:
    """SHA-256 of ``doc`` without its ``fingerprint`` field, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in doc.items() if k != "fingerprint"}
    return sha256_bytes(
        json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    )


def seal_manifest(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with its ``fingerprint`` set (written last by the exporter)."""
    return {**doc, "fingerprint": manifest_fingerprint(doc)}


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX graph: ``input (b, *input_shape) -> output (b, *output_shape)`` float32.

    ``kind``: ``segment`` (consecutive units of the saver or backbone ``chain``), ``head``, ``base`` (the
    whole backbone) or ``chain`` (the backbone's graphs, every exit fused, chained for one row). ``position`` is
    the exit position its output stands at; ``final`` marks a graph whose output is the final exit's logits.
    ``units`` are the compute units it runs; ``macs`` their sum per sample.
    """

    name: str
    file: str
    kind: str
    chain: str | None
    position: int
    final: bool
    units: tuple[str, ...]
    macs: float
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    sha256: str
    outputs: tuple[str, ...] = PLAIN_OUTPUTS

    @property
    def scored(self) -> bool:
        """Whether the graph outputs the top-k scores of the logits it gives."""
        return "probs" in self.outputs


@dataclass(frozen=True)
class ServedExit:
    """An early exit the bundle can enable: ``index`` in the cache's exit list, its ``chain`` and the head
    ``graph`` that turns the chain's output at ``position`` into logits (None: the chain's output is logits), or
    the chain's segment graph ending there when the head runs inside it (``fused``); ``partner``: the served exit a
    rule reading its partner compares it with (``contract.partner_exit``; None: none served, and bundles older than
    partner rules)."""

    name: str
    index: int
    position: int
    head: str
    chain: str
    graph: str | None
    partner: str | None = None
    fused: bool = False


@dataclass(frozen=True)
class Manifest:
    """A checked manifest. ``chains`` maps ``saver``/``backbone`` to segment graph names in execution order;
    ``base`` is the base model's graph name (None when not exported), ``chained`` the batch-1 graph's (None:
    none)."""

    doc: dict[str, Any]
    graphs: dict[str, GraphInfo]
    chains: dict[str, tuple[str, ...]]
    exits: dict[str, ServedExit]
    base: str | None
    final_exit: tuple[str, int]
    input_shape: tuple[int, ...]
    num_classes: int
    base_macs: float
    chained: str | None = None

    @property
    def exitconfig(self) -> dict[str, Any]:
        """The ``exitconfig/1`` document whose configurations the bundle runs."""
        return self.doc["exitconfig"]

    @property
    def fused_exits(self) -> list[ServedExit]:
        """The exits whose head runs inside their segment graph, in execution order (the stages of the batch-1
        graph, before the final exit, when the bundle has one)."""
        return sorted((e for e in self.exits.values() if e.fused), key=lambda e: e.position)


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise BundleError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise BundleError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise BundleError(f"{where}: a shape must be a list of positive integers (got {value!r})")
    return tuple(value)


def _graph(d: Any, i: int, path: Path) -> GraphInfo:
    where = f"{path}: graphs[{i}]"
    name = _field(d, "name", str, where)
    where = f"{path}: graph {name!r}"
    kind = _field(d, "kind", str, where)
    if kind not in GRAPH_KINDS:
        raise BundleError(f"{where}: unknown kind {kind!r}; expected one of {list(GRAPH_KINDS)}")
    chain = d.get("chain")
    if (kind == "segment") != (chain in CHAINS):
        raise BundleError(f"{where}: chain {chain!r} does not fit kind {kind!r}")
    file = _field(d, "file", str, where)
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise BundleError(f"{where}: file {file!r} must be a path inside the bundle")
    outputs = (
        tuple(d.get("outputs", PLAIN_OUTPUTS)) if isinstance(d.get("outputs", []), list) else ()
    )
    if (kind == "chain") != (outputs == CHAIN_OUTPUTS) or (
        kind != "chain"
        and (
            outputs not in (PLAIN_OUTPUTS, SCORED_OUTPUTS, FUSED_OUTPUTS)
            or (outputs == FUSED_OUTPUTS and kind != "segment")
        )
    ):
        raise BundleError(
            f"{where}: outputs {d.get('outputs')!r} are not {list(PLAIN_OUTPUTS)}, {list(SCORED_OUTPUTS)} or (a "
            f"segment's) {list(FUSED_OUTPUTS)}, or (a chain's, only) {list(CHAIN_OUTPUTS)}"
        )
    return GraphInfo(
        name,
        file,
        kind,
        chain,
        _field(d, "position", int, where),
        bool(d.get("final", False)),
        tuple(_field(d, "units", list, where)),
        float(_field(d, "macs", (int, float), where)),
        _shape(_field(d, "input_shape", list, where), where),
        _shape(_field(d, "output_shape", list, where), where),
        _field(d, "sha256", str, where),
        outputs,
    )


def _load(folder: Path) -> tuple[Path, dict]:
    """The manifest's path and document, its format and self-fingerprint checked."""
    path = folder / MANIFEST
    try:
        found = folder.is_dir()
    except (
        OSError
    ) as exc:  # a name too long for the file system (ENAMETOOLONG), which is_dir() lets through
        raise BundleError(
            f"{folder}: cannot read the bundle folder ({exc.strerror or exc})"
        ) from None
    if not found:
        raise BundleError(f"{folder}: no such bundle folder")
    if not path.is_file():
        raise BundleError(
            f"{folder}: no {MANIFEST}; not a bundle (export one with python -m exits.export_bundle)"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise BundleError(f"{path}: format {got!r} is not {BUNDLE_FORMAT!r}")
    want = doc.get("fingerprint")
    if want != manifest_fingerprint(doc):
        raise BundleError(
            f"{path}: content does not match its fingerprint ({str(want)[:19]}...); the manifest was "
            "altered after export: export the bundle again"
        )
    return path, doc


def _graphs(doc: dict, path: Path) -> tuple[dict[str, GraphInfo], dict[str, tuple[str, ...]]]:
    """The graphs by name (unique) and each chain's graph names; the backbone chain ends final."""
    graphs: dict[str, GraphInfo] = {}
    for i, d in enumerate(_field(doc, "graphs", list, str(path))):
        g = _graph(d, i, path)
        if g.name in graphs:
            raise BundleError(f"{path}: graph name {g.name!r} appears twice")
        graphs[g.name] = g
    chains = {c: tuple(n for n, g in graphs.items() if g.chain == c) for c in CHAINS}
    if not chains["backbone"] or not graphs[chains["backbone"][-1]].final:
        raise BundleError(f"{path}: the backbone chain must end with the final graph")
    return graphs, chains


def _exits(
    doc: dict, path: Path, graphs: dict[str, GraphInfo], chains: dict[str, tuple[str, ...]]
) -> dict[str, ServedExit]:
    """The served exits by name, each on a chain the bundle holds, at a position a segment ends at."""
    exits: dict[str, ServedExit] = {}
    for i, d in enumerate(_field(doc, "exits", list, str(path))):
        where = f"{path}: exits[{i}]"
        e = ServedExit(
            _field(d, "name", str, where),
            _field(d, "index", int, where),
            _field(d, "position", int, where),
            _field(d, "head", str, where),
            _field(d, "chain", str, where),
            d.get("graph"),
            d.get("partner"),
        )
        if e.chain not in CHAINS or not chains[e.chain]:
            raise BundleError(
                f"{where}: exit {e.name!r} is on chain {e.chain!r}, which the bundle does not hold"
            )
        g = graphs.get(e.graph) if isinstance(e.graph, str) else None
        if g is not None and g.kind == "segment":
            if g.chain != e.chain or g.position != e.position or g.outputs != FUSED_OUTPUTS:
                raise BundleError(
                    f"{where}: exit {e.name!r} names graph {e.graph!r}, which is no segment graph of its chain "
                    f"ending at position {e.position} with its head inside"
                )
            e = replace(e, fused=True)
        elif e.graph is not None and (g is None or g.kind != "head"):
            raise BundleError(
                f"{where}: exit {e.name!r} names head graph {e.graph!r}, which the bundle does not hold"
            )
        if not any(graphs[n].position == e.position for n in chains[e.chain]):
            raise BundleError(
                f"{where}: no segment of chain {e.chain!r} ends at position {e.position}"
            )
        exits[e.name] = e
    for i, e in enumerate(exits.values()):
        theirs = exits.get(e.partner) if isinstance(e.partner, str) else None
        if e.partner is not None and (
            theirs is None
            or theirs.head != e.head
            or theirs.chain != e.chain
            or theirs.position >= e.position
        ):
            raise BundleError(
                f"{path}: exits[{i}]: exit {e.name!r} names partner {e.partner!r}, which is not a served exit of "
                "its head and chain at an earlier position"
            )
    return exits


def read_manifest(folder: str | Path) -> Manifest:
    """Read and check ``folder/manifest.json``: format, fingerprint, structure. Raises :class:`BundleError`."""
    path, doc = _load(Path(folder))
    graphs, chains = _graphs(doc, path)
    exits = _exits(doc, path, graphs, chains)
    base = [n for n, g in graphs.items() if g.kind == "base"]
    chained = [n for n, g in graphs.items() if g.kind == "chain"]
    backbone = [graphs[n] for n in chains["backbone"]]
    if chained and (
        len(chained) > 1
        or chains["saver"]
        or any(g.outputs != FUSED_OUTPUTS for g in backbone[:-1])
        or graphs[chained[0]].input_shape != backbone[0].input_shape
    ):
        raise BundleError(
            f"{path}: graph {chained[0]!r}: a chain graph needs a backbone of segment graphs that all end at fused "
            "exits, no saver, one chain graph, and the backbone's input shape"
        )
    final = _field(doc, "final_exit", dict, str(path))
    exitconfig = _field(doc, "exitconfig", dict, str(path))
    _field(exitconfig, "configs", list, f"{path}: exitconfig")
    model_input = _field(doc, "input", dict, str(path))
    first = graphs[(chains["saver"] or chains["backbone"])[0]]
    shape = _shape(_field(model_input, "shape", list, f"{path}: input"), f"{path}: input")
    if first.input_shape != shape:
        raise BundleError(
            f"{path}: input shape {list(shape)} differs from graph {first.name!r}'s "
            f"{list(first.input_shape)}"
        )
    return Manifest(
        doc,
        graphs,
        chains,
        exits,
        base[0] if base else None,
        (
            _field(final, "name", str, f"{path}: final_exit"),
            _field(final, "index", int, f"{path}: final_exit"),
        ),
        shape,
        _field(doc, "num_classes", int, str(path)),
        float(_field(doc, "base_macs", (int, float), str(path))),
        chained[0] if chained else None,
    )
