"""autoenc.inspect: FLOPs and memory per layer, the GradientStats callback and its plot."""
import contextlib
import io

import numpy as np
import pytest

from autoenc import inspect
from autoenc.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D, UpSampling2D
from autoenc.models import Model


def small_model():
    inp = Input(shape=(8, 8, 1))
    x = Conv2D(4, 3, activation="relu", padding="same")(inp)
    x = MaxPooling2D()(x)
    x = UpSampling2D()(x)
    out = Conv2D(1, (3, 2), activation="sigmoid", padding="same")(x)
    return Model(inp, out)


def test_flops_and_memory_by_hand():
    model = small_model()
    rows = inspect.layer_table(model, batch_size=2)
    assert [r["type"] for r in rows] == ["InputLayer", "Conv2D", "MaxPooling2D", "UpSampling2D", "Conv2D"]
    # conv 1: every one of 2*8*8*4 outputs takes 3*3*1 multiply-adds; conv 2: 2*8*8*1 outputs, 3*2*4 each
    assert rows[1]["flops"] == 2 * (2 * 8 * 8 * 4) * (3 * 3 * 1)
    assert rows[4]["flops"] == 2 * (2 * 8 * 8 * 1) * (3 * 2 * 4)
    assert rows[2]["flops"] == rows[3]["flops"] == 0
    assert rows[1]["activation_bytes"] == 2 * 8 * 8 * 4 * 4 and rows[2]["activation_bytes"] == 2 * 4 * 4 * 4 * 4
    assert [r["params"] for r in rows] == [0, 40, 0, 0, 25]


def test_dense_flops():
    inp = Input(shape=(3, 5))
    model = Model(inp, Dense(7)(Flatten()(inp)))
    assert inspect.layer_table(model)[-1]["flops"] == 2 * 15 * 7


def test_summary_default_unchanged_and_show_flops():
    model = small_model()
    plain, flops = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(plain):
        model.summary()
    with contextlib.redirect_stdout(flops):
        model.summary(show_flops=True, batch_size=2)
    assert "FLOPs" not in plain.getvalue()
    assert flops.getvalue().startswith(plain.getvalue().rstrip("\n"))
    assert f"Total forward FLOPs: {2 * 2 * 8 * 8 * 4 * 9 + 2 * 2 * 8 * 8 * 24:,}" in flops.getvalue()


def test_layer_table_errors():
    with pytest.raises(ValueError, match="batch_size"):
        inspect.layer_table(small_model(), batch_size=0)


def test_gradient_stats_and_plot(tmp_path):
    model = small_model()
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((12, 8, 8, 1)).astype(np.float32)
    stats = inspect.GradientStats(every=2)
    model.fit(x, x, batch_size=4, epochs=2, verbose=0, callbacks=[stats])  # 6 steps
    assert stats.steps == [0, 2, 4]
    conv = model.layers[1].name
    assert set(stats.grad_norms) == {f"{conv}/kernel", f"{conv}/bias", f"{model.layers[4].name}/kernel",
                                     f"{model.layers[4].name}/bias"}
    assert all(len(v) == 3 and all(n > 0 for n in v) for v in stats.grad_norms.values())
    relu = stats.activations[conv]
    assert all(0 < z < 1 for z in relu["zeros"]) and all(m > 0 for m in relu["mean"])
    assert all(0 <= m <= 1 for m in stats.activations[model.layers[4].name]["mean"])  # sigmoid output
    per_layer = stats.layer_grad_norms()
    assert per_layer[conv][0] == pytest.approx(np.hypot(stats.grad_norms[f"{conv}/kernel"][0],
                                                        stats.grad_norms[f"{conv}/bias"][0]))
    path = inspect.plot_gradient_norms(stats, tmp_path / "norms.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_stats_match_the_step_taken():
    """With plain SGD, w_after = w_before - lr * g: the recorded norm must be ||w_before - w_after|| / lr."""
    model = small_model()
    model.compile("sgd", "mse")
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
    before = model.get_weights()
    stats = inspect.GradientStats()
    model.fit(x, x, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[stats])
    after, lr = model.get_weights(), model.optimizer.learning_rate
    conv = model.layers[1].name
    step_norm = np.linalg.norm((before[0].astype(np.float64) - after[0]) / lr)
    assert stats.grad_norms[f"{conv}/kernel"][0] == pytest.approx(step_norm, rel=1e-3)


def test_watch_backprop_example(capsys):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "watch_backprop.py"
    spec = importlib.util.spec_from_file_location("watch_backprop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    errors = module.main(batch_size=4, check_batch=1, max_checks=2)
    out = capsys.readouterr().out
    assert "(4, 28, 28, 16) -> (not needed)" in out  # the first conv: no layer upstream needs its dx
    assert "(4, 14, 14, 8) -> (4, 14, 14, 16)" in out  # conv2d_1's dy -> dx
    assert len(errors) == 15 and max(errors.values()) < module.TOL


@contextlib.contextmanager
def disk_full_after(nbytes):
    """Every file write beyond ``nbytes`` fails with EFBIG, as on a disk that fills up mid-write."""
    import resource
    import signal
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # fail the write instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_gradient_norms_plot_on_a_full_disk_leaves_the_old_file(tmp_path):
    model = small_model()
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    stats = inspect.GradientStats(every=1)
    model.fit(x, x, batch_size=4, epochs=1, verbose=0, callbacks=[stats])
    path = inspect.plot_gradient_norms(stats, tmp_path / "norms.png")
    before = path.read_bytes()
    assert len(before) > 8192
    model.fit(x, x, batch_size=4, epochs=1, verbose=0, callbacks=[stats])   # a different picture
    with disk_full_after(4096), pytest.raises(OSError):
        inspect.plot_gradient_norms(stats, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["norms.png"]


def test_conv_family_flops_by_hand():
    from autoenc.layers import Conv1D, Conv1DTranspose, Conv2DTranspose
    inp = Input(shape=(5, 6, 3))
    t = Conv2DTranspose(4, (3, 2), strides=2, padding="same")
    model = Model(inp, t(inp))
    # every one of 2*5*6*3 input values is multiplied by 3*2*4 kernel entries
    assert inspect.layer_table(model, batch_size=2)[-1]["flops"] == 2 * (2 * 5 * 6 * 3) * (3 * 2 * 4)
    seq = Input(shape=(9, 2))
    c = Conv1D(5, 3, strides=2, padding="valid")(seq)          # 4 output steps
    d = Conv1DTranspose(3, 4, strides=2, padding="same")(c)     # 4 input steps
    rows = inspect.layer_table(Model(seq, d))
    assert [r["flops"] for r in rows[1:]] == [2 * 4 * 5 * (3 * 2), 2 * 4 * 5 * (4 * 3)]
