"""The thread policy's benchmark (issue 21): ``python -m fastbp.bench.threads [--rounds 3]``.

Fits timed with the default thread policy (no count set), ``n_threads=1`` and ``n_threads=2``
(``fb.set_num_threads``; 2 = the default before the policy, all cores of a 2-core machine), on
an idle machine and with one busy-looping competitor process (``python -c "while True: pass"``)
that this script starts and stops. Cases: the scikit-learn drop-in on digits (1797x64,
``MLPClassifier()``, the median of 3 fits), an ``mnist``-sized fit (784-256-128-10, batch 128,
Adam, 1 epoch over 12,000 synthetic rows) and a ``wide`` fit (1024-2048-2048-10, batch 256, 1
epoch over 2,048 rows). Each (case, setting) runs in its own process after a warm-up fit
(compile, workspace); the settings are interleaved and their order rotated per round. Reports
per case and load the median seconds per setting, the median over rounds of default / the
better of the other two (target <= 1.2) and, idle, default / n_threads=2 (the old default;
target <= 1).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = ("digits", "mnist", "wide")
SETTINGS = ("default", "1", "2")


def _fit_seconds(case, setting):
    import numpy as np

    import fastbp as fb
    if setting != "default":
        fb.set_num_threads(int(setting))
    if case == "digits":
        from sklearn.datasets import load_digits

        from fastbp.sklearn import MLPClassifier
        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
        MLPClassifier(max_iter=5, random_state=0).fit(X, y)          # compile
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            MLPClassifier(random_state=0).fit(X, y)
            times.append(time.perf_counter() - t0)
        return statistics.median(times), fb.get_thread_setting()
    sizes, batch, n = ([784, 256, 128, 10], 128, 12000) if case == "mnist" else ([1024, 2048, 2048, 10], 256, 2048)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, 10, n)
    net = fb.Network(sizes, seed=0)
    net.fit(X[:2 * batch], y[:2 * batch], epochs=1, batch_size=batch, verbose=0, shuffle=False)   # compile
    t0 = time.perf_counter()
    net.fit(X, y, epochs=1, batch_size=batch, verbose=0, shuffle=False)
    return time.perf_counter() - t0, fb.get_thread_setting()


def worker(case, setting):
    seconds, user = _fit_seconds(case, setting)
    print(json.dumps({"case": case, "setting": setting, "seconds": seconds, "user_setting": user}))


def run_one(case, setting):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-m", "fastbp.bench.threads", "--worker", case, setting],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{case}/{setting} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastbp.bench.threads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--loads", default="idle,busy")
    ap.add_argument("--json", help="write the raw times here")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    import fastbp as fb
    from fastbp._blas import POLICY_MIN_MNK, busy_elsewhere, cores
    cases = [c for c in args.cases.split(",") if c]
    print(f"fastbp.bench.threads  {time.strftime('%Y-%m-%d %H:%M:%S')}  {cores()} core(s); policy: 1 thread below "
          f"m*n*k {POLICY_MIN_MNK:,}, else the cores others leave free; load average {os.getloadavg()[0]:.2f}, "
          f"{busy_elsewhere()} runnable elsewhere at start; BLAS {fb.BLAS_INFO.get('config')}", flush=True)
    raw = []
    for load in args.loads.split(","):
        competitor = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None)
        try:
            time.sleep(0.5 if competitor else 0.0)
            for rnd in range(args.rounds):
                for case in cases:
                    order = SETTINGS[rnd % 3:] + SETTINGS[:rnd % 3]
                    for s in order:
                        sec = run_one(case, s)
                        raw.append({"load": load, "round": rnd, "case": case, "setting": s, "seconds": sec})
                        print(f"  [{load} round {rnd + 1}] {case} {s}: {sec:.3f} s", file=sys.stderr, flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    print(f"{'load':5} {'case':7} {'default':>9} {'n=1':>9} {'n=2':>9}  default/best  default/n=2 (old default)")
    verdicts = []
    for load in args.loads.split(","):
        for case in cases:
            t = {s: [r["seconds"] for r in raw if (r["load"], r["case"], r["setting"]) == (load, case, s)]
                 for s in SETTINGS}
            by_round = [{r["setting"]: r["seconds"] for r in raw if (r["load"], r["case"], r["round"]) == (load, case, k)}
                        for k in range(args.rounds)]
            vs_best = statistics.median(r["default"] / min(r["1"], r["2"]) for r in by_round)
            vs_old = statistics.median(r["default"] / r["2"] for r in by_round)
            ok = vs_best <= 1.2 and (load != "idle" or case == "digits" or vs_old <= 1.0)
            verdicts.append(ok)
            print(f"{load:5} {case:7} " + " ".join(f"{statistics.median(t[s]):8.3f}s" for s in SETTINGS)
                  + f"  {vs_best:12.2f}  {vs_old:11.2f}  {'ok' if ok else 'MISSED'}")
    print("ratios: median over rounds of the per-round ratio; the machine may be shared with other work "
          f"(load average {os.getloadavg()[0]:.2f} at the end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
