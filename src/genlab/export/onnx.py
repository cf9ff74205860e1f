"""ONNX export of a run's networks, verified on onnxruntime against PyTorch, and an onnxruntime
backend for sampling the image families (issue "Deployment").

Only the networks go into the graphs; the loops that drive them (DDIM/DDPM, token sampling, beam
search) stay in Python. Per family, DIR receives (every graph has a dynamic "batch" axis):

  family      file            inputs -> outputs
  ae, vae     decoder.onnx    z (batch, latent_dim) float32 [, y (batch,) int64] -> image (batch, C, H, W) in [-1, 1]
  gan         generator.onnx  z (batch, latent_dim) [, y (batch,)] -> image (batch, C, H, W) in [-1, 1]
  ddpm        unet.onnx       x_t (batch, C, H, W), t (batch,) int64 [, y (batch,) int64] -> output (batch, C, H, W),
                              eps or v as model.prediction says; y = num_classes is the null label, so
                              classifier-free guidance stays a Python-side mix of two outputs
  gpt         step.onnx       ids (batch, length) int64, 1 <= length <= block_size -> logits (batch, vocab) of the
                              last position. No KV cache in the graph: each step re-reads its whole window, which
                              costs O(length) more than genlab's cached decoder (a cache would make the graph take
                              and return every layer's keys and values)
  lstm        step.onnx       token (batch,) int64, h, c (n_layer, batch, d_model) -> logits (batch, vocab), h, c
  classifier  model.onnx      x (batch, C, H, W) in [-1, 1] -> probs (batch, num_classes)
  textclf     model.onnx      ids (batch, length) int64, 0 = padding -> probs (batch, num_classes),
                              weights (batch, length) (the attention pooling weights)

plus DIR/export.json: the family, each graph's inputs and outputs (name, dtype, shape with symbolic
axes), the run's config, a fingerprint of the weights, the tolerance and the largest absolute
difference from PyTorch measured on random inputs (two batch sizes, several lengths). An export whose
difference exceeds the tolerance is refused and nothing is written. Text runs also get the run's
tokenizer.json. seq2seq is not exported (its encoder-decoder and beam search would need several
graphs and a cache protocol); asking for it is an error listing the supported families.

The TorchScript-based exporter (dynamo=False) is tried first: it traces all these networks, dynamic
axes included, and needs no onnxscript; the dynamo exporter (opset 18) is the fallback when it fails.
Either way the graph must then match PyTorch on inputs of other batch sizes and lengths than the
traced ones, which is what catches a trace that baked in a shape. Tolerances measured on tiny runs
with jittered weights: at most ~3e-6 (fp32, CPU), against the 1e-4 accepted.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ExportError, UsageError
from genlab.loading import load, load_config

FORMATS = ("onnx",)
SUPPORTED = ("ae", "vae", "gan", "ddpm", "gpt", "lstm", "classifier", "textclf")
BACKEND_FAMILIES = ("ae", "vae", "gan", "ddpm")  # `genlab sample --backend onnx`
TOLERANCE = 1e-4   # largest absolute difference ONNX vs PyTorch accepted for fp32 outputs
OPSET = 17
MANIFEST = "export.json"
VERIFY_BATCHES = (1, 3)  # batch sizes checked (the graphs are traced at batch 2)


# --------------------------------------------------------------------------------------- graphs

Spec = tuple[str, str, list]   # (name, dtype "float32" | "int64", shape: ints and symbolic axis names)


@dataclass
class Graph:
    """One network to export: a module whose forward takes the inputs positionally, and a maker of
    random inputs `example(batch, length, generator)` for tracing and verification."""

    name: str
    module: nn.Module
    inputs: list[Spec]
    outputs: list[Spec]
    example: Callable[[int, int, torch.Generator], tuple[torch.Tensor, ...]]
    lengths: tuple[int, ...] = (0,)   # values of the "length" axis to verify (0: the graph has none)


class _Decode(nn.Module):
    """ae / vae / gan: latents [+ labels] -> images, through the model's own `decode`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.decode(z, y)


class _UNetStep(nn.Module):
    """ddpm: one network evaluation (x_t, t[, y]) -> eps or v."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x_t, t, y)


class _GPTStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.logits(ids, last_only=True)[:, -1]


class _LSTMStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, (h, c) = self.model.logits(token[:, None], (h, c), last_only=True)
        return logits[:, -1], h, c


class _Classify(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        if self.model.family == "textclf":
            logits, weights = self.model.forward_logits(x)
            return F.softmax(logits.float(), dim=1), weights
        return F.softmax(self.model.logits(x).float(), dim=1)


def _graphs(model: nn.Module) -> list[Graph]:
    """The graphs that make up one family's export (see the module docstring)."""
    c, fam = model.config, model.family
    B = "batch"

    def labels(k: int):  # random class ids in 0..k-1
        return lambda b, g: torch.randint(k, (b,), generator=g)

    if fam in ("ae", "vae", "gan"):
        k = c.num_classes
        image = [("image", "float32", [B, c.in_channels, c.image_size, c.image_size])]
        ins: list[Spec] = [("z", "float32", [B, c.latent_dim])] + ([("y", "int64", [B])] if k else [])

        def ex(b, L, g):
            return (torch.randn(b, c.latent_dim, generator=g),) + ((labels(k)(b, g),) if k else ())
        return [Graph("generator" if fam == "gan" else "decoder", _Decode(model), ins, image, ex)]
    if fam == "ddpm":
        k, shape = c.num_classes, [c.in_channels, c.image_size, c.image_size]
        ins = [("x_t", "float32", [B, *shape]), ("t", "int64", [B])] + ([("y", "int64", [B])] if k else [])

        def ex(b, L, g):   # labels k + 1: the null label too
            x, t = torch.randn(b, *shape, generator=g), torch.randint(c.timesteps, (b,), generator=g)
            return (x, t) + ((labels(k + 1)(b, g),) if k else ())
        return [Graph("unet", _UNetStep(model.unet), ins, [("output", "float32", [B, *shape])], ex)]
    if fam == "gpt":
        bs = c.block_size
        ex = lambda b, L, g: (torch.randint(c.vocab_size, (b, L), generator=g),)  # noqa: E731
        return [Graph("step", _GPTStep(model), [("ids", "int64", [B, "length"])],
                      [("logits", "float32", [B, c.vocab_size])], ex, tuple(sorted({1, max(1, bs // 2), bs})))]
    if fam == "lstm":
        state = [c.n_layer, B, c.d_model]
        ex = lambda b, L, g: (torch.randint(c.vocab_size, (b,), generator=g),  # noqa: E731
                              0.5 * torch.randn(c.n_layer, b, c.d_model, generator=g),
                              0.5 * torch.randn(c.n_layer, b, c.d_model, generator=g))
        return [Graph("step", _LSTMStep(model),
                      [("token", "int64", [B]), ("h", "float32", state), ("c", "float32", state)],
                      [("logits", "float32", [B, c.vocab_size]), ("h_out", "float32", state),
                       ("c_out", "float32", state)], ex)]
    if fam == "classifier":
        shape = [c.in_channels, c.image_size, c.image_size]
        ex = lambda b, L, g: (torch.rand(b, *shape, generator=g) * 2 - 1,)  # noqa: E731
        return [Graph("model", _Classify(model), [("x", "float32", [B, *shape])],
                      [("probs", "float32", [B, c.num_classes])], ex)]
    if fam == "textclf":
        def ex(b: int, L: int, g: torch.Generator):
            ids = torch.randint(4, c.vocab_size, (b, L), generator=g)
            keep = torch.randint(1, L + 1, (b, 1), generator=g)   # each row padded after 1..L tokens
            keep[0] = L                                           # and one row without padding
            return (torch.where(torch.arange(L) < keep, ids, torch.zeros_like(ids)),)
        L = min(c.max_len, 64)
        return [Graph("model", _Classify(model), [("ids", "int64", [B, "length"])],
                      [("probs", "float32", [B, c.num_classes]), ("weights", "float32", [B, "length"])], ex,
                      tuple(sorted({1, max(1, L // 3), L})))]
    raise _unsupported(fam)


def _unsupported(family: str) -> ExportError:
    why = " (an encoder-decoder with beam search: not exported yet)" if family == "seq2seq" else ""
    return ExportError(f"{family} runs cannot be exported to ONNX{why}; supported families: {', '.join(SUPPORTED)}")


# --------------------------------------------------------------------------------------- export

def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's state (names, dtypes, shapes, values): says which weights an export holds."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load(run: str | Path | nn.Module, ema: bool) -> nn.Module:
    if isinstance(run, nn.Module):
        return copy.deepcopy(run).cpu().eval()   # never move or mutate the caller's model

    return load(run, ema=ema, device="cpu")


def _torch_export(g: Graph, path: Path, opset: int) -> tuple[str, int]:
    """Write g to path; returns the exporter used ("torchscript", or "dynamo" when that one failed) and the
    opset (the dynamo exporter starts at 18: its down-conversion to 17 writes invalid Split nodes)."""
    args = g.example(2, max(g.lengths), torch.Generator().manual_seed(0))
    names = [s[0] for s in g.inputs], [s[0] for s in g.outputs]
    axes = {n: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for n, _, shape in g.inputs + g.outputs}
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")   # tracer and deprecation warnings: verification decides
                torch.onnx.export(g.module, args, str(path), dynamo=dynamo, input_names=names[0],
                                  output_names=names[1], dynamic_axes=axes,
                                  opset_version=max(opset, 18) if dynamo else opset,
                                  **({"external_data": False, "verbose": False} if dynamo else {}))
            return ("dynamo", max(opset, 18)) if dynamo else ("torchscript", opset)
        except Exception as e:  # noqa: BLE001  (any exporter failure: try the other, then report both)
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(e).__name__}: {str(e)[:300]}")
    raise ExportError(f"could not export {g.name}: " + "; ".join(errors))


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b|; NaN in the same places counts as equal, NaN in one only as infinite."""
    if a.shape != b.shape:
        return float("inf")
    both = torch.isnan(a) & torch.isnan(b)
    d = torch.where(both, torch.zeros_like(a), (a.double() - b.double()).abs().float())
    return float(d.nan_to_num(nan=float("inf")).max()) if d.numel() else 0.0


@torch.no_grad()
def _verify(g: Graph, path: Path, family: str, tolerance: float) -> float:
    """Run the graph on onnxruntime and PyTorch on the same random inputs; the largest difference."""
    try:
        sess = _session(path)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001  (onnxruntime's own exception types)
        raise ExportError(f"{family} {g.name}.onnx: onnxruntime cannot load the exported graph: {e}") from None
    gen, worst = torch.Generator().manual_seed(1), 0.0
    for batch in VERIFY_BATCHES:
        for length in g.lengths:
            inputs = g.example(batch, length, gen)
            ref = g.module(*inputs)
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = sess.run(None, {s[0]: t.numpy() for s, t in zip(g.inputs, inputs)})
            for spec, r, o in zip(g.outputs, ref, got):
                d = _max_diff(r.float(), torch.from_numpy(o).float())
                worst = max(worst, d)
                if not d <= tolerance:
                    where = f"batch {batch}" + (f", length {length}" if length else "")
                    raise ExportError(f"{family} {g.name}.onnx: output {spec[0]!r} differs from PyTorch by {d:.3g} "
                                      f"at {where} (tolerance {tolerance:g}); the export was not written")
    return worst


def _run_doc(model: nn.Module) -> dict:
    run_dir = model.run.path if model.run else None
    if run_dir is not None and (Path(run_dir) / "config.json").exists():
        return json.loads((Path(run_dir) / "config.json").read_text())
    return {"family": model.family, "model": asdict(model.config)}


def _extras(model: nn.Module) -> dict:
    """What a consumer of the graphs needs beyond them: the latent prior, the diffusion process."""
    c, fam = model.config, model.family
    if fam == "ae":   # sampling prior: z = mean + std * N(0, I), fitted to training codes
        return {"latent": {"dim": c.latent_dim, "mean": model.z_mean.tolist(), "std": model.z_std.tolist()}}
    if fam in ("vae", "gan"):
        return {"latent": {"dim": c.latent_dim, "mean": 0.0, "std": 1.0}}
    if fam == "ddpm":
        return {"diffusion": {"timesteps": c.timesteps, "schedule": c.schedule, "prediction": c.prediction,
                              "null_label": c.num_classes if c.num_classes else None,
                              "sampler": "genlab.models.diffusion.GaussianDiffusion (ddim_sample / ddpm_sample)"}}
    if fam == "gpt":
        return {"text": {"block_size": c.block_size, "kv_cache": False,
                         "note": "feed the last block_size tokens each step; logits are for the next token"}}
    if fam == "lstm":
        return {"text": {"n_layer": c.n_layer, "d_model": c.d_model,
                         "note": "start from h = c = 0, feed the prompt token by token, carry (h, c)"}}
    return {}


def export(run: str | Path | nn.Module, out: str | Path | None = None, *, format: str = "onnx", ema: bool = True,
           tolerance: float = TOLERANCE, opset: int = OPSET) -> dict:
    """Export a run (folder or loaded model) to `out` (default RUN/onnx) and verify it on onnxruntime.

    Returns the manifest written as out/export.json. Raises ExportError for an unsupported format or
    family, or when onnxruntime's outputs differ from PyTorch's by more than `tolerance` (then nothing
    is written)."""
    if format not in FORMATS:
        raise ExportError(f"export format {format!r} is not supported; available: {', '.join(FORMATS)}")
    if not isinstance(run, nn.Module):
        family = load_config(run).family
        if family not in SUPPORTED:
            raise _unsupported(family)
    model = _load(run, ema)
    if model.family not in SUPPORTED:
        raise _unsupported(model.family)
    try:
        import onnx  # noqa: F401  (the TorchScript exporter needs it)
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    import onnxruntime

    run_dir = model.run.path if model.run else None
    if out is None:
        if run_dir is None:
            raise ExportError("give an output folder: this model has no run folder to export into")
        out = Path(run_dir) / "onnx"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graphs = _graphs(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        entries, diffs, exporters, opsets = {}, {}, set(), set()
        for g in graphs:
            g.module.eval()
            path = tmp / f"{g.name}.onnx"
            exporter, used = _torch_export(g, path, opset)
            exporters.add(exporter)
            opsets.add(used)
            diffs[g.name] = _verify(g, path, model.family, tolerance)
            entries[g.name] = {"file": path.name,
                               "inputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in g.inputs],
                               "outputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in g.outputs]}
        manifest = {
            "format": "onnx", "family": model.family, "opset": max(opsets), "exporter": "+".join(sorted(exporters)),
            "graphs": entries, "tolerance": tolerance, "max_abs_diff": diffs,
            "verified": {"batch_sizes": list(VERIFY_BATCHES), "lengths": {g.name: list(g.lengths) for g in graphs
                                                                          if g.lengths != (0,)}},
            "weights": "as given" if isinstance(run, nn.Module) else ("ema" if ema else "raw"),
            "weights_sha256": fingerprint(model),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, **_extras(model),
            "config": _run_doc(model),
        }
        if run_dir is not None and (Path(run_dir) / "tokenizer.json").exists():
            shutil.copyfile(Path(run_dir) / "tokenizer.json", tmp / "tokenizer.json")
            manifest["tokenizer"] = "tokenizer.json"
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)   # the manifest goes last: it marks a complete export
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == MANIFEST):
            f.replace(out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


# --------------------------------------------------------------------------------------- backend

class OnnxGraph:
    """An exported graph on onnxruntime, called with torch tensors, returning a tuple of CPU tensors."""

    def __init__(self, folder: Path, entry: dict):
        self.session = _session(folder / entry["file"])
        self.inputs = [(s["name"], s["dtype"]) for s in entry["inputs"]]

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(tensors) != len(self.inputs):
            raise UsageError(f"the graph takes {', '.join(n for n, _ in self.inputs)}; got {len(tensors)} inputs")
        feeds = {n: t.detach().cpu().to(getattr(torch, d)).contiguous().numpy()
                 for (n, d), t in zip(self.inputs, tensors)}
        return tuple(torch.from_numpy(o) for o in self.session.run(None, feeds))


class _OnnxDecode:
    """Stands in for ae/vae/gan `decode(z, y)`: the model's sampling code (latents from its torch.Generator,
    labels, truncation) runs unchanged and only the network runs on onnxruntime."""

    def __init__(self, graph: OnnxGraph, num_classes: int):
        self.graph, self.num_classes = graph, num_classes

    def __call__(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            raise UsageError(f"this model is class-conditional: pass labels (cond=...) of 0..{self.num_classes - 1}")
        return self.graph(z, *([y] if self.num_classes else []))[0].to(z.device)


class _DeviceProbe(nn.Module):
    """DDPM.device reads `unet.conv_in.weight.device`; the ONNX U-Net answers "cpu"."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.empty(0), persistent=False)


class OnnxUNet(nn.Module):
    """Stands in for the DDPM U-Net: (x_t, t, y=None) -> output on onnxruntime, so DDPM.sample's DDIM and
    DDPM loops and classifier-free guidance run unchanged around it."""

    def __init__(self, graph: OnnxGraph, num_classes: int):
        super().__init__()
        self.graph, self.num_classes = graph, num_classes
        self.conv_in = _DeviceProbe()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long) if y is None else y
            return self.graph(x, t, y)[0].to(x.device)
        if y is not None:
            raise UsageError("this U-Net was built without classes (num_classes=0); pass y=None")
        return self.graph(x, t)[0].to(x.device)


def onnx_backend(model: nn.Module, folder: str | Path | None = None) -> nn.Module:
    """Make a loaded image model (ae, vae, gan, ddpm) sample on onnxruntime: its network is replaced by the
    exported graph, everything around it (latents drawn from the same torch.Generator, DDIM/DDPM loops,
    guidance) stays. The graphs come from `folder` (default RUN/onnx), exported there first when missing
    or holding other weights. The model moves to the CPU; returns it."""
    if model.family not in BACKEND_FAMILIES:
        raise ExportError(f"the onnx backend samples {', '.join(BACKEND_FAMILIES)} runs; for {model.family} runs "
                          f"use `genlab export` and drive the exported graphs yourself")
    model = model.cpu().eval()
    if folder is None:
        if model.run is None:
            raise ExportError("give a folder for the ONNX graphs: this model has no run folder")
        folder = model.run.path / "onnx"
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).exists() else None
    if manifest is None or manifest.get("weights_sha256") != fingerprint(model):
        manifest = export(model, folder)
    (name, entry), = manifest["graphs"].items()
    graph, k = OnnxGraph(folder, entry), model.config.num_classes
    if model.family == "ddpm":
        model.unet = OnnxUNet(graph, k)
    else:
        model.decode = _OnnxDecode(graph, k)   # an instance attribute: shadows the method for this model only
    model.backend = "onnx"
    return model


def describe(manifest: dict) -> str:
    """One line per graph: file, signature, and the difference from PyTorch measured at export."""
    def sig(specs: list[dict]) -> str:
        return ", ".join(f"{s['name']} ({', '.join(map(str, s['shape']))})" for s in specs)

    return "\n".join(f"{e['file']}: {sig(e['inputs'])} -> {sig(e['outputs'])}; max |onnx - torch| "
                     f"{manifest['max_abs_diff'][name]:.2g} (tolerance {manifest['tolerance']:g})"
                     for name, e in manifest["graphs"].items())
