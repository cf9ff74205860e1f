"""The `genlab` command: a thin layer over genlab.api. Run `genlab <command> --help` for each command."""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
import traceback
from pathlib import Path

import torch

from genlab import kinds, registry
from genlab.api import evaluate, train
from genlab.card import write_card
from genlab.cli_augment import add_parser as add_augment, cmd_augment
from genlab.compress import compress, describe_compressed
from genlab.config import DataConfig
from genlab.data import load_images
from genlab.data.fetch import fetch, is_fetched
from genlab.data.videos import VIDEO_BUILTINS
from genlab.derive import merge
from genlab.errors import GenlabError, UsageError
from genlab.evaluation.report import compare, print_eval, write_report
from genlab.imageio import save_grid, save_npz
from genlab.kinds.image.imagegen import interpolate, reconstruct
from genlab.kinds.image.judge import JUDGE_STEPS
from genlab.kinds.text.textgen import classify, explain_html, generate, shade_terminal, translate
from genlab.loading import load, load_config
from genlab.models.controls import union
from genlab.provenance import image_metadata
from genlab.runs import run_owning
from genlab.version import __version__
REPORT_TO = "the genlab issue tracker (README: \"Errors and reporting a bug\")"

FETCHABLE = ["mnist", "fashion-mnist", "tinyshakespeare", "imdb", "multi30k", "fsdd"]

def sampling_controls() -> dict:
    """The sampling controls of the registered generators (the flags of `sample` and `eval`), as the families
    declare them: name -> (control, families). Only the flags a user gives are passed on, and a family that does
    not know a control says so (one vocabulary across families, docs/design.md)."""
    return union({f.name: f.model_cls.CONTROLS for f in registry.FAMILIES.values() if f.model_cls.generative})


def _checked(parse, ok, expected: str, noun: str):
    """An argparse type: `parse` the text, then check it (`ok`), with messages that name what is expected."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value}; expected {expected}")
        return value

    return convert


positive_int = _checked(int, lambda v: v >= 1, "at least 1", "an integer")   # counts: 0 has nothing to write
finite_float = _checked(float, math.isfinite, "a finite number", "a number")  # inf and nan fail far from the flag
seed_number = _checked(int, lambda v: 0 <= v < 2**63, "a seed in 0..2^63-1", "an integer")  # torch.Generator's
port_number = _checked(int, lambda v: 0 <= v <= 65535, "a port in 0..65535 (0 = any free port)", "a port number")


def output_path(text: str) -> str:
    """argparse type for an output file: anything but one of a run folder's own files."""
    run = run_owning(text)
    if run is not None:
        raise argparse.ArgumentTypeError(f"{text} is part of the run {run}; writing there would destroy it; "
                                         "expected a path outside the run's own files (e.g. samples.png)")
    return text


def _add_controls(p: argparse.ArgumentParser) -> None:
    for name, (c, families) in sampling_controls().items():
        p.add_argument(f"--{name}", type=finite_float if c.type is float else c.type, default=None,
                       help=f"{c.help} ({', '.join(families)})")


def _controls(args) -> dict:
    return {k: getattr(args, k) for k in sampling_controls() if getattr(args, k, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlab", description="Generative modelling: data, train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="list, show and fetch datasets").add_subparsers(dest="data_command", required=True)
    data.add_parser("list", help="built-in datasets")
    show = data.add_parser("show", help="write a grid of a dataset's images (video built-ins: a filmstrip PNG, or "
                                        "the clips playing with --out x.gif)")
    show.add_argument("name", help="built-in name or path")
    show.add_argument("--out", type=output_path, default="data.png")
    show.add_argument("-n", type=positive_int, default=64)
    show.add_argument("--image-size", type=int, default=0)
    fetch = data.add_parser("fetch", help="download a public dataset into the cache (SHA-256 checked)")
    fetch.add_argument("name", choices=FETCHABLE)
    fetch.add_argument("--cache", default=None, help="cache folder (default $GENLAB_CACHE or ~/.cache/genlab)")

    t = sub.add_parser("train", help="train a model family")
    t.add_argument("family", choices=list(registry.FAMILIES))
    t.add_argument("--data", default=None, help="built-in name, image folder, MNIST IDX folder or .npz "
                   "(default digits; with --resume, the run's)")
    t.add_argument("--out", default=None, help="run folder (default runs/<family>-<data>)")
    t.add_argument("--preset", choices=["tiny", "small", "base"], default=None,
                   help="model size and schedule (default small; gpt with --minutes: chosen for the budget)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. model.latent_dim=8 (repeatable)")
    t.add_argument("--steps", type=positive_int, default=None)
    t.add_argument("--minutes", type=finite_float, default=None, help="wall-clock budget")
    t.add_argument("--conditional", action="store_true", default=None, help="train with class labels")
    t.add_argument("--image-size", type=int, default=None, help="resize (and pad) images to this square size")
    t.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    t.add_argument("--tokenizer", choices=["char", "bpe"], default=None, help="text families (data.tokenizer)")
    t.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (data.vocab_size)")
    t.add_argument("--seed", type=seed_number, default=None)
    t.add_argument("--resume", default=None, metavar="RUN", help="continue a run from its last checkpoint")
    t.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from another run's weights (EMA when it has them; init.weights=raw for the raw ones), "
                        "with its architecture and a new optimizer and schedule (docs/adaptation.md)")
    t.add_argument("--adapter", choices=["lora"], default=None,
                   help="with --init-from: train LoRA adapters on the frozen base (adapter.rank, adapter.alpha, "
                        "adapter.freeze)")
    t.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sample", help="draw samples from a run (images: a .png grid or .npz)")
    s.add_argument("run")
    s.add_argument("-n", type=positive_int, default=64)
    s.add_argument("--seed", type=seed_number, default=0)
    s.add_argument("--label", type=int, default=None, help="class to draw (conditional runs)")
    s.add_argument("--out", type=output_path, default=None,
                   help="output file or folder (default samples.png for images, .wav for audio, .mid for music, "
                        ".gif for video; video also .mp4 or .npz)")
    s.add_argument("--prompt", default=None, metavar="FILE",
                   help="music runs: a .mid file (or a text of music tokens) whose opening bars begin every piece; "
                        "video runs: a GIF/MP4/npz clip whose first --context-frames frames begin every clip")
    s.add_argument("--input", default=None, metavar="PATH",
                   help="image-pair runs: an image or a folder of images to translate (default: the run's held-out "
                        "inputs); --out a .png grid or a folder (one PNG per input)")
    s.add_argument("--context-frames", type=positive_int, default=None, metavar="K",
                   help="video runs with --prompt: how many of its first frames to keep (default half a clip)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    _add_controls(s)
    s.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: the network on onnxruntime (families with an ONNX backend; exported into RUN/onnx/ "
                        "on first use)")

    r = sub.add_parser("reconstruct", help="held-out images and their reconstructions "
                       f"({', '.join(registry.families_with('reconstruct'))})")
    r.add_argument("run")
    r.add_argument("-n", type=positive_int, default=16)
    r.add_argument("--out", type=output_path, default="recon.png")

    i = sub.add_parser("interpolate", help="walk the latent space between two seeds "
                       f"({', '.join(registry.families_with('latent'))})")
    i.add_argument("run")
    i.add_argument("--seeds", type=seed_number, nargs=2, default=[0, 1])
    i.add_argument("--frames", type=positive_int, default=10)
    i.add_argument("--rows", type=positive_int, default=8, help="independent walks (rows of the grid)")
    i.add_argument("--label", type=int, default=None)
    i.add_argument("--out", type=output_path, default="interp.png")

    e = sub.add_parser("eval", help="evaluate a run; writes eval.json and prints a table")
    e.add_argument("run")
    e.add_argument("-n", type=positive_int, default=None, help="samples to draw (images 1000, text 32)")
    e.add_argument("--seed", type=seed_number, default=0)
    e.add_argument("--judge", default=None, help=f"image runs: a run folder of {' or '.join(JUDGE_STEPS)} to use "
                   "as the judge")
    e.add_argument("--no-progress", action="store_true")
    _add_controls(e)

    c = sub.add_parser("compare", help="one table of several runs' metrics")
    c.add_argument("runs", nargs="+")
    c.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    c.add_argument("--out", type=output_path, default=None, help="write the table to this file")

    rep = sub.add_parser("report", help="write report.html into a run")
    rep.add_argument("run")

    card = sub.add_parser("card", help="write MODEL_CARD.md into a run and print its path")
    card.add_argument("run")

    ex = sub.add_parser("export", help="export a run's networks to ONNX, verified against PyTorch on onnxruntime")
    ex.add_argument("run")
    ex.add_argument("--format", default="onnx", help="onnx (the only format so far)")
    ex.add_argument("--out", default=None, help="folder for the graphs and export.json (default RUN/onnx)")
    ex.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    ex.add_argument("--tolerance", type=finite_float, default=None,
                    help="largest accepted |onnx - torch| (default 1e-4; with --quantize int8, 0.5)")
    ex.add_argument("--quantize", choices=["int8"], default="none",
                    help="int8: quantize the verified graphs with onnxruntime's dynamic int8 (default --out "
                         "RUN/onnx-int8)")

    mg = sub.add_parser("merge", help="merge an adapter run's LoRA adapters into its base: a plain run (OUT)")
    mg.add_argument("run")
    mg.add_argument("--out", default=None, help="the new run folder (default RUN-merged)")

    cp = sub.add_parser("compress", help="prune and/or quantize a run's weights into a new run folder (OUT)")
    cp.add_argument("run")
    cp.add_argument("--out", required=True, help="the new run folder")
    cp.add_argument("--prune", type=finite_float, default=0.0, metavar="SHARE",
                    help="set this share of each layer's weights (smallest magnitude) to zero, e.g. 0.5")
    cp.add_argument("--structured", action="store_true",
                    help="with --prune: remove that share of the Transformer MLPs' hidden units (gpt, seq2seq, "
                         "textclf): a narrower, faster model")
    cp.add_argument("--quantize", choices=["int8"], default="none",
                    help="int8: Linear and LSTM weights as dynamic int8 (torch.ao.quantization)")

    g = sub.add_parser("generate", help="generate text from a language-model run")
    g.add_argument("run")
    g.add_argument("-n", type=positive_int, default=1)
    g.add_argument("--prompt", default="")
    g.add_argument("--seed", type=seed_number, default=0)
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=finite_float, default=1.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--top-p", type=finite_float, default=1.0, help="1 = off")
    g.add_argument("--stop", action="append", default=[], help="cut the text at this string (repeatable)")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")

    tr = sub.add_parser("translate", help="translate with a translation run")
    tr.add_argument("run")
    tr.add_argument("text", nargs="+")
    tr.add_argument("--beam", type=positive_int, default=1)
    tr.add_argument("--length-penalty", type=finite_float, default=1.0, help="GNMT alpha")

    cl = sub.add_parser("classify", help="classify texts with a text-classifier run")
    cl.add_argument("run")
    cl.add_argument("text", nargs="+")
    cl.add_argument("--explain", action="store_true", help="shade each token by its attention weight")
    cl.add_argument("--html", type=output_path, default=None,
                    help="with --explain: also write the shading as an HTML page")

    add_augment(sub)

    from genlab.serve.schemas import Settings   # pydantic: only for the parser's serve flags

    sv = sub.add_parser("serve", help="serve runs over HTTP (JSON API, streaming, browser page; docs/serving.md)")
    sv.add_argument("runs", nargs="+", metavar="RUN")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--allow-host", action="append", default=[], metavar="NAME", dest="allow_hosts",
                    help="also answer requests whose Host header names NAME (repeatable; '*' = any; docs/serving.md)")
    sv.add_argument("--port", type=port_number, default=8000)
    sv.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default $GENLAB_TOKEN)")
    sv.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    sv.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; on a small CPU leave a core for the clients)")
    for name, value in vars(Settings()).items():
        if name not in Settings.OWN_FLAGS:
            sv.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print(f"genlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except (GenlabError, OSError, MemoryError) as e:
        if os.environ.get("GENLAB_DEBUG"):
            raise
        print(f"genlab {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if not _out_of_memory(e):
            return _bug(args, e)
        if os.environ.get("GENLAB_DEBUG"):
            raise
        print(f"genlab {args.command}: error: {_describe(MemoryError())}", file=sys.stderr)
        return 1
    except Exception as e:  # not an expected failure: a bug in genlab
        return _bug(args, e)


def _out_of_memory(e: RuntimeError) -> bool:
    """torch reports a failed allocation as a RuntimeError (CPU) or torch.OutOfMemoryError (CUDA)."""
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e)


def _bug(args, e: Exception) -> int:
    if os.environ.get("GENLAB_DEBUG"):
        raise e
    where = traceback.extract_tb(e.__traceback__)[-1]
    print(f"genlab {args.command}: internal error (a bug in genlab {__version__}): {type(e).__name__}: {e}\n"
          f"  at {where.filename}:{where.lineno}; please report it to {REPORT_TO} with the command "
          "you ran; GENLAB_DEBUG=1 shows the full traceback", file=sys.stderr)
    return 2


def _describe(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return ("out of memory" + (f": {e}" if str(e) else "") +
                "; use fewer samples (-n), a smaller dataset, batch or model (see data.memory_budget_gb)")
    if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e):
        return f"{e.filename}: {e.strerror or e}"
    return str(e)


def cmd_data(args) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.data_command == "list":
        table = Table("name", "kind", "description", "ready")
        rows = [(name, kind.summary, text) for kind in kinds.KINDS.values() for name, text in kind.datasets().items()]
        for name, kind, text in rows:
            table.add_row(name, kind, text, "fetch first" if name in FETCHABLE and not is_fetched(name) else "yes")
        Console().print(table)
    elif args.data_command == "show" and args.name in VIDEO_BUILTINS:
        _show_video(args)
    elif args.data_command == "show":
        ds = load_images(DataConfig(name=args.name, image_size=args.image_size))
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[: args.n]
        save_grid(ds.images[idx], args.out)
        print(f"{ds.name}: {len(ds)} images, {ds.channels}x{ds.image_size}x{ds.image_size}, "
              f"classes: {', '.join(ds.classes) or 'none'}; wrote {args.out}")
    else:
        print(f"{args.name} is in {fetch(args.name, cache_dir=args.cache)}")
    return 0


def _show_video(args) -> None:
    from genlab.data.video_sources import load_video
    from genlab.videoio import save_filmstrip, save_video

    ds = load_video(DataConfig(name=args.name, image_size=args.image_size, count=min(args.n, 16)))
    if args.out.lower().endswith((".gif", ".mp4")):
        save_video(args.out, ds.floats(), ds.fps, {"source": ds.source}, nrow=4)
    else:
        save_filmstrip(args.out, ds.floats(), {"source": ds.source})
    print(f"{ds.name}: {len(ds)} clips of {ds.frames} frames at {ds.fps:g} fps, {ds.channels}x{ds.image_size}x"
          f"{ds.image_size}, classes: {', '.join(ds.classes)}; wrote {args.out}")


def cmd_train(args) -> int:
    rank = int(os.environ.get("RANK", "0"))
    run = train(args.family, data=args.data, out=args.out, preset=args.preset, overrides=args.overrides,
                resume=args.resume, progress=not args.no_progress, steps=args.steps, minutes=args.minutes,
                conditional=args.conditional, image_size=args.image_size, precision=args.precision, seed=args.seed,
                tokenizer=args.tokenizer, vocab_size=args.vocab_size, init_from=args.init_from, adapter=args.adapter)
    if rank == 0:
        r = run.result
        val = ", ".join(f"{k} {v:.4g}" for k, v in r.val.items())
        print(f"trained {run.config.family} for {r.step} steps in {r.elapsed:.0f} s "
              f"({r.items_per_s:,.0f} {r.unit}/s); validation: {val}")
        print(f"run folder: {run.path}")
    return 0


def _save_images(images: torch.Tensor, out: str, metadata: dict | None = None) -> None:
    if out.endswith(".npz"):
        save_npz(out, images, None, metadata=metadata)
    else:
        save_grid(images, out, metadata=metadata)


def cmd_sample(args) -> int:
    model = load(args.run, ema=not args.no_ema)
    kind = kinds.of_run(model.run.config)
    if not (model.generative and kinds.writes_samples(kind)):
        hint = kind.extras.get("instead")   # e.g. "for text runs use `genlab generate`"
        raise UsageError(f"{args.run} is a {model.family} run; `genlab sample` draws samples from a run of "
                         f"{', '.join(kinds.samplable())}" + (f" ({hint})" if hint else ""))
    if args.backend == "onnx":
        from genlab.export import onnx_backend

        model = onnx_backend(model)
    if args.prompt and "prompt" not in kind.extras:
        raise UsageError(f"--prompt: {model.family} runs on {model.run.config.data.name} take no prompt file "
                         "(music runs do: a .mid file whose opening bars begin every piece; video runs: a clip)")
    if args.input and "input" not in kind.extras:
        raise UsageError(f"--input: {model.family} runs translate no images (image-pair runs do: pix2pix)")
    if args.context_frames and not args.prompt:
        raise UsageError("--context-frames: expected it with --prompt (the clip whose first frames to continue)")
    out = args.out or "samples" + kind.sample_suffix
    given = {"prompt": args.prompt} if args.prompt else {}
    if args.input:
        given["input"] = args.input
    if args.context_frames:
        given["context_frames"] = args.context_frames
    print(kind.write_samples(model, out, n=args.n, seed=args.seed, label=args.label, controls=_controls(args),
                             settings={"weights": "raw" if args.no_ema else "ema when present",
                                       "backend": args.backend}, **given))
    return 0


def cmd_reconstruct(args) -> int:
    grid = reconstruct(args.run, args.n)
    _save_images(grid, args.out, metadata=image_metadata(
        args.run, seed=None, kind="reconstruction",
        settings={"n": args.n, "rows": "odd: real held-out images; even: the model's reconstructions of them"}))
    print(f"wrote {args.n} held-out images (odd rows) and their reconstructions (even rows) to {args.out}")
    return 0


def cmd_interpolate(args) -> int:
    frames = interpolate(args.run, args.seeds, frames=args.frames, rows=args.rows, label=args.label)

    meta = image_metadata(args.run, seed=list(args.seeds), kind="interpolation",
                          settings={"seeds": list(args.seeds), "frames": args.frames, "rows": args.rows,
                                    "label": args.label, "path": "slerp between the two seeds' latents"})
    save_grid(frames, args.out, nrow=args.frames, metadata=meta)
    print(f"wrote {args.rows} walks of {args.frames} frames from seed {args.seeds[0]} to {args.seeds[1]} to {args.out}")
    return 0


def cmd_eval(args) -> int:
    controls = _controls(args)
    report = evaluate(args.run, **({"n": args.n} if args.n else {}), seed=args.seed, judge=args.judge, controls=controls,
                      progress=not args.no_progress)
    print_eval(report)
    print(f"wrote {Path(args.run) / 'eval.json'}")
    return 0


def cmd_compare(args) -> int:
    text = compare(args.runs, fmt=args.format)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_report(args) -> int:
    print(f"wrote {write_report(Path(args.run))}")
    return 0


def cmd_card(args) -> int:
    print(write_card(Path(args.run)))
    return 0


def cmd_export(args) -> int:
    from genlab.export import describe, export

    int8 = args.quantize == "int8"
    out = Path(args.out) if args.out else Path(args.run) / ("onnx-int8" if int8 else "onnx")
    tol = {} if args.tolerance is None else {"int8_tolerance" if int8 else "tolerance": args.tolerance}
    print(describe(export(args.run, out, format=args.format, ema=not args.no_ema, quantize=args.quantize, **tol)))
    print(f"wrote {out / 'export.json'}")
    return 0


def cmd_merge(args) -> int:
    out = args.out or f"{str(args.run).rstrip('/')}-merged"
    print(f"merged the adapters of {args.run} into its base; wrote the run {merge(args.run, out)}")
    return 0


def cmd_compress(args) -> int:
    out = compress(args.run, args.out, prune=args.prune, structured=args.structured, quantize=args.quantize)
    print(describe_compressed(Path(args.run), out))
    return 0


def cmd_generate(args) -> int:
    texts = generate(args.run, args.prompt, args.n, seed=args.seed, stop=args.stop,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                     top_p=args.top_p, use_cache=not args.no_cache)
    print("\n\n-----\n\n".join(texts))
    return 0


def cmd_translate(args) -> int:
    for src, out in zip(args.text, translate(args.run, args.text, beam=args.beam, length_penalty=args.length_penalty)):
        print(f"{src}\t{out}")
    return 0


def cmd_classify(args) -> int:
    results = classify(args.run, args.text)
    for text, c in zip(args.text, results):
        top = sorted(c.probs.items(), key=lambda kv: -kv[1])[:3]
        print(f"{c.label}\t({', '.join(f'{k} {v:.2f}' for k, v in top)})\t{text if not args.explain else ''}")
        if args.explain:
            print(shade_terminal(c) if sys.stdout.isatty() else
                  " ".join(f"{t!r}:{w:.2f}" for t, w in zip(c.tokens, c.weights)))
    if args.html:
        Path(args.html).write_text(explain_html(list(zip(args.text, results))))
        print(f"wrote {args.html}")
    return 0


def cmd_serve(args) -> int:
    from urllib.parse import quote

    import uvicorn

    from genlab.serve.app import create_app
    from genlab.serve.protocol import uvicorn_options
    from genlab.serve.schemas import Settings

    for run in args.runs:  # a wrong folder is an error now, not a 503 later
        load_config(run)
    _check_bind(args.host, args.port)
    if args.threads:
        torch.set_num_threads(args.threads)
    fields = {k: getattr(args, k) for k in vars(Settings()) if k not in Settings.OWN_FLAGS}
    settings = Settings(**fields, token=args.token or os.environ.get("GENLAB_TOKEN") or None, host=args.host,
                        allow_hosts=tuple(args.allow_hosts))
    app = create_app(args.runs, settings, device=args.device)
    page = f"http://{args.host}:{args.port}/" + (f"?token={quote(settings.token, safe='')}" if settings.token else "")
    print(f"genlab serve: {len(args.runs)} model(s); page {page} ; API docs http://{args.host}:{args.port}/docs")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5,
                **uvicorn_options(settings))
    return 0


def _check_bind(host: str, port: int) -> None:
    """A host that is not an address of this machine, or a port in use, is a one-line error before any model
    loads (uvicorn would log a traceback-like error and exit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host}: not a host name or address ({e}); "
                         "expected e.g. 127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); expected an address "
                             "of this machine and a free port") from None


COMMANDS = {"data": cmd_data, "train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct,
            "interpolate": cmd_interpolate, "eval": cmd_eval, "compare": cmd_compare, "report": cmd_report,
            "generate": cmd_generate, "translate": cmd_translate, "classify": cmd_classify, "export": cmd_export,
            "card": cmd_card, "serve": cmd_serve, "merge": cmd_merge, "compress": cmd_compress,
            "augment": cmd_augment}
