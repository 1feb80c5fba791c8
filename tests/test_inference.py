"""Inference switches: compile without recompiles, reduced precision, channels_last, batch
padding, CUDA-graph errors, and the side-by-side benchmark."""
import json

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from lowdiff.cli import main
from lowdiff.diffusion.cascade import PerImageGenerator, sample_cascade
from lowdiff.diffusion.denoiser import Denoiser
from lowdiff.eval.bench import BenchOptions, Variant, compare, option_variants, time_evaluations
from lowdiff.inference import FastDenoiser, InferenceOptions



JIT_WARNING = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")   # torch's own imports


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def model_of(preset, scale=None):
    """A tiny denoiser; `scale` redraws all weights ~ N(0, scale^2) so that the output head
    (initialised near zero) passes the network's rounding errors on."""
    torch.manual_seed(0)
    model = Denoiser.from_preset(preset).eval()
    if scale:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, scale)
    return model


@pytest.mark.slow
def test_compile_one_graph_per_resolution_and_no_recompiles(tiny, fresh_dynamo):
    preset = tiny(stages=(16, 32))
    counter = CompileCounterWithBackend("eager")          # dynamo's guards and graphs; no code generation
    fast = FastDenoiser(model_of(preset), InferenceOptions(compile=True, compile_backend=counter))
    time_evaluations(fast, preset, BenchOptions(batch=3, warmup=0), repeats=1)       # ordinary (not inference) tensors
    first = sample_cascade(fast, preset.stages, PerImageGenerator([0, 1, 2]), channels=1)
    assert counter.frame_count == 2                         # one graph per resolution, no graph breaks
    again = sample_cascade(fast, preset.stages, PerImageGenerator([0, 1, 2]), channels=1)
    smaller = sample_cascade(fast, preset.stages, PerImageGenerator([1]), channels=1)           # padded to 3
    other_plan = sample_cascade(fast, preset.stages.with_solver("dpmpp2m"), PerImageGenerator([0, 1, 2]), 1)
    assert counter.frame_count == 2                         # new sigmas, batch and plan: no recompiles
    eager = sample_cascade(model_of(preset), preset.stages, PerImageGenerator([0, 1, 2]), channels=1)
    assert torch.allclose(first.images, eager.images, atol=1e-5) and torch.equal(first.images, again.images)
    assert torch.allclose(smaller.images[0], first.images[1], atol=1e-5)
    assert torch.isfinite(other_plan.images).all()


@pytest.mark.slow
@JIT_WARNING
def test_inductor_matches_eager(tiny, fresh_dynamo):
    """The real backend (C++ code generation on CPU, about a minute on 2 busy cores)."""
    preset = tiny(stages=(32,))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        eager = model_of(preset, 0.05)(x, torch.full((2,), 3.0))
    fast = FastDenoiser(model_of(preset, 0.05), InferenceOptions(compile=True))
    assert ((fast(x, 3.0) - eager).abs().max() / eager.abs().max()).item() < 1e-4


@pytest.mark.slow
def test_bf16_and_channels_last_agree_with_fp32(tiny, fresh_dynamo):
    preset = tiny(stages=(16, 32))
    x, cond = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    ref = model_of(preset, 0.05)(x, torch.full((2,), 3.0), cond=cond, sigma_cond=torch.ones(2))
    err = {}
    for name, opts in (("channels_last", InferenceOptions(channels_last=True)),
                       ("bf16", InferenceOptions(precision="bf16")),
                       ("compiled bf16", InferenceOptions(precision="bf16", compile=True, compile_backend="eager"))):
        out = FastDenoiser(model_of(preset, 0.05), opts)(x, 3.0, cond=cond, sigma_cond=1.0)
        err[name] = ((out - ref).abs().max() / ref.abs().max()).item()
    assert err["channels_last"] < 1e-5
    assert 1e-5 < err["bf16"] < 3e-2 and err["compiled bf16"] == pytest.approx(err["bf16"], rel=0.1)
    images = sample_cascade(FastDenoiser(model_of(preset), InferenceOptions(precision="bf16")), preset.stages,
                            PerImageGenerator([0, 1]), channels=1).images
    assert torch.isfinite(images).all()


def test_cuda_graphs_need_cuda(tiny, tmp_path, capsys):
    from lowdiff.storage import save_pretrained
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        FastDenoiser(model_of(tiny()), InferenceOptions(cuda_graphs=True), "cpu")
    save_pretrained(tmp_path / "m", tiny(), model_of(tiny()).state_dict())
    assert main(["sample", "--checkpoint", str(tmp_path / "m"), "--out", str(tmp_path / "g.png"), "--num", "1",
                 "--cuda-graphs", "--no-progress"]) == 2
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err


def test_compare_reports_variants_side_by_side(tiny):
    preset = tiny(stages=(16, 32))
    base = tiny(stages=(32,))
    variants = [Variant("base", base), Variant("bf16", preset, InferenceOptions(precision="bf16")),
                Variant("2m", preset, stages=preset.stages.with_solver("dpmpp2m"))]
    report = compare(variants, BenchOptions(batch=2, repeats=1, warmup=0))
    rows = report["rows"]
    assert [r["label"] for r in rows] == ["base", "bf16", "2m"] and rows[0]["speedup"] == 1
    assert rows[2]["solver"] == "dpmpp2m/dpmpp2m" and rows[2]["nfe"] == {16: 3, 32: 7}
    assert rows[1]["options"]["precision"] == "bf16" and all(r["images_per_s"] > 0 for r in rows)
    labels = [v.label for v in option_variants(preset, "cpu")]
    assert labels == ["tiny-test eager fp32", "tiny-test compiled", "tiny-test bf16", "tiny-test channels_last",
                      "tiny-test all"]


@JIT_WARNING
def test_bench_cli_compare_options(tiny, tmp_path, capsys, monkeypatch):
    import lowdiff.presets as config
    monkeypatch.setattr(torch._dynamo.config, "disable", True)     # compiled rows run eagerly: fast
    p, base = tiny(stages=(16, 32)), tiny(stages=(32,))
    base.name, p.baseline = "tiny-base", "tiny-base"
    monkeypatch.setitem(config.PRESETS, "tiny-base", base)
    spec = tmp_path / "p.json"
    spec.write_text(p.to_json())
    code = main(["bench", "--preset", str(spec), "--batch", "2", "--repeats", "1", "--warmup", "0",
                 "--compare-options", "--solver", "dpmpp2m", "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and len(report["rows"]) == 6
    assert report["rows"][0]["label"] == "baseline fp32 eager" and report["rows"][0]["solver"] == "heun"
    assert {r["solver"] for r in report["rows"][1:]} == {"dpmpp2m/dpmpp2m"}
