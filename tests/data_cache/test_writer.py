"""data_cache.writer: round trip, kill and resume, refusals, several ranks in several processes."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_cache import (
    CacheExistsError,
    CacheIncompleteError,
    CacheInputError,
    create_cache,
    open_cache,
    save_cache,
    validate_cache,
)
from data_cache import format as fmt
from data_cache.memory import InMemoryCache

from ._helpers import rows_of, small_cache


def _assert_same_content(a, b):
    assert a.meta.exits == b.meta.exits and a.meta.units == b.meta.units
    for s in a.splits():
        for get in ("labels", "sample_index", "topk_ids", "topk_probs"):
            np.testing.assert_array_equal(getattr(a, get)(s), getattr(b, get)(s))


def test_round_trip_keeps_content_and_fingerprint(tmp_path):
    mem = small_cache()
    disk = save_cache(tmp_path / "c", mem, chunk=37)
    assert disk.fingerprint == mem.fingerprint
    assert json.loads((tmp_path / "c" / fmt.MANIFEST).read_text())["fingerprint"] == mem.fingerprint
    _assert_same_content(mem, disk)
    assert not (tmp_path / "c" / fmt.PARTS_DIR).exists()
    assert not disk.has_logits("search")


def test_round_trip_with_logits(tmp_path):
    mem = small_cache()
    rng = np.random.default_rng(0)
    arrays = {s: {f: mem._array(s, f) for f in fmt.SPLIT_FILES} for s in mem.splits()}
    for s in arrays:
        arrays[s][fmt.LOGITS] = rng.normal(size=(mem.meta.n_exits, mem.n_samples(s), mem.n_classes))
    mem = InMemoryCache(mem.meta, arrays)
    disk = save_cache(tmp_path / "c", mem, chunk=50)
    assert disk.fingerprint == mem.fingerprint
    np.testing.assert_array_equal(disk.logits("holdout"), mem.logits("holdout"))
    assert disk.logits("holdout").dtype == np.float16


def _partial(path, mem, *, stop: int):
    """Write rows [0, stop) of every split and then 'die' (no finalize)."""
    w = create_cache(path, mem.meta)
    for s in mem.splits():
        for a in range(0, stop, 20):
            w.write(s, a, **rows_of(mem, s, a, min(stop, a + 20)))
    return w


def test_killed_writer_never_loads_and_resumes_to_same_fingerprint(tmp_path):
    mem = small_cache()
    reference = save_cache(tmp_path / "ref", mem)
    path = tmp_path / "c"
    _partial(path, mem, stop=40)
    (path / fmt.PARTS_DIR / "search" / ".0000000040_0000000060.npz.tmp999").write_bytes(b"half a shard")
    with pytest.raises(CacheIncompleteError, match="half-written"):
        open_cache(path)
    assert "half-written" in validate_cache(path)[0]
    with pytest.raises(CacheIncompleteError, match="--resume"):
        create_cache(path, mem.meta)
    w = create_cache(path, mem.meta, resume=True)
    for s in mem.splits():
        done = w.done_rows(s)
        assert done[:40].all() and not done[40:].any()
        todo = np.flatnonzero(~done)
        w.write(s, int(todo[0]), **rows_of(mem, s, int(todo[0]), int(todo[-1]) + 1))
    cache = w.finalize()
    assert cache.fingerprint == reference.fingerprint == mem.fingerprint
    assert not (path / fmt.PARTS_DIR).exists()


def test_finalize_refuses_missing_rows(tmp_path):
    mem = small_cache()
    w = _partial(tmp_path / "c", mem, stop=40)
    with pytest.raises(CacheIncompleteError, match=r"search: 20 of 60 rows not written yet \(first missing row 40\)"):
        w.finalize()
    assert not (tmp_path / "c" / fmt.MANIFEST).exists()


def test_resume_with_other_meta_is_refused(tmp_path):
    _partial(tmp_path / "c", small_cache(), stop=20)
    other = small_cache(n_head_types=1)
    with pytest.raises(CacheInputError, match="other exits"):
        create_cache(tmp_path / "c", other.meta, resume=True)


def test_overwrite_of_half_written_cache_starts_again(tmp_path):
    mem = small_cache()
    _partial(tmp_path / "c", mem, stop=40)
    w = create_cache(tmp_path / "c", mem.meta, overwrite=True)
    assert not w.done_rows("search").any()


def test_refuses_to_overwrite_a_complete_cache(tmp_path):
    mem = small_cache()
    first = save_cache(tmp_path / "c", mem)
    before = {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    with pytest.raises(CacheExistsError, match="already holds a complete cache"):
        create_cache(tmp_path / "c", small_cache(seed=2).meta)
    with pytest.raises(CacheExistsError):
        save_cache(tmp_path / "c", small_cache(seed=2))
    assert {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()} == before
    assert open_cache(tmp_path / "c").fingerprint == first.fingerprint
    replaced = save_cache(tmp_path / "c", small_cache(seed=2), overwrite=True)
    assert replaced.fingerprint == small_cache(seed=2).fingerprint != first.fingerprint


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(CacheExistsError, match="not empty"):
        create_cache(tmp_path / "c", small_cache().meta)
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "c" / fmt.PARTS_DIR).exists()


def test_refuses_a_file_path(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CacheExistsError, match="not a folder"):
        create_cache(tmp_path / "f", small_cache().meta)


@pytest.mark.parametrize("field, bad, match", [
    ("labels", np.zeros(3), r"first axis \(rows\); got labels \(3,\), sample_index \(10,\)"),
    ("topk_probs", np.zeros((10, 8, 4)), r"topk_probs: shape \(10, 8, 4\), expected \(10, 8, 5\)"),
])
def test_write_checks_shapes(tmp_path, field, bad, match):
    mem = small_cache()
    w = create_cache(tmp_path / "c", mem.meta)
    rows = rows_of(mem, "search", 0, 10)
    rows[field] = bad
    with pytest.raises(CacheInputError, match=match):
        w.write("search", 0, **rows)


def test_write_checks_split_and_range(tmp_path):
    mem = small_cache()
    w = create_cache(tmp_path / "c", mem.meta)
    with pytest.raises(CacheInputError, match="split 'train' is not declared"):
        w.write("train", 0, **rows_of(mem, "search", 0, 10))
    with pytest.raises(CacheInputError, match=r"rows \[55, 65\) outside \[0, 60\)"):
        w.write("search", 55, **rows_of(mem, "search", 0, 10))


@pytest.mark.parametrize("rank, world_size", [(2, 2), (-1, 1), (0, 0)])
def test_rank_must_be_in_range(tmp_path, rank, world_size):
    with pytest.raises(CacheInputError, match="rank must be in"):
        create_cache(tmp_path / "c", small_cache().meta, rank=rank, world_size=world_size)


def test_rank_without_rank_zero_times_out(tmp_path):
    with pytest.raises(CacheIncompleteError, match="rank 1: rank 0 did not start"):
        create_cache(tmp_path / "c", small_cache().meta, rank=1, world_size=2, join_timeout_s=0.1)


def test_rank_with_other_meta_is_refused(tmp_path):
    create_cache(tmp_path / "c", small_cache().meta, world_size=2)
    with pytest.raises(CacheInputError, match="rank 1: rank 0 started this cache with other"):
        create_cache(tmp_path / "c", small_cache(n_head_types=1).meta, rank=1, world_size=2)


def _rank_main(path, rank, world_size, barrier):
    mem = small_cache()
    w = create_cache(path, mem.meta, rank=rank, world_size=world_size)
    for s in mem.splits():
        n = mem.n_samples(s)
        for a in range(rank * 10, n, 10 * world_size):  # interleaved, disjoint blocks of 10 rows
            w.write(s, a, **rows_of(mem, s, a, min(n, a + 10)))
    barrier.wait()
    if rank == 0:
        w.finalize()


def test_two_ranks_in_two_processes_make_one_cache(tmp_path):
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_rank_main, args=(tmp_path / "c", r, 2, barrier)) for r in (1, 0)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    single = save_cache(tmp_path / "single", small_cache())
    cache = open_cache(tmp_path / "c")
    assert cache.fingerprint == single.fingerprint
    _assert_same_content(cache, single)


def test_resume_with_other_unit_costs_is_refused_but_latency_may_change(tmp_path):
    mem = small_cache()
    _partial(tmp_path / "c", mem, stop=20)
    units = list(mem.meta.units)
    units[0] = dataclasses.replace(units[0], latency_s=0.5)
    create_cache(tmp_path / "c", dataclasses.replace(mem.meta, units=tuple(units)), resume=True)
    units[0] = dataclasses.replace(units[0], macs=units[0].macs + 1)
    with pytest.raises(CacheInputError, match="unit costs"):
        create_cache(tmp_path / "c", dataclasses.replace(mem.meta, units=tuple(units)), resume=True)


def test_resume_of_a_complete_cache_says_nothing_to_resume(tmp_path):
    save_cache(tmp_path / "c", small_cache())
    with pytest.raises(CacheExistsError, match="nothing to resume"):
        create_cache(tmp_path / "c", small_cache().meta, resume=True)


def test_resume_without_the_parts_record_says_it_cannot_resume(tmp_path):
    """A writer killed before ``.parts/meta.json`` was written: --resume is refused with a line that does not
    tell the user to pass --resume; --overwrite starts again (regression: the line said "resume it (--resume)")."""
    from data_cache.writer import check_cache_target

    mem = small_cache()
    _partial(tmp_path / "c", mem, stop=20)
    (tmp_path / "c" / fmt.PARTS_DIR / "meta.json").unlink()
    for refuse in (lambda: create_cache(tmp_path / "c", mem.meta, resume=True),
                   lambda: check_cache_target(tmp_path / "c", overwrite=False, resume=True)):
        with pytest.raises(CacheIncompleteError, match=r"cannot be resumed \(\.parts/meta\.json is missing") as exc:
            refuse()
        assert "(--resume)" not in str(exc.value)
    w = create_cache(tmp_path / "c", mem.meta, overwrite=True)
    assert not w.done_rows("search").any()


def test_finalize_twice_and_write_after_finalize(tmp_path):
    mem = small_cache()
    w = create_cache(tmp_path / "c", mem.meta)
    for s in mem.splits():
        w.write(s, 0, **rows_of(mem, s, 0, mem.n_samples(s)))
    first = w.finalize()
    assert w.finalize().fingerprint == first.fingerprint
    with pytest.raises(CacheIncompleteError, match=r"\.parts/search: missing: the cache was finalised"):
        w.write("search", 0, **rows_of(mem, "search", 0, 5))


_MEM = small_cache()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 59), max_size=6, unique=True), seed=st.integers(0, 1000))
def test_any_shard_layout_and_order_gives_the_same_cache(tmp_path_factory, cuts, seed):
    path = tmp_path_factory.mktemp("c") / "c"
    w = create_cache(path, _MEM.meta)
    rng = np.random.default_rng(seed)
    for s in _MEM.splits():
        edges = [0] + sorted(cuts) + [60]
        for i in rng.permutation(len(edges) - 1):
            w.write(s, edges[i], **rows_of(_MEM, s, edges[i], edges[i + 1]))
    assert w.finalize().fingerprint == _MEM.fingerprint
