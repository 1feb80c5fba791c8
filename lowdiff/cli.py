"""`lowdiff` command line: presets, info, train, sample (see `lowdiff COMMAND --help`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .config import PRESETS, ConfigError, get_preset


def cmd_presets(args) -> None:
    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p.description}")


def cmd_info(args) -> None:
    from .info import describe
    info = describe(args.preset)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['name']}: {info['description']}")
    print(f"  parameters      {info['parameters']:,} ({info['parameters_m']} M), precond {info['precond']}, "
          f"{'unified network' if info['unified'] else 'one network per stage (CDM)'}")
    for k, v in info.get("parameters_per_network", {}).items():
        print(f"    network {k:<8}{v:,}")
    if "baseline" in info:
        b = info["baseline"]
        print(f"  baseline        {b['name']}: {b['parameters']:,} parameters, {b['nfe']} NFE")
    print("  stage plan      res  steps  NFE  sigma range       rho  solver  stops at sigma  GFLOPs/eval")
    for s in info["stages"]:
        print(f"                  {s['resolution']:>3}  {s['steps']:>5}  {s['nfe']:>3}  "
              f"[{s['sigma_min']:g}, {s['sigma_max']:g}]".ljust(46)
              + f"{s['rho']:>4g}  {s['solver']:<6}  {s['truncation_sigma']:<14.4g}  {s['gflops_per_eval']:.3f}")
    print(f"  NFE             {info['nfe_total']} in total; effective NFE {info['effective_nfe_flops']} "
          f"({info['effective_nfe_note']})")
    if "paper" in info:
        print(f"  paper           {info['paper']}")


def cmd_train(args) -> None:
    from .data import open_dataset
    from .train.loop import train
    preset = get_preset(args.preset)
    t = preset.train
    for key in ("batch", "lr", "seed", "duration_kimg", "checkpoint_kimg", "log_kimg"):
        value = getattr(args, key)
        if value is not None:
            setattr(t, key, value)
    data = args.data or preset.data
    if not data:
        raise ConfigError(f"preset {preset.name} has no default dataset: pass --data")
    dataset = open_dataset(data, pad_to=preset.network.img_resolution if data.startswith("fashion") else None)
    if preset.network.label_dim and dataset.class_names:
        preset.class_names = list(dataset.class_names)
    print(f"training {preset.name} on {dataset.name} ({len(dataset)} images) -> {args.out}", file=sys.stderr)
    out = train(preset, dataset, args.out, device=args.device, progress=not args.no_progress)
    print(f"model written to {out}", file=sys.stderr)


def cmd_sample(args) -> None:
    from .images import save_images
    from .pipeline import load, override_stages
    pipe = load(args.checkpoint, device=args.device)
    stages = override_stages(pipe.preset.stages, args.stage or [])
    labels = None
    preset = pipe.preset
    if args.class_label is not None:
        labels = args.class_label
    elif preset.network.label_dim and args.out.lower().endswith(".png") and args.by_class:
        per = max(1, args.num // preset.network.label_dim)
        labels = [c for c in range(preset.network.label_dim) for _ in range(per)]
        args.num = len(labels)
    start = time.time()
    out = pipe(args.num, seed=args.seed, class_labels=labels, stages=stages, batch=args.batch,
               progress=not args.no_progress)
    elapsed = time.time() - start
    grid = {}
    names = preset.class_names
    if labels is not None and isinstance(labels, list) and args.by_class:
        per = args.num // preset.network.label_dim
        grid = dict(ncol=per, row_labels=list(names) if names else [str(c) for c in range(preset.network.label_dim)])
    save_images(out.images, args.out, out.seeds, scale=args.scale, **grid)
    trunc = ", ".join(f"{r}x{r} stops at sigma {s:.3g}" for r, s in out.sigma_trunc.items())
    print(f"wrote {len(out.seeds)} images (seeds {out.seeds[0]}-{out.seeds[-1]}) to {args.out} in {elapsed:.1f}s; "
          f"NFE per stage {out.nfe}" + (f"; {trunc}" if trunc else ""), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowdiff", description="LowDiff: cascaded multi-resolution diffusion with one "
                                "unified network. Train, sample, inspect presets.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("presets", help="list the named presets (paper configs and small CPU configs)")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("info", help="parameter counts, stage plan, NFE per stage and effective NFE of a preset")
    s.add_argument("preset", help="preset name (see `lowdiff presets`) or a config.json file")
    s.add_argument("--json", action="store_true", help="print machine-readable JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("train", help="train a preset; re-run the same command to resume")
    s.add_argument("--preset", required=True, help="preset name or config.json")
    s.add_argument("--data", help="dataset: fashion-mnist, a cifar-10-python.tar.gz, an image folder/zip, "
                   "synthetic[:N[:RES]] (default: the preset's)")
    s.add_argument("--out", required=True, help="run directory (checkpoints, logs, final model)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    s.add_argument("--batch", type=int, help="global batch size")
    s.add_argument("--lr", type=float, help="learning rate")
    s.add_argument("--seed", type=int, help="training seed")
    s.add_argument("--duration-kimg", dest="duration_kimg", type=float, help="training length in thousands of images")
    s.add_argument("--checkpoint-kimg", dest="checkpoint_kimg", type=float, help="training-state interval (kimg)")
    s.add_argument("--log-kimg", dest="log_kimg", type=float, help="loss log interval (kimg)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate images: a PNG grid or a folder of PNGs")
    s.add_argument("--checkpoint", help="model directory (default: the bundled Fashion-MNIST model)")
    s.add_argument("--num", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i (default 0)")
    s.add_argument("--out", required=True, help="grid.png, or a directory for one PNG per seed")
    s.add_argument("--class", dest="class_label", type=int, help="class index for every image (conditional models)")
    s.add_argument("--by-class", action="store_true", default=True,
                   help="conditional models: one labelled row per class in the grid (default)")
    s.add_argument("--random-class", dest="by_class", action="store_false",
                   help="conditional models: draw each image's class from its seed instead")
    s.add_argument("--stage", action="append", metavar="RES:key=val[,key=val]",
                   help="override a stage's sampling parameter, e.g. --stage 16:nfe=13,sigma_max=50 "
                   "(keys: steps, nfe, sigma_min, sigma_max, rho, solver, S_churn, S_min, S_max, S_noise)")
    s.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    s.add_argument("--scale", type=int, default=2, help="pixel scale of grid tiles (default 2)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    from .data import DatasetError
    from .train.checkpoint import CheckpointError
    try:
        args.func(args)
    except (ConfigError, DatasetError, CheckpointError, ValueError) as e:
        print(f"lowdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
