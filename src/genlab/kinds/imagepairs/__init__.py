"""The image-pairs kind: an input image A and its target B of one size (the built-ins edges2digits, edges2shapes,
inpaint-digits and colorize-shapes; folders with A/ and B/, or A and B side by side), translated by pix2pix and
judged against the targets pixel by pixel (L1, PSNR, SSIM) and in the features of a judge trained on the
training targets.

A batch is {"a": (B, Ca, H, W), "b": (B, Cb, H, W) in [-1, 1], "y": labels or None}; a generator's
`sample(n, cond=a)` returns the translations (n, Cb, H, W). The data-derived model config fields are
`in_channels`, `out_channels` and `image_size`."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.data.image_pairs import PAIR_BUILTINS, as_inputs, split_pairs
from genlab.data.readers import BUDGET_GB, decode_files, image_files, same_channels, stack
from genlab.errors import UsageError
from genlab.imageio import save_grid, save_png, to_uint8
from genlab.kinds.base import CardText, Kind
from genlab.kinds.imagepairs.evaluate import evaluate_pairs_run, translate_all
from genlab.kinds.imagepairs.prepare import prepare_pairs, triptychs
from genlab.provenance import image_metadata

MAX_INPUTS = 4096  # `genlab sample --input FOLDER` translates at most this many images

CARD = CardText(
    noun="image translations", judged=True,
    limitations=("The outputs are translations of an input image: they are as faithful as the pairs the run "
                 "learned from, and an input unlike those (another style of edges, another size) gives an "
                 "output the metrics do not vouch for.",
                 "Metric caveats: judge-FID, KID, precision, recall and the FCN-score use a small judge **trained "
                 "on the run's own training targets** (no Inception or FCN weights offline); compare runs at equal "
                 "N and against the held-out targets' floor.",
                 "L1, PSNR and SSIM reward the average answer: an L1-only model scores well on them with blurred "
                 "outputs; read them beside the judge's rows."))


def read_inputs(path: str | Path, model) -> tuple[torch.Tensor, list[str]]:
    """The images at `path` (a PNG/JPEG file or a folder of them) as the model's inputs, with the names of the
    files they came from (unreadable ones are dropped and counted, as in any folder genlab reads)."""
    path, c = Path(path), model.config
    if path.is_dir():
        files, folder, budget = image_files(path), path, BUDGET_GB
        if not files:
            raise UsageError(f"--input {path}: no PNG or JPEG images in it")
    elif path.is_file():
        files, folder, budget = [path], path.parent, 1.0
    else:
        raise UsageError(f"--input {path}: no such file or folder; expected a PNG/JPEG image or a folder of them")
    if len(files) > MAX_INPUTS:
        raise UsageError(f"--input {path}: {len(files)} images; expected at most {MAX_INPUTS} per call")
    arrays, kept = decode_files(files, folder, budget)
    images = stack(same_channels(arrays), kept, c.image_size, folder, budget)
    return as_inputs(images, c.in_channels, c.image_size, str(path)), [f.stem for f in kept]


class ImagePairsKind(Kind):
    def prepare(self, cfg, run_dir: Path, *, resume: bool):
        return prepare_pairs(cfg, run_dir, resume=resume)

    def datasets(self) -> dict[str, str]:
        return dict(PAIR_BUILTINS)

    def write_samples(self, model, out: str, *, n: int, seed: int, label: int | None, controls: dict,
                      settings: dict, input: str | None = None) -> str:
        """x.png: a grid of rows input | translation (| target, for held-out pairs); a folder (a path ending in /
        or without a suffix): one PNG per input, named after it. `input`: an image or a folder of images to
        translate; without it, the first n held-out inputs of the run's own data."""
        if label is not None:
            raise UsageError("--label: image-pair runs translate images; they take --input, not a label")
        targets = None
        if input:
            a, names = read_inputs(input, model)
        else:
            _, _, val = split_pairs(model.run.config.data)
            held = val.subset(torch.arange(min(n, len(val))))
            a, targets, names = held.a, held.b, [f"heldout-{i:04d}" for i in range(len(held))]
        meta = image_metadata(model, seed=seed, settings={"input": str(input or "held-out pairs"), "count": len(a),
                                                          **controls, **settings})
        outputs = translate_all(model, a, seed, controls)
        path = Path(out)
        if out.endswith("/") or path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            for name, image in zip(names, to_uint8(outputs)):
                save_png(image, path / f"{name}.png", meta)   # the translation at the model's own size
            return f"wrote {len(outputs)} translations to {path}/"
        if path.suffix.lower() != ".png":
            raise UsageError(f"--out {out}: expected a .png grid or a folder for image translations")
        save_grid(triptychs(a, outputs, targets), path, nrow=2 if targets is None else 3, metadata=meta)
        return (f"wrote {len(outputs)} translations to {path} (rows: input, translation"
                + (", target)" if targets is not None else ")"))

    def evaluate(self, run_dir: Path, **kwargs):
        return evaluate_pairs_run(run_dir, **kwargs)

    def info(self, model) -> dict:
        c = model.config
        return {"conditioning": "image", "image": {"channels": c.out_channels, "size": c.image_size,
                                                    "input_channels": c.in_channels}}

    def provenance(self, model) -> dict:
        return image_metadata(model, seed=None, settings={})

    def tiny(self, cfg, *, labelled: bool) -> None:
        for name, value in (("in_channels", 1), ("out_channels", 3), ("image_size", 16), ("g_width", 4),
                            ("d_width", 4)):
            if hasattr(cfg, name):
                setattr(cfg, name, value)

    def example(self, cfg, n: int, generator: torch.Generator) -> dict:
        """The target a colour version of the input: a learnable map."""
        s = cfg.image_size
        a = torch.rand(n, cfg.in_channels, s, s, generator=generator) * 2 - 1
        b = torch.cat([a[:, :1], -a[:, :1], a[:, :1].abs() * 2 - 1][: cfg.out_channels], 1)
        return {"a": a, "b": b, "y": None}

    def sample_kwargs(self, model, n: int) -> dict:
        c = model.config
        g = torch.Generator().manual_seed(1)
        return {"cond": torch.rand(n, c.in_channels, c.image_size, c.image_size, generator=g) * 2 - 1}


def routes():
    from genlab.kinds.imagepairs.serve import ROUTES   # FastAPI: only for the server

    return ROUTES


IMAGE_PAIRS = ImagePairsKind("image-pairs", "image pairs", CARD, serve=routes, sample_suffix=".png",
                             conditioning="image",
                             extras={"input": "an image or a folder of images to translate (default: the run's "
                                              "held-out inputs)"})
