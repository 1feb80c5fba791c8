"""Progress bars that count images and show the rate in img/s (sampling, FID, reference
statistics, tuning), advancing inside a batch as its network evaluations run."""
from __future__ import annotations

from tqdm import tqdm

IMAGE_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} img [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def image_bar(total: int, desc: str, disable: bool = False) -> tqdm:
    """A bar over `total` images, its rate in img/s."""
    return tqdm(total=total, desc=desc, unit="img", disable=disable, bar_format=IMAGE_BAR)


class EvaluationTicks:
    """What the sampler ticks once per network evaluation, turned into images on `bar`: each of
    a batch's `evaluations` advances it by images / evaluations, and `done` settles the batch at
    exactly `images` (a stage that stops early leaves no fraction behind)."""

    def __init__(self, bar: tqdm | None, images: int, evaluations: int):
        self.bar, self.images, self.step, self.moved = bar, images, images / max(evaluations, 1), 0.0

    def update(self, n: int = 1) -> None:
        step = min(n * self.step, self.images - self.moved)
        if self.bar is not None and step > 0:
            self.moved += step
            self.bar.update(step)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(self.images - self.moved)
            self.moved = self.images
