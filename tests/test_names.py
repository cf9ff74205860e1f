"""No code outside a family or a kind asks which family or kind it holds (docs/design.md, "Kinds"): no string
constant in the package equals a family's or a kind's name except in the family's own module, its kind's modules
and the registry. (Names inside prose, such as help text, are not constants equal to a name.)"""

import ast
from pathlib import Path

from genlab import kinds, registry

SRC = Path(__file__).parents[1] / "src" / "genlab"
TEXT_KINDS = ("kinds/text/", "data/text.py")   # the text kinds' modules and their readers
KIND_HOMES = {"image": ("kinds/image/",), "lm": TEXT_KINDS, "pairs": TEXT_KINDS, "labels": TEXT_KINDS,
              "audio": ("kinds/audio/", "data/audio", "data/speech.py", "data/clips.py", "audioio.py"),
              "music": ("kinds/music/", "data/music.py", "musicio.py", "evaluation/music_metrics.py"),
              "video": ("kinds/video/", "data/video", "data/moving.py", "videoio.py", "evaluation/video_metrics.py"),
              "image-pairs": ("kinds/imagepairs/", "data/image_pairs.py")}
# the same word naming something else: a file format's or the HTTP API's own field
OTHER_MEANINGS = {("data/readers.py", "labels"): "the .npz array and the IDX file of MNIST's labels",
                  ("imageio.py", "labels"): "the .npz array of labels",
                  ("kinds/image/__init__.py", "labels"): "GET /v1/models' `conditioning` of a conditional model",
                  ("kinds/audio/__init__.py", "labels"): "GET /v1/models' `conditioning` of a conditional model",
                  ("data/speech.py", "labels"): "the cache's .npz array of labels",
                  ("models/graphs.py", "image"): "the ONNX decoder graph's output (export.json)",
                  ("models/latent_diffusion.py", "image"): "the ONNX decoder graph's output (export.json)",
                  ("data/tokenizers.py", "music"): "the music tokenizer's type (tokenizer.json)",
                  ("data/video_readers.py", "labels"): "the .npz array of labels",
                  ("videoio.py", "labels"): "the .npz array of labels",
                  ("kinds/video/__init__.py", "labels"): "GET /v1/models' `conditioning` of a conditional model",
                  ("models/video_diffusion.py", "video"): "export.json's section on the conditioning channels",
                  ("kinds/imagepairs/__init__.py", "image"): "GET /v1/models' `conditioning` and `image` fields",
                  ("kinds/imagepairs/serve.py", "image"): "the /image2image request's `image` field"}


def homes(name: str) -> tuple[str, ...]:
    """Where a family's or kind's name may appear: the registry, and the family's module and its kind's modules
    (for a kind, its modules)."""
    if name in registry.FAMILIES:
        fam = registry.FAMILIES[name]
        module = fam.model_cls.__module__.replace("genlab.", "").replace(".", "/") + ".py"
        return ("registry.py", module, *KIND_HOMES.get(fam.kind, ()))
    return ("registry.py", *KIND_HOMES.get(name, ()))


def offenders(root: Path = SRC) -> list[str]:
    names = set(registry.FAMILIES) | set(kinds.KINDS)
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in sorted(ast.walk(ast.parse(path.read_text())), key=lambda n: getattr(n, "lineno", 0)):
            if not (isinstance(node, ast.Constant) and node.value in names):
                continue
            if (rel, node.value) in OTHER_MEANINGS or any(rel.startswith(h) for h in homes(node.value)):
                continue
            out.append(f"{rel}:{node.lineno}: {node.value!r}")
    return out


def test_no_family_or_kind_name_outside_its_own_modules_and_the_registry():
    assert offenders() == []


def test_the_check_sees_a_name_where_it_does_not_belong(tmp_path):
    for rel in ("serve/probe.py", "kinds/image/probe.py", "models/gan.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('IS_DIFFUSION = lambda family: family == "ddpm"\nWORDS = ("labels", "gan")\n')
    assert offenders(tmp_path) == [    # the image kind may name its families; gan.py only its own
        "kinds/image/probe.py:2: 'labels'", "models/gan.py:1: 'ddpm'", "models/gan.py:2: 'labels'",
        "serve/probe.py:1: 'ddpm'", "serve/probe.py:2: 'labels'", "serve/probe.py:2: 'gan'"]
