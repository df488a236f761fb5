"""The autoenc command, run in-process on a few dozen synthetic digits."""
import errno
import json
import os
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


# --- issue 17.12: every failure is one line on stderr and exit 1 (runtime) or 2 (usage), never a traceback ---

def _error_lines(captured):
    assert "Traceback" not in captured.err
    return [line for line in captured.err.splitlines() if line.startswith("autoenc")]


def test_offline_mnist_is_one_line_and_exit_1(tmp_path, private_dataset_homes, capsys):
    assert cli.main(["train", "--dataset", "mnist", *QUICK[2:], "--out", str(tmp_path / "run")]) == 1
    lines = _error_lines(capsys.readouterr())
    assert len(lines) == 1 and lines[0].startswith("autoenc train: Could not download") and "mnist" in lines[0]


def test_out_naming_a_file_is_a_usage_error(tmp_path):
    a_file = tmp_path / "not-a-directory"
    a_file.write_text("x")
    result = subprocess.run([sys.executable, "-m", "autoenc", "train", *QUICK, "--out", str(a_file)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"argument --out: '{a_file}' is a file, not a run directory")
    assert a_file.read_text() == "x"


def test_resume_of_a_model_without_run_metadata(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    cli.compile_recipe(cli.build_seed_model(), "default").save(tmp_path / "run" / "model.autoenc")
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "run"), "--verbose", "0"]) == 1
    lines = _error_lines(capsys.readouterr())
    assert len(lines) == 1 and "holds no run state" in lines[0] and "model.autoenc" in lines[0]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_full_or_read_only_output_folder(tmp_path, monkeypatch, capsys, code):
    """A disk that fills up or turns read-only mid-run: the checkpoint's write fails with OSError(code)."""
    def refuse(path, write):
        raise OSError(code, os.strerror(code), str(path))
    monkeypatch.setattr(saving, "atomic_write", refuse)
    assert train(tmp_path / "run", "--epochs", "1") == 1
    lines = _error_lines(capsys.readouterr())
    assert lines == [f"autoenc train: {tmp_path / 'run' / 'model.autoenc'}: {os.strerror(code)}"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write into a 0o500 folder")
def test_read_only_output_folder_for_real(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o500)
    try:
        assert train(tmp_path / "run", "--epochs", "1") == 1
    finally:
        (tmp_path / "run").chmod(0o700)
    lines = _error_lines(capsys.readouterr())
    assert len(lines) == 1 and "Permission denied" in lines[0]


@pytest.mark.parametrize("rate", ["0", "-1e-3", "nan", "inf", "-inf"])
def test_learning_rate_must_be_positive_and_finite(rate, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *QUICK, f"--learning-rate={rate}"])
    assert exit_info.value.code == 2
    assert f"argument --learning-rate: must be a positive finite number, got {rate}" in capsys.readouterr().err


def test_learning_rate_zero_is_not_replaced_by_the_default():
    """`learning_rate or 1e-3` trained at 1e-3 when given 0: 0 now reaches Adam, which refuses it."""
    with pytest.raises(ValueError, match="learning_rate must be a positive number, got 0"):
        cli.compile_recipe(cli.build_seed_model(), "default", 0.0)
    assert cli.compile_recipe(cli.build_seed_model(), "default", 2e-3).optimizer.learning_rate == 2e-3


def test_given_learning_rate_is_used_and_recorded(tmp_path):
    assert train(tmp_path / "run", "--epochs", "1", "--learning-rate", "0.002") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["learning_rate"] == 0.002
    assert models.load_model(tmp_path / "run" / "model.autoenc").optimizer.learning_rate == pytest.approx(0.002)


# --- export ----------------------------------------------------------------------------------------

def _saved_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = models.seed_autoencoder()
    model.compile(optimizer="adam", loss="mse")
    model.save(str(run / "model.autoenc"))
    return run, model


def test_export_onnx_writes_what_onnxruntime_serves(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason='export to ONNX needs onnx and onnxruntime (pip install "autoenc[onnx]")')
    pytest.importorskip("onnx", reason='export to ONNX needs onnx (pip install "autoenc[onnx]")')
    run, model = _saved_run(tmp_path)
    assert cli.main(["export", str(run), "--format", "onnx"]) == 0
    assert capsys.readouterr().out.strip() == f"Wrote {run / 'model.onnx'}"
    out = tmp_path / "elsewhere" / "m.onnx"
    assert cli.main(["export", str(run / "model.autoenc"), "--out", str(out), "--opset", "13"]) == 0
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    for path in (run / "model.onnx", out):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y = s.run(None, {s.get_inputs()[0].name: x})[0]
        # the seed model exported: tests/test_onnx_export.py derives the bound; 1e-5 is the figure
        assert np.abs(y - expected).max() <= 1e-5 * np.abs(expected).max()


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert cli.main(["export", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("autoenc export: No model at") and err.count("\n") == 1
    run, _ = _saved_run(tmp_path)
    assert cli.main(["export", str(run), "--format", "keras", "--out", str(tmp_path / "m.h5")]) == 1
    assert "--out must end in .keras, got" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(run), "--format", "tf"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "onnx", None)   # as if onnx were not installed
    assert cli.main(["export", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "autoenc[onnx]"' in err
    assert not (run / "model.onnx").exists()


@pytest.mark.keras
def test_export_keras_opens_in_keras_with_the_same_predictions(tmp_path, capsys):
    pytest.importorskip("h5py", reason="writing .keras files needs h5py (pip install autoenc[h5])")
    keras = pytest.importorskip("keras", reason="the check opens the file with Keras 3")
    run, model = _saved_run(tmp_path)
    assert cli.main(["export", str(run), "--format", "keras"]) == 0
    assert capsys.readouterr().out.strip() == f"Wrote {run / 'model.keras'}"
    x = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    got = keras.saving.load_model(str(run / "model.keras")).predict(x, verbose=0)
    # same float32 weights, the same sums in another order: the per-layer parity bound (1e-5) carries over
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


VAE_FILES = FILES | {"latent_scatter.png", "manifold.png", "samples.png"}


def test_train_vae_writes_its_pictures_and_resumes(tmp_path, capsys):
    run = tmp_path / "vae"
    assert train(run, "--model", "vae", "--epochs", "1") == 0
    assert {p.name for p in run.iterdir()} == VAE_FILES
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "vae" and metrics["latent_dim"] == 2 and metrics["beta"] == 1.0
    assert {"loss", "reconstruction_loss", "kl_loss", "val_loss", "test_loss", "test_kl_loss",
            "test_mse_from_z_mean"} <= set(metrics["final"])
    for name in VAE_FILES - {"model.autoenc", "metrics.json"}:
        assert (run / name).read_bytes().startswith(b"\x89PNG")
    assert isinstance(models.load_model(run / "model.autoenc"), models.VAE)
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2", "--verbose", "0"]) == 0
    assert "Resuming" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]["kl_loss"]) == 2
    assert cli.main(["evaluate", str(run), "--json"]) == 0
    with pytest.raises(SystemExit) as usage:   # argparse's usage error, exit status 2
        cli.main(["train", "--model", "vae", "--beta", "-1", "--out", str(tmp_path / "x")])
    assert usage.value.code == 2 and "must be a finite number >= 0, got -1" in capsys.readouterr().err
