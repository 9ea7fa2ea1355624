"""contract.schedule: the one compaction loop, plain and re-batching, on a numpy backend whose stages add to a
running sum; results in input order, the same decisions either way, full batches when re-batching."""
from __future__ import annotations

import numpy as np
import pytest

from contract import get_rule
from contract.schedule import Stage, route

RULE = get_rule("max_prob")


def _score(acc, k):
    return ((acc * 7919 + 31 * k) % 101) / 101


class Sums:
    """State: ``(n, 2)`` = (input value, running sum); stage ``k`` adds ``k + 1`` and scores a hash of the sum;
    a restarting stage starts again from the input value. Records the batch sizes each stage ran on."""

    def __init__(self) -> None:
        self.sizes: dict[int, list[int]] = {}
        self.handed: dict[int, list[np.ndarray]] = {}

    def advance(self, stage, state, partner):
        k = stage.units
        self.sizes.setdefault(k, []).append(len(state))
        if partner is not None:  # what the stage before handed on: its rows' input value and its stage number
            self.handed.setdefault(k, []).append(np.stack([partner[0][:, 0], state[:, 0], partner[1][:, 0]], 1))
        out = state.copy()
        out[:, 1] += k + 1
        s = _score(out[:, 1], k).astype(np.float32)
        hand = None
        if stage.hand_on:
            n = len(out)
            ids = np.repeat(out[:, :1].astype(np.int64), stage.hand_on, 1)
            hand = (ids, np.full((n, stage.hand_on), k, np.float32))
        return out, s, out[:, 0].astype(np.int64), hand

    def take(self, stage, state, rows):
        return state[rows]

    def concat(self, stage, states):
        return np.concatenate(states)


def _stages(restart_at: int | None = None) -> list[Stage]:
    out = [Stage(k, 0.6, RULE, 10.0 * (k + 1), units=k) for k in range(4)]
    out.append(Stage(9, None, RULE, 1.0, units=4))
    if restart_at is not None:
        out[restart_at] = Stage(restart_at, 0.6, RULE, out[restart_at].cost, True, restart_at)
    return out


def _batches(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out, start = [], 0
    for n in sizes:
        v = np.arange(start, start + n, dtype=np.float64)
        out.append(np.stack([v, rng.integers(0, 50, n).astype(np.float64)], 1))
        start += n
    return out


def _reference(stages, x):
    """Row by row, no batching at all."""
    exits, costs = [], []
    for row in x:
        acc, spent = row[1], 0.0
        for st in stages:
            acc = (row[1] if st.restart else acc) + st.units + 1
            spent += st.cost
            if st.threshold is None or np.float32(_score(acc, st.units)) > st.threshold:
                exits.append(st.exit)
                costs.append(spent)
                break
    return np.array(exits), np.array(costs)


@pytest.mark.parametrize("restart_at", [None, 2])
@pytest.mark.parametrize("rebatch", [False, True])
def test_results_in_input_order_as_row_by_row(rebatch, restart_at):
    stages = _stages(restart_at)
    batches = _batches([16, 5, 16, 16, 3, 16, 1])
    got = route(stages, Sums(), batches, rebatch=rebatch, batch_size=16 if rebatch else None)
    x = np.concatenate(batches)
    exits, costs = _reference(stages, x)
    np.testing.assert_array_equal(got.exits, exits)
    np.testing.assert_array_equal(got.costs, costs)
    np.testing.assert_array_equal(got.predictions, np.arange(len(x)))  # each row's own value, in input order
    assert len(set(got.exits.tolist())) >= 3


def test_rebatching_runs_full_batches_except_the_last_of_each_stage():
    backend = Sums()
    route(_stages(), backend, _batches([16] * 12), rebatch=True)
    for k, sizes in backend.sizes.items():
        assert all(n == 16 for n in sizes[:-1]), (k, sizes)
        assert 0 < sizes[-1] <= 16
    plain = Sums()
    route(_stages(), plain, _batches([16] * 12))
    assert all(sum(plain.sizes[k]) == sum(backend.sizes[k]) for k in plain.sizes)
    assert len(backend.sizes[4]) < len(plain.sizes[4])  # fewer, fuller batches at the last stage


def test_empty_input_and_empty_batches():
    assert len(route(_stages(), Sums(), []).exits) == 0
    got = route(_stages(), Sums(), [np.zeros((0, 2))] + _batches([4]), rebatch=True)
    assert len(got.exits) == 4


@pytest.mark.parametrize("restart_at", [None, 2])
@pytest.mark.parametrize("rebatch", [False, True])
def test_what_a_stage_hands_on_follows_its_rows_to_the_next_stage_only(rebatch, restart_at):
    """A partner's top-k handed on (``Stage.hand_on``) reaches the next stage's ``advance`` with the same rows as its
    state, through compaction, re-batching and a restart; stages after one that hands nothing get nothing."""
    from dataclasses import replace

    stages = _stages(restart_at)
    stages[0], stages[2] = replace(stages[0], hand_on=2), replace(stages[2], hand_on=1)
    backend = Sums()
    got = route(stages, backend, _batches([16, 5, 16, 16, 3, 16, 1]), rebatch=rebatch,
                batch_size=16 if rebatch else None)
    assert set(backend.handed) == {1, 3}
    for k, parts in backend.handed.items():
        rows = np.concatenate(parts)
        np.testing.assert_array_equal(rows[:, 0], rows[:, 1])   # each row got its own payload
        assert (rows[:, 2] == k - 1).all()
        assert len(rows) == sum(backend.sizes[k]) > 0   # every row the stage ran on
    exits, _ = _reference(stages, np.concatenate(_batches([16, 5, 16, 16, 3, 16, 1])))
    np.testing.assert_array_equal(got.exits, exits)   # carrying changes no decision


@pytest.mark.parametrize("restart_at", [None, 2])
def test_one_row_batches_run_straight_through_with_the_same_decisions(restart_at):
    """Batch-1 serving (plain compaction, one row a batch) skips the loop's bookkeeping: the same exits, costs,
    predictions and scores as the rows batched together, and what a stage hands on still reaches the next one."""
    from dataclasses import replace

    stages = _stages(restart_at)
    stages[0] = replace(stages[0], hand_on=2)
    x = np.concatenate(_batches([40]))
    one, together = Sums(), Sums()
    got = route(stages, one, [x[i:i + 1] for i in range(len(x))])
    ref = route(stages, together, [x])
    for f in ("exits", "costs", "predictions", "scores"):
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f))
    assert all(n == 1 for sizes in one.sizes.values() for n in sizes)
    assert sum(one.sizes[1]) == sum(together.sizes[1]) > 0
    rows = np.concatenate(one.handed[1])
    np.testing.assert_array_equal(rows[:, 0], rows[:, 1])
    assert len(set(got.exits.tolist())) >= 3


@pytest.mark.parametrize("restart_at", [None, 2])
def test_route_one_decides_as_the_loop(restart_at):
    """``route_one`` (batch-1 serving without the loop's set-up) gives each row what ``route`` gives it."""
    from contract.schedule import route_one

    stages = _stages(restart_at)
    x = np.concatenate(_batches([30]))
    ref = route(stages, Sums(), [x])
    for i in range(len(x)):
        got = route_one(stages, Sums(), x[i:i + 1])
        for f in ("exits", "costs", "predictions", "scores"):
            assert getattr(got, f)[0] == getattr(ref, f)[i]
