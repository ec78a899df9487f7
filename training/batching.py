"""Which samples each training step reads, as a pure function of the step: the data position is the step counter.

Step ``k`` draws its source from a generator seeded by the run seed (the same draw in every process), with probability
proportional to the sources' weights (the reference's MultiIterLoader: LAION 115 : CC/SBU 14 for CLIP). A source's
batches walk seeded per-epoch permutations of its samples; each global batch is split between the processes. Because
the draws and permutations follow from the seed alone, a run resumed at step ``k`` reads exactly what an uninterrupted
run would have read from step ``k`` on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from thinkdiff.errors import ThinkDiffError

SampleRef = tuple[int, int]  # (epoch of the sample's source, index in the concatenated dataset)


def source_draws(weights: Sequence[float], seed: int, steps: int) -> list[int]:
    """The source of each of the first ``steps`` steps."""
    if len(weights) == 1:
        return [0] * steps
    rng = random.Random(f"{seed}:sources")
    return rng.choices(range(len(weights)), weights=weights, k=steps)


def epoch_order(size: int, seed: int, source: int, epoch: int) -> list[int]:
    """A source's sample order in one epoch."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch + source * 1_000_003)).tolist()


class StepBatches(Sampler[list[SampleRef]]):
    """This process's batches for steps ``start`` .. ``stop - 1``."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int, rank: int, world: int,
                 start: int, stop: int) -> None:
        self.sizes, self.weights, self.batch_size, self.seed = list(sizes), list(weights), batch_size, seed
        self.rank, self.world, self.start, self.stop = rank, world, start, stop
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.global_batch = batch_size * world
        self.batches_per_epoch = [size // self.global_batch for size in self.sizes]
        small = [number for number, count in enumerate(self.batches_per_epoch, 1) if count == 0]
        if small:
            raise ThinkDiffError(f"data source(s) {small} have fewer samples than one global batch ({batch_size} x {world} "
                                 f"processes; sizes {self.sizes}): lower [train] batch_size or add data")

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[SampleRef]]:
        seen = [0] * len(self.sizes)  # batches each source has served so far
        orders: dict[int, tuple[int, list[int]]] = {}  # source -> (epoch, order)
        for step, source in enumerate(source_draws(self.weights, self.seed, self.stop)):
            epoch, batch = divmod(seen[source], self.batches_per_epoch[source])
            seen[source] += 1
            if step < self.start:
                continue
            if orders.get(source, (-1,))[0] != epoch:
                orders[source] = (epoch, epoch_order(self.sizes[source], self.seed, source, epoch))
            chunk = orders[source][1][batch * self.global_batch:(batch + 1) * self.global_batch]
            yield [(epoch, self.offsets[source] + index) for index in chunk[self.rank::self.world]]
