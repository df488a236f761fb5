"""The autoenc command, run in-process on a few dozen synthetic digits."""
import json
import subprocess
import sys

import numpy as np
import pytest

from autoenc import cli, datasets, models, saving
from autoenc.monitors import CollapseMonitor

QUICK = ["--dataset", "digits", "--limit", "32", "--batch-size", "16", "--verbose", "0"]
FILES = {"model.autoenc", "reconstructions.png", "loss.png", "latent.png", "metrics.json"}


def train(out, *extra):
    return cli.main(["train", *QUICK, "--out", str(out), *extra])


def test_train_writes_the_run_directory(tmp_path, capsys):
    assert train(tmp_path / "run", "--epochs", "1") == 0
    assert {p.name for p in (tmp_path / "run").iterdir()} == FILES
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["recipe"] == "default"
    assert metrics["loss"] == "binary_crossentropy" and metrics["epochs"] == 1
    assert metrics["train_samples"] == 32 and metrics["test_samples"] == 5
    assert {"loss", "val_loss", "test_mse"} <= set(metrics["final"])
    assert set(metrics["versions"]) >= {"autoenc", "numpy", "numba", "matplotlib"}
    for name in ("reconstructions.png", "loss.png", "latent.png"):
        assert (tmp_path / "run" / name).read_bytes().startswith(b"\x89PNG")

    run = str(tmp_path / "run")
    assert cli.main(["evaluate", run, "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert set(json.loads(line)) >= {"loss", "test_mse", "test_binary_crossentropy"}
    assert cli.main(["reconstruct", run, "--out", str(tmp_path / "r.png"), "-n", "5"]) == 0
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    assert cli.main(["summary", run, "--plot", str(tmp_path / "model.svg")]) == 0
    out = capsys.readouterr().out
    assert "conv2d_6 (Conv2D)" in out and "Total params: 4,385" in out and "Trained 1 epochs on digits" in out
    assert b"<svg" in (tmp_path / "model.svg").read_bytes()


def test_resume_continues_exactly(tmp_path):
    assert train(tmp_path / "straight", "--epochs", "2") == 0
    assert train(tmp_path / "resumed", "--epochs", "1") == 0
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "resumed"), "--epochs", "2", "--verbose", "0"]) == 0
    a = models.load_model(tmp_path / "straight" / "model.autoenc").get_weights()
    b = models.load_model(tmp_path / "resumed" / "model.autoenc").get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]["loss"]) == 2


def test_interrupt_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupt(self, batch, logs=None):
        if self._epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(CollapseMonitor, "on_train_batch_end", interrupt)
    assert train(tmp_path / "run", "--epochs", "3") == 130
    assert "--resume" in capsys.readouterr().out
    assert saving.load_metadata(tmp_path / "run" / "model.autoenc")["epochs_done"] == 1
    models.load_model(tmp_path / "run" / "model.autoenc")   # intact and loadable
    monkeypatch.undo()
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "run"), "--epochs", "2", "--verbose", "0"]) == 0


def test_offline_falls_back_to_digits_in_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        print("Downloading data from https://example.invalid/mnist.npz", file=sys.stderr)
        raise datasets.DownloadError("Could not download https://example.invalid/mnist.npz: no network")
    small = datasets.digits.load_data(n_train=48, n_test=8, cache=False)
    monkeypatch.setattr(datasets.mnist, "load_data", offline)
    monkeypatch.setattr(datasets.digits, "load_data", lambda *a, **k: small)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--batch-size", "16", "--verbose", "0"]) == 0
    captured = capsys.readouterr()
    mentions = [l for l in (captured.out + captured.err).splitlines() if "mnist.npz" in l or "Downloading" in l]
    assert len(mentions) == 1 and "synthetic digits" in mentions[0], mentions
    assert {p.name for p in (tmp_path / "runs" / "digits-default").iterdir()} == FILES


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "missing")]) == 1
    assert "No model at" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "none")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "0"])


def test_python_dash_m_autoenc_help():
    result = subprocess.run([sys.executable, "-m", "autoenc", "train", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "--recipe" in result.stdout and "--resume" in result.stdout
