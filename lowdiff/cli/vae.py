"""`lowdiff vae train | eval`: the small KL autoencoder of the latent presets."""
from __future__ import annotations

import json
import sys

from ..checks import batch_size, check_device, check_output, positive_float, positive_int, positive_int_list, \
    seed_value
from .common import add_device, add_features_args, add_progress, extractor_of, stopped_status


def register(sub) -> None:
    vae = sub.add_parser("vae", help="train or evaluate a small KL autoencoder for the latent presets",
                         description="A KL-regularised diffusers AutoencoderKL (LDM's KL-f4 kind): `vae train` on any "
                         "dataset lowdiff reads (resumable: re-run the same command), `vae eval` for PSNR and the FID "
                         "of reconstructions. Bundled: bundled:fashion-vae (Fashion-MNIST 32x32 -> 8x8x4, f4) and "
                         "bundled:fashion-vae-f2 (-> 16x16x1, f2: `--channels 32,64 --latent-channels 1`).")
    vs = vae.add_subparsers(dest="vae_command", required=True)
    v = vs.add_parser("train", help="train an autoencoder (progress bar, resume, safetensors output)")
    v.add_argument("--data", required=True, help="dataset spec, e.g. fashion-mnist")
    v.add_argument("--split", default="train", help="train or test (default train)")
    v.add_argument("--out", required=True, help="output directory (diffusers layout + training states)")
    v.add_argument("--kimg", type=positive_float, help="training length in thousands of images (default 300)")
    v.add_argument("--batch", type=batch_size, help="batch size (default 64)")
    v.add_argument("--lr", type=positive_float, help="Adam learning rate (default 1e-3)")
    v.add_argument("--kl-weight", dest="kl_weight", type=positive_float, help="weight of the KL term (default 1e-5)")
    v.add_argument("--latent-channels", dest="latent_channels", type=positive_int, help="latent channels (default 4)")
    v.add_argument("--channels", type=positive_int_list,
                   help="widths per level, comma-separated; levels - 1 halvings (default 16,32,64: f4)")
    v.add_argument("--seed", type=seed_value, help="seed (default 0)")
    add_device(v)
    add_progress(v)
    v = vs.add_parser("eval", help="PSNR and FID of a VAE's reconstructions of a dataset")
    v.add_argument("--vae", default="bundled:fashion-vae", help="VAE directory or bundled:NAME "
                   "(default bundled:fashion-vae)")
    v.add_argument("--data", default="fashion-mnist:test", help="dataset spec (default fashion-mnist:test)")
    v.add_argument("--num", type=positive_int, help="first N images only (default all)")
    v.add_argument("--batch", type=batch_size, default=256, help="images per batch (default 256)")
    add_features_args(v)
    add_device(v)
    add_progress(v)
    vae.set_defaults(func=run)


def run(args) -> int | None:
    check_device(args.device)
    if args.vae_command == "train":
        return train(args)
    from ..eval import evaluate
    result = evaluate.evaluate_autoencoder(args.vae, args.data, extractor_of(args), args.features, num=args.num,
                                           batch=args.batch, device=args.device, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return None


def train(args) -> int | None:
    from ..data import open_dataset
    from ..train.vae import VAEConfig, VAETrainConfig, replace, train_vae
    check_output(args.out, directory=True)
    ds = open_dataset(args.data, split=args.split)
    model = replace(VAEConfig(in_channels=ds.channels), latent_channels=args.latent_channels,
                    block_out_channels=args.channels)
    config = replace(VAETrainConfig(), batch=args.batch, lr=args.lr, duration_kimg=args.kimg,
                     kl_weight=args.kl_weight, seed=args.seed)
    print(f"training a f{model.factor} VAE ({model.latent_channels} latent channels) on {ds.name} "
          f"({len(ds)} images) -> {args.out}", file=sys.stderr)
    trainer = train_vae(ds, args.out, model, config, device=args.device, progress=not args.no_progress)
    if trainer.stopped_by is not None:
        return stopped_status(trainer.stopped_by)
    print(f"VAE written to {args.out} (use it with `lowdiff dataset encode DATA --vae {args.out}`)", file=sys.stderr)
    return None
