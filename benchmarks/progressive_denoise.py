"""Why progressive sampling of a single-resolution network costs FID: how well the EDM network
denoises at 16x16, a side it was never trained at, against what the same network extracts about
the same 16x16 image at 32x32.

For test images y (Fashion-MNIST, 32x32) and their box-downsampled 16x16 versions D y: the
network at 16x16 sees D y + s n and estimates D y (error e16). At 32x32 it sees y + 2s n', whose
block means D y + s D(2 n') carry the same noise level s about D y (lowdiff/diffusion/cascade.py,
`spectral_handover`); downsampling its estimate gives D y too (error e32). Both are mean squared
errors per 16x16 pixel, on images in [-1, 1], seeds fixed.

    python benchmarks/progressive_denoise.py --num 500
"""
from __future__ import annotations

import argparse

import torch

from lowdiff.data import open_dataset
from lowdiff.diffusion import pyramid
from lowdiff.pipeline import Pipeline


@torch.inference_mode()
def errors(model: str, num: int, sigmas: list[float]) -> list[tuple[float, float, float]]:
    pipe = Pipeline.from_pretrained(model)
    den, label_dim = pipe.denoiser, pipe.preset.network.label_dim
    ds = open_dataset("fashion-mnist:test")
    y = torch.tensor(ds.images[:num]).float() / 127.5 - 1
    labels = torch.nn.functional.one_hot(torch.tensor(ds.labels[:num]), label_dim).float() if label_dim else None
    low = pyramid.downsample(y, 16)
    g = torch.Generator().manual_seed(0)
    out = []
    for s in sigmas:
        e16 = (den(low + s * torch.randn(low.shape, generator=g), torch.tensor(s), labels) - low).pow(2).mean()
        full = den(y + 2 * s * torch.randn(y.shape, generator=g), torch.tensor(2 * s), labels)
        e32 = (pyramid.downsample(full, 16) - low).pow(2).mean()
        out.append((s, e16.item(), e32.item()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bundled:fashion-edm-cond")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--sigmas", default="0.25,0.5,1,2,5,10,20")
    args = p.parse_args()
    print("| sigma at 16x16 (2 sigma at 32x32) | MSE of D y, network at 16x16 | MSE of D y, network at 32x32 | ratio |")
    print("|---|---|---|---|")
    for s, e16, e32 in errors(args.model, args.num, [float(v) for v in args.sigmas.split(",")]):
        print(f"| {s:g} | {e16:.4f} | {e32:.4f} | {e16 / e32:.2f}x |")


if __name__ == "__main__":
    main()
