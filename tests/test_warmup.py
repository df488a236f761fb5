"""autoenc/warmup.py: on a cold Numba cache the first training step of a model with a convolution
compiles the weight-gradient kernel (and with a 2x2 max pooling that pooling's forward and fused
backward kernels) in a second process, and this process loads them from the cache instead of
compiling them; the training is the same bit for bit. Nothing starts with the cache filled,
with AUTOENC_WARMUP=off, or without a convolution. Each case runs in a fresh process on its own cache
directory, as a fresh install would."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from autoenc import warmup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    import autoenc
    from autoenc import warmup
    from autoenc.kernels import conv_weight_grad as cw, pooling
    from autoenc.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    from autoenc.models import Model
    started = []
    start = warmup.start
    warmup.start = lambda model: started.append(start(model)) or started[-1]
    for kind in sys.argv[1].split(","):        # models trained one after the other: "conv", "dense"
        autoenc.set_random_seed(1)
        inp = Input(shape=(6, 6, 2))
        if kind == "conv":
            hidden = Conv2D(4, 3, padding="same", activation="relu")(inp)
            out = Conv2D(3, 3, padding="same", activation="sigmoid")(hidden)
        elif kind == "pool":
            hidden = MaxPooling2D(2)(Conv2D(4, 3, padding="same", activation="relu")(inp))
            out = Conv2D(3, 3, padding="same", activation="sigmoid")(hidden)
        else:
            out = Dense(3)(Flatten()(inp))
        model = Model(inp, out)
        model.compile("adam", "mse")
        rng = np.random.default_rng(0)
        x = rng.random((5, 6, 6, 2), dtype=np.float32)
        y = rng.random((5,) + tuple(out.shape[1:]), dtype=np.float32)
        model.fit(x, y, batch_size=5, epochs=1, verbose=0)
        model.train_on_batch(x, y)
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    stats = {k.py_func.__name__: {"hits": sum(k.stats.cache_hits.values()), "misses": sum(k.stats.cache_misses.values()),
                                  "in_cache": not warmup._cold(k) or bool(k.signatures)}
                      for k in (cw._dw_chunks, pooling._maxpool2x2_forward_samples,
                       pooling._maxpool2d_backward_relu_dz_chunks)}
    print("RESULT " + json.dumps({"started": started, "digest": digest, "hooks_off": cw.before_first_call is pooling.before_first_call is None,
                                  **stats["_dw_chunks"], "kernels": stats}))
""")


def run(kind, cache_dir, setting=None):
    """The child's RESULT for a model ``kind`` ("conv", "pool" or "dense") on the Numba cache in ``cache_dir``,
    with AUTOENC_WARMUP=``setting`` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k != "AUTOENC_WARMUP"}
    env.update(NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    if setting is not None:
        env["AUTOENC_WARMUP"] = setting
    out = subprocess.run([sys.executable, "-c", CHILD, kind], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][0][7:])


pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing compiles without the JIT")


POOL_KERNELS = ("_maxpool2x2_forward_samples", "_maxpool2d_backward_relu_dz_chunks")
KERNELS = POOL_KERNELS + ("_dw_chunks",)


def test_a_cold_cache_compiles_the_slow_kernels_in_a_second_process_and_trains_alike(tmp_path):
    # a convolution, a 2x2 max pooling and one more convolution: the pooling's forward and fused
    # backward and the weight gradient compile in the warm-up
    cold = run("pool", tmp_path / "a")
    assert cold["started"] == [True, False]       # fit's first step starts it; train_on_batch's does not again
    for name in KERNELS:
        k = cold["kernels"][name]
        assert k["hits"] >= 1 and k["misses"] == 0, (name, k)   # loaded from the cache the warm-up wrote
    assert cold["hooks_off"]                       # taken off once the warm-up ended
    warm = run("pool", tmp_path / "a")
    assert warm["started"] == [False, False] and all(warm["kernels"][name]["misses"] == 0 for name in KERNELS)
    off = run("pool", tmp_path / "b", "off")
    assert off["started"] == [False, False]
    assert all(off["kernels"][name]["misses"] >= 1 and off["kernels"][name]["hits"] == 0 for name in KERNELS)
    assert cold["digest"] == warm["digest"] == off["digest"]


def test_a_model_without_a_convolution_starts_nothing_but_a_later_one_with_one_does(tmp_path):
    dense = run("dense", tmp_path / "c")
    assert dense["started"] == [False, False] and dense["hits"] == dense["misses"] == 0
    both = run("dense,conv", tmp_path / "d")
    assert both["started"] == [False, False, True, False] and both["hits"] >= 1 and both["misses"] == 0
    # no pooling in these models: the warm-up compiled only the weight gradient
    assert not any(both["kernels"][name]["in_cache"] for name in POOL_KERNELS) and both["hooks_off"]


@pytest.mark.parametrize("value, on", [("off", False), ("OFF", False), ("0", False), ("no", False), ("", True),
                                       ("1", True)])
def test_autoenc_warmup_off_turns_it_off(monkeypatch, value, on):
    monkeypatch.setenv("AUTOENC_WARMUP", value)
    assert warmup.enabled() is on


def test_waiting_without_a_warm_up_returns_at_once():
    warmup.wait(timeout=0)
    warmup.wait("_dw_chunks", timeout=0)
