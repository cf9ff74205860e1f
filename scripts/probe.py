"""The hardening probe: re-runs, as evidence, the attacks and careless use of the earlier audit and
counts what genlab does now. Nothing is assumed: every number in the table is measured by this run.

    .venv/bin/python scripts/probe.py [--quick] [--only cli|fuzz|kill|serve] [--out probe.json] [--workdir DIR]

  cli    ~265 bad inputs through `python -m genlab`: bad flags and values, damaged copies of small trained
         runs, bad data files -> clear errors, tracebacks or internal errors, hangs, data lost in run folders
         (hashed before and after), files written outside them
  fuzz   1,500 mutated PNG/JPEG files, each read as a one-file image folder by genlab.data.load_images
  kill   SIGKILL at seeded moments of `genlab train vae ... --set train.ckpt_every=5`, each followed by
         --resume; the final weights are compared bit for bit with an uninterrupted run (and two
         uninterrupted runs with each other, as the control)
  serve  ~600 HTTP requests, mostly bad, interleaved with valid ones on keep-alive connections to
         `genlab serve` on 127.0.0.1

Every child runs with OMP_NUM_THREADS=1, a 6 GB address-space cap and a 120 s timeout (a timeout is a
"hang"), at most two at a time. Progress goes to stderr, the Markdown table to stdout. --quick runs a
handful of each; the full run takes roughly half an hour on two cores (longer on a busy machine).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import io
import json
import logging
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

MEMORY_CAP = 6 << 30
TIMEOUT_S = 120
PARALLEL = 2
FUZZ_ALARM_S = 10
ENV = {k: v for k, v in os.environ.items() if k not in ("GENLAB_DEBUG", "GENLAB_TOKEN")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
ERROR_LINE = re.compile(r"genlab(?: [\w-]+)*: error: ")
QUIET = ["--set", "train.sample_every=100000", "--set", "train.val_every=100000"]


def log(msg: str) -> None:
    print(f"[probe {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cap_memory() -> None:  # in the child, before exec: a memory blow-up becomes a failure, not a dead machine
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def popen_genlab(argv: list[str], cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genlab", *argv], cwd=cwd, env=ENV, preexec_fn=_cap_memory,
                            stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def run_genlab(argv: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> dict:
    t0 = time.time()
    proc = popen_genlab(argv, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        out, err = proc.communicate(timeout=timeout)
        hang = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hang = True
    return {"rc": proc.returncode, "out": out, "err": err, "hang": hang, "secs": round(time.time() - t0, 1)}


def verdict(res: dict, allow_ok: bool = False) -> str:
    """hang | bug (a traceback, an internal error or an unexpected exit status) | clear | unclear (exit 1
    without exactly one final `genlab CMD: error:` line) | ok (exit 0 where that is acceptable) | accepted
    (exit 0 on input that should have failed)."""
    err = res["err"]
    if res["hang"]:
        return "hang"
    if "Traceback" in err or "internal error" in err:
        return "bug"
    if res["rc"] == 0:
        return "ok" if allow_ok else "accepted"
    lines = [line for line in err.splitlines() if line.strip()]
    one_line = sum(bool(ERROR_LINE.match(line)) for line in lines) == 1 and bool(ERROR_LINE.match(lines[-1]))
    if res["rc"] == 1:
        return "clear" if one_line else "unclear"
    if res["rc"] == 2 and one_line and "usage:" in err:  # argparse's usage error
        return "clear"
    return "bug"


def snapshot(root: Path) -> dict[str, str]:
    """rel path -> SHA-256 of every file under root; links are recorded by target, never followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            p = here / name
            rel = str(p.relative_to(root))
            try:
                out[rel] = "link:" + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as e:
                out[rel] = f"unreadable: {e.strerror}"
    return out


def diff(before: dict, after: dict, runs: tuple[str, ...]) -> dict:
    """What a command did to its case folder: run files changed or removed (the lock and an uncommitted
    journal aside), new files (a writer's lock in an existing run aside), and outside the runs: files
    changed or removed, and escape files."""
    def in_run(rel: str) -> bool:
        return rel.split("/")[0] in runs

    def journal(rel: str) -> bool:
        return rel.split("/")[1:2] in ([".lock"], [".pending"])
    lost = sorted(r for r, h in before.items() if in_run(r) and not journal(r) and after.get(r) != h)
    new = sorted(r for r in after if r not in before and not (in_run(r) and r.split("/")[1:] == [".lock"]))
    outside = sorted(r for r, h in before.items() if not in_run(r) and after.get(r) != h)
    outside += [r for r in new if "escape" in r.split("/")[-1] and not in_run(r)]
    return {"lost": lost, "new": new, "outside": outside}


# ---------------------------------------------------------------------------------------------
# Small trained runs, made once per work folder

def base_run(work: Path, name: str) -> Path:
    """A tiny trained run under work/base: vae and gpt (copied and damaged by the cli section), ddpm
    (conditional, served with gpt)."""
    family, data, extra = {"vae": ("vae", "digits", []), "gpt": ("gpt", "pycode", []),
                           "ddpm": ("ddpm", "digits", ["--conditional"])}[name]
    run = work / "base" / name
    if not (run / "checkpoint.json").exists():
        log(f"training the base {name} run (tiny, 20 steps)")
        shutil.rmtree(run, ignore_errors=True)
        res = run_genlab(["train", family, "--data", data, "--preset", "tiny", "--steps", "20", "--no-progress",
                          "--out", str(run), *extra, *QUIET], work, timeout=600)
        if res["rc"] != 0:
            raise SystemExit(f"probe: could not train the base {name} run:\n{res['err'][-2000:]}")
    return run


# ---------------------------------------------------------------------------------------------
# 1. CLI and loaders

@dataclass
class Case:
    group: str
    argv: list[str]                 # "{vae}", "{gpt}" and "{case}" name the case's copies and folder
    setup: Callable | None = None   # setup(case_dir) after the copies: damage them, write data files
    allow_ok: bool = False          # exit 0 is an acceptable outcome (a torn metrics line, a harmless flag)

    @property
    def runs(self) -> tuple[str, ...]:
        return tuple(r for r in ("vae", "gpt") if any("{%s}" % r in a for a in self.argv))


def _rm(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def put(rel: str, data: bytes | str) -> Callable:
    def f(c: Path):
        (c / rel).parent.mkdir(parents=True, exist_ok=True)
        _rm(c / rel)
        (c / rel).write_bytes(data.encode() if isinstance(data, str) else data)
    return f


def rm(rel: str) -> Callable:
    return lambda c: _rm(c / rel)


def rehash(run_rel: str) -> Callable:
    """Make checkpoint.json agree with the (tampered) files, as a careful attacker would."""
    def f(c: Path):
        ck = json.loads((c / run_rel / "checkpoint.json").read_text())
        for rel in ck["files"]:
            if (c / run_rel / rel).is_file():
                ck["files"][rel] = hashlib.sha256((c / run_rel / rel).read_bytes()).hexdigest()
        (c / run_rel / "checkpoint.json").write_text(json.dumps(ck))
    return f


def edit_json(rel: str, fn: Callable, then_rehash: bool = True) -> Callable:
    def f(c: Path):
        doc = fn(json.loads((c / rel).read_text()))
        (c / rel).write_text(json.dumps(doc))
        if then_rehash:
            rehash(rel.split("/")[0])(c)
    return f


def set_key(doc: dict, path: str, value) -> dict:
    *head, last = path.split(".")
    node = doc
    for k in head:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


def truncate(rel: str, keep: int | float) -> Callable:
    def f(c: Path):
        data = (c / rel).read_bytes()
        (c / rel).write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    return f


def patch(rel: str, offset: int, data: bytes) -> Callable:
    def f(c: Path):
        b = bytearray((c / rel).read_bytes())
        b[offset: offset + len(data)] = data
        (c / rel).write_bytes(bytes(b))
    return f


def flip(rel: str, where: float) -> Callable:
    def f(c: Path):
        b = bytearray((c / rel).read_bytes())
        i = int((len(b) - 1) * where)
        b[i] ^= 0xFF
        (c / rel).write_bytes(bytes(b))
    return f


def link(rel: str, target: str) -> Callable:
    """rel becomes a symbolic link to target ("{case}/..." or an absolute path)."""
    def f(c: Path):
        _rm(c / rel)
        (c / rel).symlink_to(target.replace("{case}", str(c)))
    return f


def copy_out(rel: str, dest: str) -> Callable:
    def f(c: Path):
        (c / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(c / rel, c / dest)
    return f


def chain(*fns: Callable) -> Callable:
    def f(c: Path):
        for fn in fns:
            fn(c)
    return f


def npz(rel: str, **arrays) -> Callable:
    def f(c: Path):
        np.savez(c / rel, **arrays)
    return f


def npz_huge_header(rel: str) -> Callable:
    """A .npz whose images.npy header claims (1000000, 8000, 8000) uint8, about 58 TiB, over 64 bytes of data."""
    def f(c: Path):
        header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000, 8000, 8000), }"
        header = header.ljust(118) + "\n"
        with zipfile.ZipFile(c / rel, "w") as z:
            z.writestr("images.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64))
    return f


def idx(dims: tuple, type_code: int = 0x08, data: bytes | None = None) -> bytes:
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[type_code]
    n = int(np.prod(dims)) * itemsize if data is None else 0
    return b"\x00\x00" + bytes([type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + \
        (bytes(n) if data is None else data)


def idx_folder(images: bytes, labels: bytes | None) -> Callable:
    def f(c: Path):
        (c / "idx").mkdir()
        (c / "idx" / "train-images-idx3-ubyte").write_bytes(images)
        if labels is not None:
            (c / "idx" / "train-labels-idx1-ubyte").write_bytes(labels)
    return f


def png_bytes(w: int = 8, h: int = 8, mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(b, "PNG")
    return b.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(full: bool) -> bytes:
    """A small PNG declaring 60000x60000 1-bit pixels: with full=True the IDAT really holds all 450 MB
    of zero rows (compressed to ~0.5 MB), otherwise it holds one row."""
    side, row = 60000, b"\x00" * (1 + 60000 // 8)
    z, parts = zlib.compressobj(9), []
    for _ in range(side if full else 1):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def images_folder(*files: tuple[str, bytes], subdirs: tuple = ()) -> Callable:
    def f(c: Path):
        (c / "imgs").mkdir(exist_ok=True)
        for rel, data in files:
            (c / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
            (c / "imgs" / rel).write_bytes(data)
        for d in subdirs:
            (c / "imgs" / d).mkdir(parents=True, exist_ok=True)
    return f


def train(*flags: str, family: str = "vae") -> list[str]:
    """A tiny training command; the case's flags come last, so they win over the defaults before them."""
    return ["train", family, "--preset", "tiny", "--steps", "2", "--no-progress", "--out", "{case}/out", *QUIET,
            *flags]


SAMPLE = ["-n", "2", "--out", "{case}/s.png"]
FILE = put("file.txt", "not a run\n")
EMPTY = lambda c: (c / "empty").mkdir()  # noqa: E731


def flag_cases() -> list[Case]:
    g = "flags"
    cases = [Case(g, ["sample", "{vae}", *SAMPLE, *extra]) for extra in (
        ["-n", "0"], ["-n", "-1"], ["-n", "abc"], ["-n", "100000000"], ["--label", "99"],
        ["--label", "-1"], ["--seed", "abc"], ["--seed", "-1"], ["--seed", str(2**70)],
        ["--guidance", "nan"], ["--guidance", "2"], ["--steps", "0"],
        ["--steps", "5"], ["--sampler", "euler"], ["--eta", "2"], ["--truncation", "0"],
        ["--out", "/nonexistent/dir/x.png"], ["--out", "{vae}"], ["--out", "{case}/noext"],
        ["--out", "{vae}/model.safetensors"], ["--backend", "tflite"])]
    cases += [Case(g, argv, setup) for argv, setup in (
        (["sample", "{case}/nope"], None), (["sample", "{case}/file.txt"], FILE), (["sample", "{case}/empty"], EMPTY),
        (["sample", "{gpt}", *SAMPLE], None), (["generate", "{vae}", "--max-new-tokens", "5"], None),
        (["translate", "{gpt}", "hello"], None), (["classify", "{vae}", "hello"], None),
        (["interpolate", "{gpt}", "--out", "{case}/i.png"], None),
        (["reconstruct", "{gpt}", "--out", "{case}/r.png"], None))]
    cases += [Case(g, train(*extra)) for extra in (
        ["--minutes", "inf"], ["--minutes", "nan"], ["--minutes", "-1"], ["--steps", "0"],
        ["--steps", "abc"], ["--preset", "huge"], ["--set", "nokey=1"], ["--set", "model.nope=1"],
        ["--set", "model.obs_sigma=0"], ["--set", "model.latent_dim=0"],
        ["--set", "model.latent_dim=-3"], ["--set", "model.latent_dim=abc"],
        ["--set", "model.latent_dim=100000000"], ["--set", "train.batch_size=0"], ["--set", "train.lr=nan"],
        ["--set", "train.lr=-1"], ["--set", "data.val_fraction=1.5"], ["--set", "noequals"],
        ["--set", "train.steps=1e99"], ["--set", "model.likelihood=poisson"],
        ["--set", "family=gan"], ["--set", "model=3"], ["--image-size", "-1"], ["--image-size", "100000"],
        ["--data", "nosuchdata"], ["--data", "pycode"],
        ["--data", "{case}/nope"], ["--out", "/proc/nope/run"])]
    cases += [Case(g, argv, setup) for argv, setup in (
        (train("--data", "{case}/file.txt"), FILE), (train("--out", "{case}/file.txt"), FILE),
        (train("--out", "{vae}"), None), (train("--data", "digits", family="gpt"), None),
        (train("--data", "digits", family="seq2seq"), None), (train("--data", "dates-en-de", family="textclf"), None),
        (train("--data", "pycode", "--tokenizer", "bpe", "--vocab-size", "0", family="gpt"), None),
        (train("--data", "pycode", "--tokenizer", "bpe", "--vocab-size", "-5", family="gpt"), None),
        (["train", "nosuchfamily"], None),
        (["train", "vae", "--resume", "{case}/nope", "--no-progress"], None),
        (["train", "vae", "--resume", "{case}/file.txt", "--no-progress"], FILE),
        (["train", "gpt", "--resume", "{vae}", "--no-progress"], None),
        (["train", "vae", "--resume", "{vae}", "--set", "model.latent_dim=99", "--no-progress"], None),
        (["train", "vae", "--resume", "{vae}", "--data", "shapes", "--no-progress"], None),
        (["train", "vae", "--resume", "{vae}", "--seed", "5", "--no-progress"], None),
        (["train", "vae", "--resume", "{vae}", "--steps", "abc", "--no-progress"], None),
        (["eval", "{vae}", "-n", "8", "--judge", "{case}/nope"], None),
        (["eval", "{vae}", "-n", "8", "--judge", "{gpt}"], None), (["eval", "{vae}", "-n", "8", "--beam", "0"], None),
        (["eval", "{vae}", "-n", "8", "--temperature", "nan"], None), (["eval", "{case}/nope"], None),
        (["generate", "{gpt}", "--max-new-tokens", "-1"], None), (["generate", "{gpt}", "--top-k", "-1"], None),
        (["generate", "{gpt}", "--top-p", "0"], None), (["generate", "{gpt}", "--top-p", "2"], None),
        (["generate", "{gpt}", "--temperature", "-1"], None),
        (["generate", "{gpt}", "--max-new-tokens", "100000000"], None),
        (["interpolate", "{vae}", "--frames", "0"], None), (["interpolate", "{vae}", "--rows", "0"], None),
        (["interpolate", "{vae}", "--seeds", "a", "b"], None),
        (["interpolate", "{vae}", "--label", "99", "--out", "{case}/i.png"], None),
        (["reconstruct", "{vae}", "-n", "100000000", "--out", "{case}/r.png"], None),
        (["compare", "{case}/nope"], None), (["compare", "{case}/file.txt"], FILE),
        (["compare", "{vae}", "--format", "xml"], None), (["compare", "{vae}", "--out", "/nonexistent/dir/t.md"], None),
        (["report", "{case}/nope"], None), (["report", "{case}/empty"], EMPTY),
        (["card", "{case}/empty"], EMPTY),
        (["export", "{vae}", "--format", "tflite"], None), (["export", "{vae}", "--tolerance", "nan"], None),
        (["export", "{vae}", "--out", "{case}/file.txt"], FILE),
        (["data", "show", "nosuch"], None),
        (["data", "show", "digits", "--image-size", "-1"], None), (["data", "show", "{case}/file.txt"], FILE),
        (["data", "show", "digits", "--out", "/nonexistent/x.png"], None), (["data", "fetch", "nosuch"], None),
        (["data"], None), ([], None), (["--bogus"], None), (["sample"], None),
        (["serve", "{case}/nope"], None), (["serve", "{case}/file.txt"], FILE),
        (["serve", "{vae}", "--max-n", "0"], None),
        (["serve", "{vae}", "--port", "99999"], None),
        (["serve", "{vae}", "--host", "256.1.1.1"], None))]
    cases.append(Case(g, ["generate", "{gpt}", "--prompt", "\u2603\x01", "--max-new-tokens", "5"], allow_ok=True))
    cases.append(Case(g, ["compare", "{vae}", "{gpt}"], allow_ok=True))
    return cases


def damaged_run_cases() -> list[Case]:
    g, cfg, w, ck = "damaged run", "vae/config.json", "vae/model.safetensors", "vae/checkpoint.json"
    resume = ["train", "vae", "--resume", "{vae}", "--no-progress", *QUIET]
    damages = [
        rm(cfg), put(cfg, ""), put(cfg, "[1, 2]"), put(cfg, '{"family": "vae", "model": '),
        edit_json(cfg, lambda d: set_key(d, "model", KeyError)), edit_json(cfg, lambda d: set_key(d, "family", "nope")),
        edit_json(cfg, lambda d: set_key(set_key(d, "family", "gan"), "model.family", "gan")),
        edit_json(cfg, lambda d: set_key(d, "model.latent_dim", "big")),
        edit_json(cfg, lambda d: set_key(d, "model.latent_dim", -4)),
        edit_json(cfg, lambda d: set_key(d, "model.latent_dim", 10**9)),
        edit_json(cfg, lambda d: set_key(d, "model.width", 0)), edit_json(cfg, lambda d: set_key(d, "data", 5)),
        edit_json(cfg, lambda d: set_key(d, "train.lr", "x")), edit_json(cfg, lambda d: set_key(d, "model.beta", None)),
        edit_json(cfg, lambda d: set_key(d, "model.nope", 1)), edit_json(cfg, lambda d: None),
        edit_json(cfg, lambda d: set_key(d, "model.latent_dim", 9), then_rehash=False),
        chain(put(cfg, '{"family": "vae", "model": {"latent_dim": NaN}}'), rehash("vae")),
        chain(put(cfg, "[" * 100000 + "]" * 100000), rehash("vae")),
        chain(copy_out(cfg, "outside/config.json"), link(cfg, "{case}/outside/config.json")),
        chain(rm(cfg), lambda c: (c / cfg).mkdir()),
        rm(w), put(w, b""), truncate(w, 0.5), truncate(w, 7), flip(w, 0.99), flip(w, 0.0001),
        patch(w, 0, struct.pack("<Q", 2**60)), chain(patch(w, 0, struct.pack("<Q", 2**60)), rehash("vae")),
        chain(patch(w, 8, b"{]"), rehash("vae")),
        chain(copy_out(w, "outside/model.safetensors"), link(w, "{case}/outside/model.safetensors")),
        link(w, "/etc/passwd"), chain(rm(w), lambda c: (c / w).mkdir()),
        chain(lambda c: shutil.copy2(c / "gpt/model.safetensors", c / w), rehash("vae")),
        rm(ck), put(ck, ""), put(ck, "[]"), put(ck, "{"), edit_json(ck, lambda d: set_key(d, "files", KeyError), False),
        edit_json(ck, lambda d: set_key(d, "files", {"model.safetensors": "zz"}), False),
        edit_json(ck, lambda d: set_key(d, "step", -1), False), edit_json(ck, lambda d: set_key(d, "step", "x"), False),
        chain(put("outside/secret.txt", "secret"),
              edit_json(ck, lambda d: set_key(d, "files", {**d["files"], "../outside/secret.txt": "0" * 64}), False)),
        put("vae/state/trainer.json", ""), truncate("vae/state/optimizer.safetensors", 0.5),
        edit_json("vae/state/trainer.json", lambda d: set_key(d, "step", 10**18)),
        rm("vae/state"),
    ]
    cases = [Case(g, ["sample", "{vae}", *SAMPLE], d) for d in damages]   # every damage is read,
    cases += [Case(g, resume, d) for d in damages[::3]]                    # every third one resumed
    escape = put("vae/escape.pth", "escaped")
    journals = [
        chain(escape, put("vae/.pending/COMPLETE", '["../escape.pth"]')),
        chain(escape, lambda c: (c / "vae/.pending").mkdir(),
              lambda c: (c / "vae/.pending/COMPLETE").write_text(json.dumps([str(c / "escape-abs.pth")]))),
        chain(put("outside/pending/model.safetensors", b"garbage"),
              put("outside/pending/COMPLETE", '["model.safetensors"]'), link("vae/.pending", "{case}/outside/pending")),
        chain(put("vae/.pending/model.safetensors", b"garbage"), put("vae/.pending/COMPLETE", '["model.safetensors"]')),
        chain(put("vae/.pending/config.json", "[]"), put("vae/.pending/COMPLETE", '["config.json"]')),
        put("vae/.pending/COMPLETE", "not json"), put("vae/.pending/COMPLETE", "{}"),
    ]
    cases += [Case(g, argv, d, allow_ok=True) for d in journals for argv in (["sample", "{vae}", *SAMPLE], resume)]
    torn = chain(copy_out("vae/metrics.jsonl", "vae/metrics.tmp"), lambda c: (c / "vae/metrics.jsonl").write_bytes(
        (c / "vae/metrics.tmp").read_bytes() + b'{"step": 25, "train/lo'), rm("vae/metrics.tmp"))
    for d, allow in ((torn, True), (put("vae/metrics.jsonl", b"\x00\xff\xfe garbage\n"), False),
                     (put("vae/metrics.jsonl", '{"step": 1, "train/loss": NaN}\n'), True)):
        cases += [Case(g, argv, d, allow_ok=allow) for argv in (["report", "{vae}"], ["compare", "{vae}"], resume)]
    tok, gen = "gpt/tokenizer.json", ["generate", "{gpt}", "--max-new-tokens", "5"]
    gpt_resume = ["train", "gpt", "--resume", "{gpt}", "--no-progress", *QUIET]
    tokenizers = [
        rm(tok), put(tok, ""), put(tok, '{"type": "char", "chars": '),
        chain(put(tok, '{"type": "bpe"}'), rehash("gpt")),
        edit_json(tok, lambda d: set_key(d, "chars", d["chars"][::-1]), then_rehash=False),
        edit_json(tok, lambda d: set_key(d, "chars", "ab")), edit_json(tok, lambda d: set_key(d, "type", "nope")),
        edit_json(tok, lambda d: set_key(d, "chars", [1, 2, 3])),
        edit_json(tok, lambda d: set_key(d, "chars", "aa" * 40)),
    ]
    cases += [Case(g, gen, d) for d in tokenizers] + [Case(g, gpt_resume, d) for d in tokenizers[::3]]
    return cases


def data_cases() -> list[Case]:
    g, n = "bad data", 20
    img = np.zeros((n, 8, 8), np.uint8)
    labels = np.arange(n) % 2
    nan_labels = labels.astype(float)
    nan_labels[3] = np.nan
    specs = [
        (npz("d.npz", images=img, labels=labels, classes=np.array("x")), "d.npz"),
        (npz("d.npz", images=img, labels=nan_labels), "d.npz"), (npz("d.npz", images=img, labels=labels - 1), "d.npz"),
        (npz("d.npz", images=img, labels=np.full(n, 2**62 - 1)), "d.npz"),
        (npz("d.npz", images=img, labels=labels[:5]), "d.npz"),
        (npz("d.npz", images=np.full((n, 8, 8), np.nan, np.float32)), "d.npz"),
        (npz("d.npz", images=np.full((n, 8, 8), 1e30, np.float32)), "d.npz"),
        (npz("d.npz", images=np.zeros(n, np.uint8)), "d.npz"),
        (npz("d.npz", images=np.zeros((0, 8, 8), np.uint8)), "d.npz"),
        (npz("d.npz", images=np.array([{"a": 1}] * n, dtype=object)), "d.npz"), (npz("d.npz", labels=labels), "d.npz"),
        (npz_huge_header("d.npz"), "d.npz"), (put("d.npz", b"PK\x03\x04 not really a zip"), "d.npz"),
        (idx_folder(idx((0, 8, 8)), idx((0,))), "idx"),
        (idx_folder(idx((n, 8, 8)), idx((n,), 0x09, bytes([255]) * n)), "idx"),
        (idx_folder(idx((2**31 - 1, 2**31 - 1, 2**31 - 1), data=b""), idx((n,))), "idx"),
        (idx_folder(idx((n, 8, 8))[:200], idx((n,))), "idx"), (idx_folder(idx((n, 8, 8))[:6], idx((n,))), "idx"),
        (idx_folder(b"\x12\x34\x56\x78" + bytes(100), idx((n,))), "idx"),
        (idx_folder(idx((n, 8, 8)), idx((5,))), "idx"),
        (idx_folder(idx((n, 8, 8)), idx((n,), 0x0D, struct.pack(">f", float("nan")) * n)), "idx"),
        (idx_folder(idx((n, 8, 8)), None), "idx"), (idx_folder(idx((64,)), idx((n,))), "idx"),
        (put("data-idx3-ubyte", idx((n, 8, 8))[:100]), "data-idx3-ubyte"),
        (put("idx/train-images-idx3-ubyte.gz", b"not gzip"), "idx"),
        (images_folder(("bomb.png", png_bomb(full=True))), "imgs"),
        (images_folder(("bomb.png", png_bomb(False))), "imgs"),
        (images_folder(("x.png", b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")), "imgs"),
        (images_folder(("x.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')), "imgs"),
        (images_folder(subdirs=("a",)), "imgs"),
        (images_folder(*[(f"{i}.png", png_bytes(8 + 8 * (i % 2), seed=i)) for i in range(10)]), "imgs"),
        (images_folder(("x.jpg", b"hello"), ("y.png", b"")), "imgs"), (images_folder(("one.png", png_bytes())), "imgs"),
        (images_folder(("a/1.png", png_bytes()), ("2.png", png_bytes())), "imgs"),
        (chain(images_folder(*[(f"{i}.png", png_bytes(seed=i)) for i in range(10)]),
               lambda c: (c / "imgs/loop").symlink_to(c / "imgs")), "imgs"),
        (chain(images_folder(*[(f"{i}.png", png_bytes(seed=i)) for i in range(10)]),
               lambda c: (c / "imgs/passwd.png").symlink_to("/etc/passwd")), "imgs"),
    ]
    cases = [Case(g, train("--data", "{case}/" + rel), setup) for setup, rel in specs]
    cases += [Case(g, ["data", "show", "{case}/" + rel, "--out", "{case}/grid.png"], setup) for setup, rel in specs[::6]]
    cases.append(Case(g, train("--data", "{case}/imgs", "--conditional"),
                      images_folder(*[(f"{i}.png", png_bytes(seed=i)) for i in range(10)])))
    text = [("gpt", "e.txt", b""), ("gpt", "b.txt", b"\xff\xfe\x00\xc3\x28" * 50), ("gpt", "t.txt", b"ab"),
            ("seq2seq", "p.tsv", b"no tabs here\nnone\n"), ("seq2seq", "p.tsv", b""),
            ("textclf", "l.csv", b"words,other\nx,y\n"), ("textclf", "l.csv", b"text,label\nonly one,a\n")]
    cases += [Case(g, train("--data", "{case}/" + rel, family=fam), put(rel, data)) for fam, rel, data in text]
    cases.append(Case(g, train("--data", "{case}/empty", family="gpt"), EMPTY))
    return cases


def cli_cases() -> list[Case]:
    return flag_cases() + damaged_run_cases() + data_cases()


def run_case(i: int, case: Case, work: Path) -> dict:
    c = work / "cli" / f"{i:03d}"
    shutil.rmtree(c, ignore_errors=True)
    c.mkdir(parents=True)
    for r in ("vae", "gpt"):  # copied when named, and for setups that read the other run (gpt weights)
        if r in case.runs or (r == "gpt" and case.setup is not None and "vae" in case.runs):
            shutil.copytree(work / "base" / r, c / r, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
    setup_error = None
    if case.setup is not None:
        try:
            case.setup(c)
        except Exception as e:  # a probe bug, reported as such rather than hidden
            setup_error = f"{type(e).__name__}: {e}"
    argv = [a.replace("{vae}", str(c / "vae")).replace("{gpt}", str(c / "gpt")).replace("{case}", str(c))
            for a in case.argv]
    before = snapshot(c)
    res = run_genlab(argv, c)
    changes = diff(before, snapshot(c), case.runs)
    v = verdict(res, case.allow_ok)
    return {"i": i, "group": case.group, "argv": argv, "verdict": v, "rc": res["rc"], "secs": res["secs"],
            "stderr_tail": res["err"].strip().splitlines()[-3:], "setup_error": setup_error,
            "data_lost": [] if v == "ok" else changes["lost"], "outside": changes["outside"],
            "litter": [] if v in ("ok", "accepted") else changes["new"]}


def probe_cli(work: Path, quick: bool) -> dict:
    cases = cli_cases()
    if quick:  # the first two of each group
        cases = [c for g in ("flags", "damaged run", "bad data") for c in [c for c in cases if c.group == g][:2]]
    log(f"cli: {len(cases)} bad inputs, {PARALLEL} at a time")
    base_run(work, "vae")
    base_run(work, "gpt")
    results, t0 = [], time.time()
    with ThreadPoolExecutor(PARALLEL) as ex:
        for r in ex.map(lambda ic: run_case(*ic, work), enumerate(cases)):
            results.append(r)
            if r["verdict"] not in ("clear", "ok") or r["data_lost"] or r["outside"]:
                log(f"cli {r['i']:03d} {r['verdict']}: {' '.join(r['argv'][:6])} -> {(r['stderr_tail'] or [''])[-1][:160]}")
            if len(results) % 20 == 0:
                log(f"cli: {len(results)}/{len(cases)} done in {time.time() - t0:.0f} s")
    count = lambda v: sum(r["verdict"] == v for r in results)  # noqa: E731
    return {"tried": len(results), "clear errors": count("clear"), "tracebacks or internal errors": count("bug"),
            "hangs": count("hang"), "unclear errors": count("unclear"), "bad input accepted (exit 0)": count("accepted"),
            "ran fine where allowed": count("ok"), "data lost": sum(bool(r["data_lost"]) for r in results),
            "written outside the run folders": sum(bool(r["outside"]) for r in results),
            "left files after a failure": sum(bool(r["litter"]) for r in results),
            "probe setup errors": sum(bool(r["setup_error"]) for r in results), "cases": results}


# ---------------------------------------------------------------------------------------------
# 2. Fuzzed image files (in-process, in a capped worker that the parent restarts after a crash or hang)

def fuzz_bases() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    rgb = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB")
    deep = Image.fromarray(rng.integers(0, 65536, (8, 8)).astype(np.uint16))

    def enc(im, fmt: str, **kw) -> bytes:
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()
    return [(".png", enc(grey, "PNG")), (".png", enc(rgb, "PNG")), (".png", enc(rgb.convert("RGBA"), "PNG")),
            (".png", enc(rgb.convert("P"), "PNG")), (".png", enc(deep, "PNG")), (".jpg", enc(grey, "JPEG", quality=90)),
            (".jpg", enc(rgb, "JPEG", quality=75)), (".jpg", enc(rgb, "JPEG", progressive=True))]


def _png_chunks(b: bytes) -> list[int]:
    """Offsets of each chunk's length field."""
    out, i = [], 8
    while i + 8 <= len(b):
        out.append(i)
        i += 12 + struct.unpack(">I", b[i:i + 4])[0]
    return out


def _jpeg_segments(b: bytes) -> list[int]:
    """Offsets of each marker segment's 2-byte length field, up to the start of scan."""
    out, i = [], 2
    while i + 4 <= len(b) and b[i] == 0xFF:
        out.append(i + 2)
        if b[i + 1] == 0xDA:
            break
        i += 2 + struct.unpack(">H", b[i + 2:i + 4])[0]
    return out


def mutate(data: bytes, suffix: str, rng: random.Random) -> tuple[bytes, str, str]:
    """1-3 seeded mutations of a valid file: (bytes, file suffix, what was done)."""
    b, how = bytearray(data), []
    for _ in range(rng.choice((1, 1, 2, 3))):
        if not b:
            break
        kind = rng.choice(("flip", "truncate", "header", "length", "splice"))
        how.append(kind)
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
        elif kind == "truncate":
            del b[rng.randrange(len(b)):]
        elif kind == "splice":
            i = rng.randrange(len(b))
            b[i:i + rng.randint(0, 16)] = rng.choice((b[i:i + rng.randint(1, 64)], rng.randbytes(rng.randint(1, 32))))
        elif suffix == ".png" and len(b) >= 33:
            if kind == "header":  # an IHDR field: width, height, depth, colour type, compression, filter, interlace
                off, size = rng.choice(((16, 4), (20, 4), (24, 1), (25, 1), (26, 1), (27, 1), (28, 1)))
                value = rng.choice((0, 1, 2**31 - 1, 60000, rng.getrandbits(8 * size)))
                b[off:off + size] = (value % 2 ** (8 * size)).to_bytes(size, "big")
                if rng.random() < 0.5:
                    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
            else:
                chunks = _png_chunks(bytes(b)) or [8]
                i = rng.choice(chunks)
                old = struct.unpack(">I", bytes(b[i:i + 4]).ljust(4, b"\0"))[0]
                b[i:i + 4] = struct.pack(">I", rng.choice((0, 1, 2**31 - 1, 2**32 - 1, max(0, old + rng.randint(-8, 8)),
                                                           rng.getrandbits(32))))
        elif suffix == ".jpg" and len(b) >= 8:
            segs = _jpeg_segments(bytes(b)) or [4]
            i = rng.choice(segs)
            if kind == "header":  # inside a segment: the SOF's precision/height/width/components, or any field
                i = min(len(b) - 2, i + rng.choice((2, 3, 5, 7)))
            b[i:i + 2] = rng.choice((0, 1, 2, 0xFFFF, 0x7FFF, rng.getrandbits(16))).to_bytes(2, "big")
    if rng.random() < 0.05:  # a PNG named .jpg or the other way round
        suffix = ".jpg" if suffix == ".png" else ".png"
        how.append("renamed")
    return bytes(b), suffix, "+".join(how)


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def fuzz_worker(work: Path, start: int, stop: int, seed: int) -> int:
    """Read files start..stop-1 through genlab.data; one JSON line per file in work/fuzz/results.jsonl."""
    # genlab is imported here, in the worker only: the parent never loads torch or runs genlab code itself
    from genlab.config import DataConfig
    from genlab.data import load_images
    from genlab.errors import DataError

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # the dropped-file warning, once per file
    bases = fuzz_bases()
    signal.signal(signal.SIGALRM, _alarm)
    with open(work / "fuzz" / "results.jsonl", "a") as out:
        out.write(json.dumps({"ready": start}) + "\n")  # imports done: a death from here on is a file's doing
        out.flush()
        for i in range(start, stop):
            rng = random.Random(seed * 1_000_003 + i)
            base = rng.randrange(len(bases))
            data, suffix, how = mutate(bases[base][1], bases[base][0], rng)
            folder = work / "fuzz" / f"{i:05d}"
            _rm(folder)
            folder.mkdir(parents=True)
            (folder / f"img{suffix}").write_bytes(data)
            signal.alarm(FUZZ_ALARM_S)
            try:
                ds = load_images(DataConfig(name=str(folder)))
                row = {"result": "decoded", "shape": list(ds.images.shape)}
            except DataError as e:
                row = {"result": "clear", "error": str(e)[-200:]}
            except _Hang:
                row = {"result": "hang"}
            except Exception as e:
                row = {"result": "other", "error": f"{type(e).__name__}: {e}"[:300]}
            finally:
                signal.alarm(0)
            _rm(folder)
            out.write(json.dumps({"i": i, "base": base, "how": how, **row}) + "\n")
            out.flush()
    return 0


def probe_fuzz(work: Path, count: int, seed: int) -> dict:
    (work / "fuzz").mkdir(parents=True, exist_ok=True)
    results_path = work / "fuzz" / "results.jsonl"
    results_path.unlink(missing_ok=True)
    done: dict[int, dict] = {}
    started: set[int] = set()

    def read() -> None:
        for line in results_path.read_text().splitlines() if results_path.exists() else []:
            if line.endswith("}"):
                row = json.loads(line)
                if "ready" in row:
                    started.add(row["ready"])
                else:
                    done[row["i"]] = row
    log(f"fuzz: {count} mutated PNG/JPEG files through genlab.data.load_images")
    start = 0
    while start < count:
        with open(work / "fuzz" / "worker.log", "a") as errlog:
            proc = subprocess.Popen([sys.executable, __file__, "--fuzz-worker", f"{start}:{count}", "--workdir",
                                     str(work), "--seed", str(seed)], env=ENV, preexec_fn=_cap_memory,
                                    stdout=subprocess.DEVNULL, stderr=errlog, start_new_session=True)
            seen, since, stuck = len(done), time.time(), False
            while proc.poll() is None:
                time.sleep(0.5)
                read()
                if len(done) != seen:
                    if len(done) // 250 != seen // 250:
                        log(f"fuzz: {len(done)}/{count}")
                    seen, since = len(done), time.time()
                elif time.time() - since > 3 * FUZZ_ALARM_S + 30:  # past the alarm: stuck in C code
                    os.killpg(proc.pid, signal.SIGKILL)
                    stuck = True
            read()
        missing = next((i for i in range(start, count) if i not in done), None)
        if missing is None:
            break
        if start not in started:  # it died importing genlab: a broken install or tree, not a file
            return {"error": "the reading process could not start: " +
                    " | ".join((work / "fuzz" / "worker.log").read_text().strip().splitlines()[-3:])}
        done[missing] = {"i": missing, "result": "hang" if stuck else "crash",
                         "error": f"the reading process {'was stuck' if stuck else f'died (exit {proc.returncode})'}"}
        start = missing + 1
    rows = [done[i] for i in sorted(done)]
    count_of = lambda r: sum(row["result"] == r for row in rows)  # noqa: E731
    return {"tried": len(rows), "decoded (harmless mutation)": count_of("decoded"),
            "clear (DataError, file dropped and counted)": count_of("clear"),
            "other exception (traceback)": count_of("other"), "hang": count_of("hang"),
            "crash (reader process died)": count_of("crash"),
            "failures": [r for r in rows if r["result"] in ("other", "hang", "crash")][:50]}


# ---------------------------------------------------------------------------------------------
# 3. kill -9 during training, then --resume

KILL_TRAIN = ["train", "vae", "--data", "digits", "--preset", "tiny", "--set", "train.ckpt_every=5", "--no-progress"]


def _checkpoint_step(run: Path):
    try:
        return json.loads((run / "checkpoint.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kill_when(proc: subprocess.Popen, run: Path, trigger: str, n: int, delay: float) -> bool:
    """SIGKILL `proc` at the moment `trigger` names: `delay` seconds after the start ("time"), as soon as
    the n-th checkpoint journal (.pending) appears ("mid-checkpoint") or right after the n-th new
    checkpoint.json ("after-commit"). False when it exited first."""
    t0, seen, pending_before = time.time(), 0, False

    def signature():
        try:
            st = (run / "checkpoint.json").stat()
            return st.st_ino, st.st_mtime_ns
        except OSError:
            return None
    last = signature()
    while proc.poll() is None:
        if trigger == "time":
            hit = time.time() - t0 >= delay
        elif trigger == "mid-checkpoint":
            pending = (run / ".pending").exists()
            seen += pending and not pending_before
            pending_before, hit = pending, pending and seen >= n
        else:
            now = signature()
            seen += now is not None and now != last
            last, hit = now, seen >= n
        if hit or time.time() - t0 > TIMEOUT_S:
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.001)
    return False


def weight_diff(a: Path, b: Path) -> list[str]:
    """The tensors of a/model.safetensors that differ from b's, bit for bit, with their largest difference."""
    try:
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    except Exception as e:
        return [f"unreadable: {type(e).__name__}: {e}"]
    if wa.keys() != wb.keys():
        return [f"tensor names differ: {sorted(set(wa) ^ set(wb))[:5]}"]
    return [f"{k}: max |diff| {np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64)).max():.3g}" for k in wa
            if wa[k].dtype != wb[k].dtype or wa[k].tobytes() != wb[k].tobytes()]


def _kill_series(work: Path, k: int, kills: int, steps: int, t_ref: float, seed: int) -> dict:
    run, rng = work / "kill" / f"run{k}", random.Random(seed * 7919 + k)
    fresh = [*KILL_TRAIN, "--steps", str(steps), "--out", str(run)]
    resume = ["train", "vae", "--resume", str(run), "--no-progress"]
    events, lost = [], None
    for attempt in range(kills + 1):
        argv = resume if (run / "checkpoint.json").exists() else fresh
        trigger = rng.choice(("time", "time", "mid-checkpoint", "after-commit")) if attempt < kills else "none"
        n, delay = rng.randint(1, 3), rng.choice((rng.uniform(0.05, 2.0), rng.uniform(0.05, t_ref)))
        with open(work / "kill" / f"run{k}-{attempt}.err", "w+") as err:
            proc = popen_genlab(argv, work / "kill", stdout=subprocess.DEVNULL, stderr=err)
            if trigger == "none":
                try:
                    proc.wait(timeout=TIMEOUT_S * 2)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                killed = False
            else:
                killed = _kill_when(proc, run, trigger, n, delay)
            rc = proc.wait()
            err.seek(0)
            tail = err.read().strip().splitlines()[-1:]
        events.append({"attempt": attempt, "command": "resume" if argv is resume else "fresh", "trigger": trigger,
                       "n": n, "delay": round(delay, 2), "killed": killed, "rc": rc, "step_after": _checkpoint_step(run),
                       "stderr": tail})
        if not killed:
            if rc != 0:
                lost = tail
            break
    finished = lost is None and events[-1]["rc"] == 0 and _checkpoint_step(run) == steps
    differ = weight_diff(run, work / "kill" / "reference") if finished else []
    return {"run": str(run), "kills": sum(e["killed"] for e in events), "finished": finished,
            "identical": finished and not differ, "differing tensors": differ[:10], "lost": lost is not None,
            "lost_error": lost, "restarts": sum(e["command"] == "fresh" for e in events[1:]), "events": events}


def probe_kill(work: Path, folders: int, kills: int, steps: int, seed: int) -> dict:
    (work / "kill").mkdir(parents=True, exist_ok=True)
    refs = [work / "kill" / "reference", work / "kill" / "reference-2"]  # the second is the control
    for r in refs:
        shutil.rmtree(r, ignore_errors=True)
    log(f"kill: two uninterrupted reference runs of {steps} steps")
    with ThreadPoolExecutor(PARALLEL) as ex:
        res, res2 = ex.map(lambda r: run_genlab([*KILL_TRAIN, "--steps", str(steps), "--out", str(r)], work / "kill"), refs)
    if res["rc"] != 0 or res2["rc"] != 0:
        return {"error": f"a reference run failed: {(res if res['rc'] else res2)['err'][-500:]}"}
    control = weight_diff(*refs)
    for k in range(folders):
        shutil.rmtree(work / "kill" / f"run{k}", ignore_errors=True)
    log(f"kill: {folders} run folders x {kills} SIGKILLs each, then a final --resume (reference took {res['secs']} s)")
    with ThreadPoolExecutor(PARALLEL) as ex:
        series = list(ex.map(lambda k: _kill_series(work, k, kills, steps, res["secs"], seed), range(folders)))
    for s in series:
        log(f"kill: {s['run']}: {s['kills']} kills, finished {s['finished']}, identical {s['identical']}, "
            f"lost {s['lost_error'] or False}")
    return {"two uninterrupted runs agree bit for bit (control)": not control, "control differences": control[:10],
            "kills done": sum(s["kills"] for s in series), "run folders": len(series),
            "resumed and finished": sum(s["finished"] for s in series),
            "final weights equal the uninterrupted run's": sum(s["identical"] for s in series),
            "runs lost": sum(s["lost"] for s in series),
            "restarted from scratch (killed before a first checkpoint)": sum(s["restarts"] for s in series),
            "series": series}


# ---------------------------------------------------------------------------------------------
# 4. The server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


JSON = [("Content-Type", "application/json")]
IMG, TXT = "/v1/models/img", "/v1/models/txt"


def _valid(rng: random.Random):
    """(method, path, headers, body, check(status, body) -> bool)."""
    s = rng.randrange(1000)
    choices = [
        ("POST", IMG + "/images", JSON, {"n": 2, "label": s % 10, "seed": s, "sampler": "ddim", "steps": 4},
         lambda st, b: st == 200 and len(json.loads(b)["images"]) == 2 and
         all(base64.b64decode(p)[:4] == b"\x89PNG" for p in json.loads(b)["images"])),
        ("POST", IMG + "/images", JSON + [("Accept", "image/png")], {"n": 1, "seed": s, "sampler": "ddim", "steps": 3},
         lambda st, b: st == 200 and b[:4] == b"\x89PNG"),
        ("POST", TXT + "/text", JSON, {"prompt": "def ", "max_new_tokens": 6, "seed": s},
         lambda st, b: st == 200 and isinstance(json.loads(b)["text"], str)),
        ("POST", TXT + "/text", JSON, {"prompt": "import", "max_new_tokens": 4, "stream": True},
         lambda st, b: st == 200 and b"data:" in b),
        ("GET", "/healthz", [], None, lambda st, b: st == 200), ("GET", "/readyz", [], None, lambda st, b: st == 200),
        ("GET", "/v1/models", [], None, lambda st, b: st == 200 and len(json.loads(b)["models"]) == 2),
    ]
    method, path, headers, body, check = rng.choice(choices)
    return method, path, headers, None if body is None else json.dumps(body).encode(), check


def _bad(rng: random.Random):
    """(method, path, headers, body) of a bad request, or ("RAW", raw bytes) for a fresh socket."""
    big = rng.choice((10**6, 10**18, 2**63, 2**64, 10**400, 1e308, -(2**63), 10**30))
    field, route = rng.choice((("n", "/images"), ("label", "/images"), ("seed", "/images"), ("steps", "/images"),
                               ("guidance", "/images"), ("eta", "/images"), ("frames", "/interpolate"),
                               ("max_new_tokens", "/text"), ("top_k", "/text"), ("temperature", "/text")))
    path = (TXT if route == "/text" else IMG) + route
    deep = rng.choice((1000, 20000, 30000))
    kinds = [
        lambda: ("POST", path, JSON, json.dumps({field: big}).encode()),
        lambda: ("POST", path, JSON, f'{{"{field}": {rng.choice(("NaN", "Infinity", "-Infinity"))}}}'.encode()),
        lambda: ("POST", path, JSON, json.dumps({field: rng.choice(("2", [1], {}, True, None, "x" * 100, -1, 0.5))}).encode()),
        lambda: ("POST", TXT + "/text", JSON, b'{"prompt": "\\ud800 \\udfff a"}'),
        lambda: ("POST", TXT + "/text", JSON, b'{"prompt": "ok", "stop": ["\\ud83d"]}'),
        lambda: ("POST", IMG + "/images", JSON, b'{"sampler": "\\udc80"}'),
        lambda: ("POST", TXT + "/text", JSON, b'{"prompt": "\xff\xfe\xed\xa0\x80"}'),
        lambda: ("POST", TXT + "/text", JSON, rng.randbytes(rng.randint(1, 200))),
        lambda: ("POST", path, JSON, ("[" * deep + "]" * deep).encode()),
        lambda: ("POST", TXT + "/text", JSON, ('{"prompt": ' + "[" * deep + "]" * deep + "}").encode()),
        lambda: ("POST", path, JSON, ('{"a":' * deep + "1" + "}" * deep).encode()),
        lambda: ("POST", path, JSON, b""),
        lambda: ("POST", path, JSON, json.dumps({"prompt": "x" * rng.choice((70000, 300000))}).encode()),
        lambda: ("POST", path, JSON + [("Transfer-Encoding", "chunked")],
                 b"".join(b"%x\r\n%s\r\n" % (8192, b"a" * 8192) for _ in range(10)) + b"0\r\n\r\n"),
        lambda: ("POST", path, [("Content-Type", rng.choice(("text/plain", "application/x-www-form-urlencoded",
                                                             "multipart/form-data; boundary=x", "application/xml",
                                                             "application/json; charset=utf-16")))], b'{"n": 1}'),
        lambda: ("POST", path, [], b'{"n": 1}'),
        lambda: ("POST", path, JSON, '{"prompt": "é"}'.encode("utf-16")),
        lambda: ("POST", path, JSON, rng.choice((b"[]", b'"s"', b"null", b"1", b'{"n": 1,}', b"{'n': 1}"))),
        lambda: ("POST", path, JSON, json.dumps({"nope": 1, "__proto__": {}}).encode()),
        lambda: ("GET", "/healthz", [("Host", rng.choice(("evil.example", "", "127.0.0.1:99999", "a" * 9000,
                                                          "[::1", "x y")))], None),
        lambda: ("GET", "/healthz", [("Host", "a"), ("Host", "b")], None),
        lambda: ("GET", "/healthz", [("Host", None)], None),
        lambda: ("POST", rng.choice(("/v1/models/nope/images", IMG + "/text", TXT + "/images", IMG + "/translate",
                                     TXT + "/classify", "/v1/models/%2e%2e/images", "/../../etc/passwd",
                                     "/static/../../../etc/passwd", "/v1/models/" + "a" * 8000 + "/images",
                                     "/v1/models/img%00/images", "/?" + "q=1&" * 3000)), JSON, b'{"n": 1}'),
        lambda: (rng.choice(("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "HEAD")),
                 rng.choice((IMG + "/images", "/healthz", "/")), JSON, b'{"n": 1}'),
        lambda: ("GET", IMG + "/images", [], None), lambda: ("POST", "/healthz", JSON, b"{}"),
        lambda: ("GET", "/metrics", [("Accept", "\u00e9".encode("utf-8").decode("latin-1"))], None),
        lambda: ("RAW", rng.choice((b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
                                    b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
                                    b"POST /v1/models/img/images HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                                    b"POST /v1/models/img/images HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                                    b"POST /v1/models/img/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                    b"\r\nzz\r\n{}\r\n0\r\n\r\n",
                                    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n",
                                    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 100000 + b"\r\n\r\n"))),
    ]
    return rng.choice(kinds)()


class Client:
    """One keep-alive connection; reconnects after the server closes it (said so or not)."""

    def __init__(self, port: int):
        self.port, self.conn, self.broken, self.refused = port, None, 0, 0

    def send(self, method: str, path: str, headers: list, body: bytes | None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
        names = {k.lower() for k, _ in headers}
        try:
            self.conn.putrequest(method, path, skip_host="host" in names, skip_accept_encoding=True)
            for k, v in headers:
                if v is not None:
                    self.conn.putheader(k, v)
            if body is not None and "transfer-encoding" not in names:
                self.conn.putheader("Content-Length", str(len(body)))
            self.conn.endheaders(body)
            r = self.conn.getresponse()
            data = r.read()
        except ValueError:  # http.client itself refused to send it (a probe limit, counted apart)
            self.refused += 1
            self.conn.close()
            self.conn = None
            return None, b""
        except (http.client.HTTPException, OSError):
            self.broken += 1
            self.conn.close()
            self.conn = None
            return None, b""
        if r.will_close:
            self.conn.close()
            self.conn = None
        return r.status, data


def _raw(port: int, data: bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = s.recv(64)
        except OSError:
            return None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(m.group(1)) if m else None


def probe_serve(work: Path, count: int, seed: int) -> dict:
    runs = work / "serve"
    runs.mkdir(parents=True, exist_ok=True)
    for name, base in (("img", "ddpm"), ("txt", "gpt")):
        if not (runs / name).exists():
            shutil.copytree(base_run(work, base), runs / name, ignore=shutil.ignore_patterns(".lock"))
    port = _free_port()
    log(f"serve: starting genlab serve on 127.0.0.1:{port}, then {count} requests")
    with open(runs / "server.log", "w+") as slog:
        proc = popen_genlab(["serve", str(runs / "img"), str(runs / "txt"), "--host", "127.0.0.1", "--port", str(port),
                             "--threads", "1"], runs, stdout=slog, stderr=subprocess.STDOUT)
        try:
            return _serve_requests(proc, port, count, seed, slog)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _serve_requests(proc: subprocess.Popen, port: int, count: int, seed: int, slog) -> dict:
    client, deadline = Client(port), time.time() + TIMEOUT_S
    while time.time() < deadline and proc.poll() is None:
        status, _ = client.send("GET", "/readyz", [], None)
        if status == 200:
            break
        time.sleep(0.5)
    else:
        slog.seek(0)
        return {"error": f"the server did not become ready: {slog.read()[-1000:]}"}
    client.broken = 0
    rng, sent, errors5, valid, valid_failed, examples = random.Random(seed), 0, 0, 0, 0, []
    for i in range(count):
        if rng.random() < 0.25:
            method, path, headers, body, check = _valid(rng)
            status, data = client.send(method, path, headers, body)
            valid += 1
            try:
                ok = status is not None and check(status, data)
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                valid_failed += 1
                examples.append({"valid": True, "path": path, "status": status, "body": data[:200].decode("latin-1")})
        else:
            spec, broken = _bad(rng), client.broken
            status, data = (_raw(port, spec[1]), b"") if spec[0] == "RAW" else client.send(*spec)
            path = spec[1][:60] if spec[0] == "RAW" else f"{spec[0]} {spec[1][:80]} {spec[3] and spec[3][:60]}"
            if client.broken > broken:
                examples.append({"broke": str(path)})
        sent += 1
        if status is not None and status >= 500:
            errors5 += 1
            examples.append({"status": status, "request": str(path), "body": data[:200].decode("latin-1")})
        if (i + 1) % 100 == 0:
            log(f"serve: {i + 1}/{count} requests, {errors5} 5xx, {valid_failed} valid failed, {client.broken} broken")
    alive, _ = Client(port).send("GET", "/healthz", [], None)
    slog.flush()
    slog.seek(0)
    server_log = slog.read()
    return {"requests sent": sent, "5xx responses": errors5, "valid requests": valid,
            "valid requests that failed": valid_failed, "connections that broke": client.broken,
            "requests the client could not send": client.refused,
            "server alive at the end": alive == 200, "tracebacks in the server log": server_log.count("Traceback"),
            "examples": examples[:40]}


# ---------------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    lines = ["| section | measure | count |", "|---|---|---|"]
    for section, res in results.items():
        for key, value in res.items():
            if not isinstance(value, (list, dict)):
                lines.append(f"| {section} | {key} | {value} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny counts (for the test)")
    p.add_argument("--only", choices=["cli", "fuzz", "kill", "serve"], default=None)
    p.add_argument("--out", default=None, help="write the counts and the details as JSON")
    p.add_argument("--workdir", default=None, help="work folder (default: a temporary folder, removed at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fuzz-worker", default=None, help=argparse.SUPPRESS)  # START:STOP, internal
    args = p.parse_args(argv)
    if args.fuzz_worker:
        start, stop = map(int, args.fuzz_worker.split(":"))
        return fuzz_worker(Path(args.workdir), start, stop, args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="genlab-probe-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    q = args.quick
    sections = {"cli": lambda: probe_cli(work, q),
                "fuzz": lambda: probe_fuzz(work, 30 if q else 1500, args.seed),
                "kill": lambda: probe_kill(work, 1 if q else 3, 2 if q else 9, 15 if q else 100, args.seed),
                "serve": lambda: probe_serve(work, 30 if q else 600, args.seed)}
    results, t0 = {}, time.time()
    try:
        for name, fn in sections.items():
            if args.only in (None, name):
                results[name] = fn()
    finally:
        if args.out:
            Path(args.out).write_text(json.dumps({"quick": q, "seed": args.seed, "seconds": round(time.time() - t0),
                                                  "results": results}, indent=1, default=str))
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
