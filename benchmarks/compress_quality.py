"""What pruning and int8 cost and buy, family by family (issue 15): size, parameters, throughput and quality.

    python benchmarks/compress_quality.py [--families vae,ddpm,gpt,textclf] [--minutes 1.5] [--threads 2]

Each family trains for --minutes on its built-in dataset (vae and ddpm: digits, conditional; gpt: pycode;
textclf: docstrings), then `genlab compress` makes the variants: unstructured pruning at several shares,
structured pruning of the Transformer MLPs (gpt, textclf), torch dynamic int8 (Linear/LSTM layers), and for
the convolutional families the int8 ONNX graph (`genlab export --quantize int8`) sampled on onnxruntime.
Every variant is measured in this one process: the weights file, parameters (non-zero), sampling throughput,
training throughput (a short `--init-from` run; pruned runs keep their zeros), and quality: judge FID and
conditional accuracy on 500 samples against the held-out split (images), bits per character (gpt), held-out
accuracy (textclf). Prints a Markdown table; the figures in RESULTS.md come from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import markdown, sampling_rate, timed_train

import genlab
from genlab import registry
from genlab.compress import compress
from genlab.data import load_images, split
from genlab.evaluation import image_metrics as M
from genlab.export import export, onnx_backend
from genlab.kinds.image.judge import get_judge
from genlab.loading import load_config
from genlab.models import int8
from genlab.runs import WEIGHTS, load_weights

SETUP = {  # family -> (data, preset, overrides)
    "vae": ("digits", "small", ["data.conditional=true"]),
    "ddpm": ("digits", "tiny", ["data.conditional=true"]),
    "gpt": ("pycode", "small", []),
    "textclf": ("docstrings", "small", []),
}
PRUNE = (0.25, 0.5, 0.75, 0.9)
STRUCTURED = {"gpt", "textclf"}


@torch.no_grad()
def image_quality(model, run: Path, n: int = 500) -> dict:
    cfg = load_config(run)
    judge = get_judge(cfg.data, progress=False, log=lambda s: None)
    _, val = split(load_images(cfg.data), cfg.data.val_fraction, cfg.data.seed)
    k = model.config.num_classes
    labels = torch.arange(n) % k
    x = model.sample(n, cond=labels, generator=torch.Generator().manual_seed(0),
                     **({"steps": 20} if model.family == "ddpm" else {}))
    acc = float((torch.from_numpy(judge.probs(x).argmax(1)) == labels).float().mean())
    return {"fid (500)": M.fid(judge.features(val.images), judge.features(x)), "cond acc": acc}


def quality(run: Path) -> dict:
    family = load_config(run).family
    if family in ("vae", "ddpm"):
        return image_quality(genlab.load(run), run)
    rows = {r["metric"]: r["value"] for r in genlab.evaluate(run, progress=False, n=8)["rows"]}
    return {"bits/char": rows["bits_per_char"]} if family == "gpt" else {"accuracy": rows["accuracy"]}


@torch.no_grad()
def speed(model) -> tuple[str, float]:
    if model.family == "vae":
        return "img/s", sampling_rate(model, 500)
    if model.family == "ddpm":
        return "img/s", sampling_rate(model, 100, steps=20)
    if model.family == "gpt":
        t = time.perf_counter()
        model.sample(8, generator=torch.Generator().manual_seed(0), max_new_tokens=128, temperature=0.8)
        return "tok/s", 8 * 128 / (time.perf_counter() - t)
    ids = torch.randint(4, model.config.vocab_size, (256, model.config.max_len), generator=torch.Generator())
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        model.forward_logits(ids)
        best = min(best, time.perf_counter() - t)
    return "text/s", 256 / best


def train_rate(run: Path, data: str, work: Path, threads: int) -> float | None:
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("compress", {}).get("quantize", "none") != "none":
        return None   # int8 weights are for inference
    _, rate = timed_train(cfg["family"], data, preset=None, steps=30, init_from=run, out=work / f"t-{run.name}",
                          overrides=[f"train.threads={threads}", "train.warmup_steps=1"])
    return rate


def counts(run: Path) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the run's float model (int8 weights unpacked)."""
    cfg = load_config(run)
    names = {n for n, _ in registry.build(cfg.family, cfg.model).named_parameters()}
    state = int8.unpack(load_weights(run)[0])
    return (sum(v.numel() for k, v in state.items() if k in names),
            sum(int((v != 0).sum()) for k, v in state.items() if k in names))


def measure(name: str, run: Path, model, data: str, work: Path, threads: int, **extra) -> dict:
    unit, rate = speed(model)
    n, nonzero = counts(run)
    row = {"variant": name, "weights MB": (run / WEIGHTS).stat().st_size / 1e6, "params": n, "non-zero": nonzero,
           f"sample {unit}": rate, **extra}
    row["train items/s"] = train_rate(run, data, work, threads) if "onnx" not in name else None
    return row | (quality(run) if "onnx" not in name else image_quality(model, run))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(SETUP))
    p.add_argument("--minutes", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="genlab-compress-"))
    for family in args.families.split(","):
        rows = []
        data, preset, overrides = SETUP[family]
        run, _ = timed_train(family, data, preset=preset, minutes=args.minutes, out=work / family,
                             overrides=[f"train.threads={args.threads}", *overrides])
        base = run.path
        rows.append(measure("fp32", base, genlab.load(base), data, work, args.threads))
        variants = [(f"prune {r}", {"prune": r}) for r in PRUNE]
        if family in STRUCTURED:
            variants.append(("structured 0.5", {"prune": 0.5, "structured": True}))
        variants.append(("int8 (torch)", {"quantize": "int8"}))
        for name, how in variants:
            out = compress(base, work / f"{family}-{name.replace(' ', '-')}", **how)
            rows.append(measure(name, out, genlab.load(out), data, work, args.threads))
        if family in ("vae", "ddpm"):
            for name, folder, quantize in (("fp32 (onnx)", "onnx", "none"), ("int8 (onnx)", "onnx-int8", "int8")):
                manifest = export(base, base / folder, quantize=quantize)
                graph = next(iter(manifest["graphs"].values()))["file"]
                model = onnx_backend(genlab.load(base), base / folder)
                rows.append(measure(name, base, model, data, work, args.threads,
                                    **{"onnx MB": (base / folder / graph).stat().st_size / 1e6,
                                       "max abs diff": max(manifest["max_abs_diff"].values())}))
        print(f"\n{family} on {data} ({preset}, {args.minutes} min)\n\n{markdown(rows)}", flush=True)
    print(f"\n{args.threads} threads, torch {torch.__version__}; weights MB: the run's model.safetensors (raw and "
          "EMA weights)")


if __name__ == "__main__":
    main()
