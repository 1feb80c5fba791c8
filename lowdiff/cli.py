"""`lowdiff` command line: presets, info, train, sample (see `lowdiff COMMAND --help`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import ConfigError, LowdiffError
from .presets import PRESETS, get_preset


def cmd_presets(args) -> None:
    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p.description}")


def cmd_info(args) -> None:
    from .info import describe, format_info
    info = describe(args.preset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))


def cmd_train(args) -> None:
    from .data import open_dataset
    from .train.loop import close_distributed, train
    preset = get_preset(args.preset)
    t = preset.train
    for key in ("batch", "batch_gpu", "lr", "seed", "duration_kimg", "checkpoint_kimg", "log_kimg", "precision",
                "compile"):
        value = getattr(args, key)
        if value is not None:
            setattr(t, key, value)
    data = args.data or preset.data
    if not data:
        raise ConfigError(f"preset {preset.name} has no default dataset: pass --data")
    pad = data.startswith("fashion") and preset.latent is None
    dataset = open_dataset(data, pad_to=preset.network.img_resolution if pad else None)
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        print(f"training {preset.name} on {dataset.name} ({len(dataset)} images) -> {args.out}", file=sys.stderr)
    try:
        out = train(preset, dataset, args.out, device=args.device, progress=not args.no_progress)
    except BaseException:
        close_distributed(barrier=False)
        raise
    close_distributed()
    if main_rank and (out / "model.safetensors").is_file():
        print(f"run directory {out} (model.safetensors holds the EMA weights)", file=sys.stderr)


def inference_options(args):
    from .inference import InferenceOptions
    return InferenceOptions(compile=args.compile, channels_last=args.channels_last, precision=args.precision,
                            cuda_graphs=args.cuda_graphs)


def sampling_plan(plan, args):
    """A command's stage plan: the model's or --plan FILE, then --solver, then --stage overrides."""
    from .diffusion.plan import StagePlan
    if getattr(args, "plan", None):
        plan = StagePlan.load(args.plan)
    if getattr(args, "solver", None):
        plan = plan.with_solver(args.solver)
    return plan.override(getattr(args, "stage", None) or [])


def cmd_sample(args) -> None:
    from .images import save_images
    from .pipeline import load
    pipe = load(args.checkpoint, device=args.device, options=inference_options(args), vae=args.vae)
    stages = sampling_plan(pipe.preset.stages, args)
    labels = None
    preset = pipe.preset
    if args.class_label is not None:
        labels = args.class_label
    elif preset.network.label_dim and args.out.lower().endswith(".png") and args.by_class:
        per = max(1, args.num // preset.network.label_dim)
        labels = [c for c in range(preset.network.label_dim) for _ in range(per)]
        if len(labels) != args.num:
            print(f"--num {args.num} -> {len(labels)}: {per} per class in {preset.network.label_dim} labelled rows "
                  f"(--random-class keeps the number)", file=sys.stderr)
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
    trunc = ", ".join(f"{r}x{r} stops at sigma {s:.3g}" for r, s in out.truncation_sigma.items())
    print(f"wrote {len(out.seeds)} images (seeds {out.seeds[0]}-{out.seeds[-1]}) to {args.out} in {elapsed:.1f}s; "
          f"NFE per stage {out.nfe}" + (f"; {trunc}" if trunc else ""), file=sys.stderr)


def cmd_bench(args) -> None:
    from tqdm import tqdm

    from .eval.bench import BenchOptions, bench, format_report
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device=args.device,
                        inference=inference_options(args))
    opts.inference.check(args.device)
    preset = get_preset(args.preset)
    stages = sampling_plan(preset.stages, args)
    preset.check_plan(stages)
    if args.compare_options:
        return _bench_compare(preset, stages, opts, args)
    baseline_stages = None
    if preset.baseline and args.solver:
        baseline_stages = get_preset(preset.baseline).stages.with_solver(args.solver)
    with tqdm(total=args.repeats * (2 if preset.baseline else 1), unit="run", desc="bench",
              disable=args.json or args.no_progress) as bar:
        report = bench(preset, opts, progress=bar, stages=stages, baseline_stages=baseline_stages)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))


def _bench_compare(preset, stages, opts, args) -> None:
    """`lowdiff bench --compare-options`: the plain baseline and each speed switch side by side."""
    from tqdm import tqdm

    from .eval.bench import compare, format_comparison, option_variants
    precision = args.precision if args.precision != "fp32" else "bf16"
    variants = option_variants(preset, args.device, stages, precision)
    with tqdm(total=args.repeats * len(variants), unit="run", desc="bench", disable=args.json or args.no_progress) as bar:
        report = compare(variants, opts, progress=bar)
    print(json.dumps(report, indent=2, default=str) if args.json else format_comparison(report, preset.name))


def cmd_tune(args) -> None:
    from pathlib import Path

    from tqdm import tqdm

    from .eval import evaluate
    from .eval.tune import Tuner, TuneOptions, format_table, mark_pareto, plot_front
    from .pipeline import load
    if args.budget_nfe is None and args.budget_latency is None:
        raise ConfigError("give a budget: --budget-nfe N (effective NFE) and/or --budget-latency SECONDS (per image)")
    extractor = evaluate.get_extractor(args.features, args.inception if args.features == "inception" else
                                       args.classifier, args.device)
    pipe = load(args.checkpoint, device=args.device, options=inference_options(args))
    opts = TuneOptions(budget_nfe=args.budget_nfe, budget_latency=args.budget_latency, trials=args.trials,
                       num=args.num, seed=args.seed, batch=args.batch, solvers=tuple(args.solvers.split(",")),
                       cost=args.cost)
    bar = tqdm(total=opts.trials, unit="plan", desc="tune", disable=args.no_progress)

    def progress(trial, n):
        bar.update(1)
        bar.set_postfix_str(f"FID {trial.fid:.3f} at {trial.effective_nfe} eff. NFE ({trial.move})")

    tuner = Tuner(pipe, args.ref, extractor, args.features, opts, progress)
    chosen = tuner.run()
    bar.close()
    trials = list(tuner.trials.values())
    front = mark_pareto(trials)
    print(format_table(trials, chosen))
    chosen.stages.save(args.out, preset=pipe.preset.name, checkpoint=args.checkpoint or "bundled",
              tuned={"fid": chosen.fid, "effective_nfe": chosen.effective_nfe, "images_per_s": chosen.images_per_s,
                     "latency_per_image_s": chosen.latency_per_image_s, "budget_nfe": args.budget_nfe,
                     "budget_latency": args.budget_latency, "cost": args.cost, "num": args.num,
                     "seeds": [args.seed, args.seed + args.num - 1], "feature_space": args.features,
                     "ref": str(args.ref), "inference": dict(vars(pipe.options))},
              pareto_front=[t.to_dict() for t in front])
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    plot_front(trials, chosen, plot, title=f"{pipe.preset.name}: {len(trials)} plans, FID of {args.num} samples")
    print(f"wrote the plan to {args.out} (lowdiff sample --plan {args.out}) and the front to {plot}", file=sys.stderr)


def cmd_eval(args) -> None:
    from .eval import evaluate
    if args.eval_command == "train-classifier":
        from .eval.classifier import DEFAULT_CLASSIFIER_DIR, train_classifier
        out = args.out or DEFAULT_CLASSIFIER_DIR
        info = train_classifier(out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
        print(json.dumps(info, indent=2))
        print(f"classifier written to {out}; test accuracy {info['test_accuracy']:.2%}", file=sys.stderr)
        return
    weights = args.inception if args.features == "inception" else args.classifier
    extractor = evaluate.get_extractor(args.features, weights, args.device)
    if args.eval_command == "ref":
        result = evaluate.reference_stats(args.data, args.out, extractor, args.features, split=args.split,
                                          progress=not args.no_progress)
        print(json.dumps(result, indent=2))
        return
    from .pipeline import load
    pipe = load(args.checkpoint, device=args.device, options=inference_options(args))
    stages = sampling_plan(pipe.preset.stages, args)
    print(f"generating seeds {args.seed}-{args.seed + args.num - 1} with {pipe.preset.name}", file=sys.stderr)
    ev = evaluate.evaluate_pipeline(pipe, args.ref, extractor, args.features, num=args.num, seed=args.seed,
                                    stages=stages, batch=args.batch, progress=not args.no_progress)
    result = {"fid": ev.fid, "inception_score": ev.inception_score, "num": ev.num, "seeds": ev.seeds,
              "feature_space": ev.feature_space, "checkpoint": args.checkpoint or "bundled",
              "nfe_per_stage": stages.nfe_per_stage}
    print(json.dumps(result, indent=2))


def cmd_dataset(args) -> None:
    import numpy as np

    from .data import open_dataset, save_image_folder
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


def cmd_vae(args) -> None:
    from .data import open_dataset
    if args.vae_command == "train":
        from .train.vae import VAEConfig, VAETrainConfig, replace, train_vae
        ds = open_dataset(args.data, split=args.split)
        channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
        model = replace(VAEConfig(in_channels=ds.channels), latent_channels=args.latent_channels,
                        block_out_channels=channels)
        train = replace(VAETrainConfig(), batch=args.batch, lr=args.lr, duration_kimg=args.kimg,
                        kl_weight=args.kl_weight, seed=args.seed)
        print(f"training a f{model.factor} VAE ({model.latent_channels} latent channels) on {ds.name} "
              f"({len(ds)} images) -> {args.out}", file=sys.stderr)
        out = train_vae(ds, args.out, model, train, device=args.device, progress=not args.no_progress)
        print(f"VAE written to {out} (use it with `lowdiff dataset encode DATA --vae {out}`)", file=sys.stderr)
        return
    from .eval import evaluate
    extractor = evaluate.get_extractor(args.features, args.inception if args.features == "inception" else
                                       args.classifier, args.device)
    result = evaluate.evaluate_autoencoder(args.vae, args.data, extractor, args.features, num=args.num,
                                           batch=args.batch, device=args.device, progress=not args.no_progress)
    print(json.dumps(result, indent=2))


def add_speed_args(s: argparse.ArgumentParser, plan: bool = True) -> None:
    """The stage-plan and inference speed switches shared by sample, eval fid, bench and tune."""
    g = s.add_argument_group("sampling plan and speed")
    if plan:
        g.add_argument("--plan", metavar="FILE", help="stage plan JSON (e.g. written by `lowdiff tune`) replacing the "
                       "model's stages; --solver and --stage apply on top")
        g.add_argument("--solver", metavar="NAME", help="this solver in every stage at the same NFE per stage: heun, "
                       "euler or dpmpp2m (DPM-Solver++(2M), one evaluation per step)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network, one graph per resolution")
    g.add_argument("--channels-last", dest="channels_last", action="store_true", help="channels_last memory format")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast precision of the network (default fp32)")
    g.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true",
                   help="replay each resolution's forward from a captured CUDA graph (CUDA only)")


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

    s = sub.add_parser("train", help="train a preset; re-run the same command to resume",
                       description="Train a preset. Re-running the same command resumes from the newest valid "
                       "state in --out; SIGTERM/SIGINT save a state and exit. Multi-GPU / multi-node: "
                       "torchrun --nproc_per_node=N -m lowdiff.cli train ...")
    s.add_argument("--preset", required=True, help="preset name or config.json")
    s.add_argument("--data", help="dataset: fashion-mnist, emoji[:RES], a cifar-10-python.tar.gz, an image folder/zip, "
                   "synthetic[:N[:RES]] (default: the preset's)")
    s.add_argument("--out", required=True, help="run directory (checkpoints, logs, final model)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    s.add_argument("--batch", type=int, help="global batch size")
    s.add_argument("--batch-gpu", dest="batch_gpu", type=int, help="per-process micro-batch (gradient accumulation)")
    s.add_argument("--lr", type=float, help="learning rate")
    s.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="mixed precision (default fp32)")
    s.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
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
                   help="conditional models: one labelled row per class in the grid, --num rounded down to a "
                   "multiple of the class count (default)")
    s.add_argument("--random-class", dest="by_class", action="store_false",
                   help="conditional models: draw each image's class from its seed instead")
    s.add_argument("--stage", action="append", metavar="RES:key=val[,key=val]",
                   help="override a stage's sampling parameter, e.g. --stage 16:nfe=13,sigma_max=50 "
                   "(keys: steps, nfe, sigma_min, sigma_max, rho, solver, S_churn, S_min, S_max, S_noise, "
                   "schedule, shift, cfg_scale, cfg_sigma_max)")
    s.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    s.add_argument("--scale", type=int, default=2, help="pixel scale of grid tiles (default 2)")
    s.add_argument("--vae", help="latent models: the VAE to decode with (default: the one recorded at training)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_args(s)
    s.set_defaults(func=cmd_sample)

    ev = sub.add_parser("eval", help="FID / IS: reference statistics, model evaluation, the offline classifier",
                        description="Evaluation with one pinned protocol. Feature spaces: 'classifier' (our "
                        "Fashion-MNIST classifier, offline and bundled: the one behind docs/results.md's FIDs) or "
                        "'inception' (standard FID Inception-v3; needs the weight file pt_inception-2015-12-05-"
                        "6726825d.pth from pytorch-fid's releases, or torch-fidelity's weights-inception-2015-12-05-"
                        "6726825d.pth, given with --inception or LOWDIFF_INCEPTION, or in the torch hub cache).")
    evs = ev.add_subparsers(dest="eval_command", required=True)
    e = evs.add_parser("train-classifier", help="train the Fashion-MNIST feature classifier (a few CPU minutes)")
    e.add_argument("--out", help="output directory (default ~/.cache/lowdiff/fashion-classifier or $LOWDIFF_CLASSIFIER)")
    e.add_argument("--epochs", type=int, default=5, help="training epochs (default 5: ~91.7%% test accuracy, ~5 min on 2 CPU cores)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-progress", action="store_true")
    for name, text in (("ref", "reference statistics (mu, sigma as .npz) of a dataset"),
                       ("fid", "FID / IS of a model's samples against reference statistics")):
        e = evs.add_parser(name, help=text)
        e.add_argument("--features", default="classifier", choices=["classifier", "inception"],
                       help="feature space (default classifier)")
        e.add_argument("--classifier", help="classifier directory (default: $LOWDIFF_CLASSIFIER, else one trained "
                       "into ~/.cache/lowdiff/fashion-classifier, else the bundled one)")
        e.add_argument("--inception", help="Inception weight file (.pth or .safetensors)")
        e.add_argument("--device", default="cpu")
        e.add_argument("--no-progress", action="store_true")
        if name == "ref":
            e.add_argument("--data", required=True, help="dataset spec, e.g. fashion-mnist")
            e.add_argument("--split", default="test", help="train or test (default test)")
            e.add_argument("--out", required=True, help="output .npz")
        else:
            e.add_argument("--checkpoint", help="model directory (default: the bundled model)")
            e.add_argument("--ref", required=True, help="reference statistics .npz")
            e.add_argument("--num", type=int, default=10_000, help="number of samples (default 10000)")
            e.add_argument("--seed", type=int, default=0, help="first seed; seeds seed..seed+num-1 are used")
            e.add_argument("--batch", type=int, default=250, help="images per batch")
            e.add_argument("--stage", action="append", metavar="RES:key=val", help="stage override, as in sample")
            add_speed_args(e)
    ev.set_defaults(func=cmd_eval)

    ds = sub.add_parser("dataset", help="inspect or convert datasets")
    dss = ds.add_subparsers(dest="dataset_command", required=True)
    for name, text in (("info", "print size, resolution, channels and class counts"),
                       ("convert", "write a dataset as an EDM-style image folder or .zip with dataset.json"),
                       ("encode", "encode a dataset (and its mirror images) into VAE latents for latent presets: "
                        "safetensors shards, the pyramid's lower resolutions, per-channel statistics")):
        d = dss.add_parser(name, help=text)
        d.add_argument("data", help="fashion-mnist[:test], emoji[:RES], cifar-10-python.tar.gz, an image folder/zip, an IDX file, "
                       "synthetic[:N[:RES]]")
        d.add_argument("--split", default="train", help="train or test (archives with splits)")
        d.add_argument("--pad-to", dest="pad_to", type=int, help="zero-pad images to this size")
        if name == "convert":
            d.add_argument("--out", required=True, help="output folder, or a path ending in .zip")
        if name == "encode":
            d.add_argument("--vae", required=True, help="diffusers AutoencoderKL directory (e.g. SD-VAE) or an "
                           "LDM / VA-VAE weight file (.pt, .ckpt, .safetensors)")
            d.add_argument("--out", required=True, help="output directory (latents.json + shards)")
            d.add_argument("--image-resolution", dest="image_resolution", type=int,
                           help="resize images to this size first (ADM box + bicubic; default: as stored)")
            d.add_argument("--lowest", type=int, help="lowest latent resolution to store (default: top / 2)")
            d.add_argument("--batch", type=int, default=64, help="images per VAE batch (default 64)")
            d.add_argument("--shard-size", dest="shard_size", type=int, default=10_000, help="images per shard")
            d.add_argument("--seed", type=int, default=0, help="seed of the posterior samples")
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
    v.add_argument("--kimg", type=float, help="training length in thousands of images (default 300)")
    v.add_argument("--batch", type=int, help="batch size (default 64)")
    v.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    v.add_argument("--kl-weight", dest="kl_weight", type=float, help="weight of the KL term (default 1e-5)")
    v.add_argument("--latent-channels", dest="latent_channels", type=int, help="latent channels (default 4)")
    v.add_argument("--channels", help="widths per level, comma-separated; levels - 1 halvings (default 16,32,64: f4)")
    v.add_argument("--seed", type=int, help="seed (default 0)")
    v.add_argument("--device", default="cpu", help="cpu or cuda")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = vs.add_parser("eval", help="PSNR and FID of a VAE's reconstructions of a dataset")
    v.add_argument("--vae", default="bundled:fashion-vae", help="VAE directory or bundled:NAME (default bundled:fashion-vae)")
    v.add_argument("--data", default="fashion-mnist:test", help="dataset spec (default fashion-mnist:test)")
    v.add_argument("--num", type=int, help="first N images only (default all)")
    v.add_argument("--batch", type=int, default=256, help="images per batch (default 256)")
    v.add_argument("--features", default="classifier", choices=["classifier", "inception"],
                   help="feature space of the FID (default classifier)")
    v.add_argument("--classifier", help="classifier directory (default: the bundled one)")
    v.add_argument("--inception", help="Inception weight file")
    v.add_argument("--device", default="cpu", help="cpu or cuda")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    vae.set_defaults(func=cmd_vae)

    s = sub.add_parser("bench", help="sampling latency/throughput of a preset vs its single-resolution baseline "
                       "(paper protocol: batch 64, mean of repeated runs), and measured effective NFE")
    s.add_argument("--preset", required=True, help="preset name (its baseline is timed alongside)")
    s.add_argument("--batch", type=int, default=64, help="images per batch (default 64, as in the paper)")
    s.add_argument("--repeats", type=int, default=10, help="timed runs per model (default 10)")
    s.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs (default 1)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--compare-options", dest="compare_options", action="store_true",
                   help="time side by side: the baseline in plain fp32 eager, then the preset eager, compiled, in "
                   "reduced precision (--precision, default bf16), channels_last, and with all switches")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_args(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("tune", help="search per-stage steps, truncation, sigma ranges and solvers for the lowest FID "
                       "within a budget; print the Pareto front, write the plan and a plot",
                       description="Coordinate-descent search over a trained model's stage plan (per stage: solver, "
                       "steps, truncation NFE, sigma_max of conditioned stages). Every plan's FID uses the same seeds. "
                       "Prints the FID / throughput Pareto front, writes the lowest-FID plan within the budget "
                       "(use it with `lowdiff sample --plan FILE`) and plots the front.")
    s.add_argument("--checkpoint", help="model directory (default: the bundled model)")
    s.add_argument("--ref", required=True, help="reference statistics .npz (`lowdiff eval ref`)")
    s.add_argument("--features", default="classifier", choices=["classifier", "inception"],
                   help="feature space of the reference statistics (default classifier)")
    s.add_argument("--classifier", help="classifier directory (default: $LOWDIFF_CLASSIFIER, else one trained "
                   "into ~/.cache/lowdiff/fashion-classifier, else the bundled one)")
    s.add_argument("--inception", help="Inception weight file")
    s.add_argument("--budget-nfe", dest="budget_nfe", type=float,
                   help="effective NFE at most (paper App. B: low-resolution evaluations weighted by their cost)")
    s.add_argument("--budget-latency", dest="budget_latency", type=float,
                   help="predicted seconds per image at most (measured per-evaluation latency x NFE)")
    s.add_argument("--cost", default="latency", choices=["latency", "flops"],
                   help="per-evaluation cost behind effective NFE (default latency, measured here)")
    s.add_argument("--num", type=int, default=500, help="samples per FID (default 500)")
    s.add_argument("--seed", type=int, default=0, help="first seed; every plan uses seeds seed..seed+num-1")
    s.add_argument("--batch", type=int, default=250, help="images per batch (default 250)")
    s.add_argument("--trials", type=int, default=24, help="plans evaluated at most (default 24)")
    s.add_argument("--solvers", default="heun,dpmpp2m", help="solvers to try, comma-separated (default heun,dpmpp2m)")
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
    try:
        args.func(args)
    except (LowdiffError, ValueError, FileNotFoundError) as e:
        print(f"lowdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
