"""`lowdiff sample`: a PNG grid or a folder of PNGs (one per seed, plus labels.csv), in one
process or under torchrun."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..bundled import models as bundled_models
from ..checks import batch_size, check_output, positive_int, seed_list, seed_value
from ..errors import ConfigError
from ..seeds import Seeds
from .common import INTERRUPTED, add_device, add_progress, add_speed_args, inference_options, joined, sampling_plan, \
    say_plan

MAX_GRID = 10_000          # images in one grid PNG (100 x 100 tiles)
MAX_LABELLED = 1_000_000   # images whose classes are laid out in blocks (--by-class)


def register(sub) -> None:
    s = sub.add_parser("sample", help="generate images: a PNG grid or a folder of PNGs")
    s.add_argument("--checkpoint", help="model directory (an unfinished run samples its newest state's EMA), or "
                   f"bundled:NAME ({', '.join(bundled_models())}; default bundled:fashion-lowdiff-cond)")
    s.add_argument("-n", "--num", type=positive_int, help="number of images (default 64; write -n N "
                   "under torchrun, whose own parser takes --num for its --numa-binding)")
    s.add_argument("--seed", type=seed_value, help="first seed; image i uses seed+i (default 0)")
    s.add_argument("--seeds", type=seed_list, help="explicit seeds instead of --num/--seed, e.g. 0-63,100 (each "
                   "seed once, at most 2^63 - 1)")
    s.add_argument("--out", required=True, help="grid.png, or a folder for one PNG per seed (plus labels.csv with each "
                   "image's class for class-conditional models)")
    s.add_argument("--overwrite", action="store_true", help="replace the images and labels.csv of an earlier run "
                   "in the --out folder (without it such a folder is refused, so runs never mix)")
    s.add_argument("--class", dest="class_label", type=int, help="class index for every image (conditional models)")
    s.add_argument("--by-class", action="store_true", default=None,
                   help="conditional models: the classes in order, --num rounded down to a multiple of the class "
                   "count (in a grid: one labelled row per class; the default for grids)")
    s.add_argument("--random-class", dest="by_class", action="store_false",
                   help="conditional models: draw each image's class from its seed (the default for folders, as "
                   "`eval fid` does)")
    s.add_argument("--batch", type=batch_size, default=64, help="images per batch (default 64)")
    s.add_argument("--scale", type=positive_int, default=2, help="pixel scale of grid tiles (default 2)")
    s.add_argument("--vae", help="latent models: the VAE to decode with (default: the one recorded at training)")
    add_device(s)
    add_progress(s)
    add_speed_args(s)
    s.set_defaults(func=run)


def seeds_of(args) -> Seeds:
    """--seeds LIST, else --num images from --seed (ranges, never a list in memory)."""
    if args.seeds:
        given = [name for name, value in (("-n/--num", args.num), ("--seed", args.seed)) if value is not None]
        if given:
            raise ConfigError(f"--seeds lists the images to make; drop {' and '.join(given)}")
        return args.seeds
    try:
        return Seeds.count(args.seed or 0, args.num or 64)
    except ConfigError as e:
        raise ConfigError(f"--seed {args.seed} with -n {args.num or 64}: {e}") from None


def grid_labels(seeds: Seeds, label_dim: int, by_class: bool) -> list[int] | None:
    """Class labels for a labelled grid: len(seeds) rounded down to a multiple of the classes."""
    if not (label_dim and by_class):
        return None
    if len(seeds) > MAX_LABELLED:
        raise ConfigError(f"--by-class lays out the classes of at most {MAX_LABELLED:,} images, got {len(seeds):,}; "
                          "use --random-class (classes drawn from the seeds) or --class N")
    per = len(seeds) // label_dim
    if per == 0:
        raise ConfigError(f"--num {len(seeds)} is smaller than the {label_dim} classes of one labelled row each; "
                          f"use --num >= {label_dim}, or --random-class to draw classes from the seeds")
    if per * label_dim != len(seeds):
        print(f"--num {len(seeds)} -> {per * label_dim}: {per} per class in {label_dim} labelled rows "
              "(--random-class keeps the number)", file=sys.stderr)
    return [c for c in range(label_dim) for _ in range(per)]


def run(args) -> int | None:
    from ..images import check_sample_folder, is_grid_path
    grid = is_grid_path(args.out)
    check_output(args.out, directory=not grid)
    if not grid:
        check_sample_folder(args.out, args.overwrite)
    seeds = seeds_of(args)
    if grid and len(seeds) > MAX_GRID:
        raise ConfigError(f"--out {args.out}: a grid of {len(seeds):,} images is too large (at most {MAX_GRID:,}); "
                          "give a folder (--out DIR/) for one PNG per seed")
    with joined(args.device) as world:
        return _sample(args, world, grid, seeds)


def _labels(args, pipe, seeds: Seeds, grid: bool):
    """(class labels: an int, a list or None, the seeds they cover)."""
    if args.class_label is not None:
        try:
            pipe.check_class_labels(args.class_label)
        except ConfigError as e:
            raise ConfigError(f"--class {args.class_label}: {e}") from None
        return args.class_label, seeds
    label_dim = pipe.preset.network.label_dim
    labels = grid_labels(seeds, label_dim, grid if args.by_class is None else args.by_class)
    return labels, seeds[:len(labels)] if labels else seeds


def _sample(args, world, grid: bool, seeds: Seeds) -> int | None:
    import torch

    from ..images import FolderWriter, save_grid
    from ..pipeline import load
    say = print if world.is_main else (lambda *a, **k: None)
    pipe = load(args.checkpoint, device=world.device, options=inference_options(args), vae=args.vae)
    preset, label_dim = pipe.preset, pipe.preset.network.label_dim
    if pipe.source != "model.safetensors":
        say(f"{args.checkpoint}: sampling {pipe.source}", file=sys.stderr)
    chosen = sampling_plan(args, pipe.default_plan, pipe.plans, preset.precond)
    stages = pipe.plan(chosen.stages)
    labels, seeds = _labels(args, pipe, seeds, grid)
    if world.is_main:
        say_plan(chosen, pipe.plans)
    names = preset.class_names or [str(c) for c in range(label_dim)]
    writer = (FolderWriter(args.out, names if label_dim else None, args.overwrite) if not grid and world.is_main
              else None)
    start, images, reports = time.time(), [], []
    try:
        for batch_images, chunk, batch_labels, reports in pipe.stream(seeds, labels, stages, args.batch, world,
                                                                      progress=not args.no_progress):
            if grid:
                images.append(batch_images)
            else:
                writer(batch_images, chunk, batch_labels)
    except KeyboardInterrupt:
        kept = (f"the {writer.count} images finished are in {args.out}" if writer else "no grid written"
                if world.is_main else f"process {world.rank} of {world.size} stopped")
        print(f"lowdiff sample: interrupted; {kept}", file=sys.stderr)
        return INTERRUPTED
    if not world.is_main:
        return None
    if grid:
        by_class = isinstance(labels, list) and args.class_label is None
        layout = dict(ncol=len(seeds) // label_dim, row_labels=names) if by_class else {}
        save_grid(torch.cat(images), args.out, scale=args.scale, **layout)
    _report(args, world, seeds, stages, reports, time.time() - start, label_dim and writer is not None)
    return None


def _report(args, world, seeds: Seeds, stages, reports, elapsed: float, labelled: bool) -> None:
    from ..images import FolderWriter
    nfe = {r.resolution: r.nfe for r in reports}
    notes = ([f"{r.resolution}x{r.resolution} stops at sigma {r.truncation_sigma:.3g}" for r in reports[:-1]] +
             [f"{s.resolution}x{s.resolution} starts from the stage below at sigma {s.sigma_max:g}"
              for s in stages if s.start == "upsampled"] +
             [f"{s.resolution}x{s.resolution} continues the stage below at sigma {s.sigma_max:g} ({s.handover} "
              "hand-over)" for s in stages if s.handover != "none"])
    ranks = f" on {world.size} processes" if world.size > 1 else ""
    print(f"wrote {len(seeds)} images (seeds {seeds.text()}) to {args.out} in {elapsed:.1f}s{ranks}; NFE per stage "
          f"{nfe}" + (f"; {', '.join(notes)}" if notes else "")
          + (f"; classes in {Path(args.out) / FolderWriter.LABELS}" if labelled else ""), file=sys.stderr)
