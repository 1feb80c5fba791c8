"""Progress bars that count images and show the rate in img/s (sampling, FID, reference
statistics, tuning), advancing inside a batch as its network evaluations run."""
from __future__ import annotations

from tqdm import tqdm

IMAGE_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} img [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def image_bar(total: int, desc: str, disable: bool = False) -> tqdm:
    """A bar over `total` images, its rate in img/s."""
    return tqdm(total=total, desc=desc, unit="img", disable=disable, bar_format=IMAGE_BAR)


class EvaluationTicks:
    """What the sampler ticks once per network evaluation, turned into whole images on `bar`:
    after k of a batch's `evaluations`, images * k // evaluations of its `images` are shown,
    and `done` settles the batch at exactly `images` (a stage that stops early included)."""

    def __init__(self, bar: tqdm | None, images: int, evaluations: int):
        self.bar, self.images, self.evaluations = bar, images, max(evaluations, 1)
        self.ticks = self.shown = 0

    def update(self, n: int = 1) -> None:
        self.ticks += n
        self._show(min(self.images, self.images * self.ticks // self.evaluations))

    def done(self) -> None:
        self._show(self.images)

    def _show(self, count: int) -> None:
        if self.bar is not None and count > self.shown:
            self.bar.update(count - self.shown)
            self.shown = count
