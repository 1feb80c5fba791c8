import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(min(2, torch.get_num_threads()))

from lowdiff.config import Preset, StageConfig, TrainConfig  # noqa: E402
from lowdiff.nn import DiTConfig, UNetConfig  # noqa: E402
from lowdiff.presets import FASHION_NET  # noqa: E402


def tiny_preset(stages=(8, 16, 32), label_dim=0, unified=True, precond="edm", channels=1) -> Preset:
    """A very small preset for fast tests."""
    net = dict(FASHION_NET, model_channels=16, channel_mult=(1, 1, 1), num_blocks=1, label_dim=label_dim,
               in_channels=channels, out_channels=channels)
    plan = []
    for i, r in enumerate(stages):
        final = i == len(stages) - 1
        plan.append(StageConfig(r, steps=4, nfe=None if final else 3, sigma_min=0.01 if i else 0.002,
                                sigma_max=50.0 if i else 80.0))
    res = tuple(stages)
    return Preset("tiny-test", "test preset", UNetConfig(resolutions=res if unified else (res[-1],),
                                                            base_resolution=res[0], **net),
                  plan, TrainConfig(batch=8, lr=1e-3, lr_rampup_kimg=0, ema_halflife_kimg=0.05, duration_kimg=0.032,
                                    log_kimg=0.008, checkpoint_kimg=0.016),
                  precond=precond, unified=unified)


@pytest.fixture
def tiny():
    return tiny_preset


def tiny_dit_preset(stages=(4, 8), label_dim=10, channels=4, unified=True) -> Preset:
    """A very small latent-space (DiT, flow) preset: 4x4 -> 8x8 latents of a tiny f2 VAE."""
    from lowdiff.config import LatentConfig
    from lowdiff.diffusion.precond import Flow
    net = DiTConfig(img_resolution=stages[-1], in_channels=channels, out_channels=channels,
                    label_dim=label_dim, label_dropout=0.1, hidden_size=32, depth=2, num_heads=2,
                    resolutions=tuple(stages) if unified else (stages[-1],), base_resolution=stages[0])
    plan = [StageConfig(r, steps=6, nfe=None if i == len(stages) - 1 else 3, schedule="flow", solver="euler",
                        sigma_min=0.0, sigma_max=1.0, shift=0.3) for i, r in enumerate(stages)]
    train = TrainConfig(batch=8, lr=1e-3, lr_rampup_kimg=0, ema_halflife_kimg=0.05, duration_kimg=0.016,
                        log_kimg=0.008, checkpoint_kimg=0.016, xflip=True, adam_betas=(0.9, 0.95))
    return Preset("tiny-dit-test", "test preset", net, plan, train, precond=Flow(cosine=True), unified=unified,
                  latent=LatentConfig(image_resolution=2 * stages[-1], image_channels=1))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run fastest (and without stalls on busy cores) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
