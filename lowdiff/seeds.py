"""Seed lists as ranges, never materialised: `--seeds 0-9999999999` costs a few integers.

Image i of a sample is generated from its own seed only (lowdiff/diffusion/cascade.py,
`PerImageGenerator`), so any share of a seed list can be made anywhere, in any batch, by any
process, and gives the same images.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from .errors import ConfigError

MAX_SEED = 2 ** 63 - 1       # a torch.Generator seed; every seed up to it gives its own image


def check_seed(seed: int, where: str = "seed") -> int:
    """`seed` when 0 <= seed <= MAX_SEED; a ConfigError otherwise (a larger seed would wrap onto another's image)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{where} {seed}: seeds must be in 0..{MAX_SEED} (2^63 - 1); larger ones would repeat "
                          "the images of smaller seeds")
    return seed


def derived_seed(seed: int, counter: int) -> int:
    """The generator seed of step or epoch `counter` of a run seeded `seed`: seed * 1,000,003 + counter,
    folded into 0..MAX_SEED (unchanged for every seed below about 9 * 10^12)."""
    return (seed * 1_000_003 + counter) % (MAX_SEED + 1)


class Seeds(Sequence):
    """An ordered list of seeds made of inclusive ranges (first, last); len, indexing, slicing
    and `batches` work on the ranges."""

    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = [(int(a), int(b)) for a, b in ranges if b >= a]
        self._starts, total = [], 0           # index of each range's first seed in the list
        for a, b in self.ranges:
            self._starts.append(total)
            total += b - a + 1
        self._len = total

    @classmethod
    def count(cls, first: int, num: int) -> "Seeds":
        """seeds first .. first + num - 1, which must all be valid seeds (`check_seed`)."""
        check_seed(first, "first seed")
        if first + num - 1 > MAX_SEED:
            raise ConfigError(f"seeds {first}..{first + num - 1} pass the largest seed {MAX_SEED} (2^63 - 1); "
                              "lower the first seed or the number of images")
        return cls([(first, first + num - 1)])

    @classmethod
    def parse(cls, text: str) -> "Seeds":
        """'0-63,100' -> ranges (0, 63), (100, 100); ValueError naming the bad part, a seed past
        MAX_SEED, or a seed listed twice (two images of one seed would be one file)."""
        ranges = []
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            try:
                first, last = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise ValueError(f"expected seeds like 0-63,100, got {text!r}") from None
            if first < 0 or last < first:
                raise ValueError(f"seed range {part!r} must be A-B with 0 <= A <= B")
            check_seed(last, "seed")
            ranges.append((first, last))
        _check_disjoint(ranges)
        return cls(ranges)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            if step != 1:
                raise ValueError("Seeds slices take step 1")
            return self._slice(start, stop)
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"seed index {index} out of range ({self._len} seeds)")
        k = bisect.bisect_right(self._starts, index) - 1
        return self.ranges[k][0] + index - self._starts[k]

    def _slice(self, start: int, stop: int) -> "Seeds":
        out = []
        k = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while k < len(self.ranges) and self._starts[k] < stop:
            a, b = self.ranges[k]
            lo = a + max(start - self._starts[k], 0)
            hi = min(b, a + stop - 1 - self._starts[k])
            out.append((lo, hi))
            k += 1
        return Seeds(out)

    def __iter__(self) -> Iterator[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)

    def __eq__(self, other) -> bool:
        if isinstance(other, Seeds):
            return self.ranges == Seeds(other.ranges).ranges or list(self) == list(other)
        return isinstance(other, (list, tuple, range)) and len(other) == len(self) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Seeds({self.text()})"

    def num_batches(self, batch: int) -> int:
        return (self._len + batch - 1) // batch

    def batch(self, i: int, batch: int) -> list[int]:
        """The seeds of batch i (batches of `batch` consecutive seeds of the list)."""
        return list(self[i * batch:(i + 1) * batch])

    def text(self) -> str:
        """'0-63,100' (the first eight ranges)."""
        parts = [f"{a}-{b}" if b > a else str(a) for a, b in self.ranges[:8]]
        return ",".join(parts) + (",..." if len(self.ranges) > 8 else "")


def _check_disjoint(ranges: list[tuple[int, int]]) -> None:
    """A ConfigError naming the first seed that two of the ranges share."""
    ordered = sorted(ranges)
    for (a, b), (c, d) in zip(ordered, ordered[1:]):
        if c <= b:
            def text(lo, hi):
                return f"{lo}-{hi}" if hi > lo else str(lo)
            raise ConfigError(f"seed {c} is listed twice (in {text(a, b)} and {text(c, d)}); each seed names one "
                              "image, give every seed once")
