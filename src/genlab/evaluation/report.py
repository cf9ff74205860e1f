"""Tables and pages for people: the eval table, `genlab compare` and `genlab report` (report.html)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

from genlab.errors import UsageError
from genlab.kinds.image.imagegen import reconstruct
from genlab.imageio import save_grid
from genlab.provenance import image_metadata
from genlab.registry import families_with
from genlab.runs import atomic_write, read_config, read_json, read_manifest, read_metrics


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_eval(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    j = report["judge"]
    acc = j.get("heldout_accuracy")
    title = (f"{report['family']} on {report['data']}: {report['n_samples']} samples, seed {report['seed']}"
             + (f", judge {j['id']}" if j.get("id") else "")
             + (f" (held-out accuracy {acc:.3f})" if acc is not None else ""))
    table = Table("metric", "axis", "value", "N", "real-vs-real floor", "note", title=title)
    floor = report.get("floor", {})
    for row in report["rows"]:
        base = row["metric"].split("@")[0]
        f = row.get("floor", floor.get(base) if "@" in row["metric"] or base not in floor else None)
        table.add_row(row["metric"], row["axis"], _fmt(row["value"]), _fmt(row["n_samples"]),
                      _fmt(f) if f is not None else "", row["note"])
    Console(width=160).print(table)
    if floor:
        at = any("@" in row["metric"] for row in report["rows"])
        print(f"floor: {floor['what']} (N={floor['n_samples']} vs {floor['n_reference']})"
              + ("; compare with the @floor_n rows" if at else ""))


def run_summary(run_dir: Path) -> dict:
    """One row for `genlab compare`: family, data, steps, wall time, parameters and every eval metric."""
    cfg = read_config(run_dir)
    ck = read_manifest(run_dir) if (run_dir / "checkpoint.json").exists() else {}
    row = {"run": run_dir.name, "family": cfg["family"], "data": cfg.get("data", {}).get("name"), "steps": ck.get("step"),
           "wall_s": ck.get("wall_time_s"), "params": ck.get("parameters")}
    if (run_dir / "eval.json").exists():
        ev = read_json(run_dir / "eval.json")
        row["eval_n"] = ev["n_samples"]
        row.update({r["metric"]: r["value"] for r in ev["rows"]})
    return row


def compare(runs: list[str | Path], fmt: str = "table") -> str:
    """All runs' summaries in one table: `table` (rich text), `markdown` or `csv`."""
    rows = [run_summary(Path(r)) for r in runs if (Path(r) / "config.json").exists()]
    if not rows:
        raise UsageError(f"none of {', '.join(map(str, runs))} is a genlab run folder (no config.json)")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(*cols)
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in cols))
    console = Console(width=max(120, 14 * len(cols)), record=True)
    with console.capture():
        console.print(table)
    return console.export_text()


def _png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _loss_curves(run_dir: Path) -> str | None:
    """Training and validation loss against step as a base64 PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        for k, v in r.items():
            if k.endswith("/loss") and isinstance(v, (int, float)):
                series.setdefault(k, ([], []))
                series[k][0].append(r["step"])
                series[k][1].append(v)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for k, (x, y) in series.items():
        ax.plot(x, y, label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(v > 0 for _, ys in series.values() for v in ys):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(run_dir: Path) -> Path:
    """report.html: config, loss curves, the latest sample grid, reconstructions and the metrics table."""
    summary = run_summary(run_dir)
    parts = [f"<h1>genlab run {html.escape(run_dir.name)}</h1>",
             "<p>" + ", ".join(f"<b>{k}</b> {html.escape(_fmt(v))}" for k, v in summary.items()
                               if k in ("family", "data", "steps", "wall_s", "params")) + "</p>"]
    curves = _loss_curves(run_dir)
    if curves:
        parts.append(f'<h2>Loss</h2><img alt="loss curves" src="data:image/png;base64,{curves}">')
    grids = sorted((run_dir / "samples").glob("step-*.png"))
    if grids:
        parts.append(f"<h2>Samples ({grids[-1].stem})</h2>"
                     f'<img alt="samples" class="px" src="data:image/png;base64,{_png_b64(grids[-1])}">')
    cfg = read_config(run_dir)
    if cfg["family"] in families_with("reconstruct"):
        meta = image_metadata(run_dir, seed=None, kind="reconstruction", settings={"n": 16})
        save_grid(reconstruct(run_dir, 16), run_dir / "samples" / "reconstructions.png", nrow=8, metadata=meta)
        parts.append("<h2>Reconstructions (odd rows: held-out images; even rows: reconstructions)</h2>"
                     f'<img alt="reconstructions" class="px" '
                     f'src="data:image/png;base64,{_png_b64(run_dir / "samples" / "reconstructions.png")}">')
    if (run_dir / "eval.json").exists():
        ev = read_json(run_dir / "eval.json")
        head = "<tr><th>metric</th><th>axis</th><th>value</th><th>N</th><th>note</th></tr>"
        body = "".join(f"<tr><td>{r['metric']}</td><td>{r['axis']}</td><td>{_fmt(r['value'])}</td>"
                       f"<td>{_fmt(r['n_samples'])}</td><td>{html.escape(r['note'])}</td></tr>" for r in ev["rows"])
        parts.append(f"<h2>Evaluation</h2><p>judge {html.escape(ev['judge']['id'])}, seed {ev['seed']}</p>"
                     f"<table>{head}{body}</table>")
    else:
        parts.append("<p>No evaluation yet: run <code>genlab eval</code> on this run.</p>")
    parts.append(f"<h2>Configuration</h2><pre>{html.escape(json.dumps(cfg, indent=2))}</pre>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}img.px{image-rendering:pixelated}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}")
    page = f"<!doctype html><meta charset=utf-8><title>{html.escape(run_dir.name)}</title><style>{style}</style>"
    out = run_dir / "report.html"
    atomic_write(out, page + "\n".join(parts))
    return out
