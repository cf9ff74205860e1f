"""The text kinds' data for a family: load and split the texts, train (or, on resume, reload) the
tokenizer, size the model config (vocabulary, classes), and the training preview (generations or
translations of a few held-out sources, written to samples/step-N.txt)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from genlab import registry
from genlab.adapt import base_config, base_dir
from genlab.config import RunConfig
from genlab.errors import ConfigError
from genlab.data import text_loader as L
from genlab.data.text import load_text
from genlab.data.tokenizers import EOS, run_tokenizer, train_tokenizer
from genlab.models.base import eval_mode
from genlab.prepare import Prepared, write_text

TEXT_SEPARATOR = "\n\n----------\n\n"  # between generations in samples/step-N.txt


def text_data(cfg: RunConfig):
    return load_text(cfg.data, registry.get(cfg.family).kind)


def tokenizer_for(cfg: RunConfig, data, run_dir: Path, resume: bool):
    """A resumed run keeps its tokenizer, and a run started from another (--init-from) that run's: the embedding
    rows are its tokens. A new one trains one on the training split."""
    if resume:
        return run_tokenizer(run_dir, cfg.model.vocab_size)
    if cfg.init.run:
        base = base_dir(run_dir, cfg)
        had = base_config(base, cfg.family)["data"]
        asked = {"tokenizer": cfg.data.tokenizer, "vocab_size": cfg.data.vocab_size}
        if any(had.get(k, v) != v for k, v in asked.items()):
            raise ConfigError(f"--init-from {base}: its tokenizer is {had.get('tokenizer')} with data.vocab_size "
                              f"{had.get('vocab_size')}; a new vocabulary would give its embedding rows to other "
                              "tokens. Keep the base's tokenizer (drop --tokenizer/--vocab-size), or train from "
                              "scratch")
        return run_tokenizer(base, cfg.model.vocab_size)
    texts = {"lm": lambda: data.train, "pairs": lambda: [t for pair in data.train for t in pair],
             "labels": lambda: data.train_texts}[data.task]()
    return train_tokenizer(cfg.data.tokenizer, texts, cfg.data.vocab_size)


def prepare_text(cfg: RunConfig, run_dir: Path, resume: bool, *, data=None, preview=None) -> Prepared:
    """The texts (`data`: loaded here from cfg.data unless given, e.g. the music kind's chorales as a TextCorpus),
    the tokenizer, the loaders, and the preview (`preview(tok)` makes it, when given, instead of the task's own)."""
    data = text_data(cfg) if data is None else data
    tok = tokenizer_for(cfg, data, run_dir, resume)
    m, tc = cfg.model, cfg.train
    m.vocab_size = tok.vocab_size
    if data.task == "lm":
        train_ids, val_ids = L.encode_corpus(data.train, tok), L.encode_corpus(data.val, tok)
        make = partial(L.LMStream, train_ids, m.block_size, tc.batch_size, tc.seed)
        val = lambda device: L.eval_lm(val_ids, m.block_size, tc.batch_size, device, limit=256)  # noqa: E731
        preview = text_preview(tok) if preview is None else preview(tok)
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
        write_text(run_dir / "samples" / f"step-{step:07d}.txt", TEXT_SEPARATOR.join(texts))
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
        write_text(run_dir / "samples" / f"step-{step:07d}.txt", "\n".join(lines) + "\n")
        return {}, None

    return preview
