"""Training-step time of the seed autoencoder by thread setup, quiet and beside busy processes: the
figures behind autoenc's thread tuner (autoenc/threads.py).

    python benchmarks/threads.py [--load 1] [--rounds 3] [--steps 20] [--configs all,1-thread,autoenc]

Setups: ``all`` (every step on all threads, the tuner off), ``1-thread`` (NUMBA_NUM_THREADS=1) and
``autoenc`` (the tuner choosing). Each runs in its own process, the setups interleaved A B C A B C ...
for ``--rounds`` rounds; the table gives the median over rounds of each process's best fit epoch,
per step, an epoch's worth (60 steps of batch 256 = 15,360 images, as issue 15 counts), and the
predict throughput. ``--load N`` starts N busy processes (``sh -c 'while :; do :; done'``) beside the
runs and kills them at the end; the machine's load average is printed beside the table, since other
work on the machine counts too.

``--interleaved``: one process instead, in which blocks of ``--block`` steps rotate between the
tuner (one ThreadTuner kept across its blocks), a fixed 1 thread and all threads, for ``--steps``
steps each, training and then predict (batches of 256). On a machine whose load comes and goes
(other jobs), every setup then sees the same load within seconds, which separate processes cannot
promise. The table gives each setup's median and mean step (the mean is what an epoch costs) and
the share of the tuner's steps on one thread.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from epoch import busy_processes   # the load epoch.py --load uses (this folder is on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> environment of the child
CONFIGS = {
    "all": {"AUTOENC_THREADS": "off"},
    "1-thread": {"NUMBA_NUM_THREADS": "1", "AUTOENC_THREADS": "off"},
    "autoenc": {},   # the tuner chooses (autoenc/threads.py)
}
DEFAULT = "all,1-thread,autoenc"

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import autoenc, numba
steps = int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.random((256 * steps, 28, 28, 1), dtype=np.float32)
xv = rng.random((2560, 28, 28, 1), dtype=np.float32)
model = autoenc.models.seed_autoencoder()
model.compile(optimizer="adam", loss="mean_squared_error")
model.fit(x[:768], x[:768], batch_size=256, epochs=1, verbose=0)   # starts the thread pool, loads the kernels
times = []
for _ in range(2):                      # fit, as a user runs it (autoenc's thread choice works in fit)
    t = time.perf_counter()
    model.fit(x, x, batch_size=256, epochs=1, verbose=0)
    times.append((time.perf_counter() - t) / steps)
t = time.perf_counter()
model.predict(xv, batch_size=256, verbose=0)
pred = time.perf_counter() - t
print("RESULT " + json.dumps({"threads": numba.get_num_threads(),
                              "step": min(times), "predict_ips": len(xv) / pred}))
"""



INTERLEAVED = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import autoenc, numba
from autoenc import threads, utils
steps, block = int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).random((256, 28, 28, 1), dtype=np.float32)
model = autoenc.models.seed_autoencoder()
model.compile(optimizer="adam", loss="mean_squared_error")
model._ensure_flat_parameters()
data = model._step_data([x], x)
top = numba.get_num_threads()
setups = [("autoenc (tuned)", None), ("1 thread", 1), (f"{top} threads", top)]
out = {}
for kind, fn in (("train", lambda: model.train_step(data)), ("predict", lambda: model.forward(x, training=False))):
    tuner = threads.ThreadTuner(top)
    times = {name: [] for name, _ in setups}
    on_one = []
    for _ in range(3):
        fn()                                    # loads the kernels
    for _ in range(-(-steps // block)):
        for name, n in setups:
            numba.set_num_threads(top if n is None else n)
            step = threads.tuned_threads(tuner if n is None else None).run
            for _ in range(block):
                with utils.compute_lock:
                    if n is None:
                        on_one.append(tuner.next_count() == 1)
                    t = time.perf_counter()
                    step(fn, 256)
                    times[name].append(time.perf_counter() - t)
    out[kind] = {name: {"median": statistics.median(v), "mean": statistics.fmean(v)} for name, v in times.items()}
    out[kind]["autoenc (tuned)"]["on_one"] = sum(on_one) / len(on_one)
print("RESULT " + json.dumps(out))
"""


def interleaved(args, base):
    """The --interleaved run: one child, the setups rotating in blocks of steps; prints the table."""
    loads = [load_average()]
    with busy_processes(args.load):
        out = subprocess.run([sys.executable, "-c", INTERLEAVED, REPO, str(args.steps), str(args.block)],
                             env=base, capture_output=True, text=True)
    loads.append(load_average())
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
        sys.exit(f"the interleaved run failed:\n{out.stderr[-3000:]}")
    res = json.loads(line[0][7:])
    print(f"# Seed model step (batch 256), setups interleaved in blocks of {args.block} steps, {args.load} busy "
          f"process(es) added\n")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, NUMBA_NUM_THREADS={args.threads}, {args.steps} steps per setup; load average "
          f"before and after {loads[0]:.1f}, {loads[1]:.1f}\n")
    print("| loop | setup | median step (ms) | mean step (ms) | mean vs 1 thread | tuner on 1 thread |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, rows in res.items():
        ref = rows["1 thread"]["mean"]
        for name, r in rows.items():
            share = f"{r['on_one']:.0%}" if "on_one" in r else ""
            print(f"| {kind} | {name} | {r['median'] * 1e3:.1f} | {r['mean'] * 1e3:.1f} | {r['mean'] / ref:.2f}x | "
                  f"{share} |")


def load_average():
    return os.getloadavg()[0]


def run_child(env, steps):
    out = subprocess.run([sys.executable, "-c", CHILD, REPO, str(steps)], env=env, capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
        return {"error": (out.stderr.strip().splitlines() or ["exit code %d" % out.returncode])[-1]}
    return json.loads(line[0][7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=DEFAULT, help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--load", type=int, default=0, help="busy processes beside the runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per process")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="NUMBA_NUM_THREADS (default: all CPUs)")
    ap.add_argument("--interleaved", action="store_true", help="one process, setups rotating in blocks of steps")
    ap.add_argument("--block", type=int, default=5, help="steps per block (--interleaved)")
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    base = {k: v for k, v in os.environ.items() if k != "AUTOENC_THREADS"}
    base["NUMBA_NUM_THREADS"] = str(args.threads)
    if args.interleaved:
        return interleaved(args, base)
    results = {n: [] for n in names}
    loads = []
    with busy_processes(args.load):
        for r in range(args.rounds):
            for n in names:
                loads.append(load_average())
                res = run_child({**base, **CONFIGS[n]}, args.steps)
                results[n].append(res)
                print(f"round {r + 1} {n}: {res}", file=sys.stderr, flush=True)
    loads.append(load_average())
    print(f"# Seed model training step (batch 256) by thread setup, {args.load} busy process(es) added\n")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, NUMBA_NUM_THREADS={args.threads}, median of {args.rounds} processes, each the "
          f"better of 2 fit epochs of {args.steps} steps; load average during the runs {min(loads):.1f}-{max(loads):.1f}\n")
    ok = {n: [r for r in v if "error" not in r] for n, v in results.items()}
    ref = statistics.median(r["step"] for r in ok["1-thread"]) if ok.get("1-thread") else None
    print("| setup | threads | step (ms) | epoch of 60 steps (s) | vs 1 thread | predict (img/s) |")
    print("|---|---|---:|---:|---:|---:|")
    for n in names:
        if not ok[n]:
            print(f"| {n} | failed: {results[n][0]['error'][:80]} | | | | |")
            continue
        step = statistics.median(r["step"] for r in ok[n])
        ips = statistics.median(r["predict_ips"] for r in ok[n])
        print(f"| {n} | {ok[n][0]['threads']} | {step * 1e3:.1f} | {step * 60:.2f} | "
              f"{f'{step / ref:.2f}x' if ref else '-'} | {ips:,.0f} |")


if __name__ == "__main__":
    main()
