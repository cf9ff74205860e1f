"""The glue between data and a family: load and split the data, size the model config from it
(channels, image size, classes, vocabulary), and hand the trainer what it needs: a loader factory,
validation batches and a preview hook. data/ knows nothing about models; this module knows both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from genlab import registry
from genlab.config import ConfigError, RunConfig
from genlab.data import ImageDataset, load_images, split
from genlab.data import text_loader as L
from genlab.data.loader import BatchLoader, eval_batches
from genlab.data.text import load_text
from genlab.data.tokenizers import EOS, tokenizer_from_json, train_tokenizer
from genlab.errors import RunError
from genlab.imageio import save_grid
from genlab.models.base import eval_mode
from genlab.provenance import image_metadata
from genlab.runs import TOKENIZER, atomic_write, read_run_file


@dataclass
class Prepared:
    make_loader: Callable[..., Any]        # (rank=, world=, device=) -> object with .batch(i)
    val_batches: Callable[[torch.device], Any]  # device -> iterable of validation batches
    preview: Callable | None               # (model, step, run_dir) -> (scalars, warning)
    describe: dict                         # the dataset, for config.json and model cards
    tokenizer: Any = None                  # text runs: saved as tokenizer.json in the run


def needs_labels(cfg: RunConfig) -> bool:
    return cfg.data.conditional or not registry.get(cfg.family).model_cls.generative


def prepare(cfg: RunConfig, run_dir: Path, *, resume: bool, watch_for: Callable | None = None) -> Prepared:
    """Data for `cfg.family`; sets the data-derived fields of `cfg.model` in place.

    watch_for(data config, dataset) -> watch or None: for image runs, a watch on each preview's samples,
    watch(images) -> (scalars to log, warning or None); the caller above provides it (the judge's, in api.py).
    """
    if registry.get(cfg.family).kind == "image":
        return prepare_images(cfg, watch_for)
    return prepare_text(cfg, run_dir, resume)


# ---- images -------------------------------------------------------------------------------------


def prepare_images(cfg: RunConfig, watch_for: Callable | None = None) -> Prepared:
    """Load and split the images, size the model config from them, and set up the training preview
    (with the watch that `watch_for` gives for this data, if any)."""
    ds = load_images(cfg.data)
    if needs_labels(cfg) and ds.labels is None:
        raise ConfigError(f"{cfg.family} {'with --conditional ' if cfg.data.conditional else ''}needs labelled data, "
                          f"but {ds.name} has no labels (use a folder with one sub-folder per class)")
    train, val = split(ds, cfg.data.val_fraction, cfg.data.seed)
    m = cfg.model
    for name, value in (("in_channels", ds.channels), ("image_size", ds.image_size)):
        if hasattr(m, name):
            setattr(m, name, value)
    if hasattr(m, "num_classes"):
        m.num_classes = ds.num_classes if needs_labels(cfg) else 0
    if not needs_labels(cfg):  # an unconditional generator never sees the labels
        train, val = (ImageDataset(d.images, None, [], d.name, d.source) for d in (train, val))
    tc = cfg.train
    make = partial(BatchLoader, train, tc.batch_size, tc.seed, flip=cfg.data.flip)
    watch = watch_for(cfg.data, ds) if watch_for is not None else None
    return Prepared(make, lambda device: eval_batches(val, 256, device, limit=1024), image_preview(watch),
                    train.describe() | {"count": len(train) + len(val)})


def image_preview(watch: Callable | None = None):
    """A 64-sample grid per call, and the scalars and warning of `watch(samples)` when there is one."""

    def preview(model: nn.Module, step: int, run_dir: Path):
        if not model.generative:
            return {}, None
        k = getattr(model.config, "num_classes", 0)
        with eval_mode(model):
            images = model.sample(64, cond=torch.arange(64) % k if k else None,
                                  generator=torch.Generator().manual_seed(0))
        settings = {"n": 64, "label": f"i % {k} (every class in turn)" if k else None}
        meta = image_metadata(run_dir, seed=0, settings=settings, kind="training preview", preview_step=step)
        save_grid(images.cpu(), run_dir / "samples" / f"step-{step:07d}.png", nrow=k if k else None, metadata=meta)
        return watch(images) if watch is not None else ({}, None)

    return preview


# ---- text ---------------------------------------------------------------------------------------


def text_data(cfg: RunConfig):
    return load_text(cfg.data, registry.get(cfg.family).kind)


def run_tokenizer(run_dir: Path, vocab_size: int | None):
    """A run's tokenizer.json, checked against checkpoint.json (when it hashes it) and against the model's
    vocabulary size (a tokenizer from another run would make the model generate garbage)."""
    path = run_dir / TOKENIZER
    data = read_run_file(run_dir, TOKENIZER)
    try:
        tok = tokenizer_from_json(data.decode())
    except Exception as e:  # untrusted input: the parsers raise ValueError, KeyError, TypeError or tokenizers' Exception
        raise RunError(f"{path} is not a genlab tokenizer ({type(e).__name__}: {e}); the file is damaged") from None
    if vocab_size is not None and tok.vocab_size != vocab_size:
        raise RunError(f"{path} has {tok.vocab_size} tokens but config.json's model.vocab_size is {vocab_size}: "
                       "the tokenizer does not belong to this model")
    return tok


def tokenizer_for(cfg: RunConfig, data, run_dir: Path, resume: bool):
    """A resumed run keeps its tokenizer; a new one trains one on the training split."""
    if resume:
        return run_tokenizer(run_dir, cfg.model.vocab_size)
    texts = {"lm": lambda: data.train, "pairs": lambda: [t for pair in data.train for t in pair],
             "labels": lambda: data.train_texts}[data.task]()
    return train_tokenizer(cfg.data.tokenizer, texts, cfg.data.vocab_size)


def prepare_text(cfg: RunConfig, run_dir: Path, resume: bool) -> Prepared:
    data = text_data(cfg)
    tok = tokenizer_for(cfg, data, run_dir, resume)
    m, tc = cfg.model, cfg.train
    m.vocab_size = tok.vocab_size
    if data.task == "lm":
        train_ids, val_ids = L.encode_corpus(data.train, tok), L.encode_corpus(data.val, tok)
        make = partial(L.LMStream, train_ids, m.block_size, tc.batch_size, tc.seed)
        val = lambda device: L.eval_lm(val_ids, m.block_size, tc.batch_size, device, limit=256)  # noqa: E731
        preview = text_preview(tok)
        unit = ("tok", tc.batch_size * m.block_size)
    elif data.task == "pairs":
        src, tgt = (L.encode_texts([p[i] for p in data.train], tok) for i in (0, 1))
        vsrc, vtgt = (L.encode_texts([p[i] for p in data.val], tok) for i in (0, 1))
        make = partial(L.PairBatches, src, tgt, tc.batch_size, tc.seed, max_len=m.max_len)
        val = lambda device: L.eval_pairs(vsrc, vtgt, 256, device, max_len=m.max_len, limit=1024)  # noqa: E731
        preview = translation_preview(tok, [p[0] for p in data.val[:4]])
        unit = ("pair", tc.batch_size)
    else:
        m.num_classes = data.num_classes
        ids, vids = L.encode_texts(data.train_texts, tok), L.encode_texts(data.val_texts, tok)
        make = partial(L.LabelBatches, ids, data.train_labels, tc.batch_size, tc.seed, max_len=m.max_len)
        val = lambda device: L.eval_labels(vids, data.val_labels, 256, device, max_len=m.max_len,  # noqa: E731
                                           limit=2048)
        preview = None
        unit = ("text", tc.batch_size)

    def make_loader(**kw):
        loader = make(**kw)
        loader.unit, loader.items_per_batch = unit
        return loader

    return Prepared(make_loader, val, preview, data.describe() | {"tokenizer": cfg.data.tokenizer,
                                                                  "vocab_size": tok.vocab_size}, tok)


def text_preview(tok, n: int = 4, max_new_tokens: int = 200):
    """Write a few seeded generations to samples/step-N.txt (each starts a new document: after <eos>)."""
    def preview(model: nn.Module, step: int, run_dir: Path):
        with eval_mode(model):
            ids = model.sample(n, cond=[EOS], generator=torch.Generator().manual_seed(0),
                               max_new_tokens=max_new_tokens, temperature=0.8)
        texts = [tok.decode(row.tolist()) for row in ids]
        _write_text(run_dir / "samples" / f"step-{step:07d}.txt", "\n\n----------\n\n".join(texts))
        return {}, None

    return preview


def translation_preview(tok, sources: list[str]):
    """Write greedy translations of a few held-out sources to samples/step-N.txt."""
    def preview(model: nn.Module, step: int, run_dir: Path):
        lines = []
        with eval_mode(model):
            for s in sources:
                src = torch.tensor([L.wrap_src(tok.encode(s), model.config.max_len)])
                out = model.translate(src.to(next(model.parameters()).device))[0]
                lines.append(f"{s}\t{tok.decode(out)}")
        _write_text(run_dir / "samples" / f"step-{step:07d}.txt", "\n".join(lines) + "\n")
        return {}, None

    return preview


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
