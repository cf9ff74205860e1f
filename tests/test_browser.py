"""The served page (genlab/serve/static) in real headless Chromium, driven by Playwright against an
in-process server on tiny runs: images, the latent walk, streamed text, classification and the error box.

Needs Debian's `chromium` and the `playwright` Python package (not its downloaded browsers). Without them
the tests skip, unless GENLAB_REQUIRE_BROWSER=1 or CI=true, where a missing browser is a failure.
Screenshots land in the pytest tmp folder; set GENLAB_SCREENSHOT_DIR to keep a full-page one.
"""

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import needs_espeak

ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
        "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000
CHROMIUM = shutil.which("chromium")


def _missing() -> str | None:
    """Why the browser tests cannot run here (decided at collection, before any run is trained), or None."""
    if CHROMIUM is None:
        return "no `chromium` on PATH (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.needs("browser", _missing())


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(serve_runs):
    """Every family's tiny run (conftest's session fixture, shared with test_serve); a model is named after
    its run folder, i.e. its family here."""
    from serve_util import running_server
    with running_server(list(serve_runs.values())) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.errors = []
    pg.on("pageerror", lambda err: pg.errors.append(str(err)))
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready=true]")
    yield pg
    context.close()


@pytest.fixture(autouse=True)
def no_script_errors(request):
    yield
    if "page" in request.fixturenames:
        pg = request.getfixturevalue("page")
        errors, pg.errors[:] = list(pg.errors), []
        assert not errors, f"uncaught errors in the page: {errors}"


def choose(page, name):
    """A freshly loaded page (no state from an earlier test) with model `name` picked."""
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#model", name)
    page.wait_for_function("name => document.querySelector('#model').value === name", arg=name)


def screenshot(page, shots, name, keep=False):
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if keep and os.environ.get("GENLAB_SCREENSHOT_DIR"):
        out = Path(os.environ["GENLAB_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / "genlab-serve-page.png")


def info_of(page, server, name):
    models = page.request.get(server + "/v1/models").json()["models"]
    return next(m for m in models if m["name"] == name)


def test_the_picker_lists_every_served_model(page, server, serve_runs):
    names = [m["name"] for m in page.request.get(server + "/v1/models").json()["models"]]
    assert sorted(names) == sorted(serve_runs)
    assert page.locator("#model option").evaluate_all("os => os.map(o => o.value)") == names


def test_images_are_generated_with_the_chosen_controls(page, server, serve_runs, shots):
    choose(page, "ddpm")
    page.wait_for_selector("#images-section", state="visible")
    for hidden in ("#text-section", "#walk-section", "#classify-section", "#translate-section"):
        assert page.locator(hidden).is_hidden()
    info = info_of(page, server, "ddpm")
    assert page.locator("#label option").all_text_contents() == ["none", *info["classes"]]
    assert page.locator("#ctl-steps").get_attribute("max") == str(info["controls"]["steps"]["max"])
    assert page.locator("#ctl-sampler option").all_text_contents() == info["controls"]["sampler"]["choices"]
    page.fill("#n", "6")
    page.select_option("#label", label="3")
    page.fill("#ctl-steps", "4")
    page.fill("#seed", "7")
    with page.expect_request("**/v1/models/ddpm/images") as sent:
        page.click("#generate")
    assert sent.value.post_data_json == {"n": 6, "seed": 7, "label": 3, "steps": 4}
    expect_images(page, "#grid img", 6)
    sizes = page.locator("#grid img").evaluate_all(
        "els => els.map(i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width,"
        " getComputedStyle(i).imageRendering])")
    assert all(s[:2] == [8, 8] and s[2] >= 64 and s[3] == "pixelated" for s in sizes), sizes
    srcs = page.locator("#grid img").evaluate_all("els => els.map(i => i.src)")
    assert all(s.startswith("data:image/png;base64,") for s in srcs) and len(set(srcs)) > 1
    weights = json.loads((serve_runs["ddpm"] / "checkpoint.json").read_text())["files"]["model.safetensors"]
    prov = page.inner_text("#provenance")
    assert "AI-generated" in prov and weights[:16] in prov and "seed 7" in prov, prov
    screenshot(page, shots, "images", keep=True)


def expect_images(page, selector, n):
    page.wait_for_function(
        "([sel, n]) => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=[selector, n])


def test_an_api_error_names_the_field_and_clears_on_success(page, shots):
    choose(page, "ddpm")
    assert page.locator("#error").is_hidden()
    page.fill("#n", "1000")
    page.click("#generate")
    page.wait_for_selector("#error", state="visible")
    assert page.locator("#error .field").all_text_contents() == ["n"]
    assert "422" in page.inner_text("#error")
    assert "invalid" in page.get_attribute("#n", "class")
    screenshot(page, shots, "error")
    page.fill("#n", "2")
    page.click("#generate")
    page.wait_for_selector("#error", state="hidden")
    expect_images(page, "#grid img", 2)
    assert not page.get_attribute("#n", "class")


def test_text_streams_token_by_token_into_the_output(page, server, shots):
    choose(page, "gpt")
    page.wait_for_selector("#text-section", state="visible")
    assert page.locator("#images-section").is_hidden()
    page.fill("#prompt", "def ")
    page.fill("#ctl-max_new_tokens", "200")
    page.fill("#text-seed", "3")
    # every length the completion is shown at while the answer streams in
    page.evaluate("""() => {
        const c = document.querySelector('#text-completion');
        window.seenLengths = [];
        new MutationObserver(() => window.seenLengths.push(c.textContent.length))
            .observe(c, {childList: true, characterData: true, subtree: true});
    }""")
    with page.expect_request("**/v1/models/gpt/text") as sent:
        page.click("#generate-text")
    body = sent.value.post_data_json
    assert body == {"prompt": "def ", "seed": 3, "stream": True, "max_new_tokens": 200}
    page.wait_for_selector("#text-output[data-done=true]")
    out = page.locator("#text-output")
    completion, streamed = out.get_attribute("data-completion"), out.get_attribute("data-streamed")
    assert completion and streamed == completion == page.inner_text("#text-completion")
    seen = page.evaluate("window.seenLengths")
    partial = {n for n in seen if 0 < n < len(completion)}
    assert partial, f"the completion appeared at once, not as a stream: lengths seen {seen}"
    assert page.inner_text("#text-prompt") == "def "
    # the same request without streaming gives the same text (the seed travels with the request)
    plain = page.request.post(server + "/v1/models/gpt/text", data={**body, "stream": False}).json()
    assert plain["completion"] == completion
    assert plain["finish_reason"] == out.get_attribute("data-finish")
    screenshot(page, shots, "text")


def test_the_latent_walk_slider_switches_frames(page, shots):
    with page.expect_request("**/v1/models/vae/interpolate") as sent:
        choose(page, "vae")
    assert sent.value.post_data_json == {"seeds": [0, 1], "frames": 11}     # unconditional: no label
    page.wait_for_selector("#walk-section", state="visible")
    assert page.locator("#walk-label").is_hidden()
    image, slider = page.locator("#walk-image"), page.locator("#walk-slider")
    page.wait_for_function("() => document.querySelector('#walk-image').naturalWidth > 0")
    assert slider.get_attribute("max") == "10"
    slider.focus()
    page.keyboard.press("Home")
    first, first_pixels = image.get_attribute("src"), pixels(page, "#walk-image")
    page.keyboard.press("End")
    last = image.get_attribute("src")
    assert first.startswith("data:image/png;base64,") and first != last
    assert pixels(page, "#walk-image") != first_pixels
    assert page.inner_text("#walk-frame") == "frame 11 of 11"
    assert image.bounding_box()["width"] >= 128
    assert "AI-generated" in page.inner_text("#walk-provenance") and "seed 0 1" in page.inner_text("#walk-provenance")
    screenshot(page, shots, "walk")
    # a new end seed fetches a new walk: the last frame changes, the first (seed 0) does not
    with page.expect_request("**/v1/models/vae/interpolate") as sent:
        page.fill("#walk-seed-b", "5")
        page.press("#walk-seed-b", "Tab")
    assert sent.value.post_data_json["seeds"] == [0, 5]
    page.wait_for_function("old => document.querySelector('#walk-image').src !== old", arg=last)
    assert pixels(page, "#walk-image") != first_pixels
    slider.focus()
    page.keyboard.press("Home")
    assert pixels(page, "#walk-image") == first_pixels     # the PNG's bytes differ: its provenance names seed 5


def pixels(page, selector):
    """The shown image's decoded RGBA values (once it has loaded)."""
    return page.evaluate("""async sel => {
        const img = document.querySelector(sel);
        await img.decode();
        const c = Object.assign(document.createElement('canvas'), {width: img.naturalWidth, height: img.naturalHeight});
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
    }""", selector)


def test_classify_shades_tokens_by_attention(page, server, shots):
    choose(page, "textclf")
    page.wait_for_selector("#classify-section", state="visible")
    text = "Return the number of seconds since the epoch."
    page.fill("#classify-input", text)
    page.click("#classify")
    page.wait_for_selector("#classify-tokens span")
    spans = page.locator("#classify-tokens span").evaluate_all(
        "els => els.map(s => [s.textContent, s.title, getComputedStyle(s).backgroundColor])")
    assert "".join(s[0] for s in spans) == text
    weights = [float(s[1]) for s in spans]
    assert abs(sum(weights) - 1) < 0.01
    alphas = []
    for _, _, colour in spans:
        parts = re.findall(r"[\d.]+", colour)
        alphas.append(float(parts[3]) if len(parts) == 4 else 1.0)
    top = max(weights)
    assert max(alphas) == 1.0
    assert all(abs(a - w / top) < 0.01 for a, w in zip(alphas, weights)), (alphas, weights)
    classes = info_of(page, server, "textclf")["classes"]
    assert page.inner_text("#classify-label") in classes
    assert 1 <= page.locator("#classify-probs li").count() <= 5
    screenshot(page, shots, "classify")


def test_translate_sends_the_beam_and_shows_the_translation(page, server, shots):
    choose(page, "seq2seq")
    page.wait_for_selector("#translate-section", state="visible")
    beams = page.locator("#ctl-beam option").all_text_contents()
    assert beams[0] == "1" and "3" in beams
    text = "Tuesday, March 3, 2026"
    page.fill("#translate-input", text)
    page.select_option("#ctl-beam", "3")
    page.evaluate("() => { document.querySelector('#translation').textContent = '(waiting)'; }")
    with page.expect_request("**/v1/models/seq2seq/translate") as sent:
        page.click("#translate")
    assert sent.value.post_data_json == {"text": text, "beam": 3}
    page.wait_for_function("() => document.querySelector('#translation').textContent !== '(waiting)'")
    expected = page.request.post(server + "/v1/models/seq2seq/translate", data={"text": text, "beam": 3})
    assert page.locator("#translation").text_content() == expected.json()["translation"]
    # a character outside the model's vocabulary is a 422 on `text`
    page.fill("#translate-input", "\u2603")
    page.click("#translate")
    page.wait_for_selector("#error", state="visible")
    assert page.locator("#error .field").all_text_contents() == ["text"]
    assert "invalid" in page.get_attribute("#translate-input", "class")
    screenshot(page, shots, "translate")


def test_a_token_protected_server_works_after_opening_the_page_with_the_token(browser, serve_runs):
    from serve_util import running_server
    with running_server([serve_runs["vae"]], token="s3cret") as base:
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        assert pg.goto(base + "/").status == 401
        assert pg.goto(base + "/?token=s3cret").status == 200
        pg.wait_for_selector("body[data-ready=true]")
        assert pg.locator("#model option").all_text_contents() == ["vae (vae)"]
        pg.wait_for_function("() => document.querySelector('#walk-image').naturalWidth > 0")   # a POST, by cookie
        assert pg.goto(base + "/").status == 200                                                   # remembered
        pg.wait_for_function("() => document.querySelector('#walk-image').naturalWidth > 0")
        assert pg.locator("#error").is_hidden()
        context.close()


def test_a_conditional_gan_walks_with_an_optional_label_and_truncation(page, server):
    with page.expect_request("**/v1/models/gan/interpolate") as sent:
        choose(page, "gan")
    assert sent.value.post_data_json == {"seeds": [0, 1], "frames": 11, "label": None}
    info = info_of(page, server, "gan")
    assert page.locator("#walk-label option").all_text_contents() == ["none", *info["classes"]]
    page.wait_for_function("() => document.querySelector('#walk-image').naturalWidth > 0")
    truncation = page.locator("#ctl-truncation")
    assert truncation.input_value() == "" and truncation.get_attribute("max") == "10"
    truncation.fill("0.5")
    page.fill("#n", "3")
    page.fill("#seed", "2")
    page.select_option("#label", label=info["classes"][2])
    with page.expect_request("**/v1/models/gan/images") as sent:
        page.click("#generate")
    assert sent.value.post_data_json == {"n": 3, "seed": 2, "label": 2, "truncation": 0.5}
    expect_images(page, "#grid img", 3)
    assert page.locator("#error").is_hidden()


def test_a_route_without_a_panel_gets_a_form_built_from_its_request_schema(browser, tmp_path, monkeypatch):
    """A new kind's route (tests/test_new_kind.py's toy signals) is usable from the page with no edit to it."""
    from serve_util import running_server
    from test_new_kind import register_toy, train_toy

    register_toy(monkeypatch)
    run = train_toy(tmp_path / "sig", "--conditional")
    with running_server([run]) as base:
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        errors = []
        pg.on("pageerror", lambda err: errors.append(str(err)))
        pg.goto(base + "/")
        pg.wait_for_selector("body[data-ready=true]")
        assert pg.locator("#images-section").is_hidden() and pg.locator("#generic-section").is_visible()
        assert pg.inner_text("#generic-title") == "POST /v1/models/sig/signals"
        pg.wait_for_function("() => document.querySelector('#generic-body').value.includes('seed')")
        assert json.loads(pg.input_value("#generic-body")) == {"n": 1, "seed": 0, "label": None, "scale": None}
        pg.fill("#generic-body", json.dumps({"n": 2, "seed": 4, "label": 1}))
        with pg.expect_request("**/v1/models/sig/signals") as sent:
            pg.click("#generic-send")
        assert sent.value.post_data_json == {"n": 2, "seed": 4, "label": 1}
        pg.wait_for_function("() => document.querySelector('#generic-output').textContent.includes('signals')")
        shown = json.loads(pg.inner_text("#generic-output"))
        assert len(shown["signals"]) == 2 and len(shown["signals"][0]) == 32
        pg.fill("#generic-body", json.dumps({"label": 9}))      # the server's 422 lands in the error box
        pg.click("#generic-send")
        pg.wait_for_selector("#error:not([hidden])")
        assert "label" in pg.inner_text("#error")
        assert not errors
        context.close()


def ready_page(browser, base: str):
    """A fresh browser context and its page, opened at the server's page once it says it is ready."""
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(base + "/")
    pg.wait_for_selector("body[data-ready=true]")
    return context, pg


@needs_espeak
def test_the_audio_panel_plays_clips_of_the_expected_length(browser, tmp_path):
    from serve_util import running_server

    from genlab.cli import main

    run = tmp_path / "wavegan"
    assert main(["train", "wavegan", "--data", "spoken-digits", "--set", "data.count=200", "--conditional",
                 "--preset", "tiny", "--steps", "2", "--out", str(run), "--no-progress"]) == 0
    with running_server([run]) as base:
        context, pg = ready_page(browser, base)
        assert pg.locator("#audio-section").is_visible() and pg.locator("#images-section").is_hidden()
        assert pg.locator("#audio-label option").count() == 11           # none, and the ten digits
        pg.fill("#audio-n", "3")
        pg.select_option("#audio-label", "4")
        with pg.expect_request("**/v1/models/wavegan/audio") as sent:
            pg.click("#generate-audio")
        assert sent.value.post_data_json == {"n": 3, "seed": 0, "label": 4}
        pg.wait_for_function("() => [...document.querySelectorAll('#audio-clips audio')].length === 3 && "
                             "[...document.querySelectorAll('#audio-clips audio')].every(a => a.readyState >= 1)")
        durations = pg.eval_on_selector_all("#audio-clips audio", "els => els.map(a => a.duration)")
        assert durations == [pytest.approx(1.0, abs=0.01)] * 3
        pg.wait_for_function("() => document.querySelector('#audio-spectrogram').naturalWidth > 0")
        assert "AI-generated" in pg.inner_text("#audio-provenance")
        context.close()


def test_the_music_panel_plays_each_piece_and_shows_its_piano_roll(browser, music_run):
    from serve_util import running_server

    from genlab.kinds.music.prepare import RENDER_RATE
    from genlab.musicio import render_wav

    run, _ = music_run
    with running_server([run]) as base:
        context, pg = ready_page(browser, base)
        assert pg.locator("#music-section").is_visible() and pg.locator("#text-section").is_hidden()
        pg.fill("#music-n", "2")
        pg.fill("#music-seed", "7")
        pg.fill("#music-prompt", "bar v0 p72 d4 v3 p48 d4")
        pg.fill("#music-controls [data-field=max_new_tokens]", "40")
        with pg.expect_request("**/v1/models/gpt/music") as sent:
            pg.click("#generate-music")
        body = sent.value.post_data_json
        assert {k: body[k] for k in ("n", "seed", "prompt", "tempo_bpm", "max_new_tokens")} == \
            {"n": 2, "seed": 7, "prompt": "bar v0 p72 d4 v3 p48 d4", "tempo_bpm": 90, "max_new_tokens": 40}
        pg.wait_for_function("() => [...document.querySelectorAll('#music-pieces audio')].length === 2 && "
                             "[...document.querySelectorAll('#music-pieces audio')].every(a => a.readyState >= 1)")
        durations = pg.eval_on_selector_all("#music-pieces audio", "els => els.map(a => a.duration)")
        texts = pg.eval_on_selector_all("#music-pieces code", "els => els.map(c => c.textContent)")
        assert all(t.startswith("bar v0 p72 d4 v3 p48 d4") for t in texts)
        expected = [len(render_wav(t, RENDER_RATE)) / RENDER_RATE for t in texts]
        assert durations == [pytest.approx(d, abs=0.01) for d in expected]
        assert pg.eval_on_selector_all("#music-pieces a[download]",
                                       "els => els.map(a => a.href.startsWith('data:audio/midi;base64,'))") == [True] * 2
        pg.wait_for_function("() => document.querySelector('#music-roll').naturalWidth > 0")
        assert "AI-generated" in pg.inner_text("#music-provenance")
        context.close()


def test_the_video_panel_plays_the_clip_as_an_animation(browser, video_run):
    from serve_util import running_server

    with running_server([video_run]) as base:
        context, pg = ready_page(browser, base)
        assert pg.locator("#video-section").is_visible() and pg.locator("#images-section").is_hidden()
        assert pg.locator("#video-label option").count() == 5            # none, and the four shapes
        pg.fill("#video-n", "2")
        pg.select_option("#video-label", "1")
        with pg.expect_request("**/v1/models/video-ddpm/video") as sent:
            pg.click("#generate-video")
        assert sent.value.post_data_json == {"n": 2, "seed": 0, "format": "gif", "label": 1}
        pg.wait_for_function("() => document.querySelector('#video-gif').naturalWidth > 0 && "
                             "document.querySelector('#video-filmstrip').naturalWidth > 0")
        gif = pg.locator("#video-gif")
        shots = []
        for _ in range(6):   # 8 frames at 8 fps: the picture changes between screenshots 0.15 s apart
            shots.append(gif.screenshot())
            pg.wait_for_timeout(150)
        assert len(set(shots)) > 1, "the GIF does not animate"
        assert "AI-generated" in pg.inner_text("#video-provenance")
        pg.select_option("#video-format", "mp4")
        pg.click("#generate-video")
        pg.wait_for_function("() => { const v = document.querySelector('#video-mp4'); "
                             "return !v.hidden && v.readyState >= 1 && v.duration > 0; }")
        assert pg.eval_on_selector("#video-mp4", "v => v.duration") == pytest.approx(1.0, abs=0.2)
        assert pg.locator("#video-gif").is_hidden()
        context.close()


def test_the_image2image_panel_sends_the_drawing_or_the_upload_and_shows_the_translation(browser, pair_run, tmp_path):
    import base64
    import io

    import numpy as np
    from PIL import Image
    from serve_util import running_server

    with running_server([pair_run]) as base:
        pg = browser.new_page(viewport={"width": 1100, "height": 900})
        errors = []
        pg.on("pageerror", lambda err: errors.append(str(err)))
        pg.goto(base + "/")
        pg.wait_for_selector("body[data-ready=true]")
        assert pg.locator("#image2image-section").is_visible() and pg.locator("#images-section").is_hidden()
        assert pg.locator("#i2i-controls [data-control=dropout]").count() == 1
        box = pg.locator("#i2i-canvas").bounding_box()
        pg.mouse.move(box["x"] + 60, box["y"] + 60)       # a stroke across the upper half, left to right
        pg.mouse.down()
        pg.mouse.move(box["x"] + 200, box["y"] + 60, steps=8)
        pg.mouse.up()
        with pg.expect_request("**/v1/models/pix2pix/image2image") as sent:
            pg.click("#translate-image")
        body = json.loads(sent.value.post_data)
        assert body["image"].startswith("data:image/png;base64,") and body["n"] == 1
        drawn = np.array(Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1]))).convert("L"))
        assert drawn[60, 130] > 200 and drawn[200, 130] < 10       # the stroke is in the request, nothing below it
        pg.wait_for_function("() => document.querySelector('#i2i-output').naturalWidth > 0 && "
                             "document.querySelector('#i2i-input').naturalWidth > 0")
        seen = pg.eval_on_selector("#i2i-input", "i => i.src")
        small = np.array(Image.open(io.BytesIO(base64.b64decode(seen.split(",", 1)[1]))))
        assert small.shape[:2] == (16, 16) and small[3:5].mean() > small[10:].mean() + 20   # resized, stroke on top
        assert "AI-generated" in pg.inner_text("#i2i-provenance")
        upload = tmp_path / "square.png"
        square = np.zeros((40, 40), np.uint8)
        square[25:35, 5:35] = 255                                       # a bar in the lower part
        Image.fromarray(square).save(upload)
        pg.set_input_files("#i2i-file", str(upload))
        pg.wait_for_function("() => document.querySelector('#i2i-canvas').getContext('2d')"
                             ".getImageData(128, 190, 1, 1).data[0] > 200")
        with pg.expect_request("**/v1/models/pix2pix/image2image") as sent:
            pg.click("#translate-image")
        uploaded = np.array(Image.open(io.BytesIO(base64.b64decode(
            json.loads(sent.value.post_data)["image"].split(",", 1)[1]))).convert("L"))
        assert uploaded[190, 128] > 200 and uploaded[60, 130] < 10     # the upload replaced the drawing
        assert not errors, errors
        pg.close()
