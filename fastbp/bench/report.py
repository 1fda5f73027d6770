"""The report: the machine, a summary per workload (median samples/s, the per-round ratio
fastbp/peer, the loss check), the table printed and the bar chart."""

import datetime
import importlib.metadata
import os
import platform
import statistics

import numpy as np

from .workloads import WORKLOADS, gflops, n_weights

LOSS_RTOL = 2e-2                         # first-epoch losses must agree to this


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads):
    import numba

    import fastbp as fb
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0)), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "torch": version("torch"), "jax": version("jax"), "sklearn": version("scikit-learn"),
            "fastbp": fb.__version__, "fastbp_blas": fb.BLAS_INFO.get("provider"),
            "fastbp_blas_config": fb.BLAS_INFO.get("config"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def summarise(name, results, peers, reference="fastbp"):
    """Per peer: median/min/max samples/s, the median per-round ratio ``reference``/peer (fastbp or
    fastbp-bf16) and the loss check."""
    spec = WORKLOADS[name]
    rows = {}
    by_peer = {p: [r for r in results if r["peer"] == p] for p in peers}
    ref_peer = next((p for p in ("fastbp", "numpy", "torch") if any(r.get("ok") for r in by_peer.get(p, []))),
                    None)
    ref = {r["round"]: r for r in by_peer.get(ref_peer, []) if r.get("ok")}
    fb_rounds = {r["round"]: r for r in by_peer.get(reference, []) if r.get("ok")}
    for p in peers:
        ok = [r for r in by_peer[p] if r.get("ok")]
        row = {"peer": p, "runs": len(by_peer[p]), "errors": [r["error"] for r in by_peer[p] if not r.get("ok")]}
        if p == "sgemm":
            if ok:
                row.update(gemm_layer_gflops=max(r["gemm_layer_gflops"] for r in ok),
                           gemm_square_gflops=max(r["gemm_square_gflops"] for r in ok),
                           gemm_square_n=ok[0]["gemm_square_n"], layer=ok[0]["layer"])
                if all("onednn_gemm_layer_gflops" in r for r in ok):
                    row.update(onednn_gemm_layer_gflops=max(r["onednn_gemm_layer_gflops"] for r in ok),
                               onednn_gemm_square_gflops=max(r["onednn_gemm_square_gflops"] for r in ok))
            rows[p] = row
            continue
        if ok:
            sps = [r["samples_per_s"] for r in ok]
            row.update(samples_per_s=statistics.median(sps), samples_per_s_min=min(sps),
                       samples_per_s_max=max(sps), gflops=gflops(spec["layers"], statistics.median(sps)),
                       first_epoch_s=statistics.median(r["first_epoch_s"] for r in ok),
                       loss_first=statistics.median(r["loss_first"] for r in ok),
                       loss_last=statistics.median(r["loss_last"] for r in ok),
                       cpu_per_wall=statistics.median(r["cpu_per_wall"] for r in ok))
            pred = [r["predict_samples_per_s"] for r in ok if r.get("predict_samples_per_s")]
            if pred:
                row["predict_samples_per_s"] = statistics.median(pred)
            ratios = [fb_rounds[r["round"]]["samples_per_s"] / r["samples_per_s"]
                      for r in ok if r["round"] in fb_rounds]
            if ratios:
                row["ratio"] = statistics.median(ratios)
            # sklearn's log-loss clips p to [eps, 1 - eps], so it reports less than the others once
            # some sample's loss passes -log(eps) = 15.9: compare it with the numpy peer's loss
            # computed the same way (sklearn's training itself is unaffected: its delta is P - Y)
            sk_ref = {r["round"]: r for r in by_peer.get("numpy", [])
                      if r.get("ok") and "loss_first_sklearn_convention" in r}
            key, refs = "loss_first", ref
            if p == "sklearn" and spec["loss"] == "cross_entropy" and sk_ref:
                key, refs = "loss_first_sklearn_convention", sk_ref
                row["loss_reference"] = "numpy, with sklearn's clipped log-loss"
                row["loss_reference_value"] = statistics.median(r[key] for r in sk_ref.values())
            diffs = [abs(r["loss_first"] - refs[r["round"]][key]) / abs(refs[r["round"]][key])
                     for r in ok if r["round"] in refs]
            if diffs:
                row["loss_rel_diff"] = max(diffs)
                row["loss_ok"] = row["loss_rel_diff"] <= LOSS_RTOL
        rows[p] = row
    return {"workload": name, "loss_reference": ref_peer, "peers": rows}


def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def print_table(summary, notes):
    name = summary["workload"]
    spec = WORKLOADS[name]
    layers = "-".join(map(str, spec["layers"]))
    opt = (f"Adam lr {spec['lr']:g}" if spec["optimizer"] == "adam"
           else f"SGD lr {spec['lr']:g} momentum {spec['momentum']:g}")
    print(f"\n== {name}: {layers} {spec['activation']}, {spec['output']}/{spec['loss']}, {opt}, "
          f"batch {spec['batch']}, {n_weights(spec['layers']):,} weights")
    head = (f"{'peer':<15} {'samples/s median (min-max)':>28} {'GFLOP/s':>8} {'1st epoch s':>11} "
            f"{'loss 1st -> last':>19} {'check':>8} {'fastbp/peer':>11} {'predict/s':>9} {'cpu/wall':>8}")
    print(head)
    print("-" * len(head))
    for p, row in summary["peers"].items():
        if p == "sgemm":
            continue
        if "samples_per_s" not in row:
            print(f"{p:<15} ERROR: {'; '.join(row['errors'])[:200]}")
            continue
        rng = f"{fmt_rate(row['samples_per_s'])} ({fmt_rate(row['samples_per_s_min'])}-" \
              f"{fmt_rate(row['samples_per_s_max'])})"
        check = "-" if "loss_ok" not in row else "ok" if row["loss_ok"] else "MISMATCH"
        if p == summary["loss_reference"]:
            check = "ref"
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        loss = f"{row['loss_first']:.4f} -> {row['loss_last']:.4f}"
        print(f"{p:<15} {rng:>28} {row['gflops']:>8.2f} {row['first_epoch_s']:>11.2f} {loss:>19} "
              f"{check:>8} {ratio:>11} {fmt_rate(row.get('predict_samples_per_s')):>9} {row['cpu_per_wall']:>8.2f}")
        if row["errors"]:
            print(f"{'':<15} ({len(row['errors'])} failed run(s): {row['errors'][0][:150]})")
        if "loss_reference" in row:
            print(f"{'':<15} (1st-epoch loss checked against {row['loss_reference']}: "
                  f"{row['loss_reference_value']:.4f})")
        elif (p == "sklearn" and spec["loss"] == "cross_entropy" and row.get("loss_ok") is False
              and row["loss_first"] < summary["peers"][summary["loss_reference"]]["loss_first"]):
            print(f"{'':<15} (sklearn's log-loss clips p at float32 eps; add the numpy peer to check it "
                  f"with the same convention)")
    g = summary["peers"].get("sgemm")
    if g and "gemm_layer_gflops" in g:
        line = (f"sgemm (NumPy matmul, float32): layer {g['layer'][0]}x{g['layer'][1]} at batch {spec['batch']} "
                f"{g['gemm_layer_gflops']:.1f} GFLOP/s; {g['gemm_square_n']}^3 {g['gemm_square_gflops']:.1f} GFLOP/s")
        fb_row = summary["peers"].get("fastbp", {})
        if "gflops" in fb_row:
            line += (f"; fastbp reaches {100 * fb_row['gflops'] / g['gemm_layer_gflops']:.1f}% of that layer rate, "
                     f"{100 * fb_row['gflops'] / g['gemm_square_gflops']:.1f}% of that square rate")
        if "onednn_gemm_layer_gflops" in g:   # fastbp's float32 products go to oneDNN here
            line += (f"\n  oneDNN (fastbp's float32 provider here; its products as fastbp calls them, dX as the "
                     f"transposed product): layer {g['onednn_gemm_layer_gflops']:.1f} GFLOP/s; {g['gemm_square_n']}^3 "
                     f"{g['onednn_gemm_square_gflops']:.1f} GFLOP/s")
            if "gflops" in fb_row:
                line += (f"; fastbp reaches {100 * fb_row['gflops'] / g['onednn_gemm_layer_gflops']:.1f}% of that "
                         f"layer rate, {100 * fb_row['gflops'] / g['onednn_gemm_square_gflops']:.1f}% of that square rate")
        print(line)
    elif g and g["errors"]:
        print(f"sgemm ERROR: {g['errors'][0][:200]}")
    for n in notes:
        print(f"note: {n}")


def plot(path, summaries):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.5 * len(summaries), 4), squeeze=False)
    for ax, s in zip(axes[0], summaries):
        rows = [r for p, r in s["peers"].items() if p != "sgemm" and "samples_per_s" in r]
        med = [r["samples_per_s"] for r in rows]
        err = [[m - r["samples_per_s_min"] for m, r in zip(med, rows)],
               [r["samples_per_s_max"] - m for m, r in zip(med, rows)]]
        ax.bar([r["peer"] for r in rows], med, yerr=err, capsize=3,
               color=["tab:red" if r["peer"] == "fastbp" else "tab:gray" for r in rows])
        ax.set_title(s["workload"])
        ax.set_ylabel("training samples/s")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
