"""The latent pair on real data: the single-resolution flow baseline on 8x8x4 latents of the
bundled Fashion-MNIST VAE against latent LowDiff 4x4 -> 8x8 (same DiT width, same image
budget), measured like the pixel pair: FID / IS of decoded samples in the bundled classifier's
feature space for a few classifier-free guidance scales, throughput side by side including the
VAE decode, effective NFE, and labelled grids of both. Writes the `latent-pair` section of
docs/results.md.

    python benchmarks/latent_pair.py --lowdiff runs/fm-latent-lowdiff --baseline runs/fm-latent-flow \\
        --ref runs/fashion-test-ref.npz --num 2000 --cfg 1 1.5 2.5
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

from lowdiff.eval.bench import BenchOptions, Variant, device_name, measure
from lowdiff.eval.evaluate import evaluate_pipeline, get_extractor
from lowdiff.images import save_grid
from lowdiff.pipeline import Pipeline

from _markdown import write_section

ROOT = Path(__file__).resolve().parents[1]


def time_end_to_end(pipes: dict[str, Pipeline], plans: dict[str, object], batch: int, repeats: int) -> dict[str, float]:
    """Seconds per batch of `pipe(seeds)`: the cascade and the VAE decode to uint8, models alternating."""
    for name, pipe in pipes.items():                                      # warm-up
        pipe(seeds=list(range(batch)), stages=plans[name], batch=batch)
    times = {name: [] for name in pipes}
    for rep in range(repeats):
        for name, pipe in pipes.items():
            seeds = list(range(rep * batch, (rep + 1) * batch))
            start = time.perf_counter()
            pipe(seeds=seeds, stages=plans[name], batch=batch)
            times[name].append(time.perf_counter() - start)
    return {name: sum(t) / len(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowdiff", required=True)
    p.add_argument("--baseline", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.5, 2.5])
    p.add_argument("--cfg-sigma-max", dest="cfg_sigma_max", type=float, default=0.89)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "latent-pair.json"))
    p.add_argument("--reuse-fid", dest="reuse_fid", action="store_true",
                   help="take the FID rows from --json (a previous run) and measure only the throughput and grids")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = p.parse_args()
    command = "python benchmarks/latent_pair.py " + " ".join(sys.argv[1:])

    pipes = {"baseline": Pipeline.from_pretrained(args.baseline), "lowdiff": Pipeline.from_pretrained(args.lowdiff)}
    extractor = get_extractor("classifier")
    rows = []
    if args.reuse_fid:                                   # FIDs from the last run's JSON; timing and grids anew
        rows = json.loads(Path(args.json).read_text())["rows"]
    for name, pipe in pipes.items() if not rows else ():
        for scale in args.cfg:
            plan = pipe.preset.stages.with_guidance(scale, args.cfg_sigma_max)
            t = time.perf_counter()
            ev = evaluate_pipeline(pipe, args.ref, extractor, "classifier", num=args.num, seed=args.seed, stages=plan,
                                   batch=250, progress=False)
            rows.append({"model": name, "preset": pipe.preset.name, "cfg": scale, "fid": ev.fid,
                         "is": ev.inception_score[0], "nfe": plan.nfe_per_stage, "seconds": time.perf_counter() - t})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    best = {name: min((r for r in rows if r["model"] == name), key=lambda r: r["fid"]) for name in pipes}
    plans = {name: pipes[name].preset.stages.with_guidance(best[name]["cfg"], args.cfg_sigma_max) for name in pipes}
    latency = time_end_to_end(pipes, plans, args.batch, args.repeats)
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=1, device="cpu")
    network = measure([Variant(n, pipes[n].preset, stages=plans[n], model=pipes[n].denoiser) for n in pipes], opts)
    for name, net in zip(pipes, network):
        best[name] |= {"images_per_s": args.batch / latency[name], "network_images_per_s": net["images_per_s"],
                       "effective_nfe": net["effective_nfe"], "latency_s": latency[name]}
    ratio = best["lowdiff"]["images_per_s"] / best["baseline"]["images_per_s"]
    net_ratio = best["lowdiff"]["network_images_per_s"] / best["baseline"]["network_images_per_s"]
    grids = {}
    for name, pipe in pipes.items():
        k = pipe.preset.network.label_dim
        labels = [c for c in range(k) for _ in range(8)]
        out = pipe(seeds=list(range(len(labels))), class_labels=labels, stages=plans[name])
        grids[name] = f"img/fashion-latent-{name}.png"
        save_grid(out.images, ROOT / "docs" / grids[name], ncol=8, row_labels=pipe.preset.class_names, scale=2)

    Path(args.json).write_text(json.dumps({"command": command, "rows": rows, "best": best, "ratio": ratio,
                                           "network_ratio": net_ratio, "device": device_name("cpu")}, indent=1))
    lines = [f"Generated by `{command}` on {date.today().isoformat()} ({device_name('cpu')}). FID / IS of "
             f"{args.num} decoded samples (seeds {args.seed}-{args.seed + args.num - 1}, classes drawn from the seeds) "
             f"in the bundled classifier's feature space against the test set; guidance on every stage at noise "
             f"levels <= {args.cfg_sigma_max} (LightningDiT's interval); Euler as in the presets.", "",
             "| model | CFG scale | NFE per stage | FID | IS |", "|---|---|---|---|---|"]
    for r in rows:
        nfe = "/".join(str(v) for v in r["nfe"].values())
        mark = " (best)" if r is best[r["model"]] else ""
        lines.append(f"| `{r['preset']}` | {r['cfg']:g}{mark} | {nfe} | {r['fid']:.3f} | {r['is']:.2f} |")
    b, lo = best["baseline"], best["lowdiff"]
    lines += ["", f"Throughput at each model's best scale, batch {args.batch}, mean of {args.repeats} runs, the two "
              "models alternating in one process:", "",
              "| model | effective NFE (measured) | img/s with the VAE decode | img/s, network only | FID |",
              "|---|---|---|---|---|",
              f"| `{b['preset']}` | {b['effective_nfe']} | {b['images_per_s']:.2f} | {b['network_images_per_s']:.2f} | "
              f"{b['fid']:.3f} |",
              f"| `{lo['preset']}` | {lo['effective_nfe']} | {lo['images_per_s']:.2f} | "
              f"{lo['network_images_per_s']:.2f} | {lo['fid']:.3f} |", "",
              f"**Throughput ratio {ratio:.2f}x with the decode ({net_ratio:.2f}x network only).** Paper, ImageNet "
              "256 (LightningDiT-B/1 on VA-VAE latents, Tab. 4 / 5): FID 4.00 vs 4.38, 1.66x.", "",
              f"| baseline, {b['nfe'][max(b['nfe'])]} NFE | LowDiff 4-8 |", "|---|---|",
              f"| ![baseline]({grids['baseline']}) | ![LowDiff]({grids['lowdiff']}) |"]
    write_section(Path(args.out), "latent-pair", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
