"""The decomposition and the plots of `benchmarks/dmcmc_diagnostics.py --part report` (see that docstring)."""
from __future__ import annotations

import numpy as np

MIX_KEYS = ("frechet_within", "std_error", "mean_error", "weight_error", "frechet")
DIGIT_KEYS = ("fd", "fd_noise_floor", "class_frequency_gap")


def _pick(metrics: dict | None, keys) -> dict | None:
    if metrics is None:
        return None
    return {k: round(float(metrics[k]), 5) for k in keys if isinstance(metrics.get(k), (int, float))}


def _window(row: dict | None, start: int) -> dict | None:
    if row is None:
        return None
    for w in row["diagnostics"]["by_round"]:
        if w["rounds"][0] == start:
            return w["metrics"]
    return None


def _chain(row: dict | None, keys) -> dict | None:
    if row is None:
        return None
    d = row["diagnostics"]
    return {"metrics_all_outputs": _pick(row["metrics"], keys), "n": row["chains"] * row["outputs_per_chain"],
            "floor_all_outputs": _pick(row["floor"], keys) if "frechet" in row["floor"] else None,
            "by_round": {f"{w['rounds'][0]}-{w['rounds'][1] - 1}": _pick(w["metrics"], keys) for w in d["by_round"]},
            "ess_per_output": {k: v["median"] for k, v in d["ess_per_output"].items()},
            "mode_switch_relative": d["mode_switch"]["relative"], "sigma_star_median": d["sigma_star"]["median"],
            "sigma_star_median_by_round": d["sigma_star_median_by_round"], "nfe": row["nfe"],
            "nfe_with_burn_in": row["nfe_with_burn_in"]}


def mixture_decomposition(table, model: str) -> dict:
    g = lambda name: table.get(model, name)  # noqa: E731
    k = MIX_KEYS
    out = {
        "floor_n2000": _pick(g("exact/n=2000")["metrics"], k),
        "c_integrator_from_exact_states_at_sigma*": _pick(g("truth@sigma*/N=4/from=dlg/oracle/T=50")["metrics"], k),
        "a_exact_states_started_at_trained_C(x)": _pick(g("truth@C(x)/trained/N=4/from=dlg/oracle/T=50")["metrics"], k),
        "a_exact_states_started_at_oracle_argmax": _pick(g("truth@C(x)/oracle/N=4/from=dlg/oracle/T=50")["metrics"], k),
        "b_dlg_oracle_T50": _chain(g("dlg/oracle/T=50"), k),
        "a+b_dlg_trained_T50": _chain(g("dlg/trained/T=50"), k),
        "d_burn_in_alone": {c: _pick(g(f"burn-in/{c}")["metrics"], k) for c in ("trained", "oracle") if g(f"burn-in/{c}")},
        "d_burn_in_nfe_per_chain": (g("dlg/oracle/T=50") or {}).get("burn_in_per_chain"),
        "ess_by_T": {c: {t: _chain(g(f"dlg/{c}/T={t}"), k)["ess_per_output"] for t in (1, 4, 50, 250) if g(f"dlg/{c}/T={t}")}
                     for c in ("trained", "oracle")},
        "plain": {r["name"]: {"nfe": r["nfe"], **_pick(r["metrics"], k)} for r in table.data["rows"]
                  if r["model"] == model and r["group"] == "plain"},
        "fixes": {r["name"]: {"nfe": r["nfe"], "nfe_with_burn_in": r["nfe_with_burn_in"], **_pick(r["metrics"], k),
                              "ess_per_output": {q: v["median"] for q, v in r["diagnostics"]["ess_per_output"].items()},
                              "sigma_star_median": r["diagnostics"]["sigma_star"]["median"]}
                  for r in table.data["rows"] if r["model"] == model and r["group"] == "fix"},
    }
    return out


def digits_decomposition(table) -> dict:
    k = DIGIT_KEYS
    rows = [r for r in table.data["rows"] if r["model"] == "digits"]
    out = {"plain": {r["name"]: {"nfe": r["nfe"], **_pick(r["metrics"], k)} for r in rows if r["group"] == "plain"},
           "truth": {r["name"]: {**_pick(r["metrics"], k), "floor_fd_of_x0": round(r["floor"]["fd"], 4),
                                 "start_vs_true_log_sigma": r["start_vs_true_log_sigma"],
                                 "sigma_star_median": r["sigma_star"]["median"]} for r in rows if r["group"] == "truth"},
           "dlg": {r["name"]: _chain(r, k) for r in rows if r["group"] in ("dlg", "burn-in", "fix", "tune")}}
    return out


def report(table) -> None:
    models = sorted({r["model"] for r in table.data["rows"]})
    dec = {}
    for m in models:
        try:
            dec[m] = digits_decomposition(table) if m == "digits" else mixture_decomposition(table, m)
        except (TypeError, KeyError) as e:  # a part not run yet
            dec[m] = {"incomplete": f"{e.__class__.__name__}: {e}"}
    table.data["decomposition"] = dec
    plot(table, models)


def plot(table, models) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dmcmc_diagnostics import PLOT

    fig, axes = plt.subplots(len(models), 3, figsize=(16, 4.2 * len(models)), squeeze=False)
    for ax_row, m in zip(axes, models):
        rows = {r["name"]: r for r in table.data["rows"] if r["model"] == m}
        mixture = m != "digits"
        key = "frechet_within" if mixture else "fd"
        clfs = ("trained", "oracle") if mixture else ("chosen", "issue")
        ax = ax_row[0]
        for c in clfs:
            r = rows.get(f"dlg/{c}/T=50")
            if r:
                s = r["diagnostics"]["sigma_star"]
                e = np.asarray(s["hist_log10_edges"])
                ax.stairs(np.asarray(s["hist_counts"]) / max(sum(s["hist_counts"]), 1), e, label=f"{c} (median {s['median']:.3g})")
        ax.set_xlabel("log10 sigma* handed to the integrator")
        ax.set_title(f"{m}: sigma* (T = 50)")
        ax.legend(fontsize=8)
        ax = ax_row[1]
        for c in clfs:
            for t in (250, 50):
                r = rows.get(f"dlg/{c}/T={t}")
                if r and r["diagnostics"]["by_round"]:
                    w = r["diagnostics"]["by_round"]
                    ax.plot([x["rounds"][0] + 1 for x in w], [x["metrics"][key] for x in w], "o-", label=f"{c}, T={t}")
                    break
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("round (first output of the window, 1-based)")
        ax.set_ylabel(key)
        ax.set_title(f"{m}: quality by round (equal n per window)")
        ax.legend(fontsize=8)
        ax = ax_row[2]
        for c in clfs:
            pts = [(t, rows[f"dlg/{c}/T={t}"]["diagnostics"]["ess_per_output"]["labels"]["median"]) for t in (1, 4, 50, 250)
                   if f"dlg/{c}/T={t}" in rows]
            if pts:
                ax.plot(*zip(*pts), "o-", label=f"{c}: ESS/output (mode or class)")
        ts = np.array([1, 4, 50, 250])
        ax.plot(ts, 1 / ts, "k:", label="1/T (chains never move)")
        ax.axhline(0.5, color="r", lw=0.8, label="0.5 (the requirement)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("outputs per chain T")
        ax.set_title(f"{m}: effective samples per output")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)
