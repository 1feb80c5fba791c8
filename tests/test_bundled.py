"""Every bundled model loads and samples exactly the images recorded for it (seeds 0 and 1,
config.json's plan): refactors must not change what users get. Models that ship named plans
default to the one their plans.json's rule picks. tests/data/bundled_samples.safetensors
was written by this test's `record()` and checked against the code of before the wave-3
changes."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lowdiff
from lowdiff import bundled

RECORD = Path(__file__).parent / "data" / "bundled_samples.safetensors"
MODELS = bundled.models()


def sample(name: str) -> torch.Tensor:
    return lowdiff.load(f"bundled:{name}", device="cpu")(seeds=[0, 1], batch=2, stages="config").images.contiguous()


def record(*names: str) -> None:
    """Record the samples of newly added (or deliberately changed) models `names`, keeping the others'."""
    recorded = load_file(str(RECORD)) if RECORD.exists() else {}
    save_file(recorded | {name: sample(name) for name in names}, str(RECORD))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_samples_the_recorded_images(name):
    recorded = load_file(str(RECORD))
    assert name in recorded, f"no recorded sample for bundled:{name}; run tests/test_bundled.py's record(name)"
    assert torch.equal(sample(name), recorded[name])


SHIPPED = {"fashion-lowdiff-cond": "fast", "fashion-edm-cond": "fast", "cifar-lowdiff-cond": "best",
           "cifar-edm-cond": "fast", "fashion-lowdiff-ct": "two-step", "fashion-edm-ct": "two-step",
           "fashion-latent16-lowdiff": "best", "fashion-latent16-flow": "best"}
CONSISTENCY_TUNED = ("fashion-lowdiff-ct", "fashion-edm-ct")     # their config.json plan is one consistency step
FLOW_PAIR = ("fashion-latent16-lowdiff", "fashion-latent16-flow")   # their paper plan ships guided (the frontier's)


@pytest.mark.parametrize("name, default", SHIPPED.items())
def test_bundled_models_sample_with_their_measured_default_plan(name, default):
    pipe = lowdiff.load(f"bundled:{name}", device="cpu")
    plans = pipe.plans
    assert pipe.default_plan.name == default
    measured = plans.measured()
    best = min(p.figures.fid for p in measured)
    chosen = pipe.default_plan.figures
    assert chosen.fid <= best + plans.fid_noise                     # within the noise of the best FID ...
    assert all(p.figures.images_per_s <= chosen.images_per_s        # ... and no faster plan is
               for p in measured if p.figures.fid <= best + plans.fid_noise)
    if name in CONSISTENCY_TUNED:
        assert plans.get("one-step").stages == pipe.preset.stages
    elif name in FLOW_PAIR:
        assert plans.get("paper-cfg").stages == pipe.preset.stages.with_guidance(2.5, 0.89)
    else:
        assert plans.get("paper").stages == pipe.preset.stages     # the paper plan is config.json's
    assert pipe.plan(None) == pipe.default_plan.stages


def test_the_default_fashion_plan_is_at_least_4x_the_paper_plan_by_its_measured_figures():
    plans = lowdiff.load(device="cpu").plans
    assert plans.default().figures.images_per_s >= 4 * plans.get("paper").figures.images_per_s
