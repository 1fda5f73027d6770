"""The driver: every peer on every workload, interleaved, each run in its own process; the
report, the loss check and the exit status; and the argument parser (``main``)."""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from .peers import BF16_PEERS, PEER_MODULES, PEERS, available
from .report import LOSS_RTOL, fmt_rate, machine_info, plot, print_table, summarise
from .timing import PROBE_N, PROBE_N_QUICK, PROBE_SLOW, fmt_gflops, machine_probe, slow_rounds, starved
from .worker import run_worker, worker, write_data
from .workloads import STANDARD, WORKLOADS

def parse_list(values, allowed, what):
    out = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    bad = [x for x in out if x not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {list(allowed)}")
    return out


def driver(args):
    workloads = parse_list(args.workload, WORKLOADS, "workload") or list(STANDARD)
    import fastbp as fb
    fp32 = [p for p in PEERS if p not in BF16_PEERS and (p != "fastbp-openblas" or fb.get_gemm_provider()[1] == "onednn")]
    default = {"fp32": fp32, "both": fp32 + list(BF16_PEERS),
               "bf16": ["fastbp", "torch-fused", "sgemm"] + list(BF16_PEERS)}[args.precision]
    asked = parse_list([args.peers] if args.peers else None, PEERS, "peer") or default
    peers = [p for p in PEERS if p in asked]
    notes = [f"{p} skipped: {PEER_MODULES[p]} is not installed" for p in peers if not available(p)]
    peers = [p for p in peers if available(p)]
    ok16, why16 = fb.bf16_support()
    if "fastbp-bf16" in peers and not ok16:
        notes.append(f"fastbp-bf16 skipped: {why16}")
        peers.remove("fastbp-bf16")
    ref = "fastbp-bf16" if args.precision != "fp32" and "fastbp-bf16" in peers else "fastbp"
    info = machine_info(args.threads)
    print(f"fastbp.bench  {info['date']}  {info['cpu']}, {info['cores']} cores "
          f"({info['cores_available']} available), {args.threads} thread(s), pinned to the first "
          f"{args.threads} core(s); load average {info['load_average'][0]:.2f} at start")
    print("  " + "  ".join(f"{k} {info[k] or 'n/a'}" for k in
                           ("python", "numpy", "numba", "torch", "jax", "sklearn", "fastbp")) +
          f"  fastbp BLAS: {info['fastbp_blas']}")
    setting, provider, why = fb.get_gemm_provider()
    print(f"  fastbp float32 products: {provider} for every layer and direction (gemm provider {setting!r}: {why})"
          + ("; fastbp-openblas: the same fit with every float32 product on OpenBLAS" if "fastbp-openblas" in peers else ""))
    print(f"  {args.rounds} round(s), peers interleaved in each ({', '.join(peers)}); each in its own process; "
          f"1 warm-up epoch then {args.epochs} timed epoch(s); no shuffling: every peer trains on the "
          f"same batches in the same order from the same initial weights"
          + ("; QUICK mode (tiny data)" if args.quick else ""))
    print(f"  bf16: {why16}" + (f"; the ratio column is {ref}/peer" if ref != "fastbp" else ""))
    print("  GFLOP/s = 6 x weights x samples/s; fastbp/peer = median over rounds of the per-round "
          "ratio (> 1: fastbp faster); loss = mean batch loss of the warm-up (1st) and last epoch;\n"
          "  predict/s = predict_proba over all of X in chunks of fastbp's PREDICT_BATCH; cpu/wall = CPU "
          "seconds per second of the timed epochs (well under the threads with a spinning pool: starved)")
    if info["load_average"][0] > 1.0:
        print("  note: other processes may be using these cores (see the load average); pools that "
              "spin (OpenMP, OpenBLAS) suffer most from that: check cpu/wall")
    for n in notes:
        print(f"  note: {n}")
    # the absolute floor of the machine check: one thread's GEMM rate now, before any run
    floor = machine_probe(1, args.quick)
    print(f"  machine check floor: GEMM probe on 1 thread {fmt_gflops(floor)} GFLOP/s at start")
    sys.stdout.flush()

    all_results, summaries = [], []
    with tempfile.TemporaryDirectory(prefix="fastbp-bench-") as tmp:
        for name in workloads:
            data = os.path.join(tmp, f"{name}.npz")
            write_data(data, name, args.quick)
            results = []
            for rnd in range(1, args.rounds + 1):
                for p in peers:
                    t0 = time.perf_counter()
                    r = run_worker(p, name, args.threads, data, args.epochs, args.quick)
                    r.update(round=rnd, peer=p, workload=name)
                    results.append(r)
                    what = (f"{fmt_rate(r['samples_per_s'])} samples/s, loss {r['loss_first']:.4f}, "
                            f"cpu/wall {r['cpu_per_wall']:.2f}, load {r['load_average']:.2f}"
                            if r.get("ok") and r.get("samples_per_s") else
                            f"{r['gemm_layer_gflops']:.1f} GFLOP/s" if r.get("ok") else "ERROR " + r["error"])
                    probe = ("; probe {}/{} GFLOP/s".format(*map(fmt_gflops, r["probe_gflops"]))
                             if r.get("probe_gflops") else "")
                    print(f"[{name} round {rnd}/{args.rounds}] {p}: {what} ({time.perf_counter() - t0:.1f} s{probe})",
                          file=sys.stderr, flush=True)
            os.unlink(data)
            s = summarise(name, results, peers, ref)
            print_table(s, [])
            sys.stdout.flush()
            all_results += results
            summaries.append(s)

    mismatches = [f"{s['workload']}/{p} ({r['loss_rel_diff']:.2e} vs {s['loss_reference']})"
                  for s in summaries for p, r in s["peers"].items() if r.get("loss_ok") is False]
    errors = [f"{s['workload']}/{p}" for s in summaries for p, r in s["peers"].items() if r["errors"]]
    print()
    print("loss check: " + (f"MISMATCH in {', '.join(mismatches)}" if mismatches else
                            f"every peer's first-epoch loss within {LOSS_RTOL:g} (relative) of the reference"))
    if errors:
        print("errors in: " + ", ".join(errors))
    ref, slow = slow_rounds(all_results, floor)
    was_starved = starved(all_results, floor)
    if ref is not None:
        print(f"machine check: GEMM probe ({PROBE_N_QUICK if args.quick else PROBE_N}^3, {args.threads} thread(s), "
              f"before/after each run) reference {fmt_gflops(ref)} GFLOP/s (the probes' median, at least the "
              f"1-thread rate at start, {fmt_gflops(floor)}); " +
              ("every probe within {:.0%} of it".format(PROBE_SLOW) if not slow else
               "below {:.0%} of it (the machine, not the peer, was slow; compare those rounds with care): ".format(
                   PROBE_SLOW) + ", ".join(f"{w} round {rnd} {p} ({fmt_gflops(b)}/{fmt_gflops(a)})"
                                           for w, rnd, p, b, a in slow)))
        if was_starved:
            print(f"machine check: STARVED: the median probe on {args.threads} thread(s) was "
                  f"{fmt_gflops(statistics.median(g for r in all_results for g in r.get('probe_gflops') or ()))} "
                  f"GFLOP/s, below {PROBE_SLOW:.0%} of one thread's {fmt_gflops(floor)} at start: other work had "
                  f"these cores for most of the run, so its figures say little about fastbp or the peers")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {**info, "rounds": args.rounds, "epochs": args.epochs, "quick": args.quick,
                                "peers": peers, "workloads": workloads, "notes": notes, "shuffle": False,
                                "loss_rtol": LOSS_RTOL},
                       "results": all_results, "summary": summaries,
                       "loss_check": {"ok": not mismatches, "mismatches": mismatches}, "errors": errors,
                       "machine_check": {"probe_median_gflops": ref, "floor_1thread_gflops": floor,
                                         "starved": was_starved, "slow_fraction": PROBE_SLOW,
                                         "slow": [dict(zip(("workload", "round", "peer", "before", "after"), x))
                                                  for x in slow]}},
                      f, indent=1)
    if args.plot:
        plot(args.plot, summaries)
    return 1 if mismatches or errors else 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--sweep" in argv:   # the sweep benchmark (fastbp/bench/sweep.py): --jobs 1 / --jobs 2 / Dask
        from .sweep import main as sweep_main
        return sweep_main([a for a in argv if a != "--sweep"])
    doc = sys.modules[__package__].__doc__     # the package's docstring: its first paragraph
    ap = argparse.ArgumentParser(prog="python -m fastbp.bench", description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append", help=f"name or comma list, repeatable, of {','.join(WORKLOADS)} (default: the four standard ones)")
    ap.add_argument("--peers", help=f"comma list, a subset of {','.join(PEERS)} (default: all installed)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32",
                    help="fp32: the float32 peers; bf16: fastbp-bf16 and torch-bf16 (autocast, fused Adam) beside "
                         "fastbp and torch-fused (the ratio column is then fastbp-bf16/peer); both: every peer")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch")
    ap.add_argument("--json", help="write every raw result and the summary here")
    ap.add_argument("--plot", help="write a bar chart here (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="tiny sample counts (for tests)")
    ap.add_argument("--sweep", action="store_true",
                    help="the sweep benchmark instead: python -m fastbp.bench.sweep --help")
    ap.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or args.epochs < 1:
        ap.error("--rounds, --threads and --epochs must be >= 1")
    if args.worker:
        if not args.data or not args.workload or len(args.workload) != 1:
            ap.error("--worker needs --data and one --workload")
        args.workload = args.workload[0]
        return worker(args)
    return driver(args)
