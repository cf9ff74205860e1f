"""MODEL_CARD.md for a run (Mitchell et al. 2019, "Model Cards for Model Reporting"), built only from
the run folder: config.json (model, data), checkpoint.json (training), eval.json (evaluation),
metrics.jsonl (validation loss) and samples/ (the latest preview). `genlab card RUN` writes it.

Every figure in the card is read from those files, never re-measured, so the card says what the run
says; where a file is missing (no evaluation yet) the card says so and how to make it.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from genlab import kinds, registry
from genlab.evaluation.report import _fmt
from genlab.kinds.base import CardText
from genlab.kinds.text.prepare import TEXT_SEPARATOR
from genlab.loading import load_config
from genlab.provenance import AI_COMMENT
from genlab.runs import (CHECKPOINT, CONFIG, WEIGHTS, RunError, atomic_write, read_config, read_json, read_manifest,
                         read_metrics)

CARD = "MODEL_CARD.md"
# the novelty figure of each kind of evaluation, and what it measures
NOVELTY = {"memorisation": "of the samples are near-copies of a training image (pixel-space nearest neighbour "
                           "closer than 1/3 of that image's own nearest-neighbour distance)",
           "copied_8gram_share": "of the generated 8-token spans occur verbatim in the training text",
           "copy_share": "of the generated 8-onset n-grams (about two bars) occur verbatim in the training pieces"}


def _cell(value) -> str:
    """A value for a Markdown table cell: formatted, one line, pipes escaped."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else _fmt(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fenced(text: str) -> str:
    """A code block whose fence is longer than any run of backticks inside the text."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip()}\n{fence}"


def _duration(seconds) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _latest(run_dir: Path, pattern: str) -> Path | None:
    files = sorted((run_dir / "samples").glob(pattern))
    return files[-1] if files else None


def _model_section(run_dir: Path, cfg: dict, ck: dict, fam) -> str:
    params = ck.get("parameters")
    lines = ["## Model details", "",
             f"- **Family:** `{cfg['family']}`: {fam.summary if fam else 'unknown family'}",
             f"- **Parameters:** {params:,}" if isinstance(params, int) else "- **Parameters:** unknown",
             f"- **Weights:** `{WEIGHTS}` (safetensors), SHA-256 `{ck.get('files', {}).get(WEIGHTS, 'unknown')}`",
             f"- **Made with:** genlab {cfg.get('version', '?')}; the model is rebuilt from `config.json` by "
             f"`genlab.load(\"{run_dir.name}\")`", *_lineage(cfg),
             "", "Configuration (`config.json`, `model` section):", "",
             _table(["key", "value"], [[k, v] for k, v in cfg.get("model", {}).items()])]
    return "\n".join(lines)


def _lineage(cfg: dict) -> list[str]:
    """Where the weights came from when not from scratch: the base run (--init-from, adapters), a merge or a
    compression."""
    init, adapter, derived, lines = cfg.get("init", {}), cfg.get("adapter", {}), cfg.get("derived"), []
    if init.get("run"):
        lines.append(f"- **Started from:** the run `{init['run']}` ({init.get('weights', 'ema')} weights, SHA-256 "
                     f"`{init.get('sha256', 'unknown')}`), then trained on the data below")
    if adapter.get("type", "none") != "none":
        lines.append(f"- **Adapter:** {adapter['type']} rank {adapter.get('rank')}, alpha "
                     f"{adapter.get('alpha') or adapter.get('rank')}; "
                     + ("the base weights are frozen and read from the base run, which must keep that SHA-256"
                        if adapter.get("freeze", True) else "the base weights trained too"))
    if derived:
        what = ", ".join(f"{k} {v}" for k, v in derived.items() if k not in ("run", "sha256", "operation"))
        lines.append(f"- **Derived:** `genlab {derived.get('operation')}` of the run `{derived.get('run')}` "
                     f"(SHA-256 `{derived.get('sha256')}`){': ' + what if what else ''}")
    return lines


def _data_section(cfg: dict) -> str:
    ds, dc = cfg.get("dataset", {}), cfg.get("data", {})
    lines = ["## Data", "",
             f"- **Dataset:** `{ds.get('name', dc.get('name', '?'))}`",
             f"- **Source:** {ds.get('source') or 'not recorded'}"]
    rows = [[k, v] for k, v in ds.items() if k not in ("name", "source")]
    if rows:
        lines += ["", "As described at training time (`config.json`, `dataset` section):", "",
                  _table(["key", "value"], rows)]
    lines += ["", "Data options (`data` section): "
              + ", ".join(f"`{k}={v}`" for k, v in dc.items() if k != "name") + ".",
              f"A deterministic split (`val_fraction={dc.get('val_fraction')}`, `seed={dc.get('seed')}`) held out "
              "the validation data; the model never trained on it."]
    return "\n".join(lines)


def _training_section(run_dir: Path, cfg: dict, ck: dict) -> str:
    tc = cfg.get("train", {})
    started = ck.get("started")
    when = (datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            if isinstance(started, (int, float)) else "unknown")
    rows = [["steps", ck.get("step")], ["wall time", _duration(ck.get("wall_time_s"))],
            ["device", ck.get("device")], ["precision", ck.get("precision")], ["world size", ck.get("world_size")],
            ["genlab version", ck.get("genlab_version")], ["torch version", ck.get("torch_version")],
            ["started", when]]
    vals = [r for r in read_metrics(run_dir) if any(k.startswith("val/") for k in r)]
    lines = ["## Training", "", _table(["", ""], rows)]
    if vals:
        last = vals[-1]
        lines += ["", f"Validation at step {last['step']}: "
                  + ", ".join(f"{k[4:]} {_fmt(v)}" for k, v in last.items() if k.startswith("val/")) + "."]
    lines += ["", "Training options (`train` section): " + ", ".join(f"`{k}={v}`" for k, v in tc.items()) + "."]
    return "\n".join(lines)


def _evaluation_section(run_dir: Path, ev: dict | None) -> str:
    if ev is None:
        return ("## Evaluation\n\n**No evaluation yet.** This run has no `eval.json`, so the card has no quality, "
                f"diversity or novelty figures. Run\n\n    genlab eval {run_dir}\n\nthen `genlab card {run_dir}` "
                "again to include them.")
    j = ev.get("judge", {})
    judge = j.get("id") or "none (text metrics)"
    acc = j.get("heldout_accuracy")
    lines = ["## Evaluation", "",
             f"From `eval.json`: **N = {ev.get('n_samples')}** samples, seed {ev.get('seed')}, judge `{judge}`"
             + (f" (held-out accuracy {acc:.3f})" if isinstance(acc, (int, float)) else "")
             + (f", controls `{json.dumps(ev['controls'])}`" if ev.get("controls") else "") + ".", ""]
    ck_path = run_dir / CHECKPOINT
    if ck_path.exists() and (run_dir / "eval.json").stat().st_mtime < ck_path.stat().st_mtime:
        lines += ["> **Stale:** `eval.json` is older than the latest checkpoint; re-run `genlab eval` for figures "
                  "that describe these weights.", ""]
    rows = ev.get("rows", [])
    if any("floor" in r for r in rows):   # each row's own reference value (the music kind's held-out pieces)
        lines.append(_table(["metric", "axis", "value", "N", "held-out data", "note"],
                            [[r["metric"], r.get("axis", ""), r.get("value"), r.get("n_samples"), r.get("floor", ""),
                              r.get("note", "")] for r in rows]))
    else:
        lines.append(_table(["metric", "axis", "value", "N", "note"],
                            [[r["metric"], r.get("axis", ""), r.get("value"), r.get("n_samples"), r.get("note", "")]
                             for r in rows]))
    floor = ev.get("floor") or {}
    if "fid" in floor:
        what = floor.get("what", "held-out vs training data")
        lines += ["", f"Real-vs-real floor ({what}, N={floor.get('n_samples')}):"
                  f" FID {_fmt(floor.get('fid'))}, precision {_fmt(floor.get('precision'))}, recall "
                  f"{_fmt(floor.get('recall'))}, coverage {_fmt(floor.get('coverage'))}. Compare the `@floor_n` rows "
                  "with it, and compare runs only at equal N: FID, KID and coverage change with N."]
    return "\n".join(lines)


def _samples_section(run_dir: Path, fam, ev: dict | None, suffix: str = ".png") -> str:
    head = "## Samples\n\n"
    if fam is not None and not fam.model_cls.generative:
        return head + f"`{fam.name}` is not a generative family: it has no samples."
    grid = _latest(run_dir, "step-*.png")
    if grid is not None:
        return head + (f"The latest training preview ({grid.stem}; AI-generated, seed 0; its PNG text chunks say so):"
                       f"\n\n![AI-generated samples from {run_dir.name}, {grid.stem}](samples/{grid.name})\n\n"
                       f"More: `genlab sample {run_dir} --seed 0 --out samples{suffix}` (every file carries the "
                       "provenance described under Risks).")
    text = _latest(run_dir, "step-*.txt")
    if text is not None:
        parts = [p for p in text.read_text(errors="replace").split(TEXT_SEPARATOR) if p.strip()][:3]
        parts = [p if len(p) <= 800 else p[:800] + "\n[... cut]" for p in parts]
        return head + (f"The first generations of the latest training preview ({text.stem}; AI-generated, seed 0):\n\n"
                       + "\n\n".join(_fenced(p) for p in parts))
    if ev and ev.get("samples"):
        return head + "From `eval.json` (AI-generated):\n\n" + "\n\n".join(_fenced(s) for s in ev["samples"][:3])
    return head + "No samples were written during training (`samples/` is empty)."


def _novelty_line(ev: dict | None, run_dir: Path) -> str:
    if ev is None:
        return (f"- **Memorisation:** not measured yet (no `eval.json`): run `genlab eval {run_dir}`; until then "
                "assume the model may reproduce training items.")
    for row in ev.get("rows", []):
        if row["metric"] in NOVELTY and row.get("value") is not None:
            return (f"- **Memorisation:** {row['value']:.1%} {NOVELTY[row['metric']]} (`{row['metric']}` = "
                    f"{_fmt(row['value'])}, N = {row.get('n_samples')}). This test only catches near-copies: "
                    "a blurred, shifted or paraphrased copy of a training item is not flagged.")
    return "- **Memorisation:** this evaluation has no memorisation figure (the family is not generative)."


def _use_and_risks(run_dir: Path, cfg: dict, ck: dict, ev: dict | None, wording: CardText) -> str:
    what = wording.noun
    fam = registry.FAMILIES.get(cfg.get("family", ""))
    if fam is not None and not fam.model_cls.generative:
        return ("## Intended use\n\n- Learning and teaching classification on small datasets"
                + ("; as the judge whose features `genlab eval --judge` uses" if wording.judged else "") + ".\n"
                "- **Not** for decisions about people or anything that matters: it is small and knows one dataset.\n\n"
                "## Limitations\n\n- A small, briefly trained classifier; accuracy on data unlike its training "
                "data is unknown.\n\n## Risks\n\n- **Misuse:** its labels can look authoritative; they are not.")
    intended = ["## Intended use", "",
                f"- Learning, teaching and experimenting with generative models: comparing families, settings and "
                f"metrics on small datasets such as `{cfg.get('data', {}).get('name')}`.",
                "- Producing clearly labelled synthetic examples for demonstrations and tests.",
                f"- **Not** for producing {what} presented as real or human-made, nor for any decision about people."]
    intended += [f"- {line}" for line in wording.uses]
    limits = ["## Limitations", "",
              f"- A small model ({ck.get('parameters', '?'):,} parameters) trained for {ck.get('step', '?')} steps "
              f"({_duration(ck.get('wall_time_s'))} on {ck.get('device', '?')}); genlab is CPU-first, so its models "
              "are far smaller and weaker than production models, and only know their one dataset."
              if isinstance(ck.get("parameters"), int) else "- A small, briefly trained model.",
              f"- It generates only what resembles its training data "
              f"({cfg.get('dataset', {}).get('name', 'its dataset')}); "
              "inputs or prompts unlike that data give meaningless output."]
    limits += [f"- {line}" for line in wording.limitations]
    risks = ["## Risks", "", _novelty_line(ev, run_dir),
             f"- **AI-generated content:** everything this model makes is synthetic. Images written by genlab "
             f"(`genlab sample`, `interpolate`, `reconstruct`, the training previews) carry PNG text chunks "
             f"`AI-Generated: true`, `Comment: {AI_COMMENT}`, and `genlab:run`, `genlab:weights_sha256`, "
             "`genlab:seed`, `genlab:settings` (an `.npz` keeps the same dict as JSON in its `metadata` array). "
             "The chunks are easy to strip: keep the disclosure when you share outputs.",
             "- **Misuse:** outputs could be passed off as real (e.g. forged handwriting or fake records) or, for "
             "text, as human-written; a model trained on private or copyrighted data can leak it through "
             "memorised samples. Train only on data you may share, and label outputs as AI-generated."]
    return "\n\n".join("\n".join(block) for block in (intended, limits, risks))


def write_card(run_dir: str | Path) -> Path:
    """Write MODEL_CARD.md into the run (atomically) and return its path."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise RunError(f"{run_dir} has no {CONFIG}; expected a genlab run folder (runs/<name>)")
    cfg = read_config(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        raise RunError(f"{run_dir} has no {CHECKPOINT}: the run has not finished a checkpoint yet; "
                       "train it first (genlab train ... --out " f"{run_dir})")
    ck = read_manifest(run_dir)
    ev = read_json(run_dir / "eval.json") if (run_dir / "eval.json").exists() else None
    fam = registry.FAMILIES.get(cfg.get("family", ""))
    kind = kinds.KINDS.get(fam.kind) if fam else None   # a family or kind no longer installed: generic wording
    if fam is not None and kind is not None:
        kind = kinds.of_run(load_config(run_dir))
    wording = kind.card if kind else CardText("outputs")
    intro = (f"# Model card: {run_dir.name}\n\n"
             f"A `{cfg['family']}` model trained with genlab on `{cfg.get('data', {}).get('name', '?')}` for "
             f"{ck.get('step')} steps. "
             + ("**Everything it produces is AI-generated.** " if (fam is None or fam.model_cls.generative)
                else "") + "This card is generated from the "
             f"run folder by `genlab card {run_dir}`; re-run it after more training or a new evaluation.")
    sections = [intro, _model_section(run_dir, cfg, ck, fam), _data_section(cfg), _training_section(run_dir, cfg, ck),
                _evaluation_section(run_dir, ev), _samples_section(run_dir, fam, ev, kind.sample_suffix if kind else ".png"),
                _use_and_risks(run_dir, cfg, ck, ev, wording)]
    out = run_dir / CARD
    atomic_write(out, "\n\n".join(sections) + "\n")
    return out


__all__ = ["write_card", "CARD"]
