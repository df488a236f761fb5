"""Smoke tests: every example runs end to end on a few synthetic digits and writes its pictures."""
import pathlib
import runpy
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PICTURES = {
    "seed_autoencoder.py": {"model.svg", "reconstructions.png", "loss.png"},
    "denoising_autoencoder.py": {"denoised.png", "loss.png"},
    "sparse_autoencoder.py": {"reconstructions.png", "latent.png", "loss.png"},
    "dense_autoencoder.py": {"reconstructions.png", "model.png", "loss.png"},
    "keras_io_denoising.py": {"noisy.png", "reconstructions.png", "denoised.png"},
    "timeseries_anomaly.py": {"loss.png", "reconstruction.png", "anomalies.png"},
    "keras_io_vae.py": {"latent_space.png", "label_clusters.png"},
}


@pytest.mark.parametrize("script", sorted(PICTURES))
def test_example_runs_and_writes_its_pictures(script, tmp_path, monkeypatch, capsys):
    argv = [script, "--limit", "48", "--epochs", "1", "--out", str(tmp_path)]
    if script == "keras_io_vae.py":
        argv += ["--grid", "5"]   # keras-io's 30 x 30 grid is 900 predict calls
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")   # in-process: the compiled kernels are reused
    assert PICTURES[script] <= {p.name for p in tmp_path.iterdir()}
    assert "Wrote" in capsys.readouterr().out



def test_tf_tutorial_autoencoders_runs(tmp_path, monkeypatch, capsys):
    """TensorFlow's "Intro to Autoencoders": the three subclassed models train, encode and decode with
    .numpy(), and the anomaly detector's threshold is computed (synthetic digits and ECG-like beats)."""
    script = "tf_tutorial_autoencoders.py"
    monkeypatch.setattr(sys, "argv", [script, "--synthetic", "--limit", "48", "--epochs", "1", "--ecg-epochs", "2",
                                      "--out", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert {"basic.png", "denoise.png", "ecg_loss.png"} <= {p.name for p in tmp_path.iterdir()}
    out = capsys.readouterr().out
    assert "Threshold:" in out and "Accuracy = " in out and "Wrote" in out
