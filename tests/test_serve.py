"""genlab serve against a real server on 127.0.0.1: every route, the guard rails, auth, dynamic
batching (merged requests get exactly their samples alone) and streaming."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from serve_util import running_server

import genlab
from genlab.imageio import to_uint8
from genlab.kinds.text.serve import CLASSIFY
from genlab.kinds.text.textgen import generate
from genlab.serve import workers
from genlab.serve.guards import HostCheck


@pytest.fixture(scope="module")
def server(serve_runs):
    with running_server(serve_runs.values(), max_wait_ms=300) as base:
        yield httpx.Client(base_url=base, timeout=60)


@pytest.fixture(scope="module")
def models(serve_runs):
    return {f: genlab.load(d, device="cpu") for f, d in serve_runs.items()}


def pngs(body: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in body["images"]]


def alone(model, n, label, seed, **controls) -> list[np.ndarray]:
    x = genlab.sample(model, n, cond=label, seed=seed, **controls)
    return [a[:, :, 0] for a in to_uint8(x)]


def batch_stats(client, model: str, kind: str) -> tuple[float, float]:
    """(batches, requests) the server ran for model and kind, from /metrics."""
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        if fam.name == "genlab_batch_requests":
            got = {s.name: s.value for s in fam.samples if s.labels.get("model") == model
                   and s.labels.get("kind") == kind and not s.name.endswith("_bucket")}
            return got.get("genlab_batch_requests_count", 0), got.get("genlab_batch_requests_sum", 0)
    return 0, 0


def concurrently(fn, args: list) -> list:
    barrier = threading.Barrier(len(args))

    def call(a):
        barrier.wait()
        return fn(a)

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(call, args))


# ---- routes ----------------------------------------------------------------------------------


def test_health_ready_and_model_list(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    info = {m["name"]: m for m in server.get("/v1/models").json()["models"]}
    assert set(info) == {"ddpm", "vae", "gan", "gpt", "lstm", "seq2seq", "textclf"}
    assert info["ddpm"]["conditioning"] == "labels" and info["ddpm"]["classes"][:3] == ["0", "1", "2"]
    assert set(info["ddpm"]["controls"]) == {"steps", "sampler", "eta", "guidance"}
    assert info["ddpm"]["image"] == {"channels": 1, "size": 8} and info["ddpm"]["routes"] == ["images"]
    assert info["vae"]["conditioning"] == "none" and info["vae"]["routes"] == ["images", "interpolate"]
    assert set(info["gan"]["controls"]) == {"truncation"} and info["gan"]["latent"] is True
    assert info["gpt"]["conditioning"] == "prompt" and info["gpt"]["routes"] == ["text"]
    assert info["seq2seq"]["routes"] == ["translate"] and info["textclf"]["routes"] == ["classify"]
    assert info["textclf"]["classes"] and all(m["dataset"] for m in info.values())


def test_images_are_the_samples_genlab_sample_gives_with_provenance(server, models):
    r = server.post("/v1/models/ddpm/images", json={"n": 3, "label": 4, "seed": 11, "steps": 5, "guidance": 2.0})
    assert r.status_code == 200, r.text
    body = r.json()
    got = pngs(body)
    want = alone(models["ddpm"], 3, 4, 11, steps=5, guidance=2.0)
    assert len(got) == 3 and got[0].shape == (8, 8)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    meta = Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).text
    assert meta["AI-Generated"] == "true" and meta["genlab:seed"] == "11"
    assert meta == body["provenance"] and meta["genlab:run"] == "ddpm"
    assert json.loads(meta["genlab:settings"]) == {"label": 4, "steps": 5, "guidance": 2.0, "sampler": "ddim",
                                                   "eta": 0.0}
    ck = json.loads((models["ddpm"].run.path / "checkpoint.json").read_text())
    assert meta["genlab:weights_sha256"] == ck["files"]["model.safetensors"]


def test_accept_png_returns_one_grid_with_metadata(server):
    r = server.post("/v1/models/vae/images", json={"n": 4, "seed": 2}, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.width > 16 and img.text["genlab:seed"] == "2" and img.text["AI-Generated"] == "true"


def test_interpolate_walks_from_seed_a_to_seed_b(server, models):
    r = server.post("/v1/models/vae/interpolate", json={"seeds": [3, 8], "frames": 5})
    assert r.status_code == 200, r.text
    frames = pngs(r.json())
    assert len(frames) == 5
    assert np.array_equal(frames[0], alone(models["vae"], 1, None, 3)[0])
    assert np.array_equal(frames[-1], alone(models["vae"], 1, None, 8)[0])
    assert not np.array_equal(frames[1], frames[3])


def test_text_equals_generate_alone(server, models):
    req = {"prompt": "def ", "max_new_tokens": 40, "temperature": 0.8, "top_k": 20, "seed": 5}
    body = server.post("/v1/models/gpt/text", json=req).json()
    want = generate(models["gpt"], "def ", 1, seed=5, max_new_tokens=40, temperature=0.8, top_k=20)[0]
    assert body["text"] == want and body["text"] == "def " + body["completion"]
    assert body["finish_reason"] in ("eos", "length") and 0 < body["tokens"] <= 40
    assert body["provenance"]["genlab:run"] == "gpt"


def test_stop_strings_cut_the_completion(server):
    base = server.post("/v1/models/lstm/text", json={"max_new_tokens": 30, "seed": 1}).json()["completion"]
    assert len(base) >= 6
    stop = base[len(base) // 2:len(base) // 2 + 2]
    body = server.post("/v1/models/lstm/text", json={"max_new_tokens": 30, "seed": 1, "stop": [stop]}).json()
    assert body["completion"] == base[:base.index(stop)] and body["finish_reason"] == "stop"


def sse(client, path, body) -> list[tuple[str, dict]]:
    events, kind = [], "message"
    with client.stream("POST", path, json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                kind = "message"
    return events


def test_streaming_sends_each_token_then_done(server):
    events = sse(server, "/v1/models/lstm/text", {"prompt": "import ", "max_new_tokens": 25, "seed": 3, "stream": True})
    pieces = [e["text"] for k, e in events if k == "message"]
    kind, done = events[-1]
    assert kind == "done" and len(pieces) >= 5
    assert "".join(pieces) == done["completion"] and done["text"] == "import " + done["completion"]
    plain = server.post("/v1/models/lstm/text", json={"prompt": "import ", "max_new_tokens": 25, "seed": 3}).json()
    assert plain["completion"] == done["completion"]


def test_stream_with_stop_never_sends_the_stop_string(server):
    full = server.post("/v1/models/gpt/text", json={"max_new_tokens": 30, "seed": 4}).json()["completion"]
    assert len(full) >= 6
    stop = full[len(full) // 2:len(full) // 2 + 2]
    events = sse(server, "/v1/models/gpt/text", {"max_new_tokens": 30, "seed": 4, "stop": [stop], "stream": True})
    pieces = "".join(e["text"] for k, e in events if k == "message")
    assert pieces == full[:full.index(stop)] == events[-1][1]["completion"]


def test_translate_and_classify(server, models):
    r = server.post("/v1/models/seq2seq/translate", json={"text": "March 3, 2021", "beam": 2, "max_new_tokens": 12})
    assert r.status_code == 200, r.text
    from genlab.kinds.text.textgen import classify, translate
    assert r.json()["translation"] == translate(models["seq2seq"], ["March 3, 2021"], beam=2, max_new_tokens=12)[0]
    c = server.post("/v1/models/textclf/classify", json={"text": "Return the sum of a and b."}).json()
    want = classify(models["textclf"], ["Return the sum of a and b."])[0]
    assert c["label"] == want.label and c["tokens"] == want.tokens
    assert len(c["weights"]) == len(c["tokens"]) and sum(c["weights"]) == pytest.approx(1, abs=1e-5)
    assert set(c["probs"]) == set(models["textclf"].run.classes)


# ---- dynamic batching ------------------------------------------------------------------------


def test_concurrent_image_requests_merge_and_each_gets_its_samples_alone(server, models):
    before = batch_stats(server, "ddpm", "images")
    reqs = [{"n": 2, "label": 1, "seed": 1}, {"n": 3, "label": 4, "seed": 2}, {"n": 1, "label": 1, "seed": 3},
            {"n": 2, "label": 9, "seed": 4}]
    controls = {"steps": 4, "eta": 0.5, "guidance": 2.0}  # eta > 0: fresh noise every step, per request
    bodies = concurrently(lambda q: server.post("/v1/models/ddpm/images", json={**q, **controls}).json(), reqs)
    batches, merged = (a - b for a, b in zip(batch_stats(server, "ddpm", "images"), before))
    assert merged == len(reqs) and batches < len(reqs), "the concurrent requests were not merged"
    for q, body in zip(reqs, bodies):
        want = alone(models["ddpm"], q["n"], q["label"], q["seed"], **controls)
        assert all(np.array_equal(g, w) for g, w in zip(pngs(body), want)), q


def test_ddpm_requests_with_different_settings_never_share_a_batch(server, models):
    before = batch_stats(server, "ddpm", "images")
    reqs = [{"seed": 1, "steps": 3}, {"seed": 1, "steps": 4}, {"seed": 1, "steps": 3, "label": 2}]
    bodies = concurrently(lambda q: server.post("/v1/models/ddpm/images", json=q).json(), reqs)
    batches, merged = (a - b for a, b in zip(batch_stats(server, "ddpm", "images"), before))
    assert (batches, merged) == (3, 3)
    for q, body in zip(reqs, bodies):
        assert np.array_equal(pngs(body)[0], alone(models["ddpm"], 1, q.get("label"), 1, steps=q["steps"])[0])
    assert bodies[0]["settings"] == {"label": None, "steps": 3, "sampler": "ddim", "eta": 0.0, "guidance": 1.0}


def test_explicit_nulls_mean_defaults(server):
    r = server.post("/v1/models/ddpm/images", json={"guidance": None, "steps": None, "sampler": "ddim"})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["steps"] == 50


def test_gan_batches_mix_labels_truncation_and_drawn_labels(server, models):
    before = batch_stats(server, "gan", "images")
    reqs = [{"n": 2, "seed": 5}, {"n": 3, "label": 7, "seed": 6, "truncation": 0.7}, {"n": 1, "seed": 9, "label": 0}]
    bodies = concurrently(lambda q: server.post("/v1/models/gan/images", json=q).json(), reqs)
    batches, merged = (a - b for a, b in zip(batch_stats(server, "gan", "images"), before))
    assert merged == len(reqs) and batches < len(reqs), "the concurrent requests were not merged"
    for q, body in zip(reqs, bodies):
        ctl = {"truncation": q["truncation"]} if "truncation" in q else {}
        want = alone(models["gan"], q["n"], q.get("label"), q["seed"], **ctl)
        assert all(np.array_equal(g, w) for g, w in zip(pngs(body), want)), q


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_concurrent_text_requests_merge_and_equal_generate_alone(server, models, family):
    before = batch_stats(server, family, "text")
    reqs = [{"prompt": "def ", "seed": 0, "temperature": 0.8},
            {"prompt": "import os\nimport sys\nfrom collections import deque\n", "seed": 1, "top_k": 5},
            {"prompt": "", "seed": 2, "top_p": 0.9, "max_new_tokens": 7},
            {"prompt": "class A:", "seed": 3, "temperature": 0.0}]
    bodies = concurrently(lambda q: server.post(f"/v1/models/{family}/text",
                                                json={"max_new_tokens": 40, **q}).json(), reqs)
    batches, merged = (a - b for a, b in zip(batch_stats(server, family, "text"), before))
    assert merged == len(reqs) and batches < len(reqs), "the concurrent requests were not merged"
    for q, body in zip(reqs, bodies):
        knobs = {k: q[k] for k in ("temperature", "top_k", "top_p") if k in q}
        want = generate(models[family], q["prompt"], 1, seed=q["seed"], max_new_tokens=q.get("max_new_tokens", 40),
                        **knobs)[0]
        assert body["text"] == want, q


def test_max_batch_1_never_merges(serve_runs):
    with running_server([serve_runs["vae"]], max_batch=1, max_wait_ms=200) as base:
        client = httpx.Client(base_url=base, timeout=60)
        concurrently(lambda s: client.post("/v1/models/vae/images", json={"n": 2, "seed": s}), [0, 1, 2])
        assert batch_stats(client, "vae", "images") == (3, 3)


# ---- guard rails -----------------------------------------------------------------------------


@pytest.mark.parametrize("path,body,field", [
    ("/v1/models/ddpm/images", {"n": 65}, "n"),
    ("/v1/models/ddpm/images", {"n": 0}, "n"),
    ("/v1/models/ddpm/images", {"steps": 5000}, "steps"),
    ("/v1/models/ddpm/images", {"label": 10}, "label"),
    ("/v1/models/ddpm/images", {"sampler": "euler"}, "sampler"),
    ("/v1/models/ddpm/images", {"guidance": 3.0}, "guidance"),
    ("/v1/models/ddpm/images", {"n": "many"}, "n"),
    ("/v1/models/ddpm/images", {"colour": "red"}, "colour"),
    ("/v1/models/vae/images", {"truncation": 0.5}, "truncation"),
    ("/v1/models/vae/images", {"label": 1}, "label"),
    ("/v1/models/vae/interpolate", {"frames": 1}, "frames"),
    ("/v1/models/gpt/text", {"max_new_tokens": 513}, "max_new_tokens"),
    ("/v1/models/gpt/text", {"top_p": 0}, "top_p"),
    ("/v1/models/gpt/text", {"prompt": "\u2603 snowman"}, "prompt"),
    ("/v1/models/seq2seq/translate", {"text": ""}, "text"),
    ("/v1/models/seq2seq/translate", {"text": "May 1, 2020", "beam": 99}, "beam"),
    ("/v1/models/textclf/classify", {}, "text"),
])
def test_bad_requests_get_a_422_naming_the_field(server, path, body, field):
    r = server.post(path, json=body)
    assert r.status_code == 422, r.text
    assert any(field in d["loc"] for d in r.json()["detail"]), r.json()


def test_unknown_model_and_wrong_route_are_404(server):
    r = server.post("/v1/models/nope/images", json={})
    assert r.status_code == 404 and "ddpm" in r.json()["detail"]
    r = server.post("/v1/models/gpt/images", json={})
    assert r.status_code == 404 and "text" in r.json()["detail"]


def test_body_limit_413_with_and_without_content_length(server):
    assert server.post("/v1/models/gpt/text", content=b"{" + b" " * 70000 + b"}").status_code == 413

    def chunks():
        yield b'{"prompt": "'
        for _ in range(80):
            yield b"a" * 1000
        yield b'"}'
    r = server.post("/v1/models/gpt/text", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max-body" in r.json()["detail"]


def test_timeout_is_504_and_the_abandoned_work_stops(serve_runs):
    with running_server([serve_runs["ddpm"]], timeout=0.5) as base:
        client = httpx.Client(base_url=base, timeout=60)
        r = client.post("/v1/models/ddpm/images", json={"n": 32, "steps": 1000})  # seconds of work
        assert r.status_code == 504 and "timeout" in r.json()["detail"]
        # the worker gave the abandoned batch up at its next step, so a small request fits in the limit
        assert client.post("/v1/models/ddpm/images", json={"steps": 2}).status_code == 200


def test_a_failing_request_fails_alone_and_the_server_stays_up(server, monkeypatch):
    real = CLASSIFY.run

    def fussy(s, jobs):
        if any(j.payload.text == "bad" for j in jobs):
            raise RuntimeError("simulated failure inside the model")
        return real(s, jobs)
    monkeypatch.setattr(CLASSIFY, "run", fussy)
    bad, good = concurrently(lambda t: server.post("/v1/models/textclf/classify", json={"text": t}), ["bad", "good"])
    assert bad.status_code == 500 and "simulated failure" in bad.json()["detail"]
    assert good.status_code == 200 and good.json()["label"]  # it may have shared the failed batch, then ran alone
    assert server.get("/healthz").status_code == 200


def tokens_generated(client, model: str) -> float:
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        if fam.name == "genlab_generated_tokens":
            return sum(s.value for s in fam.samples if s.name.endswith("_total") and s.labels["model"] == model)
    return 0.0


def test_a_stream_whose_client_leaves_stops_generating(server):
    whole = server.post("/v1/models/lstm/text", json={"max_new_tokens": 500, "temperature": 0.0}).json()
    assert whole["tokens"] == 500  # left alone, this request runs to its limit
    before = tokens_generated(server, "lstm")
    with server.stream("POST", "/v1/models/lstm/text", json={"max_new_tokens": 500, "stream": True,
                                                             "temperature": 0.0}) as r:
        next(r.iter_lines())
    done = server.post("/v1/models/lstm/text", json={"max_new_tokens": 3, "temperature": 0.0}).json()
    assert done["tokens"] == 3  # the worker is free again: the abandoned row ended long before 500
    assert 3 < tokens_generated(server, "lstm") - before < 3 + 500


def test_walk_seeds_out_of_range_are_a_422(server):
    r = server.post("/v1/models/vae/interpolate", json={"seeds": [0, 2**70]})
    assert r.status_code == 422 and "seeds" in r.json()["detail"][0]["loc"]


def test_token_auth(serve_runs):
    with running_server([serve_runs["vae"]], token="s3cret") as base:
        plain = httpx.Client(base_url=base, timeout=60)
        assert plain.get("/healthz").status_code == 200
        for method, path in [("GET", "/readyz"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/"),
                             ("POST", "/v1/models/vae/images")]:
            r = plain.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        wrong = httpx.Client(base_url=base, headers={"Authorization": "Bearer nope"})
        assert wrong.get("/v1/models").status_code == 401
        good = httpx.Client(base_url=base, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert good.post("/v1/models/vae/images", json={"n": 1}).status_code == 200
        browser = httpx.Client(base_url=base, timeout=60)  # the page link sets a cookie for what follows
        assert browser.get("/?token=s3cret").status_code == 200
        assert browser.get("/v1/models").status_code == 200
        port = base.rsplit(":", 1)[1]  # a stray malformed cookie of another app on the host does not hide ours
        r = httpx.get(base + "/v1/models", headers={"Cookie": f"x=a b; genlab_token_{port}=s3cret"})
        assert r.status_code == 200
        assert httpx.get(base + "/v1/models", headers={"Cookie": "genlab_token_1=s3cret"}).status_code == 401


def test_metrics_report_routes_latency_batches_and_queue(server):
    server.post("/v1/models/vae/images", json={"n": 2})
    server.post("/v1/models/nope/images", json={})
    fams = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    reqs = {(s.labels["route"], s.labels["status"]): s.value for s in fams["genlab_requests"].samples
            if s.name == "genlab_requests_total"}
    assert reqs[("/v1/models/{name}/images", "200")] >= 1 and reqs[("/v1/models/{name}/images", "404")] >= 1
    assert any(s.name == "genlab_request_seconds_bucket" for s in fams["genlab_request_seconds"].samples)
    assert any(s.labels.get("model") == "vae" for s in fams["genlab_batch_rows"].samples)
    assert {s.labels["model"] for s in fams["genlab_queue_depth"].samples} >= {"ddpm", "gpt"}


def test_cli_serve_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from genlab.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_noise_parts_equal_each_generator_alone():
    from genlab.models.base import NoiseParts

    parts = NoiseParts([(2, torch.Generator().manual_seed(1)), (3, torch.Generator().manual_seed(2))])
    x = parts.randn((5, 4), torch.device("cpu"))
    assert torch.equal(x[:2], torch.randn(2, 4, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(x[2:], torch.randn(3, 4, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="5 rows"):
        NoiseParts([(2, None)]).randn((5, 4), torch.device("cpu"))


def test_cli_serve_takes_the_token_from_genlab_token(serve_runs, monkeypatch, capsys):
    import uvicorn

    from genlab.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("GENLAB_TOKEN", "from env")
    assert main(["serve", str(serve_runs["vae"]), "--port", "8123", "--max-n", "7", "--allow-host", "a.lan",
                 "--allow-host", "b.lan", "--read-timeout", "3"]) == 0
    settings = seen["app"].state.genlab.settings
    assert (settings.token, settings.max_n, seen["port"]) == ("from env", 7, 8123)
    assert (settings.host, settings.allow_hosts, settings.read_timeout) == ("127.0.0.1", ("a.lan", "b.lan"), 3.0)
    assert seen["http"].keywords == {"read_timeout": 3.0}  # uvicorn runs the protocol with the read deadline
    assert "?token=from%20env" in capsys.readouterr().out


# ---- hardening: Host check, read deadline, unsafe values, failures that keep the connection -----


def connect(client: httpx.Client) -> http.client.HTTPConnection:
    """One keep-alive connection to the client's server (http.client: it never retries or reconnects
    behind our back while the server keeps the connection open)."""
    host, port = str(client.base_url)[7:].rstrip("/").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=60)


def ask(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def test_host_header_must_name_this_server(server):
    base = str(server.base_url).rstrip("/")
    port = base.rsplit(":", 1)[1]
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]:80", "LocalHost"):
        assert server.get("/v1/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.", "[::2]"):
        r = server.get("/v1/models", headers={"Host": host})
        assert r.status_code == 421, host
        assert "--allow-host" in r.json()["detail"] and "127.0.0.1" in r.json()["detail"]
    assert server.post("/v1/models/vae/images", json={}, headers={"Host": "evil.example"}).status_code == 421
    assert server.get("/healthz", headers={"Host": "evil.example"}).status_code == 200


def test_allow_host_adds_names_and_star_allows_any(serve_runs):
    with running_server([serve_runs["vae"]], allow_hosts=("genlab.lan",)) as base:
        assert httpx.get(base + "/v1/models", headers={"Host": "genlab.lan:8080"}).status_code == 200
        assert httpx.get(base + "/v1/models", headers={"Host": "evil.example"}).status_code == 421
        assert httpx.get(base + "/v1/models").status_code == 200
    with running_server([serve_runs["vae"]], allow_hosts=("*",)) as base:
        assert httpx.get(base + "/v1/models", headers={"Host": "evil.example"}).status_code == 200


def test_a_wildcard_bind_answers_to_the_address_the_connection_came_in_on():
    check = HostCheck(None, "0.0.0.0", ("Genlab.lan",))
    assert check.allowed({"server": ("192.168.1.5", 8000)}) == {"0.0.0.0", "192.168.1.5", "genlab.lan"}
    assert check.allowed({"server": ("127.0.0.1", 8000)}) >= {"localhost", "[::1]", "127.0.0.1"}
    assert HostCheck(None, "::1", ()).allowed({"server": ("::1", 8000)}) == {"localhost", "[::1]", "127.0.0.1"}
    assert HostCheck(None, "10.0.0.7", ()).allowed({"server": ("10.0.0.7", 8000)}) == {"10.0.0.7"}


def test_slow_clients_are_cut_off_after_the_read_timeout(serve_runs):
    """A connection that sends nothing, half a request line, or too little of its body is closed
    (recv gives b"" rather than waiting out the socket's own 20 s)."""
    with running_server([serve_runs["vae"]], read_timeout=0.5) as base:
        host, port = base[7:].split(":")
        partial = [b"", b"GET /healthz HT",
                   b"POST /v1/models/vae/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n{\"n\": 1"]
        for sent in partial:
            with socket.create_connection((host, int(port)), timeout=20) as s:
                s.sendall(sent)
                assert s.recv(1024) == b"", sent
        with socket.create_connection((host, int(port)), timeout=20) as s:  # a whole request is answered
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.1 200")
        assert httpx.get(base + "/healthz").status_code == 200


@pytest.mark.parametrize("path,body,field", [
    ("/v1/models/gpt/text", b'{"temperature": NaN}', "temperature"),
    ("/v1/models/gpt/text", b'{"top_p": Infinity}', "top_p"),
    ("/v1/models/gpt/text", b'{"temperature": -Infinity}', "temperature"),
    ("/v1/models/gpt/text", b'{"temperature": 1e400}', "temperature"),
    ("/v1/models/ddpm/images", b'{"eta": NaN}', "eta"),
    ("/v1/models/ddpm/images", b'{"guidance": Infinity}', "guidance"),
    ("/v1/models/gan/images", b'{"truncation": NaN}', "truncation"),
    ("/v1/models/seq2seq/translate", b'{"text": "May 1, 2020", "length_penalty": NaN}', "length_penalty"),
    ("/v1/models/gpt/text", b'{"prompt": "\\ud800"}', "prompt"),
    ("/v1/models/lstm/text", b'{"prompt": "def \\udfff"}', "prompt"),
    ("/v1/models/gpt/text", b'{"stop": ["a", "\\ud800"]}', "stop"),
    ("/v1/models/ddpm/images", b'{"sampler": "\\ud800"}', "sampler"),
    ("/v1/models/seq2seq/translate", b'{"text": "\\ud800"}', "text"),
    ("/v1/models/textclf/classify", b'{"text": "\\udcff"}', "text"),
    ("/v1/models/textclf/classify", b'{"\\ud800": 1, "text": "a"}', "body"),  # an unknown key: not a field
])
def test_nan_infinity_and_lone_surrogates_are_a_422_naming_the_field(server, path, body, field):
    r = server.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert any(field in d["loc"] for d in r.json()["detail"]), r.json()


def test_unsafe_class_names_and_metrics_of_a_run_are_made_safe_at_load(serve_runs, tmp_path, monkeypatch):
    run = shutil.copytree(serve_runs["textclf"], tmp_path / "textclf")
    (run / "eval.json").write_text('{"rows": [{"metric": "accuracy", "value": NaN}, {"metric": "f1", "value": 0.5}]}')
    real = workers.load

    def undecodable_names(run_dir, device=None):  # as a label read from bytes that are not UTF-8
        model = real(run_dir, device=device)
        model.run = dataclasses.replace(model.run, classes=tuple(c + "\udcff" for c in model.run.classes))
        return model
    monkeypatch.setattr(workers, "load", undecodable_names)
    with running_server([run]) as base:
        r = httpx.get(base + "/v1/models")
        assert r.status_code == 200, r.text
        info = r.json()["models"][0]
        assert all(c.endswith("\\udcff") for c in info["classes"])
        assert info["metrics"] == {"accuracy": None, "f1": 0.5}
        c = httpx.post(base + "/v1/models/textclf/classify", json={"text": "Return a."}, timeout=60)
        assert c.status_code == 200 and set(c.json()["probs"]) == set(info["classes"])


def test_a_failed_request_is_one_500_and_the_same_connection_serves_the_next(server, monkeypatch):
    monkeypatch.setattr(CLASSIFY, "run", lambda s, jobs: [
        {"label": "x", "probs": {"x": float("nan")}, "tokens": [], "weights": []} for _ in jobs])  # not JSON
    conn = connect(server)
    status, body = ask(conn, "POST", "/v1/models/textclf/classify", b'{"text": "a"}',
                       {"content-type": "application/json"})
    sock = conn.sock
    assert status == 500 and b"internal error" in body
    status, body = ask(conn, "GET", "/v1/models")
    assert status == 200 and conn.sock is sock  # the same keep-alive connection, not a fresh one
    conn.close()


BAD_VALUES = [b"NaN", b"-Infinity", b"1e400", b"1" + b"0" * 5000, b"-1", b'"\\ud800"', b"[" * 3000 + b"]" * 3000,
              b'{"a": ' * 2000 + b"1" + b"}" * 2000, b"[[]]", b"{}", b"99999999999999999999999"]
BAD_BODIES = [b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe", b'{"prompt": "\xff"}', b'{"text": "\xc3"}', b"[" * 30000,
              b'{"\\ud800": 1}', b"NaN", b'{"n": 1} trailing']
ROUTE_FIELDS = {"ddpm/images": ["n", "label", "seed", "steps", "sampler", "eta", "guidance"],
                "gan/images": ["truncation", "label"], "vae/interpolate": ["seeds", "frames", "label"],
                "gpt/text": ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop", "stream"],
                "seq2seq/translate": ["text", "beam", "length_penalty", "max_new_tokens"],
                "textclf/classify": ["text"]}


def malformed_requests() -> list[tuple[str, str, bytes | None, dict]]:
    json_type = {"content-type": "application/json"}
    out = []
    for route, fields in ROUTE_FIELDS.items():
        path = f"/v1/models/{route}"
        out += [("POST", path, b'{"' + f.encode() + b'": ' + v + b"}", json_type) for f in fields for v in BAD_VALUES]
        out += [("POST", path, b, json_type) for b in BAD_BODIES]
        out += [("POST", path, b'{"n": 1}', {"content-type": "text/plain"}), ("POST", path, b"n=1", {}),
                ("PUT", path, b"{}", json_type), ("DELETE", path, None, {}), ("GET", path, None, {})]
    for path in ["/nope", "/v1/models/x", "/v1/models/gpt", "/v1/models/gpt/nope", "/v1/models/%ff/text",
                 "/static/../../etc/passwd", "/static/%2e%2e/app.py", "/v1/models/" + "a" * 5000 + "/text"]:
        out += [("GET", path, None, {}), ("POST", path, b"{}", json_type)]
    return out


def test_malformed_requests_are_4xx_and_the_connection_stays_usable(server):
    """A fixed probe of a few hundred bad requests on one keep-alive connection: each is a 4xx (never
    a 500 or a dropped connection), and a valid request still works after them."""
    conn = connect(server)
    cases = malformed_requests()
    assert len(cases) > 350
    answers = [(m, p, (b or b"")[:40], ask(conn, m, p, b, h)[0]) for m, p, b, h in cases]
    assert [a for a in answers if not 400 <= a[3] < 500] == [], "each should be a 4xx"
    assert ask(conn, "POST", "/v1/models/gpt/text", b'{"max_new_tokens": 3}',
               {"content-type": "application/json"})[0] == 200
    conn.close()
