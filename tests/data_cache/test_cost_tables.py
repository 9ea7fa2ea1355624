"""Cost tables (``data_cache/cost_tables.py``): format, fingerprint, refusals, and coexistence with the cache."""
from __future__ import annotations

import json
import math

import pytest

from data_cache import format as fmt
from data_cache import open_cache, validate_cache
from data_cache.cost_tables import (
    CostTableError,
    TimedItem,
    TimeTable,
    cost_table_path,
    interpolate,
    list_cost_tables,
    profile_grid,
    read_cost_table,
    write_cost_table,
)
from data_cache.schema import split_name_problem
from data_cache.writer import save_cache

from ._helpers import small_cache


def make_table(cache, name: str = "cpu-t1", *, batch_size: int = 8, fingerprint: str | None = None,
               scale: float = 1e-4) -> TimeTable:
    """A table timing every unit of ``cache`` on ``profile_grid(batch_size)`` (time grows with rows)."""
    grid = profile_grid(batch_size)
    t = tuple(scale * (1 + 0.5 * n) for n in grid)
    items = [TimedItem(u.name, "segment" if u.kind == "segment" else u.kind, t, t, t, units=(u.name,))
             for u in cache.units]
    items += [TimedItem(f"step:{e.name}", "step", t, t, t, exit=e.name) for e in cache.exits[:-1]]
    items += [TimedItem("finish", "finish", t, t, t), TimedItem("collect", "collect", t, t, t),
              TimedItem("base", "base", t, t, t)]
    target = {"device": "cpu", "device_name": "test", "threads": 1, "batch_size": batch_size, "runtime": "eager"}
    return TimeTable(name, fingerprint or cache.fingerprint, None, target, {"rounds": 1}, grid, tuple(items))


@pytest.fixture
def disk_cache(tmp_path):
    return save_cache(tmp_path / "cache", small_cache())


def _edit(cache, name: str, edit) -> None:
    path = cost_table_path(cache.path, name)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_grid_is_powers_of_two_and_the_batch_size():
    assert profile_grid(1) == (1,)
    assert profile_grid(64) == (1, 2, 4, 8, 16, 32, 64)
    assert profile_grid(100) == (1, 2, 4, 8, 16, 32, 64, 100)


def test_interpolation_is_linear_through_zero():
    got = interpolate((1, 4), (2.0, 8.0), [0, 1, 2.5, 4])
    assert got.tolist() == [0.0, 2.0, 5.0, 8.0]


def test_tables_round_trip_and_coexist(disk_cache):
    a, b = make_table(disk_cache, "cpu-t1"), make_table(disk_cache, "cpu-t2", batch_size=16)
    for t in (a, b):
        write_cost_table(disk_cache.path, t)
    assert list_cost_tables(disk_cache.path) == ["cpu-t1", "cpu-t2"]
    assert cost_table_path(disk_cache.path, "cpu-t1") == disk_cache.path / "cost_tables" / "cpu-t1.json"
    got = read_cost_table(disk_cache, "cpu-t2", batch_size=16)
    assert got == b
    assert read_cost_table(str(disk_cache.path), "cpu-t1").grid == (1, 2, 4, 8)


def test_a_table_leaves_the_cache_valid_and_its_fingerprint_unchanged(disk_cache):
    before = disk_cache.fingerprint
    write_cost_table(disk_cache.path, make_table(disk_cache))
    assert validate_cache(disk_cache.path) == []
    assert open_cache(disk_cache.path).fingerprint == before


def test_overwriting_the_cache_leaves_its_tables_which_then_no_longer_match(tmp_path, disk_cache):
    write_cost_table(disk_cache.path, make_table(disk_cache))
    new = save_cache(disk_cache.path, small_cache(seed=2), overwrite=True)
    assert (disk_cache.path / "cost_tables" / "cpu-t1.json").is_file()
    with pytest.raises(CostTableError, match="cache.fingerprint: profiled for cache"):
        read_cost_table(new, "cpu-t1")


def test_no_split_may_take_the_tables_folder_name():
    assert "cost tables" in split_name_problem(fmt.COST_TABLES_DIR)


def test_an_existing_table_is_replaced_only_when_asked(disk_cache):
    write_cost_table(disk_cache.path, make_table(disk_cache))
    with pytest.raises(ValueError, match="file exists; pass --overwrite"):
        write_cost_table(disk_cache.path, make_table(disk_cache))
    write_cost_table(disk_cache.path, make_table(disk_cache, scale=2e-4), overwrite=True)
    assert read_cost_table(disk_cache, "cpu-t1").items[0].median_s[0] == pytest.approx(3e-4)


def test_missing_table_names_the_known_ones(disk_cache):
    write_cost_table(disk_cache.path, make_table(disk_cache))
    with pytest.raises(CostTableError, match=r"no cost table 'gpu' \(tables: cpu-t1\); measure one with "
                                             r"python -m exits.profile"):
        read_cost_table(disk_cache, "gpu")


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", ""])
def test_bad_table_names_are_refused(disk_cache, name):
    with pytest.raises(CostTableError, match="is not a cost table name"):
        cost_table_path(disk_cache.path, name)


def test_another_caches_table_is_refused(disk_cache):
    write_cost_table(disk_cache.path, make_table(disk_cache, fingerprint="sha256:" + "0" * 64))
    with pytest.raises(CostTableError, match=r"cost_tables/cpu-t1.json: cache.fingerprint: profiled for cache "
                                             r"sha256:000000000000\.\.\., not this one"):
        read_cost_table(disk_cache, "cpu-t1")


def test_another_backbones_table_is_refused(tmp_path):
    mem = small_cache()
    mem.meta.provenance["model"] = {"fingerprint": "sha256:" + "1" * 64}
    cache = save_cache(tmp_path / "c", mem)
    table = make_table(cache)
    write_cost_table(cache.path, TimeTable(table.name, table.cache_fingerprint, "sha256:" + "2" * 64, table.target,
                                           table.measurement, table.grid, table.items))
    with pytest.raises(CostTableError, match="model.fingerprint: profiled on backbone sha256:222"):
        read_cost_table(cache, "cpu-t1")


def test_a_grid_short_of_the_batch_size_is_refused(disk_cache):
    write_cost_table(disk_cache.path, make_table(disk_cache, batch_size=8))
    read_cost_table(disk_cache, "cpu-t1", batch_size=8)
    with pytest.raises(CostTableError, match="grid: reaches 8 rows, batch size 64 asked; profile with --batch-size 64"):
        read_cost_table(disk_cache, "cpu-t1", batch_size=64)


@pytest.mark.parametrize("bad", [0.0, -1e-3, math.inf, math.nan, "1e-3", True])
def test_non_positive_or_non_finite_timings_are_refused(disk_cache, bad):
    write_cost_table(disk_cache.path, make_table(disk_cache))

    def edit(doc):
        doc["items"][2]["median_s"][1] = bad
    _edit(disk_cache, "cpu-t1", edit)
    name = make_table(disk_cache).items[2].name
    with pytest.raises(CostTableError, match=f"items.{name}.median_s: timings must be positive and finite"):
        read_cost_table(disk_cache, "cpu-t1")


def _path(d: dict, name: str) -> dict:
    """A ``path`` item (a bundle's batch-1 graph, one row leaving at the first step's exit) like the table's steps."""
    step = next(i for i in d["items"] if i["kind"] == "step")
    return dict(step, name=name, kind="path")


def _paths(d: dict, edits: dict) -> list[dict]:
    """Paths ``p1`` (at the first step's exit) and ``p2`` (at the second's), each timed after both; ``edits``: a
    path's ``after`` map instead, or a function of the two exits' names giving it."""
    steps = [i for i in d["items"] if i["kind"] == "step"][:2]
    exits = [s["exit"] for s in steps]
    out = []
    for name, step in zip(("p1", "p2"), steps, strict=True):
        after = edits.get(name, {e: 1e-3 for e in exits})
        out.append(dict(step, name=name, kind="path", after=after(*exits) if callable(after) else after))
    return out


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="costtable/9"), "format: 'costtable/9' is not 'costtable/1'"),
    (lambda d: d["cache"].pop("fingerprint"), "cache.fingerprint: missing"),
    (lambda d: d.update(grid=[1, 4, 2, 8]), "grid: must be increasing"),
    # a batch size no profile reaches: the model's arrays over 0..B rows would not fit (a search hung on 10**9)
    (lambda d: d.update(grid=[1, 2, 4, 10 ** 9]) or d["target"].update(batch_size=10 ** 9),
     "grid: must be increasing row counts from 1 to 65536"),
    (lambda d: d["target"].update(batch_size=16), "target.batch_size: 16, but the grid ends at 8"),
    (lambda d: d["target"].update(runtime="tensorrt"), "target.runtime: 'tensorrt' is not one of"),
    (lambda d: d["items"][0]["median_s"].pop(), r"median_s: must hold one time per grid point \(4\)"),
    (lambda d: d["items"][0].update(units=["nope"]), r"units: 'nope' is not a unit of this cache"),
    (lambda d: d.update(items=[i for i in d["items"] if i["kind"] != "base"]), "no item of kind 'base'"),
    (lambda d: d["items"].append(dict(d["items"][0])), "names must be unique"),
    # a copy under another file name, or a hand-edited name: an export would record the wrong table
    (lambda d: d.update(name="other"), r"name: 'other', but the file is cost_tables/cpu-t1.json"),
    (lambda d: d.pop("name"), "name: None is not a cost table name"),
    (lambda d: d["model"].update(fingerprint=5), "model.fingerprint: must be 'sha256:...' or null"),
    (lambda d: d.update(measurement=None), "measurement: must be an object"),
    (lambda d: d["target"].update(threads="two"), r"target.threads: must be an integer >= 1 or null \(got 'two'\)"),
    (lambda d: d["target"].update(threads=0), r"target.threads: must be an integer >= 1 or null \(got 0\)"),
    (lambda d: d["target"].pop("device"), "target.device: must be a non-empty string"),
    # finite but absurd: sums and ratios overflow downstream (a search printed a 3-line numpy error)
    (lambda d: d["items"][0]["median_s"].__setitem__(0, 1e308), "timings must be positive and finite, from 1 ns"),
    (lambda d: d["items"][0]["min_s"].__setitem__(0, 1e-320), "timings must be positive and finite, from 1 ns"),
    (lambda d: d["items"][0].update(min_s=[2 * t for t in d["items"][0]["median_s"]]),
     r"items.\S+: min_s <= median_s <= max_s at every grid point"),
    # one time per thing: a second base, finish or collect was silently ignored, a unit timed twice counted twice
    (lambda d: d["items"].append(dict(d["items"][-1], name="base2")), "items.base2: a second item of kind 'base'"),
    (lambda d: d["items"].append(dict(d["items"][0], name="again")), r"items.again.units: unit '\S+' is timed by "
                                                                     r"item '\S+' already"),
    (lambda d: d["items"].append(dict(next(i for i in d["items"] if i["kind"] == "step"), name="step2")),
     r"items.step2.exit: exit '\S+' has a step already"),
    (lambda d: next(i for i in d["items"] if i["kind"] == "step").update(exit="nope"),
     r"items.\S+.exit: 'nope' is not an early exit of this cache"),
    # a bundle's batch-1 graph: one path per exit, each naming an exit of the cache, no units
    (lambda d: d["items"].extend([_path(d, "p1"), _path(d, "p2")]), r"items.p2.exit: exit '\S+' has a path already"),
    (lambda d: d["items"].append(dict(_path(d, "p1"), exit="nope")), r"items.p1.exit: 'nope' is not an exit of this"),
    (lambda d: d["items"].append(dict(_path(d, "p1"), exit=None)), "a step or a path names its exit"),
    # a path timed after the other paths: only a path, every path after every path, positive finite seconds
    (lambda d: d["items"][0].update(after={"x": 1e-3}), r"items.\S+.after: only a path is timed after other paths"),
    (lambda d: d["items"].extend(_paths(d, {"p2": None})), r"items.p2.after: missing, but item 'p1' has one"),
    (lambda d: d["items"].extend(_paths(d, {"p2": {"nope": 1e-3}})), r"items.p2.after: must name exactly the "
                                                                      r"paths' exits .* \('nope' is not one\)"),
    (lambda d: d["items"].extend(_paths(d, {"p2": lambda a, b: {a: 1e-3}})),
     r"items.p2.after: must name exactly the paths' exits .* \('\S+' is missing\)"),
    (lambda d: d["items"].extend(_paths(d, {"p1": "fast"})), "items.p1.after: must map each path's exit to seconds"),
    (lambda d: d["items"].extend(_paths(d, {"p1": lambda a, b: {a: 1e-3, b: -1.0}})),
     r"items.p1.after.\S+: timings must be positive"),
])
def test_malformed_tables_are_refused_in_one_line(disk_cache, edit, match):
    write_cost_table(disk_cache.path, make_table(disk_cache))
    _edit(disk_cache, "cpu-t1", edit)
    with pytest.raises(CostTableError, match=match) as info:
        read_cost_table(disk_cache, "cpu-t1")
    assert "\n" not in str(info.value)


def test_unreadable_json_is_one_line(disk_cache):
    write_cost_table(disk_cache.path, make_table(disk_cache))
    cost_table_path(disk_cache.path, "cpu-t1").write_text("{not json")
    with pytest.raises(CostTableError, match="cost_tables/cpu-t1.json: not readable JSON"):
        read_cost_table(disk_cache, "cpu-t1")


def test_a_path_item_beside_its_exits_step_is_read(disk_cache):
    """A bundle profiled with its batch-1 graph times a path per exit besides the steps: both are read."""
    write_cost_table(disk_cache.path, make_table(disk_cache))
    _edit(disk_cache, "cpu-t1", lambda d: d["items"].append(_path(d, "path:x")))
    table = read_cost_table(disk_cache, "cpu-t1")
    (path,) = table.of_kind("path")
    assert path.exit == next(i for i in table.items if i.kind == "step").exit and path.units == ()


def test_paths_timed_after_each_other_round_trip(disk_cache):
    """A bundle's batch-1 paths with their times after every path are read back as written, and the fingerprint
    covers them; a table without them writes no ``after`` field."""
    write_cost_table(disk_cache.path, make_table(disk_cache))
    plain_doc = json.loads(cost_table_path(disk_cache.path, "cpu-t1").read_text())
    assert all("after" not in i for i in plain_doc["items"])
    _edit(disk_cache, "cpu-t1", lambda d: d["items"].extend(_paths(d, {})))
    table = read_cost_table(disk_cache, "cpu-t1")
    p1, p2 = table.of_kind("path")
    assert p1.after == {p1.exit: 1e-3, p2.exit: 1e-3} and p2.after == p1.after
    faster = TimeTable(**{**table.__dict__, "items": tuple(
        TimedItem(**{**it.__dict__, "after": {k: v / 2 for k, v in it.after.items()}}) if it.after else it
        for it in table.items)})
    assert faster.fingerprint != table.fingerprint
    write_cost_table(disk_cache.path, faster, overwrite=True)
    assert read_cost_table(disk_cache, "cpu-t1").of_kind("path")[0].after[p1.exit] == 5e-4
