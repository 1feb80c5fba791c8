"""What several test modules share: running the `lowdiff` command in-process, EDM's key names."""
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
