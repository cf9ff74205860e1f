"""The tables and the plot of a `genlab augment` experiment (genlab.augment): accuracy mean and spread over seeds
per (n, condition, family, k), the gain over real-only, the CAS as a fraction of real-only, and each generator's
judge scores beside its rows. Written from results.json alone, so they can be rebuilt at any time."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from genlab.runs import atomic_write

COLUMNS = ["n per class", "condition", "generator", "k", "accuracy", "sd", "seeds", "gain over real",
           "CAS / real", "judge-FID", "precision", "recall"]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def rows(results: dict) -> list[dict]:
    """One row per (n, condition, family, k) with the mean and sample SD of accuracy over the seeds."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    skipped: dict[tuple, str] = {}
    for cell in results["cells"].values():
        key = (cell["n"], cell["condition"], cell["family"], cell["k"])
        if "accuracy" in cell:
            groups[key].append(cell["accuracy"])
        else:
            skipped[key] = cell["skipped"]
    real = {n: _mean(v) for (n, c, _, _), v in groups.items() if c == "real"}
    gens = results["generators"]
    out = []
    for key in sorted(set(groups) | set(skipped), key=_order(results)):
        n, condition, family, k = key
        acc = groups.get(key, [])
        scores = [gens[g] for g in gens if g.startswith(f"{family}/n{n}/")] if family else []
        row = {"n per class": n or "all", "condition": condition, "generator": family or "", "k": k or "",
               "accuracy": _mean(acc), "sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan"),
               "seeds": len(acc), "gain over real": _mean(acc) - real.get(n, float("nan")),
               "CAS / real": _mean(acc) / real.get(n, float("nan")) if condition == "synthetic" else float("nan"),
               "skipped": skipped.get(key, "")}
        for metric in ("fid", "precision", "recall"):
            name = {"fid": "judge-FID"}.get(metric, metric)
            row[name] = _mean([s[metric] for s in scores]) if scores else float("nan")
        out.append(row)
    return out


def _order(results: dict):
    plan = results["plan"]
    cond = {c: i for i, c in enumerate(plan["conditions"])}
    fam = {f: i for i, f in enumerate([""] + plan["families"])}
    ns = {n: i for i, n in enumerate(plan["per_class"])}
    return lambda key: (ns.get(key[0], 99), cond.get(key[1], 99), fam.get(key[2], 99), key[3])


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(table: list[dict], plan: dict) -> str:
    lines = [f"# genlab augment: {plan['data']}, generators {', '.join(plan['families'])}", "",
             f"Classifier: genlab's `classifier` ({plan['clf_preset']}), {plan['clf_steps']} steps per cell; "
             f"generators: preset {plan['gen_preset']}, {plan['gen_steps']} steps, trained on the real subset only; "
             f"classic augmentation: {', '.join(plan['classic'])}. Accuracy on the held-out split (mean over seeds, "
             "sample SD). CAS = synthetic-only accuracy; judge scores: the synthetic images against the test set.",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in table:
        if r["skipped"]:
            cells = [r["n per class"], r["condition"], r["generator"], r["k"], r["skipped"]] + [""] * 7
        else:
            cells = [r["n per class"], r["condition"], r["generator"], r["k"], _fmt(r["accuracy"]), _fmt(r["sd"]),
                     r["seeds"], _signed(r["gain over real"]), _fmt(r["CAS / real"], 2), _fmt(r["judge-FID"], 1),
                     _fmt(r["precision"], 2), _fmt(r["recall"], 2)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _signed(value: float) -> str:
    return "" if np.isnan(value) else f"{value:+.3f}"


def write_report(results: dict, out: Path) -> list[Path]:
    """table.md, table.csv and accuracy_vs_n.png in `out`; returns their paths."""
    table = rows(results)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS + ["skipped"])
    w.writeheader()
    w.writerows(table)
    paths = [atomic_write(out / "table.md", markdown(table, results["plan"])), atomic_write(out / "table.csv", buf.getvalue())]
    return paths + [plot(table, results["plan"], out / "accuracy_vs_n.png")]


def plot(table: list[dict], plan: dict, path: Path) -> Path:
    """Accuracy against n (log axis; "all" at the largest count's place to the right), one line per condition and
    generator, one panel per k."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = plan["per_class"]
    xs = {n: (n if n else max([m for m in ns if m] or [1]) * 2) for n in ns}
    ks = plan["k"]
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], ks):
        lines: dict[str, list] = defaultdict(list)
        for r in table:
            if r["skipped"] or (r["k"] not in ("", k)):
                continue
            n = 0 if r["n per class"] == "all" else r["n per class"]
            label = r["condition"] + (f" ({r['generator']})" if r["generator"] else "")
            lines[label].append((xs[n], r["accuracy"], 0 if np.isnan(r["sd"]) else r["sd"]))
        for label, pts in lines.items():
            pts.sort()
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks([xs[n] for n in ns], [str(n or "all") for n in ns])
        ax.set_xlabel("real images per class")
        ax.set_title(f"k = {k} synthetic per real")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"genlab augment: {plan['data']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path
