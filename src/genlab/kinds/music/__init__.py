"""The music kind: symbolic music (the Bach chorales inside music21, folders of MIDI files) as texts of note events
(genlab.musicio's grammar), on which the language-model families (the "lm" kind's) train with the music tokenizer.
It hosts those families: a gpt or lstm run on data this kind claims is a music run, whose samples are MIDI files
with a WAV rendering and a piano roll, evaluated with the music metrics, served on /music."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from genlab.audioio import save_wav
from genlab.config import DataConfig
from genlab.data.music import BACH, is_midi_source
from genlab.data.tokenizers import MusicTokenizer
from genlab.errors import UsageError
from genlab.kinds.base import CardText
from genlab.kinds.music.compose import MUSIC_TOKENS, PROMPT_BARS, compose, read_prompt
from genlab.kinds.music.evaluate import evaluate_music_run
from genlab.kinds.music.prepare import RENDER_RATE, prepare_music, write_music
from genlab.kinds.text import LM, LMKind
from genlab.musicio import MUSIC_NOTICE, render_wav, write_midi
from genlab.provenance import image_metadata

CARD = CardText(
    noun="music",
    limitations=("Metric caveats: the histogram overlaps, in-key share, polyphony and density compare **pooled "
                 "statistics** with the held-out pieces: a model can match them and still sound aimless; listen to "
                 "the samples.",
                 "The copy share **only catches verbatim copies** of 8 onsets (about two bars) or more; compare it "
                 "with the held-out pieces' own share, printed beside it.",
                 "Bits per token compare runs only with the same tokenizer and transposition."),
    uses=("The WAV files are a plain additive-synthesis rendering, not a performance; open the MIDI files in a "
          "score editor or a synthesiser with a sound font to hear them properly.",))


class MusicKind(LMKind):
    def prepare(self, cfg, run_dir: Path, *, resume: bool):
        return prepare_music(cfg, run_dir, resume=resume)

    def datasets(self) -> dict[str, str]:
        return {BACH: "the four-part Bach chorales inside music21 (408 pieces), as note events"}

    def claims(self, data: str | DataConfig) -> bool:
        """bach-chorales, a folder of MIDI files, and any run trained with the music tokenizer."""
        if isinstance(data, DataConfig):
            return data.tokenizer == MusicTokenizer.kind or is_midi_source(data.name)
        return is_midi_source(data)

    def write_samples(self, model, out: str, *, n: int, seed: int, label: int | None, controls: dict,
                      settings: dict, prompt: str | None = None) -> str:
        """x.mid: the pieces one after another, with x.wav and the piano roll x.png; a folder (a path without a
        suffix): sample-NNNN.mid and .wav per piece, all.mid/.wav/.png. A prompt file's first PROMPT_BARS bars
        begin every piece."""
        if label is not None:
            raise UsageError("--label: music runs are not conditioned on a label; a --prompt (a .mid file or a "
                             "music text) conditions them")
        path = Path(out)
        if path.suffix and path.suffix.lower() != ".mid":
            raise UsageError(f"--out {out}: expected a .mid file or a folder for music samples")
        opening = read_prompt(prompt) if prompt else ""
        used = {"max_new_tokens": MUSIC_TOKENS, **controls}
        texts = compose(model, model.run.tokenizer, n, prompt=opening, generator=torch.Generator().manual_seed(seed),
                        **used)
        meta = image_metadata(model, seed=seed, settings={"n": n, "prompt": opening, **used, **settings},
                              comment=MUSIC_NOTICE)
        if path.suffix:
            write_music(texts, path.with_suffix(""), meta)
            return f"wrote {n} pieces to {path} (rendered: {path.with_suffix('.wav')}, piano roll: " \
                   f"{path.with_suffix('.png')})"
        path.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            write_midi(path / f"sample-{i:04d}.mid", text, meta)
            save_wav(path / f"sample-{i:04d}.wav", render_wav(text, RENDER_RATE), RENDER_RATE, meta)
        write_music(texts, path / "all", meta)
        return f"wrote {n} pieces to {path}/ (sample-0000.mid and .wav ..., all.mid, all.wav, all.png)"

    def evaluate(self, run_dir: Path, **kwargs):
        return evaluate_music_run(run_dir, **kwargs)

    def info(self, model) -> dict:
        return {"conditioning": self.conditioning, "music": {"render_rate": RENDER_RATE, "prompt_bars": PROMPT_BARS}}

    def provenance(self, model) -> dict:
        return image_metadata(model, seed=None, settings={}, comment=MUSIC_NOTICE)

    def server_controls(self, controls: dict, settings) -> dict:
        """The music route's default for max_new_tokens (MusicRequest's), within the server's limit."""
        short = min(MUSIC_TOKENS, settings.max_new_tokens)
        return {**controls, "max_new_tokens": replace(controls["max_new_tokens"], default=short)}


def routes():
    from genlab.kinds.music.serve import ROUTES   # FastAPI: only for the server

    return ROUTES


MUSIC = MusicKind("music", "symbolic music", CARD, serve=routes, sample_suffix=".mid",
                  conditioning="prompt (opening bars)", hosts=(LM.name,),
                  extras={"prompt": "a .mid file or a music text whose opening bars begin every piece"})
