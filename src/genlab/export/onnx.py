"""ONNX export of a run's networks, verified on onnxruntime against PyTorch, and an onnxruntime
backend for sampling the image families (issue "Deployment").

Only the networks go into the graphs; the loops that drive them (DDIM/DDPM, token sampling, beam
search) stay in Python. Each family declares its graphs itself: its model's `onnx_graphs()` and
`onnx_extras()` (genlab.models.graphs says the contract); this module exports, verifies and runs them
and names no family. Today DIR receives (every graph has a dynamic "batch" axis):

  family      declared in             file            inputs -> outputs
  ae, vae     models/autoencoder.py   decoder.onnx    z (batch, latent_dim) float32 [, y (batch,) int64]
                                                      -> image (batch, C, H, W) in [-1, 1]
  gan         models/gan.py           generator.onnx  z (batch, latent_dim) [, y (batch,)] -> image (batch, C, H, W)
                                                      in [-1, 1]
  ddpm        models/diffusion.py     unet.onnx       x_t (batch, C, H, W), t (batch,) int64 [, y (batch,) int64]
                                                      -> output (batch, C, H, W), eps or v as model.prediction
                                                      says; y = num_classes is the null label, so classifier-free
                                                      guidance stays a Python-side mix of two outputs
  ldm         models/latent_diffusion.py  unet.onnx   as ddpm, on latents (latent_channels, H / f, W / f) in [-1, 1]
                                          decoder.onnx  z (batch, latent_channels, H / f, W / f) -> image (batch, C,
                                                      H, W) in [-1, 1]; export.json's "latent_space" gives the shape
  gpt         models/gpt.py           step.onnx       ids (batch, length) int64, 1 <= length <= context_tokens
                                                      (block_size for learned positions; n_layer * (block_size - 1)
                                                      + 1 for rotary ones, whose windows stack) -> logits (batch,
                                                      vocab) of the last position. No KV cache in the graph: each
                                                      step re-reads its whole window, which costs O(length) more
                                                      than genlab's cached decoder (a cache would make the graph
                                                      take and return every layer's keys and values)
  lstm        models/lstm.py          step.onnx       token (batch,) int64, h, c (n_layer, batch, d_model) ->
                                                      logits (batch, vocab), h, c
  classifier  models/classifier.py    model.onnx      x (batch, C, H, W) in [-1, 1] -> probs (batch, num_classes)
  textclf     models/textclf.py       model.onnx      ids (batch, length) int64, 0 = padding -> probs (batch,
                                                      num_classes), weights (batch, length) (the attention
                                                      pooling weights)
  audio-ddpm  models/audio_diffusion.py  unet.onnx    as ddpm, on log-mel spectrograms (1, n_mels, n_mels); export.json's
                                                      extras say how to invert them (Griffin-Lim)
  wavegan     models/wavegan.py       generator.onnx  z (batch, latent_dim) [, y (batch,)] -> waveform (batch, 1, T)
                                                      in [-1, 1]

plus DIR/export.json: the family, each graph's inputs and outputs (name, dtype, shape with symbolic
axes), the run's config, a fingerprint of the weights, the tolerance and the largest absolute
difference from PyTorch measured on random inputs (two batch sizes, several lengths), and the family's
extras (the latent prior, the diffusion process, how to drive a text step). An export whose
difference exceeds the tolerance is refused and nothing is written. Text runs also get the run's
tokenizer.json. seq2seq is not exported (its encoder-decoder and beam search would need several
graphs and a cache protocol; models/seq2seq.py says so in ONNX_UNSUPPORTED); asking for a family
without graphs is an error listing the supported families (`exportable_families()`).

The onnxruntime backend (`onnx_backend`, `genlab sample --backend onnx`) serves the families whose
models also have `use_onnx(graphs)` (`backend_families()`): the model swaps
its networks (decode, the U-Net, latent diffusion's decoder) for the exported graphs run here, and samples as before.

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
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from genlab.errors import ExportError, UsageError
from genlab.loading import load, load_config
from genlab.models.graphs import Graph
from genlab.registry import FAMILIES

FORMATS = ("onnx",)
TOLERANCE = 1e-4   # largest absolute difference ONNX vs PyTorch accepted for fp32 outputs
INT8_TOLERANCE = 0.5  # int8 graphs (--quantize int8): see docs/adaptation.md for the differences measured
OPSET = 17
MANIFEST = "export.json"
VERIFY_BATCHES = (1, 3)  # batch sizes checked (the graphs are traced at batch 2)


# --------------------------------------------------------------------------------------- families

def exportable_families() -> list[str]:
    """The registered families whose models declare ONNX graphs (`onnx_graphs`, genlab.models.graphs)."""
    return [name for name, f in FAMILIES.items() if hasattr(f.model_cls, "onnx_graphs")]


def backend_families() -> list[str]:
    """The registered families that can sample on onnxruntime (`genlab sample --backend onnx`): those whose
    models say how an exported graph replaces their network (`use_onnx`)."""
    return [name for name, f in FAMILIES.items() if hasattr(f.model_cls, "use_onnx")]


def _unsupported(family: str, model_cls: type | None) -> ExportError:
    reason = getattr(model_cls, "ONNX_UNSUPPORTED", None)
    why = f" ({reason})" if reason else ""
    return ExportError(f"{family} runs cannot be exported to ONNX{why}; "
                       f"supported families: {', '.join(exportable_families())}")


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


def _quantize_int8(path: Path) -> None:
    """Replace the float graph at `path` by onnxruntime's dynamic int8 quantisation of it (weights of MatMul,
    Gemm and Conv as int8, activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name(path.stem + ".fp32.onnx")
    path.replace(fp32)
    logging.disable(logging.WARNING)  # it logs a line per activation it leaves in float, and advice
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()


def export(run: str | Path | nn.Module, out: str | Path | None = None, *, format: str = "onnx", ema: bool = True,
           tolerance: float = TOLERANCE, opset: int = OPSET, quantize: str = "none",
           int8_tolerance: float = INT8_TOLERANCE) -> dict:
    """Export a run (folder or loaded model) to `out` (default RUN/onnx) and verify it on onnxruntime.

    quantize="int8": each verified float graph is then quantized (onnxruntime's dynamic int8) and verified
    again against PyTorch with `int8_tolerance`; export.json records both differences.
    Returns the manifest written as out/export.json. Raises ExportError for an unsupported format or
    family, or when onnxruntime's outputs differ from PyTorch's by more than `tolerance` (then nothing
    is written)."""
    if quantize not in ("none", "int8"):
        raise ExportError(f"--quantize {quantize}; expected int8 (or none)")
    if format not in FORMATS:
        raise ExportError(f"export format {format!r} is not supported; available: {', '.join(FORMATS)}")
    if not isinstance(run, nn.Module):
        family = load_config(run).family
        cls = FAMILIES[family].model_cls if family in FAMILIES else None
        if not hasattr(cls, "onnx_graphs"):
            raise _unsupported(family, cls)
    model = _load(run, ema)
    if model.run is not None and model.run.config.compress.quantize != "none":
        raise ExportError(f"{model.run.path} holds int8 PyTorch layers, which do not export; export the float run "
                          "it was made from with --quantize int8 instead")
    if not hasattr(model, "onnx_graphs"):
        raise _unsupported(model.family, type(model))
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
    graphs = model.onnx_graphs()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        entries, diffs, fp32_diffs, exporters, opsets = {}, {}, {}, set(), set()
        for g in graphs:
            g.module.eval()
            path = tmp / f"{g.name}.onnx"
            exporter, used = _torch_export(g, path, opset)
            exporters.add(exporter)
            opsets.add(used)
            diffs[g.name] = _verify(g, path, model.family, tolerance)
            if quantize == "int8":
                fp32_diffs[g.name] = diffs[g.name]
                _quantize_int8(path)
                diffs[g.name] = _verify(g, path, model.family, int8_tolerance)
            entries[g.name] = {"file": path.name,
                               "inputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in g.inputs],
                               "outputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in g.outputs]}
        manifest = {
            "format": "onnx", "family": model.family, "opset": max(opsets), "exporter": "+".join(sorted(exporters)),
            "graphs": entries, "quantize": quantize, "max_abs_diff": diffs,
            "tolerance": int8_tolerance if quantize == "int8" else tolerance,
            **({"max_abs_diff_fp32": fp32_diffs, "tolerance_fp32": tolerance} if quantize == "int8" else {}),
            "verified": {"batch_sizes": list(VERIFY_BATCHES), "lengths": {g.name: list(g.lengths) for g in graphs
                                                                          if g.lengths != (0,)}},
            "weights": "as given" if isinstance(run, nn.Module) else ("ema" if ema else "raw"),
            "weights_sha256": fingerprint(model),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, **model.onnx_extras(),
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


def onnx_backend(model: nn.Module, folder: str | Path | None = None) -> nn.Module:
    """Make a loaded image model of a `backend_families()` family sample on onnxruntime: its network is
    replaced by the exported graph (the model's `use_onnx`), everything around it (latents drawn from the
    same torch.Generator, DDIM/DDPM loops, guidance) stays. The graphs come from `folder` (default
    RUN/onnx), exported there first when missing or holding other weights. The model moves to the CPU;
    returns it."""
    if not hasattr(model, "use_onnx"):
        raise ExportError(f"the onnx backend samples {', '.join(backend_families())} runs; for {model.family} runs "
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
    model.use_onnx({name: OnnxGraph(folder, entry) for name, entry in manifest["graphs"].items()})
    model.backend = "onnx"
    return model


def describe(manifest: dict) -> str:
    """One line per graph: file, signature, and the difference from PyTorch measured at export."""
    def sig(specs: list[dict]) -> str:
        return ", ".join(f"{s['name']} ({', '.join(map(str, s['shape']))})" for s in specs)

    return "\n".join(f"{e['file']}: {sig(e['inputs'])} -> {sig(e['outputs'])}; max |onnx - torch| "
                     f"{manifest['max_abs_diff'][name]:.2g} (tolerance {manifest['tolerance']:g})"
                     for name, e in manifest["graphs"].items())
