"""Provenance for generated images: PNG text chunks that say an image is AI-generated, by which run,
weights, seed and sampling settings (the "Deployment" issue: disclose machine-made content).

Every image genlab writes from a trained run carries these chunks (`genlab sample`, `interpolate`,
`reconstruct`, the training preview grids). Read them back with Pillow:

    from PIL import Image
    Image.open("grid.png").text["genlab:weights_sha256"]

The weights hash is the one checkpoint.json recorded when the weights were committed (not a fresh
hash of model.safetensors: loading a run already verifies the file against it). No timestamp is
written, so the same run, seed and settings give a byte-identical file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from genlab.errors import DataError
from genlab.runs import CHECKPOINT, CONFIG, WEIGHTS, atomic_write, read_json
from genlab.version import __version__

AI_COMMENT = "AI-generated image made with genlab; not a photograph"
AUDIO_COMMENT = "AI-generated audio made with genlab; not a recording"
VIDEO_COMMENT = "AI-generated video made with genlab; not filmed"
PENDING = "pending (preview during training)"
# IPTC's controlled term for media made by a trained model (also used by C2PA and Google's labels)
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def as_text(metadata: dict | None) -> dict[str, str]:
    """The metadata as the text a file's comment or sidecar holds: every key and value a string."""
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def write_sidecar(path: Path, metadata: dict | None) -> None:
    """The JSON sidecar `<file>.json` of an output file: its metadata, whatever the player or editor keeps."""
    atomic_write(path.with_name(path.name + ".json"), json.dumps(as_text(metadata), indent=2, sort_keys=True) + "\n")


def parse_comment(comment: str, path) -> dict[str, str]:
    """The metadata a genlab file carries as JSON in its comment ({} when it has none)."""
    if not comment:
        return {}
    try:
        return json.loads(comment)
    except ValueError as e:
        raise DataError(f"{path}: its comment is not JSON ({e}); expected the metadata genlab writes") from e


def _json(value: Any) -> str:
    """Compact, key-sorted JSON; tensors and other objects become lists or strings."""
    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=default)


def image_metadata(model_or_run, *, seed: int | Sequence[int] | None, settings: dict, kind: str = "samples",
                   preview_step: int | None = None, comment: str = AI_COMMENT) -> dict[str, str]:
    """PNG text chunks (key -> text) for an image made by a run's model.

    model_or_run: a model from `genlab.load` (its `run` names the folder) or a run folder.
    seed: the sampling seed; several (an interpolation's two ends) are written space-separated;
    None when the image has no seed (reconstructions).
    settings: the sampling controls (label, steps, guidance, ...), stored as JSON.
    kind: what the image shows ("samples", "interpolation", "reconstruction", "training preview").
    preview_step: set by the training preview: the weights of that step are not checkpointed yet
    (the trainer writes the preview before the checkpoint of the same step), so the hash is pending.
    comment: what the output is (the audio kind: AUDIO_COMMENT); the same keys serve every kind's files.
    """
    if isinstance(model_or_run, (str, Path)):
        run_dir = Path(model_or_run)
    else:
        run_dir = model_or_run.run.path if getattr(model_or_run, "run", None) is not None else None
    cfg = read_json(run_dir / CONFIG) if run_dir is not None and (run_dir / CONFIG).exists() else {}
    family = cfg.get("family") or getattr(model_or_run, "family", None) or "unknown"
    ck = read_json(run_dir / CHECKPOINT) if run_dir is not None and (run_dir / CHECKPOINT).exists() else {}
    if preview_step is not None and ck.get("step") != preview_step:
        weights, step = PENDING, preview_step
    elif ck:
        weights, step = ck.get("files", {}).get(WEIGHTS, "unknown (not in checkpoint.json)"), ck.get("step")
    else:
        weights, step = "unknown (no checkpoint.json)", preview_step
    meta = {
        "AI-Generated": "true",
        "DigitalSourceType": DIGITAL_SOURCE_TYPE,
        "Software": f"genlab {__version__}",
        "Comment": comment + ("; odd rows are real held-out images, even rows the model's reconstructions of them"
                                 if kind == "reconstruction" else ""),
        "genlab:kind": kind,
        "genlab:run": run_dir.resolve().name if run_dir is not None else "unknown",
        "genlab:family": str(family),
        "genlab:data": str(cfg.get("data", {}).get("name", "unknown")),
        "genlab:step": "unknown" if step is None else str(step),
        "genlab:weights_sha256": weights,
        "genlab:seed": "none" if seed is None else " ".join(map(str, seed)) if isinstance(seed, (list, tuple))
                       else str(seed),
        "genlab:settings": _json(settings),
    }
    init, derived = cfg.get("init", {}), cfg.get("derived", {})
    if init.get("run"):  # started from another run (--init-from), perhaps as LoRA adapters on it
        meta["genlab:base"] = _json({"run": init["run"], "weights_sha256": init.get("sha256"),
                                     "adapter": cfg.get("adapter", {}).get("type", "none")})
    if derived:  # made by genlab merge or genlab compress
        meta["genlab:derived"] = _json(derived)
    return meta


def for_request(base: dict[str, str], *, seed: int | Sequence[int] | None, settings: dict,
                kind: str | None = None) -> dict[str, str]:
    """`base` (a model's metadata, computed once) with one request's seed and settings, and, when
    given, the kind of image (which also sets the comment): the server's way of stamping its output
    without reading the run folder again."""
    one = image_metadata(None, seed=seed, settings=settings, kind=kind or "samples")
    keep = ("genlab:seed", "genlab:settings") + (("genlab:kind", "Comment") if kind else ())
    return {**base, **{k: one[k] for k in keep}}


__all__ = ["image_metadata", "for_request", "AI_COMMENT", "AUDIO_COMMENT", "VIDEO_COMMENT", "PENDING"]
