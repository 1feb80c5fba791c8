"""`lowdiff vae train` / `vae eval` and the bundled Fashion-MNIST autoencoder."""
import json

import pytest
import torch

pytest.importorskip("diffusers")

from lowdiff.cli import main  # noqa: E402
from lowdiff.data import make_synthetic  # noqa: E402
from lowdiff.data.idx import FASHION_DIR  # noqa: E402
from lowdiff.data.vae import load_vae  # noqa: E402
from lowdiff.eval.evaluate import evaluate_autoencoder, get_extractor  # noqa: E402
from lowdiff.train.vae import VAEConfig, VAETrainConfig, VAETrainer  # noqa: E402

TINY = VAEConfig(in_channels=1, block_out_channels=(8, 16, 16))
# measured on these 256 images (on all 10,000: docs/results.md): f4 29.71 dB (29.44), f2 29.32 dB (29.08)
BUNDLED_VAES = [("fashion-vae", [4, 8, 8], 29.0), ("fashion-vae-f2", [1, 16, 16], 29.0)]


def test_training_a_few_steps_on_generated_images_learns_and_resumes_exactly(tmp_path, one_thread):
    ds = make_synthetic(48, resolution=16)
    cfg = VAETrainConfig(batch=8, lr=2e-3, duration_kimg=0.064, log_kimg=0.008, checkpoint_kimg=0.032)
    full = VAETrainer(TINY, cfg, ds, tmp_path / "full")
    full.run(progress=False)
    log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and log[-1]["loss"] < log[0]["loss"] and log[-1]["psnr"] > log[0]["psnr"]
    vae = load_vae(tmp_path / "full")                          # a diffusers directory, safetensors weights
    assert (tmp_path / "full" / "diffusion_pytorch_model.safetensors").is_file()
    z = vae.encode(torch.zeros(2, 1, 16, 16)).latent_dist.mode()
    assert z.shape == (2, 4, 4, 4)

    VAETrainer(TINY, VAETrainConfig(**{**cfg.__dict__, "duration_kimg": 0.032}), ds, tmp_path / "part").run(False)
    resumed = VAETrainer(TINY, cfg, ds, tmp_path / "part")
    resumed.run(progress=False)
    assert resumed.step == full.step == 8
    for (k, a), b in zip(full.vae.state_dict().items(), resumed.vae.state_dict().values()):
        assert torch.equal(a, b), k


def test_vae_cli_train_and_eval_and_bad_settings(tmp_path, capsys, one_thread):
    code = main(["vae", "train", "--data", "synthetic:16:16", "--out", str(tmp_path / "v"), "--kimg", "0.016",
                 "--batch", "8", "--channels", "8,16", "--no-progress"])
    assert code == 0 and (tmp_path / "v" / "config.json").is_file()
    code = main(["vae", "eval", "--vae", str(tmp_path / "v"), "--data", "synthetic:16:16", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and "16x16" in err                        # the bundled classifier reads 32x32 images only
    code = main(["vae", "train", "--data", "synthetic:16:16", "--out", str(tmp_path / "w"), "--channels", "8",
                 "--no-progress"])
    assert code == 2 and "two levels" in capsys.readouterr().err


@pytest.mark.skipif(not (FASHION_DIR and __import__("pathlib").Path(FASHION_DIR, "t10k-images-idx3-ubyte.gz")
                         .is_file()), reason="Fashion-MNIST is not installed (make setup installs it)")
@pytest.mark.parametrize("name,latent_shape,psnr_db", BUNDLED_VAES)
def test_the_bundled_vaes_reconstruct_real_test_images(one_thread, name, latent_shape, psnr_db):
    result = evaluate_autoencoder(f"bundled:{name}", "fashion-mnist:test", get_extractor("classifier"),
                                  "classifier", num=256, progress=False)
    assert result["latent_shape"] == latent_shape
    assert result["psnr_mean_db"] > psnr_db, result
