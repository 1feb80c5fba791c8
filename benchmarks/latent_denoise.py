"""Is the latent cascade's final stage the weaker denoiser? The denoising error of the 16x16 stage of
latent LowDiff against its flow baseline's, noise level by noise level, on the same held-out latents.

For test latents y (normalised as each model's training saw them) and the pyramid's 8x8 version y8:
the baseline sees x = (1 - s) y + s n and estimates y (error e_base); LowDiff's 16x16 stage sees the
same x and, as its condition, y8 perturbed to sigma_c and upsampled, as truncation augmentation makes
it in training (paper Sec. 3.2) and a stage truncated at sigma_c hands it over in sampling (error
e_low at each sigma_c). Both are mean squared errors of D(x; s) per latent element, class-conditional
(the test image's class, no guidance), seeds fixed. A condition carries information about y, so a
final stage trained as well as the baseline denoises at least as well; a ratio e_low / e_base above
1 says the unified network learned the top resolution less well. The first sigma_c defaults to the
preset's truncation sigma (`lowdiff info`).

    python benchmarks/latent_denoise.py --latents runs/fashion-test-latents16 --num 500
    python benchmarks/latent_denoise.py --lowdiff bundled:fashion-latent-lowdiff --baseline bundled:fashion-latent-flow \\
        --latents runs/fashion-test-latents --num 500     # the 4x4 -> 8x8 pair (its 8x8 stage)
"""
from __future__ import annotations

import argparse
import sys

import torch

from lowdiff.data.latents import LatentDataset
from lowdiff.diffusion import pyramid
from lowdiff.errors import LowdiffError
from lowdiff.pipeline import Pipeline

from latent_diagnosis import low_latents


def latents(directory: str, pipe: Pipeline, num: int) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """The first `num` latents of `directory` at the cascade's top two resolutions (normalised, checked to
    be of the model's VAE) and their one-hot labels."""
    rows = list(range(num))
    pyr = {s.resolution: low_latents(directory, rows, pipe, s.resolution) for s in pipe.preset.stages[-2:]}
    label_dim = pipe.preset.network.label_dim
    labels = torch.nn.functional.one_hot(torch.from_numpy(LatentDataset(directory).labels[:num]).long(),
                                         label_dim).float() if label_dim else None
    return pyr, labels


@torch.inference_mode()
def denoising_errors(lowdiff, baseline, precond, y: torch.Tensor, y_low: torch.Tensor, labels: torch.Tensor | None,
                     sigmas: list[float], sigma_conds: list[float],
                     generator: torch.Generator) -> list[tuple[float, float, list[float]]]:
    """[(s, e_base, [e_low at each sigma_c])]: the mean squared error of each denoiser's D(x; s) about
    the clean y, both given the same x = perturb(y, s, n); `lowdiff` also the condition y_low
    perturbed to sigma_c and upsampled to y's side (truncation augmentation's form)."""
    out = []
    for s in sigmas:
        sigma = torch.full((len(y),), s)
        x = precond.perturb(y, sigma.view(-1, 1, 1, 1), torch.randn(y.shape, generator=generator))
        e_base = (baseline(x, sigma, labels) - y).pow(2).mean().item()
        e_low = []
        for sc in sigma_conds:
            noisy_low = precond.perturb(y_low, torch.tensor(sc), torch.randn(y_low.shape, generator=generator))
            cond = pyramid.upsample(noisy_low, y.shape[-1])
            e_low.append((lowdiff(x, sigma, labels, cond=cond, sigma_cond=torch.full((len(y),), sc)) - y)
                         .pow(2).mean().item())
        out.append((s, e_base, e_low))
    return out


def errors(low_pipe: Pipeline, base_pipe: Pipeline, directory: str, num: int, sigmas: list[float],
           sigma_conds: list[float]) -> list[tuple[float, float, list[float]]]:
    """`denoising_errors` of two loaded models on the first `num` latents of `directory`."""
    if base_pipe.preset.latent.stats != low_pipe.preset.latent.stats:
        raise SystemExit("error: the two models normalise their latents differently")
    top, below = (s.resolution for s in low_pipe.preset.stages[-2:][::-1])
    pyr, labels = latents(directory, low_pipe, num)
    return denoising_errors(low_pipe.denoiser, base_pipe.denoiser, low_pipe.preset.precond, pyr[top], pyr[below],
                            labels, sigmas, sigma_conds, torch.Generator().manual_seed(0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowdiff", default="bundled:fashion-latent16-lowdiff")
    p.add_argument("--baseline", default="bundled:fashion-latent16-flow")
    p.add_argument("--latents", default="runs/fashion-test-latents16",
                   help="a latent directory encoded with the models' VAE (`lowdiff dataset encode`)")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--sigmas", default="0.1,0.3,0.5,0.7,0.9")
    p.add_argument("--sigma-conds", dest="sigma_conds", default=None,
                   help="the condition's noise levels (default: the preset's truncation sigma, 0.5, 0.2)")
    args = p.parse_args()
    low_pipe, base_pipe = Pipeline.from_pretrained(args.lowdiff), Pipeline.from_pretrained(args.baseline)
    if args.sigma_conds is None:
        plan = low_pipe.preset.stages
        sigma_conds = [round(plan.truncation_sigma(len(plan) - 2), 3), 0.5, 0.2]
    else:
        sigma_conds = [float(v) for v in args.sigma_conds.split(",")]
    rows = errors(low_pipe, base_pipe, args.latents, args.num, [float(v) for v in args.sigmas.split(",")],
                  sigma_conds)
    head = " | ".join(f"LowDiff, condition at sigma_c {sc:g}" for sc in sigma_conds)
    print(f"| sigma | flow baseline | {head} | ratio at the first sigma_c |")
    print("|---|---|" + "---|" * len(sigma_conds) + "---|")
    for s, e_base, e_low in rows:
        cells = " | ".join(f"{e:.4f}" for e in e_low)
        print(f"| {s:g} | {e_base:.4f} | {cells} | {e_low[0] / e_base:.2f}x |")


if __name__ == "__main__":
    try:
        main()
    except LowdiffError as e:                           # latents of another VAE, a missing model: one line
        sys.exit(f"error: {e}")
