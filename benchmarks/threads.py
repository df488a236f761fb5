"""Training-step time of the seed autoencoder under each threading setup Numba offers here, quiet and
beside busy processes: the figures behind autoenc's thread policy (autoenc/threads.py).

    python benchmarks/threads.py [--load 1] [--rounds 3] [--steps 20] [--configs omp,omp-passive,...]

Each configuration runs in its own process (fresh Numba thread pool, environment set before Numba
starts), the configurations interleaved A B C A B C ... for ``--rounds`` rounds; the table gives the
median over rounds of each process's median step time, an epoch's worth (60 steps of batch 256 =
15,360 images, as issue 15 counts), and the predict throughput. ``--load N`` starts N busy processes
(``sh -c 'while :; do :; done'``) beside the runs and kills them at the end; the machine's load
average is printed beside the table, since other work on the machine counts too.

The tbb configurations need Intel TBB's libtbb.so.12 (``pip install tbb``; ``--tbb-lib DIR`` adds a
directory to LD_LIBRARY_PATH for a copy installed elsewhere); without it they are reported as failed.
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

# name -> environment of the child. AUTOENC_THREADS=off: the library's own policy stands aside, so the
# row measures exactly the setting named ("omp" is then Numba's default: libgomp, GOMP's default spin).
CONFIGS = {
    "omp": {"NUMBA_THREADING_LAYER": "omp", "AUTOENC_THREADS": "off"},
    "omp-active": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "active", "AUTOENC_THREADS": "off"},
    "omp-passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive", "AUTOENC_THREADS": "off"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue", "AUTOENC_THREADS": "off"},
    "tbb": {"NUMBA_THREADING_LAYER": "tbb", "AUTOENC_THREADS": "off"},
    "1-thread": {"NUMBA_THREADING_LAYER": "omp", "NUMBA_NUM_THREADS": "1", "AUTOENC_THREADS": "off"},
    "autoenc": {},   # whatever autoenc chooses by itself (autoenc/threads.py)
}
DEFAULT = "omp,omp-passive,omp-spin1000,workqueue,tbb,1-thread,autoenc"


def config(name):
    """The environment of a configuration: a name of CONFIGS, or omp-spinN (GOMP_SPINCOUNT=N)."""
    if name.startswith("omp-spin") and name[8:].isdigit():
        return {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": name[8:], "AUTOENC_THREADS": "off"}
    return CONFIGS[name]

CHILD = r"""
import json, sys, time
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
print("RESULT " + json.dumps({"layer": numba.threading_layer(), "threads": numba.get_num_threads(),
                              "step": min(times), "predict_ips": len(xv) / pred}))
"""



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
    ap.add_argument("--configs", default=DEFAULT, help=f"comma-separated, of: {', '.join(CONFIGS)}, omp-spinN")
    ap.add_argument("--load", type=int, default=0, help="busy processes beside the runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per process")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="NUMBA_NUM_THREADS (default: all CPUs)")
    ap.add_argument("--tbb-lib", help="a directory holding libtbb.so.12, added to LD_LIBRARY_PATH")
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS and not (n.startswith("omp-spin") and n[8:].isdigit())]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)} or omp-spinN")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("NUMBA_THREADING", "OMP_", "GOMP_", "KMP_", "AUTOENC_THREADS"))}
    base["NUMBA_NUM_THREADS"] = str(args.threads)   # a configuration may set its own
    if args.tbb_lib:
        base["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [args.tbb_lib, base.get("LD_LIBRARY_PATH")]))
    results = {n: [] for n in names}
    loads = []
    with busy_processes(args.load):
        for r in range(args.rounds):
            for n in names:
                loads.append(load_average())
                res = run_child({**base, **config(n)}, args.steps)
                results[n].append(res)
                print(f"round {r + 1} {n}: {res}", file=sys.stderr, flush=True)
    loads.append(load_average())
    print(f"# Seed model training step (batch 256) by threading setup, {args.load} busy process(es) added\n")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, NUMBA_NUM_THREADS={args.threads}, median of {args.rounds} processes, each the "
          f"better of 2 fit epochs of {args.steps} steps; load average during the runs {min(loads):.1f}-{max(loads):.1f}\n")
    ok = {n: [r for r in v if "error" not in r] for n, v in results.items()}
    ref = statistics.median(r["step"] for r in ok["1-thread"]) if ok.get("1-thread") else None
    print("| setup | layer, threads | step (ms) | epoch of 60 steps (s) | vs 1 thread | predict (img/s) |")
    print("|---|---|---:|---:|---:|---:|")
    for n in names:
        if not ok[n]:
            print(f"| {n} | failed: {results[n][0]['error'][:80]} | | | | |")
            continue
        step = statistics.median(r["step"] for r in ok[n])
        ips = statistics.median(r["predict_ips"] for r in ok[n])
        print(f"| {n} | {ok[n][0]['layer']}, {ok[n][0]['threads']} | {step * 1e3:.1f} | {step * 60:.2f} | "
              f"{f'{step / ref:.2f}x' if ref else '-'} | {ips:,.0f} |")


if __name__ == "__main__":
    main()
