"""fastbp beside PyTorch and scikit-learn: training samples/s on the standard workloads.

    python examples/compare.py [--out DIR] [--workload small,regress] [--peers fastbp,torch,sklearn]
                               [--rounds 1] [--threads 1] [--quick]

A thin front end to the project's comparison harness, ``python -m fastbp.bench``: it runs
the harness (each peer in its own process, all starting from the same weights and training
on the same batches, with a check that their first-epoch losses agree), lets it print its
tables, reads the ``--json`` report it writes and draws samples/s per workload and peer as a
bar chart, DIR/compare.png, when matplotlib is installed. Peers that are not installed are
skipped with a note. The harness also knows ``torch-fused``, ``jax``, ``numpy`` (backprop by
hand) and the workloads ``mnist`` and ``wide`` (minutes, not seconds); see
``python -m fastbp.bench --help``.

One thread by default: at these layer sizes no peer gains much from a second one (the README's
table uses 2; pass ``--threads 2`` to match it), and on a machine where other processes are
busy a spinning thread pool can slow a peer down a hundredfold (torch's OpenMP pool on 2 busy
cores: 216 samples/s instead of 50k), which the harness's cpu/wall column shows.

``--quick`` runs the harness's tiny mode (a few hundred samples, for tests): its figures only
show that everything runs, not speed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def run_bench(args, json_path):
    cmd = [sys.executable, "-m", "fastbp.bench", "--workload", args.workload, "--peers", args.peers,
           "--rounds", str(args.rounds), "--threads", str(args.threads), "--json", json_path]
    if args.quick:
        cmd.append("--quick")
    print("$ " + " ".join(["python"] + cmd[1:]), flush=True)
    return subprocess.run(cmd).returncode              # its tables go straight to our stdout


def fmt_rate(x):
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def rates(report):
    """{workload: {peer: median samples/s}} for the peers that ran."""
    return {s["workload"]: {p: r["samples_per_s"] for p, r in s["peers"].items() if "samples_per_s" in r}
            for s in report["summary"]}


def plot(path, table, meta):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot written")
        return
    import numpy as np
    workloads = list(table)
    peers = [p for p in meta["peers"] if any(p in table[w] for w in workloads)]
    width = 0.8 / max(len(peers), 1)
    colors = {"fastbp": "tab:red", "torch": "tab:orange", "torch-fused": "tab:brown", "jax": "tab:purple",
              "sklearn": "tab:blue", "numpy": "tab:gray"}
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(workloads) * max(len(peers), 1) / 2, 4.5))
    x = np.arange(len(workloads))
    for i, p in enumerate(peers):
        vals = [table[w].get(p, 0.0) for w in workloads]
        bars = ax.bar(x + (i - (len(peers) - 1) / 2) * width, vals, width, label=p, color=colors.get(p))
        for b, v in zip(bars, vals):
            if v:
                ax.annotate(fmt_rate(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, workloads)
    ax.set_yscale("log")
    ax.set_ylabel("training samples/s (log scale)")
    title = f"training throughput: {meta['threads']} thread(s), {meta['rounds']} round(s), {meta['cpu']}"
    ax.set_title(("QUICK mode (tiny data, not a speed measurement): " if meta["quick"] else "") + title, fontsize=9)
    ax.legend()
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for compare.png (default: current directory)")
    ap.add_argument("--workload", default="small,regress", help="comma list (default: small,regress)")
    ap.add_argument("--peers", default="fastbp,torch,sklearn",
                    help="comma list; those not installed are skipped (default: fastbp,torch,sklearn)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="threads per peer (default: 1; the README uses 2)")
    ap.add_argument("--quick", action="store_true", help="the harness's tiny mode (for tests)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fastbp-compare-") as tmp:
        json_path = os.path.join(tmp, "bench.json")
        status = run_bench(args, json_path)
        if not os.path.exists(json_path):
            print(f"the benchmark harness failed (exit status {status}) before writing its report", file=sys.stderr)
            return status or 1
        with open(json_path) as f:
            report = json.load(f)

    table = rates(report)
    print("\nsummary (training samples/s; how many times faster fastbp is):")
    for w, row in table.items():
        fb_rate = row.get("fastbp")
        others = [f"{p} {fmt_rate(v)}" + (f" ({fb_rate / v:.1f}x)" if fb_rate else "")
                  for p, v in row.items() if p != "fastbp"]
        line = f"  {w:<8} fastbp {fmt_rate(fb_rate) if fb_rate else '-'}"
        print(line + ("; " + ", ".join(others) if others else ""))
    for n in report["meta"]["notes"]:
        print(f"  note: {n}")

    os.makedirs(args.out, exist_ok=True)
    plot(os.path.join(args.out, "compare.png"), table, report["meta"])
    return status


if __name__ == "__main__":
    sys.exit(main())
