"""The headline benchmark's arithmetic: Pareto fronts and the matched-FID ratio (benchmarks/frontier.py)."""
import importlib
import json
import time
import types

import numpy as np
import pytest

from helpers import BENCH, bench_module


@pytest.fixture(scope="module")
def frontier():
    yield from bench_module("frontier")


def row(frontier, family, fid, ips, switches="eager fp32"):
    return frontier.Row(family, f"{family} {fid}", None, switches, fid=fid, images_per_s=ips)


def test_pareto_marks_only_undominated_rows(frontier):
    rows = [row(frontier, "lowdiff", 2.0, 1.0), row(frontier, "lowdiff", 3.0, 2.0),
            row(frontier, "lowdiff", 3.5, 1.5), row(frontier, "lowdiff", 2.0, 0.5)]
    frontier.pareto(rows)
    assert [r.front for r in rows] == [True, True, False, False]


def test_matched_ratio_uses_fastest_rows_within_noise_of_the_baseline_best(frontier):
    rows = [row(frontier, "baseline", 2.70, 6.0), row(frontier, "baseline", 2.72, 8.0),
            row(frontier, "baseline", 3.00, 9.0),
            row(frontier, "lowdiff", 2.50, 4.0), row(frontier, "lowdiff", 2.74, 5.0),
            row(frontier, "lowdiff", 2.80, 10.0)]
    out = frontier.matched(rows, noise=0.05, switches=None)
    assert out["bound"] == pytest.approx(2.75)
    assert out["baseline"]["images_per_s"] == 8.0   # 2.72 is within the noise; 3.00 is not
    assert out["lowdiff"]["images_per_s"] == 5.0    # 2.80 is outside the bound
    assert out["ratio"] == pytest.approx(5.0 / 8.0)


def test_matched_without_a_lowdiff_row_in_range_gives_no_ratio(frontier):
    rows = [row(frontier, "baseline", 2.0, 6.0), row(frontier, "lowdiff", 3.0, 10.0)]
    out = frontier.matched(rows, noise=0.1, switches="eager fp32")
    assert "ratio" not in out and out["baseline"]["fid"] == 2.0


def test_without_a_match_the_ratio_at_our_own_best_fid_is_given_apart(frontier):
    """No LowDiff row reaches the baseline's best: no headline ratio, but the ratio at LowDiff's own
    best FID (+ noise) over the fastest baseline row within it, under its own key."""
    rows = [row(frontier, "baseline", 2.0, 3.0), row(frontier, "baseline", 3.05, 7.0),
            row(frontier, "baseline", 3.5, 20.0),
            row(frontier, "lowdiff", 3.0, 10.0), row(frontier, "lowdiff", 3.08, 14.0),
            row(frontier, "lowdiff", 4.0, 30.0)]
    out = frontier.matched(rows, noise=0.1, switches=None)
    assert "ratio" not in out
    a = out["at_our_best"]
    assert a["our_best_fid"] == 3.0 and a["bound"] == pytest.approx(3.1)
    assert a["lowdiff"]["images_per_s"] == 14.0 and a["baseline"]["images_per_s"] == 7.0
    assert a["ratio"] == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["frontier.json", "frontier-cifar.json", "frontier-b64.json", "frontier-cifar-b64.json",
                                  "frontier-eqc.json", "frontier-cifar-eqc.json"])
def test_published_frontier_json_agrees_with_its_rows(frontier, name):
    """docs/results/frontier*.json: the quoted ratios follow from the rows and the noise it lists."""
    data = json.loads((BENCH.parent / "docs" / "results" / name).read_text())
    rows = [row(frontier, r["family"], r["fid"], r["images_per_s"], r["switches"]) for r in data["rows"]]
    for h in data["headlines"]:
        switches = None if h["switches"] == "either" else h["switches"]
        competitors, ours = tuple(h.get("competitors", ["baseline"])), tuple(h.get("ours", ["lowdiff"]))
        assert (frontier.matched(rows, data["noise"], switches, competitors, ours).get("ratio")
                == pytest.approx(h.get("ratio")))


def test_matched_against_the_best_competitor_takes_progressive_rows_too(frontier):
    """The bound is the best FID of either training-free family; the ratio is over the fastest
    row of either within it."""
    rows = [row(frontier, "baseline", 2.70, 6.0), row(frontier, "progressive", 2.60, 7.0),
            row(frontier, "progressive", 2.64, 9.0), row(frontier, "lowdiff", 2.62, 12.0)]
    alone = frontier.matched(rows, noise=0.05, switches=None)
    assert alone["baseline_best_fid"] == 2.70 and alone["ratio"] == pytest.approx(12.0 / 6.0)
    both = frontier.matched(rows, noise=0.05, switches=None, competitors=frontier.COMPETITORS)
    assert both["bound"] == pytest.approx(2.65) and both["baseline"]["family"] == "progressive"
    assert both["ratio"] == pytest.approx(12.0 / 9.0)


def test_the_distilled_pair_is_matched_among_itself(frontier):
    """Consistency-tuned LowDiff is compared with the consistency-tuned baseline only, and only
    when both were sampled; the training-free headlines ignore the distilled rows."""
    rows = [row(frontier, "baseline", 2.2, 8.0), row(frontier, "lowdiff", 2.3, 17.0),
            row(frontier, "baseline-ct", 4.4, 35.0), row(frontier, "baseline-ct", 9.5, 74.0),
            row(frontier, "lowdiff-ct", 4.5, 46.0), row(frontier, "lowdiff-ct", 2.8, 23.0)]
    args = type("Args", (), {"switches": ["eager fp32"]})()
    headlines = frontier.all_headlines(rows, 0.2, args)
    plain, distilled = headlines[0], headlines[-1]
    assert plain["ratio"] == pytest.approx(17.0 / 8.0)
    assert distilled["ours"] == ["lowdiff-ct"] and distilled["bound"] == pytest.approx(4.6)
    assert distilled["ratio"] == pytest.approx(46.0 / 35.0)
    assert all(h.get("ours") == ["lowdiff"] for h in frontier.all_headlines(rows[:-2], 0.2, args))


def test_replot_redraws_the_published_plot_from_its_json(frontier, tmp_path):
    out = tmp_path / "frontier.png"
    frontier.replot(BENCH.parent / "docs" / "results" / "frontier.json", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_noise_samples_the_baseline_best_plan_on_disjoint_seed_ranges(frontier, monkeypatch):
    """The noise bound comes from sampled FIDs (not real training images, which a trained feature
    extractor sees differently): the baseline's best plan on consecutive ranges of --num seeds."""
    calls = []

    def fake_fid(pipe, spec, plan, precision, seed, args, extractor):
        calls.append((spec, plan, precision, seed))
        return 2.0 + (seed - args.seed) / args.num * 0.1
    monkeypatch.setattr(frontier, "cached_fid", fake_fid)
    rows = [row(frontier, "baseline", 2.5, 6.0), row(frontier, "baseline", 2.0, 8.0),
            row(frontier, "lowdiff", 1.0, 9.0)]
    for r in rows:
        r.plan, r.fid_precision = f"plan of {r.label}", "fp32"
    args = type("Args", (), {"seed": 100_000, "num": 2000, "noise_sets": 3})()
    best, fids = frontier.seed_noise(rows, {"baseline": None}, {"baseline": "edm"}, args, extractor=None)
    assert best is rows[1]
    assert [c[3] for c in calls] == [100_000, 102_000, 104_000]
    assert all(c[:3] == ("edm", "plan of baseline 2.0", "fp32") for c in calls)
    assert fids == pytest.approx([2.0, 2.1, 2.2])


def test_tuned_rows_name_the_plans_their_search_started_from(frontier, tmp_path):
    """Two tunes at one budget stay two rows: the one started from other plans (`tune --start`) says so."""
    plan = {"stages": [{"resolution": 32, "steps": 5}]}
    (tmp_path / "a.json").write_text(json.dumps(plan | {"tuned": {"budget_nfe": 5, "screen_num": 200}}))
    (tmp_path / "b.json").write_text(json.dumps(plan | {"tuned": {"budget_nfe": 5, "screen_num": 200,
                                                                  "start_plans": ["docs/results/x-b6.json"]}}))
    labels = [label for label, _ in frontier.load_tuned([str(tmp_path / "a.json"), str(tmp_path / "b.json")])]
    assert labels == ["tuned, budget 5 eff. NFE", "tuned, budget 5 eff. NFE, search also started from x-b6"]


def test_two_tunes_at_one_budget_keep_distinct_labels(frontier, tmp_path):
    """Plans tuned for two models at the same budget (one transplanted) stay two named rows."""
    plan = {"stages": [{"resolution": 32, "steps": 5}], "tuned": {"budget_nfe": 4, "screen_num": 200}}
    for name in ("own-b4", "other-b4"):
        (tmp_path / f"{name}.json").write_text(json.dumps(plan))
    labels = [label for label, _ in frontier.load_tuned([str(tmp_path / "own-b4.json"), str(tmp_path / "other-b4.json")])]
    assert labels == ["tuned, budget 4 eff. NFE (own-b4)", "tuned, budget 4 eff. NFE (other-b4)"]


def test_cached_measures_each_key_once_and_keeps_other_entries(frontier, tmp_path):
    """An interrupted run resumes: a stored key is not measured again, and a value another run
    stored meanwhile survives the write."""
    cache, calls = tmp_path / "cache.json", []

    def measure(value):
        def run():
            calls.append(value)
            cache.write_text(json.dumps({**json.loads(cache.read_text() or "{}"), "other": 7.0}))
            return value
        return run
    cache.write_text("{}")
    assert frontier.cached(cache, "a", measure(1.5)) == 1.5
    assert frontier.cached(cache, "a", measure(9.0)) == 1.5
    assert calls == [1.5] and json.loads(cache.read_text()) == {"a": 1.5, "other": 7.0}


def test_latent_diagnosis_oracle_rows_match_the_classes_in_order(frontier):
    """The training-latent oracle (benchmarks/latent_diagnosis.py, imported beside frontier.py) takes,
    per sample, the next training image of the sample's class."""
    diagnosis = importlib.import_module("latent_diagnosis")
    train = np.array([3, 1, 3, 0, 1, 3])
    assert diagnosis.matched_rows(train, [3, 3, 1, 0, 3, 1]) == [0, 2, 1, 3, 5, 4]


def test_lean_grid_keeps_the_paper_plan_and_the_tuned_plans_only(frontier):
    from lowdiff.presets import get_preset
    plan = get_preset("lowdiff-fashion-tiny-cond").stages
    tuned = [("tuned, budget 4 eff. NFE", plan.replace(0, steps=5))]
    full = [label for label, _ in frontier.lowdiff_grid(plan, tuned)]
    lean = [label for label, _ in frontier.lowdiff_grid(plan, tuned, lean=True)]
    assert lean == ["paper plan, Heun", "tuned, budget 4 eff. NFE"]
    assert set(lean) < set(full) and "paper plan, DPM-Solver++(3M)" in full


@pytest.fixture(scope="module")
def fid_vs_compute():
    yield from bench_module("fid_vs_compute")


def test_fid_vs_compute_picks_budgets_per_family_within_a_batch(fid_vs_compute):
    wanted = fid_vs_compute.wanted
    assert wanted(None, "edm", 12.3)
    assert wanted(["20", "edm:40"], "lowdiff", 20.048)          # a snapshot overshoots by less than a batch
    assert wanted(["20", "edm:40"], "edm", 40.0) and not wanted(["20", "edm:40"], "lowdiff", 40.0)
    assert not wanted(["20"], "edm", 20.5)


def test_fid_vs_compute_interpolates_the_baseline_curve_inside_its_points_only(fid_vs_compute):
    curve = {"rows": [{"train_tflop": 50.0, "fid": {"paper": 10.0, "tuned": None}},
                      {"train_tflop": 100.0, "fid": {"paper": 6.0, "tuned": 4.0}}]}
    assert fid_vs_compute.interpolated(curve, "paper", 75.0) == pytest.approx(8.0)
    assert fid_vs_compute.interpolated(curve, "paper", 100.0) == pytest.approx(6.0)
    assert fid_vs_compute.interpolated(curve, "paper", 100.5) == pytest.approx(6.0)   # an end within 1%
    assert fid_vs_compute.interpolated(curve, "paper", 120.0) is None       # no extrapolation
    assert fid_vs_compute.interpolated(curve, "tuned", 75.0) is None        # one measured point: 100 only


def test_flow_grids_sample_flow_valid_solvers_guided_at_the_given_scale(frontier):
    """A flow pair's hand-made rows: Euler at the preset's steps and fewer, a flow-valid Heun, the
    preset plan and its DPM-Solver++(3M) twin, all valid for their model and guided at (scale,
    interval); a tuned plan keeps its own guidance."""
    from lowdiff.diffusion.solvers import flow_solvers
    from lowdiff.presets import get_preset
    base, low = get_preset("flow-fashion-latent-tiny"), get_preset("lowdiff-fashion-latent-tiny")
    tuned = [("tuned, budget 9 eff. NFE", low.stages.replace(1, steps=6).with_guidance([1.5, 2.0], 0.7))]
    grids = [(base, frontier.flow_baseline_grid(base.stages, [], (2.5, 0.89))),
             (low, frontier.lowdiff_grid(low.stages, tuned, cfg=(2.5, 0.89)))]
    assert [label for label, _ in grids[0][1]] == ["Euler 20 steps", "Euler 14 steps", "Euler 10 steps",
                                                   "Heun 11 steps"]
    assert [label for label, _ in grids[1][1]][:3] == ["paper plan, Euler", "paper plan, DPM-Solver++(3M)",
                                                       "tuned, budget 9 eff. NFE"]
    for preset, grid in grids:
        for label, plan in grid:
            preset.check_plan(plan)
            assert all(s.solver in flow_solvers() for s in plan), label
            guidance = {(s.cfg_scale, s.cfg_sigma_max) for s in plan}
            assert guidance == ({(1.5, 0.7), (2.0, 0.7)} if label.startswith("tuned") else {(2.5, 0.89)}), label


def test_a_flow_pair_is_named_flow_and_the_pixel_pair_edm(frontier):
    pixel, flow = frontier.family_names(False), frontier.family_names(True)
    assert pixel == {"baseline": "EDM", "progressive": "EDM progressive", "lowdiff": "LowDiff",
                     "baseline-ct": "EDM consistency-tuned", "lowdiff-ct": "LowDiff consistency-tuned"}
    assert list(flow) == ["baseline", "lowdiff"] and "flow" in flow["baseline"]
    assert not any("EDM" in name for name in flow.values())


def test_a_tiny_latent_flow_pair_end_to_end_with_the_decode_timed(frontier, tmp_path, one_thread):
    """A tiny DiT flow pair through the frontier without FIDs: guided flow rows, each timed with its
    VAE decode (a stand-in that takes 20 ms), a page and a plot that name the flow baseline."""
    from conftest import tiny_dit_preset
    from lowdiff.diffusion.denoiser import Denoiser
    from lowdiff.pipeline import Pipeline
    decoded = []

    def slow_decode(z):
        decoded.append(tuple(z.shape))
        time.sleep(0.02)
        return z
    pipes = {family: Pipeline(Denoiser.from_preset(preset), preset)
             for family, preset in (("lowdiff", tiny_dit_preset()), ("baseline", tiny_dit_preset(stages=(8,))))}
    for pipe in pipes.values():
        pipe.decode = slow_decode
    args = types.SimpleNamespace(lowdiff_plans=[], baseline_plans=[], progressive_plans=[], lowdiff_ct=None,
                                 baseline_ct=None, lean=False, cfg=2.0, cfg_sigma_max=0.89, switches=["eager fp32"],
                                 batch=2, repeats=1, warmup=0, num=4, seed=0, noise_sets=2, ref="ref.npz",
                                 ref_name="test|4", fast_fid="fp32", earlier_headlines=[], title="tiny latents",
                                 lowdiff="tiny-low", baseline="tiny-base", heading=frontier.FLOW_HEADING,
                                 out=str(tmp_path / "b.md"), plot=str(tmp_path / "f.png"))
    args.flow = frontier.flow_pair(pipes, args)
    rows = frontier.build_rows(pipes, args)
    assert args.flow and {r.family for r in rows} == {"lowdiff", "baseline"} and len(rows) == 6
    report = frontier.time_rows(rows, pipes, args)
    assert decoded == [(2, 4, 8, 8)] * len(rows)                   # top-stage latents, once per timed run
    assert all(t["latency_s"] >= 0.02 for t in report["rows"])     # the decode is inside the timed region
    for r, fid in zip(rows, range(len(rows))):
        r.fid = 10.0 - fid
    for family in frontier.family_names(True):
        frontier.pareto([r for r in rows if r.family == family])
    headlines = frontier.all_headlines(rows, 0.1, args)
    text = frontier.markdown(rows, report, 0.1, "Euler 6 steps", "1, 2", headlines, [], args, "cmd")
    assert "| LightningDiT-style flow | Euler 6 steps | euler | 6 | 2 (sigma <= 0.89) |" in text
    assert "EDM" not in text and "VAE decode" in text
    frontier.plot(rows, tmp_path / "f.png", "tiny", 2, frontier.family_names(True))
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_states_each_model_training_from_its_record_not_a_fixed_claim(frontier, tmp_path):
    """Equal images or equal compute is read from the two models' training records; a model
    without one is said to have none, rather than the page claiming a budget."""
    def model(name, kimg, tflop):
        (tmp_path / name).mkdir()
        (tmp_path / name / "training.json").write_text(json.dumps({"kimg": kimg, "train_tflop": tflop}))
        return str(tmp_path / name)
    names = frontier.family_names(True)
    base = model("base", 120.0, 290.3)
    assert frontier.training_note(model("eqc", 99.648, 290.4), base, names) == (
        "equal training compute: LowDiff trained on 99.6 kimg (290.4 TFLOP), the baseline on 120 kimg (290.3 TFLOP)")
    assert frontier.training_note(model("eqi", 120.0, 363.0), base, names).startswith(
        "equal images, LowDiff at 1.25x the baseline's training compute:")
    assert frontier.training_note(str(tmp_path / "nothing"), base, names) == (
        "the training compute of the two is not recorded")
