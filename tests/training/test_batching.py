"""What each training step reads: the weighted source mix, per-epoch orders, process slices and exact resume."""

from __future__ import annotations

import pytest

from thinkdiff.errors import ThinkDiffError
from training import batching
from training.batching import StepBatches, epoch_order, source_draws

SIZES = [50, 30]  # two sources, concatenated: indices 0..49 and 50..79
WEIGHTS = [115, 14]  # the reference CLIP mix (LAION : CC/SBU)


def batches(start: int = 0, stop: int = 4000, batch_size: int = 2, rank: int = 0, world: int = 1, seed: int = 42):
    return list(StepBatches(SIZES, WEIGHTS, batch_size, seed, rank, world, start, stop))


def source(batch: list[tuple[int, int]]) -> int:
    (owner,) = {0 if index < SIZES[0] else 1 for _, index in batch}  # a step reads one source only
    return owner


def test_the_mix_ratio_holds_over_thousands_of_steps():
    steps = batches()
    share = sum(source(b) == 0 for b in steps) / len(steps)
    expected = 115 / 129
    assert abs(share - expected) < 3 * (expected * (1 - expected) / len(steps)) ** 0.5  # within 3 sigma (0.015)
    assert [source(b) for b in batches(seed=43)] != [source(b) for b in steps]  # the draw follows the seed


def test_one_source_serves_every_step():
    assert source_draws([3.0], seed=42, steps=5) == [0] * 5
    assert {index for batch in StepBatches([4], [1.0], 2, 42, 0, 1, 0, 6) for _, index in batch} == set(range(4))


def test_each_epoch_of_a_source_visits_its_samples_once():
    steps = batches(stop=600)
    for number, size in enumerate(SIZES):
        offset = sum(SIZES[:number])
        for epoch in (0, 1):
            seen = [i - offset for b in steps if source(b) == number for e, i in b if e == epoch]
            usable = size // 2 * 2
            assert len(seen) == usable and len(set(seen)) == usable and set(seen) <= set(range(size))


def test_resume_continues_the_same_mix_and_order():
    for start in (40, 137):  # source 0 in its second epoch; later
        assert batches(start=start, stop=400) == batches(stop=400)[start:]
    assert [len(StepBatches(SIZES, WEIGHTS, 2, 42, 0, 1, start, 400)) for start in (137, 400, 401)] == [263, 0, 0]


def test_each_epoch_order_is_drawn_once(monkeypatch: pytest.MonkeyPatch):
    """A permutation of a large source (millions of samples) is computed once per epoch, not at every step."""
    calls = []
    monkeypatch.setattr(batching, "epoch_order", lambda *args: calls.append(args) or epoch_order(*args))
    steps = batches(stop=300)
    assert sorted(calls) == sorted({(SIZES[source(b)], 42, source(b), b[0][0]) for b in steps})


def test_processes_split_each_global_batch():
    whole = batches(stop=300, batch_size=6)
    halves = [batches(stop=300, batch_size=3, rank=r, world=2) for r in (0, 1)]
    for step, batch in enumerate(whole):
        assert sorted(halves[0][step] + halves[1][step]) == sorted(batch)


def test_a_source_smaller_than_a_global_batch_is_refused():
    with pytest.raises(ThinkDiffError, match=r"data source\(s\) \[2\]"):
        StepBatches([50, 3], WEIGHTS, 2, 0, 0, 2, 0, 10)
