"""What several test modules share: running the `lowdiff` command in-process, EDM's key names, a tiny
DiT pair (a flow baseline and the cascade started from it), importing a benchmarks/ script."""
import importlib
import sys
from pathlib import Path

import torch

from lowdiff.cli import main


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `lowdiff ARGV`; argparse's own errors exit via SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def to_edm_layout(state: dict, resolution: int) -> dict:
    """Our UnifiedUNet state dict in NVlabs/edm's naming (inside EDMPrecond: `model.` prefix,
    stem `enc.RxR_conv`, head `dec.RxR_aux_*`, resample_filter buffers)."""
    R = f"{resolution}x{resolution}"
    out = {}
    for k, v in state.items():
        k = k.replace(f"inputs.{R}.", f"enc.{R}_conv.").replace(f"outputs.{R}.norm.", f"dec.{R}_aux_norm.")
        out["model." + k.replace(f"outputs.{R}.conv.", f"dec.{R}_aux_conv.")] = v
    out[f"model.enc.{resolution // 2}x{resolution // 2}_down.resample_filter"] = torch.ones(1, 1, 2, 2)
    return out


def stopped_and_resumed(capsys, args: list, tmp_path) -> dict:
    """`lowdiff ARGS` (a train command started --init-from) run to 16 images in tmp_path/a and re-run to
    32 (a resume: no second initialisation), then to 32 at once in tmp_path/b: checks both end with the
    same weights and returns them."""
    from lowdiff import storage
    code, _, err = run(capsys, *args, "--out", tmp_path / "a", "--duration-kimg", "0.016")
    assert code == 0 and "started from" in err, err
    code, _, err = run(capsys, *args, "--out", tmp_path / "a", "--duration-kimg", "0.032")
    assert code == 0 and "started from" not in err, err
    code, _, err = run(capsys, *args, "--out", tmp_path / "b", "--duration-kimg", "0.032")
    assert code == 0, err
    a, b = (storage.load_tensors(tmp_path / d / "model.safetensors") for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    return a


def dit_cascade_from_baseline():
    """(baseline, cascade): a tiny single-side flow DiT with non-trivial outputs (the DiT zero-inits
    its adaLN, so its weights are perturbed) and the unified 4 -> 8 DiT `--init-from` it, both Denoisers."""
    from conftest import tiny_dit_preset
    from lowdiff.diffusion.denoiser import Denoiser
    from lowdiff.train.init_from import Baseline
    torch.manual_seed(0)
    base, low = Denoiser.from_preset(tiny_dit_preset(stages=(8,))), Denoiser.from_preset(tiny_dit_preset())
    with torch.no_grad():
        for q in base.parameters():
            q.add_(torch.randn_like(q) * 0.05)
    Baseline("test", base.nets["unified"].state_dict()).apply(low)
    return base, low


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_module(name: str):
    """A benchmarks/ script imported as a module (benchmarks/ on sys.path while it is used); a
    generator, for a fixture to `yield from`."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
