"""`multitoken serve`: the official OpenAI client talks to it; greedy answers are each request's solo answer however
requests share the batch; bad input, a full queue, a vanished client each get their answer while the others go on."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from multitoken import MTPModel, TrainConfig  # noqa: E402
from multitoken.checkpoint import load_checkpoint  # noqa: E402
from multitoken.data.chat import encode_chat  # noqa: E402
from multitoken.decoding.generate import generate  # noqa: E402
from multitoken.decoding.text import until_eos  # noqa: E402
from multitoken.interop.convert import convert  # noqa: E402
from multitoken.serve.local import LocalServer  # noqa: E402
from multitoken.training.checkpoint import save_checkpoint  # noqa: E402

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the GGUF-built chat model needs transformers")

QUESTIONS = ["add two numbers", "what is a class", "def", "return x", "class Point with x and y", "pass",
             "self", "x + y", "a point", "add", "numbers and points", "return self", "def add(x, y)",
             "class", "y", "what is pass"]


@pytest.fixture(scope="module")
def chat_ckpt(tmp_path_factory):
    """A tiny random Llama with a ChatML template (converted from GGUF), given two extra heads: copies of head 1's
    layer, nudged, so that their drafts are sometimes right and mostly wrong (both paths of verification)."""
    from tests.interop.test_gguf import byte_level_bpe, make_gguf

    root = tmp_path_factory.mktemp("serve")
    convert(make_gguf(root, byte_level_bpe(320)), root / "base")
    base, _, tokenizer = load_checkpoint(root / "base")
    c = base.config
    config = dataclasses.replace(c, n_future=3, n_layer=c.n_layer + 2)
    torch.manual_seed(0)
    model = MTPModel(config).eval()
    state = dict(base.state_dict())
    head1 = f"layers.{c.n_trunk_layers}."
    for j in range(2):
        for key, value in base.state_dict().items():
            if key.startswith(head1):
                state[f"extra_heads.{j}.{key[len(head1):]}"] = value + 0.02 * torch.randn_like(value)
    model.load_state_dict(state)
    return save_checkpoint(root / "heads", 1, model, TrainConfig(model=config), tokenizer, {}, {}, 1)


class Server(LocalServer):
    """The local server with the client calls the tests make."""

    def __init__(self, ckpt, **settings) -> None:
        super().__init__(str(ckpt), device="cpu", **settings)

    def client(self, **kwargs):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", "none"), max_retries=0,
                             **kwargs)

    def post(self, path: str, body, headers: dict | None = None) -> tuple[int, dict, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def server(chat_ckpt):
    s = Server(chat_ckpt, max_batch_size=4, max_queue=64, speculative="on")
    yield s
    s.stop()


def solo_chat(ckpt, question: str, max_new: int) -> str:
    """What `generate --chat` gives this question alone: plain greedy decoding, to end-of-sequence."""
    model, _, tokenizer = load_checkpoint(ckpt)
    ids = encode_chat(tokenizer, [{"role": "user", "content": question}])
    new = generate(model, torch.tensor([ids]), max_new, temperature=0.0,
                   stop_ids=torch.tensor(tokenizer.stop_ids))[0].tolist()
    return tokenizer.decode(until_eos(new, tokenizer.stop_ids)[0])


def test_openai_client_completions_and_chat_streamed_and_not(server, chat_ckpt, capsys):
    from tests.cli.conftest import run_cli

    client = server.client()
    assert [m.id for m in client.models.list().data] == ["heads"]
    done = client.completions.create(model="heads", prompt="def add(x, y):", max_tokens=8, temperature=0)
    assert done.object == "text_completion" and done.usage.completion_tokens <= 8 and done.choices[0].finish_reason
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="heads", prompt="def add(x, y):", max_tokens=8, temperature=0, stream=True))
    assert streamed == done.choices[0].text
    expected = solo_chat(chat_ckpt, "add two numbers", 24)
    answer = client.chat.completions.create(model="heads", messages=[{"role": "user", "content": "add two numbers"}],
                                            max_tokens=24, temperature=0)
    assert answer.choices[0].message.content == expected and answer.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model="heads", max_tokens=24, temperature=0, stream=True,
                                                 messages=[{"role": "user", "content": "add two numbers"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    code, printed, _ = run_cli(capsys, "generate", "--ckpt", chat_ckpt, "--chat", "--prompt", "add two numbers",
                               "--temperature", 0, "--max-new-tokens", 24)
    assert code == 0 and printed == expected + "\n"  # `generate --chat` prints the same answer
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage.total_tokens > 0
    sampled = client.chat.completions.create(model="heads", messages=[{"role": "user", "content": "add"}],
                                             max_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    again = client.chat.completions.create(model="heads", messages=[{"role": "user", "content": "add"}],
                                           max_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    assert sampled.choices[0].message.content == again.choices[0].message.content  # one seed, one answer
    assert server.get("/health")["status"] == "ok"


@pytest.mark.parametrize("speculative", ["on", "auto"])
def test_concurrent_greedy_requests_each_get_their_solo_answer(chat_ckpt, speculative):
    """16 requests at once into 4 rows: they join and leave the batch between steps; each answer is what greedy
    decoding gives that prompt alone: with a chain step at every step, and with the server's own choice, which mixes
    plain and chain steps (the drafting heads catching up on what they missed)."""
    server = Server(chat_ckpt, max_batch_size=4, max_queue=64, speculative=speculative)
    try:
        _sixteen_at_once(server, chat_ckpt)
        engine = server.engine
        assert engine.peak_live == 4 and engine.k == 2 and engine.chain_steps > 0
        if speculative == "on":  # every step a chain, and the chains' drafts were sometimes kept
            assert engine.chain_steps == engine.steps and engine.drafts_accepted > 0
        else:  # both kinds ran
            assert engine.chain_steps < engine.steps
    finally:
        server.stop()


def test_a_draft_vocabulary_changes_no_answer(chat_ckpt, tmp_path):
    """The same heads drafting over half the tokens (`model.draft_vocab`): every answer still its solo answer."""
    model, config, tokenizer = load_checkpoint(chat_ckpt)
    narrowed = dataclasses.replace(model.config, draft_vocab=model.config.vocab_size // 2)
    state = {**model.state_dict(), "draft_ids": torch.arange(0, model.config.vocab_size, 2)}
    ckpt = save_checkpoint(tmp_path / "narrowed", 1, MTPModel.from_state_dict(narrowed, state),
                           TrainConfig(model=narrowed), tokenizer, {}, {}, 1)
    server = Server(ckpt, max_batch_size=4, max_queue=64, speculative="on")
    try:
        _sixteen_at_once(server, ckpt)
        assert server.engine.model.config.draft_vocab == narrowed.draft_vocab and server.engine.chain_steps > 0
    finally:
        server.stop()


@pytest.mark.parametrize("speculative", ["on", "auto"])
def test_a_drafter_drafts_for_the_server_and_changes_no_answer(chat_ckpt, tmp_path, speculative):
    """The same model with a drafter (and no heads): the server drafts with it, catching it up after plain steps;
    every answer is still its solo answer."""
    from multitoken.decoding.sources import DrafterSource
    from multitoken.training.surgery import init_drafter_from_base

    model, _, tokenizer = load_checkpoint(chat_ckpt)
    config = dataclasses.replace(model.config, n_future=1, n_layer=model.config.n_trunk_layers + 1, drafter="eagle3")
    torch.manual_seed(0)
    with_drafter = MTPModel(config)
    with_drafter.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("extra_heads.")},
                                 strict=False)
    init_drafter_from_base(with_drafter)
    ckpt = save_checkpoint(tmp_path / "drafter", 1, with_drafter, TrainConfig(model=config), tokenizer, {}, {}, 1)
    server = Server(ckpt, max_batch_size=4, max_queue=64, speculative=speculative)
    try:
        _sixteen_at_once(server, ckpt)
        engine = server.engine
        assert isinstance(engine.source, DrafterSource) and engine.k == 3 and engine.chain_steps > 0
    finally:
        server.stop()


def _sixteen_at_once(server, chat_ckpt) -> None:
    client = server.client()
    lengths = [6 + 3 * (i % 5) for i in range(16)]

    def ask(i: int) -> str:
        reply = client.chat.completions.create(model="heads", temperature=0, max_tokens=lengths[i],
                                               messages=[{"role": "user", "content": QUESTIONS[i]}])
        return reply.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    for i, answer in enumerate(answers):
        assert answer == solo_chat(chat_ckpt, QUESTIONS[i], lengths[i]), QUESTIONS[i]


MALFORMED = [
    (b"{not json", None), (b"[1, 2]", None),
    ({"prompt": "x", "max_tokens": 4, "temprature": 0.5}, "temprature"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"), ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "x", "temperature": -1}, "temperature"), ({"prompt": "x", "temperature": 9}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"), ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ({"prompt": "x", "n": 2}, "n"), ({"prompt": "x", "seed": -3}, "seed"), ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": ["a", "b"]}, "prompt"), ({"max_tokens": 4}, "prompt"), ({"prompt": 5}, "prompt"),
    ({"prompt": ["a", 5]}, "prompt"), ({"prompt": "x", "stop": 3}, "stop"),
    ({"prompt": "x", "stream": "yes please"}, "stream"),
]
CHAT_MALFORMED = [
    ({"messages": []}, "messages"), ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi", "name": 3}]}, "messages.0.name"),
]


def test_bad_requests_get_400_naming_the_field_and_the_server_goes_on(server):
    """param names the field as the client wrote it: no "body" prefix, no union member pydantic tried
    ("prompt.str"), and null where the body as a whole is wrong."""
    assert len(MALFORMED) + len(CHAT_MALFORMED) == 22
    for path, cases in (("/v1/completions", MALFORMED), ("/v1/chat/completions", CHAT_MALFORMED)):
        for body, field in cases:
            status, reply, _ = server.post(path, body)
            assert status == 400, (body, reply)
            error = reply["error"]
            assert error["type"] == "invalid_request_error" and error["param"] == field, (body, error)
            assert error["message"].startswith(f"{field}: " if field else "the request body"), (body, error)
    assert server.post("/v1/completions", b"{not json")[1]["error"]["message"] == "the request body is not valid JSON"
    status, reply, _ = server.post("/v1/completions", {"prompt": "w " * 10, "max_tokens": 10 ** 6})
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded" and \
        reply["error"]["param"] == "max_tokens"
    status, reply, _ = server.post("/v1/completions", {"prompt": "def " * 400, "max_tokens": 1})
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded"
    status, reply, _ = server.post("/v1/completions", {"prompt": "def add", "max_tokens": 4, "temperature": 0})
    assert status == 200 and reply["choices"][0]["text"] is not None


def test_every_request_answered_or_refused_writes_one_log_line(server, caplog):
    caplog.set_level(logging.INFO, logger="multitoken.serve")
    requests = [({"prompt": "def add", "max_tokens": 4, "temperature": 0}, 200),
                ({"prompt": "x", "max_tokens": 0}, 400), (b"{not json", 400), ({"prompt": ["a", "b"]}, 400),
                ({"prompt": "def", "max_tokens": 3, "temperature": 0}, 200)]
    for body, expected in requests:
        assert server.post("/v1/completions", body)[0] == expected
    lines = [r.getMessage() for r in caplog.records if r.name == "multitoken.serve"]
    assert len(lines) == len(requests), lines
    for line, (_, status) in zip(lines, requests):
        if status == 200:  # the answer's id, status, tokens, tau, speed and finish reason
            assert re.fullmatch(r"cmpl-\w+ 200 text_completion prompt \d+ tokens, \d+ new, tau [\d.]+, "
                                r"[\d.]+ tokens/s, finish (length|stop)", line), line
        else:  # the status, and why
            assert line.startswith("POST /v1/completions 400 invalid_request_error: "), line
    assert "max_tokens: " in lines[1] and "not valid JSON" in lines[2] and "one prompt per request" in lines[3]


CLIENT = """
import http.client, json, sys, time
conn = http.client.HTTPConnection("127.0.0.1", {port})
body = json.dumps({{"prompt": "def", "max_tokens": 120, "temperature": 0, "stream": {stream}}})
conn.request("POST", "/v1/completions", body, {{"Content-Type": "application/json"}})
if {stream}:
    conn.getresponse().readline()  # the stream has begun
print("waiting", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("stream", [True, False], ids=["mid-stream", "waiting for the whole answer"])
def test_a_killed_client_frees_its_row(chat_ckpt, monkeypatch, stream):
    """A client process killed with SIGKILL while its answer is being decoded: its row is cancelled (not decoded to
    max_tokens), and the next request gets it. Each step is slowed so that the answer is far from over when the
    kill lands."""
    s = Server(chat_ckpt, max_batch_size=1, max_queue=4, speculative="off")
    child = None
    try:
        step = s.engine._step
        monkeypatch.setattr(s.engine, "_step", lambda: (time.sleep(0.02), step()))  # 120 steps: 2.4 s at least
        port = s.url.rsplit(":", 1)[1]
        child = subprocess.Popen([sys.executable, "-c", CLIENT.format(port=port, stream=stream)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "waiting"
        deadline = time.time() + 20
        while not s.engine.live and time.time() < deadline:  # the request holds the one row
            time.sleep(0.01)
        assert s.engine.live == 1
        child.send_signal(signal.SIGKILL)
        child.wait()
        # The one row comes free (the server notices the dead socket), and the next request gets it
        status, reply, _ = s.post("/v1/completions", {"prompt": "def add", "max_tokens": 4, "temperature": 0})
        assert status == 200 and reply["usage"]["completion_tokens"] >= 1
        deadline = time.time() + 20
        while s.get("/health")["live"] and time.time() < deadline:
            time.sleep(0.05)
        assert s.get("/health")["live"] == 0 and s.engine.cancelled == 1  # freed by the kill, not by finishing
        assert s.engine.steps < 120  # the killed request's 120 steps never all ran
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        s.stop()


def test_a_full_queue_answers_503_with_retry_after(chat_ckpt, caplog):
    caplog.set_level(logging.INFO, logger="multitoken.serve")
    s = Server(chat_ckpt, max_batch_size=1, max_queue=1)
    try:
        body = {"prompt": "def", "max_tokens": 120, "temperature": 0}
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: s.post("/v1/completions", body), range(6)))
        statuses = sorted(status for status, _, _ in replies)
        assert statuses[0] == 200 and 503 in statuses and set(statuses) <= {200, 503}
        busy = next((reply, headers) for status, reply, headers in replies if status == 503)
        assert busy[1].get("retry-after") == "1" or busy[1].get("Retry-After") == "1"
        assert busy[0]["error"]["type"] == "server_error"
        refused = [r.getMessage() for r in caplog.records if " 503 server_error: " in r.getMessage()]
        assert len(refused) == statuses.count(503)  # one log line per refusal
        assert s.post("/v1/completions", {"prompt": "def", "max_tokens": 2, "temperature": 0})[0] == 200
    finally:
        s.stop()


def test_api_key(chat_ckpt, caplog):
    caplog.set_level(logging.INFO, logger="multitoken.serve")
    s = Server(chat_ckpt, max_batch_size=1, api_key="sesame")
    try:
        assert s.post("/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 401
        lines = [r.getMessage() for r in caplog.records if r.name == "multitoken.serve"]
        assert len(lines) == 1 and lines[0].startswith("POST /v1/completions 401 authentication_error: "), lines
        assert s.post("/v1/completions", {"prompt": "x", "max_tokens": 2, "temperature": 0},
                      {"Authorization": "Bearer sesame"})[0] == 200
        assert s.get("/health")["status"] == "ok"  # health needs no key
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
    finally:
        s.stop()


def test_bench_serve_answers_every_request_in_every_case(chat_ckpt, tmp_path, capsys):
    from multitoken.cli.main import main

    (tmp_path / "text.txt").write_text("def add(x, y):\n    return x + y\n" * 200)  # the validation prompts' source
    capsys.readouterr()
    code = main(["bench", "serve", "--ckpt", str(chat_ckpt), "--clients", "6", "--requests", "12",
                 "--max-new-tokens", "8", "--max-batch-size", "3", "--num-prompts", "4", "--prompt-len", "8",
                 "--data", str(tmp_path / "text.txt"), "--json", str(tmp_path / "serve.json"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    record = json.loads((tmp_path / "serve.json").read_text())
    cases = {c["case"]: c for c in record["cases"]}
    assert set(cases) == {"auto", "speculative", "plain", "one at a time"} and "vs 1-at-a-time" in out
    for case in cases.values():
        assert case["answered"] == case["requests"] == 12 and case["output_tokens"] > 0
    assert cases["one at a time"]["peak_batch"] == 1 and cases["plain"]["peak_batch"] == 3
    assert cases["speculative"]["draft_len"] == 2 and cases["plain"]["draft_len"] == 0
    assert cases["speculative"]["chain_steps"] == cases["speculative"]["engine_steps"] and \
        cases["plain"]["chain_steps"] == 0
    # auto timed both kinds before choosing (in the warm-up or the timed requests) and tracked tau from its chains
    timed = cases["auto"]["auto_step_seconds"]
    assert any(k.startswith("chain@") for k in timed) and any(k.startswith("plain@") for k in timed)
    assert cases["auto"]["auto_tau"] >= 1.0 and cases["plain"]["auto_step_seconds"] == {}


def test_bench_serve_for_a_duration_cycles_the_prompts_until_the_time_is_up(chat_ckpt, tmp_path, capsys):
    from multitoken.cli.main import main
    from tests.cli.conftest import assert_one_line_error, run_cli

    (tmp_path / "text.txt").write_text("def add(x, y):\n    return x + y\n" * 200)
    common = ["--ckpt", str(chat_ckpt), "--clients", "3", "--max-new-tokens", "4", "--num-prompts", "2",
              "--prompt-len", "8", "--data", str(tmp_path / "text.txt"), "--device", "cpu", "--cases", "plain"]
    capsys.readouterr()
    code = main(["bench", "serve", *common, "--duration", "0.5", "--json", str(tmp_path / "serve.json")])
    out = capsys.readouterr().out
    assert code == 0 and "3 clients sending requests for 0.5 s" in out, out
    record = json.loads((tmp_path / "serve.json").read_text())
    case = record["cases"][0]
    assert record["duration_s"] == case["duration_s"] == 0.5 and record["requests"] is None
    # More requests than prompts (the clients went round them), every one answered, the last ones after the time
    assert case["answered"] == case["requests"] > 2 and case["seconds"] >= 0.5
    code, _, err = run_cli(capsys, "bench", "serve", *common, "--duration", "1", "--requests", "4")
    assert_one_line_error(code, err, "--requests and --duration: give one")
    code, _, err = run_cli(capsys, "bench", "serve", *common, "--duration", "0")
    assert_one_line_error(code, err, "--duration must be a positive number of seconds")


def test_serve_settings_and_a_model_without_heads_get_one_line(chat_ckpt, tmp_path, capsys):
    from tests.cli.conftest import assert_one_line_error, run_cli

    for argv, message in ((["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
                          (["--port", "70000"], "--port must be in 0..65535"),
                          (["--max-queue", "0"], "--max-queue must be at least 1")):
        code, _, err = run_cli(capsys, "serve", "--ckpt", chat_ckpt, *argv)
        assert_one_line_error(code, err, message)
    code, _, err = run_cli(capsys, "serve", "--ckpt", chat_ckpt.parent.parent.parent / "base", "--speculative", "on")
    assert_one_line_error(code, err, "has no extra heads or drafter to draft with")


def test_serve_refuses_what_cannot_work_before_the_model_loads(chat_ckpt, capsys, monkeypatch):
    import socket

    from multitoken.serve import server
    from tests.cli.conftest import assert_one_line_error, run_cli

    loads = []
    monkeypatch.setattr("multitoken.checkpoint.load_checkpoint", lambda *a, **k: loads.append(a) or 1 / 0)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = busy.getsockname()[1]
    try:
        for argv, message in ((["--api-key", ""], "--api-key is empty"),
                              (["--context", "100000"], "exceeds the model's context of"),
                              (["--max-batch-size", "100000000"], "use a smaller --max-batch-size or --context"),
                              (["--port", str(taken)], f"127.0.0.1:{taken} is in use: give another --port"),
                              (["--host", "no.such.host.invalid"], "--host no.such.host.invalid is not an address")):
            code, out, err = run_cli(capsys, "serve", "--ckpt", chat_ckpt, *argv)
            assert_one_line_error(code, err, message)
            assert " on http://" not in out + err  # never announced
    finally:
        busy.close()
    assert not loads  # every refusal came before the model was read
    with pytest.raises(Exception, match="exceeds the model's context"):  # the library's path checks it too
        server.build_server(str(chat_ckpt), context=100000, device="cpu")


def test_port_zero_prints_the_port_it_bound(chat_ckpt):
    child = subprocess.Popen([sys.executable, "-m", "multitoken", "serve", "--ckpt", str(chat_ckpt), "--port", "0",
                              "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    try:
        line = child.stderr.readline()
        match = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line)
        assert match and int(match.group(1)) > 0, line
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/health", timeout=30) as response:
            assert json.loads(response.read())["status"] == "ok"  # announced only once it could serve there
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)


def test_every_http_refusal_uses_the_openai_error_body(server):
    def send(method: str, path: str, data: bytes | None, content_type: str | None):
        headers = {"Content-Type": content_type} if content_type else {}
        request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    body = json.dumps({"prompt": "def", "max_tokens": 2}).encode()
    for method, path, data, content_type, status, message in (
            ("POST", "/v1/completions", b'{"prompt": "\xff\xfe", "max_tokens": 2}', "application/json", 400,
             "the request body is not valid JSON (UTF-8 text)"),
            ("GET", "/v1/completions", None, None, 405, "GET is not allowed on /v1/completions: use POST"),
            ("PUT", "/v1/chat/completions", body, "application/json", 405, "use POST"),
            ("POST", "/v1/nothing", body, "application/json", 404, "no such endpoint: /v1/nothing"),
            ("POST", "/v1/completions", body, "text/plain", 400,
             "send Content-Type: application/json (got text/plain)")):
        code, reply = send(method, path, data, content_type)
        assert code == status and set(reply) == {"error"}, (path, reply)
        assert message in reply["error"]["message"] and reply["error"]["type"] == "invalid_request_error", reply


def test_stop_strings_cut_the_answer_streamed_and_not(server, chat_ckpt):
    client = server.client()
    full = solo_chat(chat_ckpt, "what is a class", 40)
    stop = full[len(full) // 2:len(full) // 2 + 3]  # three characters from the middle of the greedy answer
    assert stop and full.find(stop) > 0
    messages = [{"role": "user", "content": "what is a class"}]
    reply = client.chat.completions.create(model="heads", messages=messages, max_tokens=40, temperature=0, stop=[stop])
    assert reply.choices[0].message.content == full[:full.find(stop)] and reply.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="heads", messages=messages, max_tokens=40, temperature=0,
                                                 stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full[:full.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_compiled_steps_give_each_request_its_solo_answer(chat_ckpt, quick_compile):
    """--compile: both kinds of step over every row with fixed shapes (idle rows included), compiled once each;
    16 concurrent greedy answers (auto: plain and chain steps mixed) still equal their solo answers."""
    server = Server(chat_ckpt, max_batch_size=4, max_queue=64, speculative="auto", compile=True)
    try:
        _sixteen_at_once(server, chat_ckpt)
        engine = server.engine
        assert set(engine._compiled) == {"plain", "chain"} and engine.compile_seconds > 0
        assert 0 < engine.chain_steps < engine.steps
    finally:
        server.stop()


def test_a_failing_step_fails_its_requests_and_the_server_goes_on(chat_ckpt, monkeypatch):
    """A decoding step that raises (here: once, on purpose) answers the requests it held with a 500 and an error
    body; the engine keeps serving the next ones."""
    s = Server(chat_ckpt, max_batch_size=2)
    try:
        step, failed = s.engine._step, []

        def fail_once():
            if not failed:
                failed.append(True)
                raise RuntimeError("a deliberate failure")
            return step()

        monkeypatch.setattr(s.engine, "_step", fail_once)
        status, reply, _ = s.post("/v1/completions", {"prompt": "def", "max_tokens": 8, "temperature": 0})
        assert status == 500 and reply["error"]["type"] == "server_error"
        status, reply, _ = s.post("/v1/completions", {"prompt": "def", "max_tokens": 8, "temperature": 0})
        assert status == 200 and reply["usage"]["completion_tokens"] == 8
        assert s.get("/health")["status"] == "degraded"  # it says a step failed
    finally:
        s.stop()
