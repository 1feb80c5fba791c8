"""Every bundled model loads and samples exactly the images recorded for it (seeds 0 and 1,
its own plan): refactors must not change what users get. tests/data/bundled_samples.safetensors
was written by this test's `record()` and checked against the code of before the wave-3
changes."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lowdiff
from lowdiff import bundled

RECORD = Path(__file__).parent / "data" / "bundled_samples.safetensors"
MODELS = [n for n in bundled.names() if (bundled.ASSETS / n / "model.safetensors").is_file()]


def sample(name: str) -> torch.Tensor:
    return lowdiff.load(f"bundled:{name}")(seeds=[0, 1], batch=2).images.contiguous()


def record() -> None:
    """Re-record (only when a model is added or deliberately changed)."""
    save_file({name: sample(name) for name in MODELS}, str(RECORD))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_samples_the_recorded_images(name):
    recorded = load_file(str(RECORD))
    assert name in recorded, f"no recorded sample for bundled:{name}; run tests/test_bundled.py's record()"
    assert torch.equal(sample(name), recorded[name])
