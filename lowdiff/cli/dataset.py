"""`lowdiff dataset info | convert | encode`: inspect a dataset, write it as an EDM image folder,
or encode it into VAE latents for the latent presets."""
from __future__ import annotations

import json
import sys

from ..checks import batch_size, check_device, check_output, positive_int, seed_value
from .common import add_device, add_progress

COMMANDS = {"info": "print size, resolution, channels and class counts",
            "convert": "write a dataset as an EDM-style image folder or .zip with dataset.json",
            "encode": "encode a dataset (and its mirror images) into VAE latents for latent presets: "
                      "safetensors shards, the pyramid's lower resolutions, per-channel statistics"}


def register(sub) -> None:
    from ..data import SPEC_FORMS
    ds = sub.add_parser("dataset", help="inspect, convert or encode datasets")
    dss = ds.add_subparsers(dest="dataset_command", required=True)
    for name, text in COMMANDS.items():
        d = dss.add_parser(name, help=text)
        d.add_argument("data", help=f"dataset: {'; '.join(SPEC_FORMS)}")
        d.add_argument("--split", default="train", help="train or test (archives with splits)")
        d.add_argument("--pad-to", dest="pad_to", type=positive_int, help="zero-pad images to this size")
        if name == "convert":
            d.add_argument("--out", required=True, help="output folder, or a path ending in .zip")
        if name == "encode":
            d.add_argument("--vae", required=True, help="bundled:fashion-vae (8x8x4) or bundled:fashion-vae-f2 "
                           "(16x16x1), a diffusers AutoencoderKL directory (e.g. SD-VAE, or `lowdiff vae train`'s "
                           "output) or an LDM / VA-VAE weight file")
            d.add_argument("--out", required=True, help="output directory (latents.json + shards)")
            d.add_argument("--image-resolution", dest="image_resolution", type=positive_int,
                           help="resize images to this size first (ADM box + bicubic; default: as stored)")
            d.add_argument("--lowest", type=positive_int, help="lowest latent resolution to store (default: top / 2)")
            d.add_argument("--batch", type=batch_size, default=64, help="images per VAE batch (default 64)")
            d.add_argument("--shard-size", dest="shard_size", type=positive_int, default=10_000,
                           help="images per shard (default 10000)")
            d.add_argument("--seed", type=seed_value, default=0, help="seed of the posterior samples")
            add_device(d)
            add_progress(d)
    ds.set_defaults(func=run)


def run(args) -> None:
    import numpy as np

    from ..data import open_dataset, save_image_folder
    if args.dataset_command in ("convert", "encode"):
        check_output(args.out, directory=not args.out.lower().endswith(".zip"))
    if args.dataset_command == "encode":
        check_device(args.device)
    ds = open_dataset(args.data, split=args.split, pad_to=args.pad_to)
    counts = {} if ds.labels is None else dict(zip(*(a.tolist() for a in np.unique(ds.labels, return_counts=True))))
    print(json.dumps({"name": ds.name, "images": len(ds), "resolution": ds.resolution, "channels": ds.channels,
                      "num_classes": ds.num_classes, "class_names": ds.class_names, "per_class": counts}, indent=2))
    if args.dataset_command == "convert":
        save_image_folder(ds, args.out)
        print(f"wrote {len(ds)} images to {args.out} (EDM layout with dataset.json)", file=sys.stderr)
    if args.dataset_command == "encode":
        from ..data.latents import encode_dataset
        m = encode_dataset(ds, args.vae, args.out, image_resolution=args.image_resolution, lowest=args.lowest,
                           batch=args.batch, shard_size=args.shard_size, seed=args.seed, device=args.device,
                           progress=not args.no_progress)
        print(f"wrote {m['count']} latents (+ mirror twins) of {m['latent_channels']} channels at resolutions "
              f"{m['resolutions']} in {len(m['shards'])} shard(s) to {args.out}", file=sys.stderr)
