"""Training throughput of one process against torchrun with N processes (DDP, gloo on CPU,
NCCL on CUDA) for the same preset and global batch; appends a table to docs/benchmarks.md.

    python benchmarks/train_scaling.py --preset edm-fashion-tiny --kimg 3 --nproc 2

On CPU the single process gets all the threads (OMP_NUM_THREADS = nproc) and each DDP
process one, so both use the same cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from _markdown import write_section

ROOT = Path(__file__).resolve().parents[1]


def run(preset: str, kimg: float, nproc: int, threads: int, device: str, out: Path) -> dict:
    train = ["train", "--preset", preset, "--data", "fashion-mnist", "--out", str(out), "--duration-kimg", str(kimg),
             "--log-kimg", str(kimg / 3), "--no-progress", "--device", device]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "lowdiff.cli"] if nproc > 1 else [sys.executable, "-m", "lowdiff.cli"]) + train
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # Skip the first interval (start-up, allocator warm-up): rate over the remaining ones.
    first, last = log[0], log[-1]
    rate = (last["kimg"] - first["kimg"]) * 1000 / (last["seconds"] - first["seconds"])
    return {"processes": nproc, "threads_per_process": threads, "images_per_s": rate, "kimg": kimg}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="edm-fashion-tiny")
    p.add_argument("--kimg", type=float, default=3.0)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(args.preset, args.kimg, 1, args.nproc, args.device, Path(tmp) / "single"),
                run(args.preset, args.kimg, args.nproc, 1, args.device, Path(tmp) / "ddp")]
    lines = ["## Training throughput: one process vs torchrun DDP", "",
             f"Measured {date.today().isoformat()}, preset `{args.preset}` (global batch from the preset), "
             f"{args.kimg} kimg of Fashion-MNIST, device {args.device}; rate over all log intervals but the first.",
             f"Command: `python benchmarks/train_scaling.py {' '.join(sys.argv[1:])}`", "",
             "| processes | threads per process | img/s |", "|---|---|---|"]
    lines += [f"| {r['processes']} | {r['threads_per_process']} | {r['images_per_s']:.1f} |" for r in rows]
    lines += ["", f"Ratio DDP / single: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.2f}x"]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(Path(args.out), f"train-scaling:{args.device}", text)

if __name__ == "__main__":
    main()
