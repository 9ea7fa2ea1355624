"""Mutations of a JSON document (an ``exitconfig/1`` export, an ``exitbundle/1`` manifest), registered by kind.

Each kind takes the parsed document and hypothesis' ``draw`` and returns the mutated document, or the text to
write in its place (``"truncated"``). Paths into the document are tuples of keys and indices.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

__all__ = ["DOC_KINDS", "DocKind", "leaves"]

Doc = Any
NAMED = {"score", "objective", "format", "name", "head", "bound", "kind", "exporter", "file", "chain", "split",
         "method", "id", "interpolation", "crop_mode", "dtype"}


@dataclass(frozen=True)
class DocKind:
    name: str
    apply: Callable[[Doc, Callable], Doc | str]


def leaves(doc: Doc, path: tuple = ()) -> list[tuple]:
    """Every path to a value that is not a dict or a list (and to empty ones)."""
    if isinstance(doc, dict) and doc:
        return [p for k, v in doc.items() for p in leaves(v, path + (k,))]
    if isinstance(doc, list) and doc:
        return [p for i, v in enumerate(doc) for p in leaves(v, path + (i,))]
    return [path]


def _fields(doc: Doc, path: tuple = ()) -> list[tuple]:
    """Every path to a dict key (the fields one could remove)."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += [path + (k,)] + _fields(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _fields(v, path + (i,))
    return out


def _parent(doc: Doc, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _get(doc: Doc, path: tuple) -> Any:
    return _parent(doc, path)[path[-1]] if path else doc


DOC_KINDS: dict[str, DocKind] = {}


def kind(name: str):
    def register(fn):
        DOC_KINDS[name] = DocKind(name, fn)
        return fn
    return register


@kind("document: a field removed")
def _removed(doc, draw):
    path = draw(st.sampled_from(_fields(doc)))
    del _parent(doc, path)[path[-1]]
    return doc


OTHER_TYPES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=4),
                        st.lists(st.integers(), max_size=2), st.just({"a": 1}))


@kind("document: a field of another type")
def _retyped(doc, draw):
    path = draw(st.sampled_from([p for p in leaves(doc) if p]))
    old = _get(doc, path)
    new = draw(OTHER_TYPES.filter(lambda v: type(v) is not type(old)))
    _parent(doc, path)[path[-1]] = new
    return doc


def _numbers(doc: Doc) -> list[tuple]:
    return [p for p in leaves(doc)
            if p and isinstance(_get(doc, p), (int, float)) and not isinstance(_get(doc, p), bool)]


@kind("document: a number out of range")
def _out_of_range(doc, draw):
    path = draw(st.sampled_from(_numbers(doc)))
    _parent(doc, path)[path[-1]] = draw(st.sampled_from([-1, -0.5, 1.5, 2, 1e308, -1e308, math.nan, math.inf,
                                                         -math.inf, 10 ** 30, 0]))
    return doc


@kind("document: an unknown name")
def _unknown_name(doc, draw):
    paths = [p for p in leaves(doc) if p and isinstance(p[-1], str) and p[-1] in NAMED]
    path = draw(st.sampled_from(paths))
    _parent(doc, path)[path[-1]] = draw(st.sampled_from(["no_such_name", "max_prob ", "MAX_PROB", "", "../x",
                                                         "\u540d\u524d", "exitconfig/2", "a\nb"]))
    return doc


@kind("document: forged numbers (in range)")
def _forged(doc, draw):
    path = draw(st.sampled_from(_numbers(doc)))
    old = _get(doc, path)
    if isinstance(old, int):
        new = old + draw(st.sampled_from([1, -1, 2]))
    else:
        new = draw(st.sampled_from([old * 0.5, 1 - old if 0 <= old <= 1 else old * 2, old + 1e-6, 0.0]))
    _parent(doc, path)[path[-1]] = new
    return doc


@kind("document: a forged fingerprint")
def _fingerprint(doc, draw):
    paths = [p for p in leaves(doc) if isinstance(_get(doc, p), str) and _get(doc, p).startswith("sha256:")]
    path = draw(st.sampled_from(paths))
    old = _get(doc, path)
    _parent(doc, path)[path[-1]] = draw(st.sampled_from([old[:-1] + ("0" if old[-1] != "0" else "1"), "sha256:",
                                                         old.upper(), old[7:]]))
    return doc


def _configs(doc: Doc) -> list:
    return doc["exitconfig"]["configs"] if "exitconfig" in doc else doc["configs"]


@kind("document: extra configurations")
def _extra(doc, draw):
    configs = _configs(doc)
    how = draw(st.sampled_from(["copies", "same id", "ghost exit", "many"]))
    entry = copy.deepcopy(draw(st.sampled_from(configs)))
    if how == "copies":
        entry["id"] = f"{entry.get('id')}-copy"
    elif how == "ghost exit":
        entry["id"] = "ghost"
        entry.setdefault("exits", []).append({"name": "ghost/linear", "position": 99, "head": "linear",
                                              "score": "max_prob", "threshold": 0.5})
    elif how == "many":
        configs.extend(dict(copy.deepcopy(entry), id=f"many-{i}") for i in range(200))
        return doc
    configs.append(entry)
    return doc


@kind("document: a list emptied")
def _emptied(doc, draw):
    paths = [p for p in _fields(doc) if isinstance(_get(doc, p), list) and _get(doc, p)]
    path = draw(st.sampled_from(paths))
    _parent(doc, path)[path[-1]] = []
    return doc


@kind("document: an unknown field added")
def _added(doc, draw):
    dicts = [()] + [p for p in _fields(doc) if isinstance(_get(doc, p), dict)]
    target = _get(doc, draw(st.sampled_from(dicts)))
    key = draw(st.text(min_size=1, max_size=6))
    if key not in target:
        target[key] = draw(OTHER_TYPES)
    return doc


@kind("document: truncated, not JSON")
def _truncated(doc, draw):
    text = json.dumps(doc)
    return text[:draw(st.integers(0, len(text) - 1))]
