"""The server as its users meet it: the official openai client against uvicorn on loopback.
Completions plain and streamed, seeds, stop sequences, n > 1; every bad request answered with
OpenAI's error JSON and the right status, never a 500; 16 clients at once get the answers they
get one at a time, sooner; and `python -m numpygpt serve` starts, serves and fails cleanly."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the server needs the serve extra")
openai = pytest.importorskip("openai", reason="the tests talk to the server with openai")
httpx = pytest.importorskip("httpx")

from numpygpt.formats import checkpoint
from numpygpt.config import GPTConfig
from numpygpt.model import GPT
from numpygpt.serve.app import create_app
from numpygpt.commands.serve import listen
from numpygpt.serve.scheduler import Engine
from tests.conftest import REPO_ROOT
from tests.test_serve_engine import byte_tokenizer

MODEL = "tiny"
MAX_PROMPT_TOKENS = 40


def small_model(n_layer=2, n_embd=16, block_size=32):
    """float64, so that batching cannot flip a sampled token by a rounding difference."""
    config = GPTConfig(vocab_size=257, block_size=block_size, n_layer=n_layer, n_head=2,
                       n_embd=n_embd, dtype="float64")
    model = GPT(config, seed=0)
    model.params.data *= 4.0  # sharper distributions: texts differ visibly between seeds
    return model


class Server:
    """uvicorn on a free loopback port in a thread, serving an Engine over `model`."""

    def __init__(self, model, max_batch=4, max_queue=8, api_key=None, http="auto"):
        tok = byte_tokenizer()
        self.engine = Engine(model, tok, max_batch=max_batch, max_queue=max_queue).start()
        self.app = create_app(self.engine, tok, model_name=MODEL, api_key=api_key,
                              max_prompt_tokens=MAX_PROMPT_TOKENS, max_new_tokens=256)
        sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", http=http))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def client(self, api_key="unused"):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0)

    def close(self):
        self.server.should_exit = True
        self.thread.join()
        self.engine.close()


@contextlib.contextmanager
def serving(model, **options):
    server = Server(model, **options)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def server():
    with serving(small_model()) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def complete(client, **kwargs):
    return client.completions.create(model=MODEL, **{"prompt": "Hello", "max_tokens": 20, **kwargs})


def test_a_completion_has_text_finish_reason_and_usage(client):
    reply = complete(client, prompt="Hi there", max_tokens=12, seed=1, temperature=0.5)
    choice, = reply.choices
    assert reply.object == "text_completion" and reply.model == MODEL
    assert choice.index == 0 and isinstance(choice.text, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == len(b"Hi there")  # a token per byte
    assert 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    if choice.finish_reason == "length":
        assert reply.usage.completion_tokens == 12


def test_the_same_seed_gives_the_same_text_and_another_seed_another(client):
    texts = [complete(client, seed=seed, max_tokens=30).choices[0].text for seed in (5, 5, 6)]
    assert texts[0] == texts[1] != texts[2]


def test_a_stream_adds_up_to_the_completion_and_ends_with_done(server, client):
    whole = complete(client, seed=3, max_tokens=30)
    chunks = list(complete(client, seed=3, max_tokens=30, stream=True,
                           stream_options={"include_usage": True}))
    pieces = [c.choices[0] for c in chunks if c.choices]
    assert "".join(p.text for p in pieces) == whole.choices[0].text
    assert [p.finish_reason for p in pieces][-1] == whole.choices[0].finish_reason
    assert all(p.finish_reason is None for p in pieces[:-1])
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=30,
                      json={"prompt": "Hello", "max_tokens": 5, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = response.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


def test_a_stop_sequence_cuts_the_text_where_it_first_appears(client):
    """Without stop, seed 9 writes some text; with a stop taken from the middle of that text,
    the same seed writes exactly the part before it and says 'stop'."""
    full = complete(client, seed=9, max_tokens=60, temperature=0.7).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert len(stop) == 2, full
    reply = complete(client, seed=9, max_tokens=60, temperature=0.7, stop=["\x00never", stop])
    assert reply.choices[0].text == full[:full.find(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_n_choices_of_each_prompt_in_openai_order(client):
    """Two prompts with n=2: choices 0, 1 continue the first prompt, 2, 3 the second, each the
    text that prompt alone gives with the same seed."""
    both = complete(client, prompt=["One", "Two"], n=2, seed=4, max_tokens=15)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    for i, prompt in enumerate(["One", "Two"]):
        alone = complete(client, prompt=prompt, n=2, seed=4, max_tokens=15)
        assert [c.text for c in alone.choices] == [c.text for c in both.choices[2 * i:2 * i + 2]]
    assert both.choices[0].text != both.choices[1].text
    assert both.usage.prompt_tokens == 6


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["slots"] == 4


BAD_REQUESTS = [  # (JSON body or raw bytes, status, param)
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "top_k": 0}, 400, "top_k"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "n": 5}, 400, "n"),  # more than the server's batch of 4
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 1.5}, 400, "max_tokens"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": "x", "stop": ""}, 400, "stop"),
    ({"prompt": "x", "seed": 2**70}, 400, "seed"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream"),
    ({"prompt": "x", "frobnicate": 1}, 400, "frobnicate"),
    ({"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ({"prompt": "x", "logprobs": -1}, 400, "logprobs"),
    ({"prompt": "x", "echo": "yes"}, 400, "echo"),
    ({"prompt": [1, 300]}, 400, "prompt"),  # the byte vocabulary ends at 256
    ({"prompt": [[1, 2], []]}, 400, "prompt"),
    ({"prompt": ["a"] * 20}, 400, "prompt"),  # 20 sequences: more than 4 slots + 8 waiting, ever
    ({"prompt": "x", "presence_penalty": 1.0}, 400, "presence_penalty"),
    ({"max_tokens": 3}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": 42}, 400, "prompt"),
    ([1, 2], 400, None),
    (b"{not json", 400, None),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ({"prompt": [65] * (MAX_PROMPT_TOKENS + 1)}, 413, "prompt"),
    ({"prompt": "x" * (MAX_PROMPT_TOKENS + 1)}, 413, "prompt"),
    ({"prompt": ["ok", "y" * (MAX_PROMPT_TOKENS + 1)]}, 413, "prompt"),
]


@pytest.mark.parametrize("body, status, param", BAD_REQUESTS)
def test_a_bad_request_gets_openai_error_json_with_its_status(server, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.url}/v1/completions", content=content,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/nothing", 404), ("GET", "/v1/completions", 405), ("GET", "/v1/models/gpt-4", 404)])
def test_unknown_routes_and_models_get_error_json(server, method, path, status):
    response = httpx.request(method, f"{server.url}{path}")
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_the_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        complete(client, temperature=-1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x")


def test_with_an_api_key_requests_without_it_get_401():
    with serving(small_model(), api_key="s3cret") as server:
        with pytest.raises(openai.AuthenticationError):
            complete(server.client("wrong"), max_tokens=2)
        assert httpx.get(f"{server.url}/v1/models").status_code == 401
        assert complete(server.client("s3cret"), max_tokens=2).choices
        assert httpx.get(f"{server.url}/").status_code == 200  # the page holds no model output


def test_without_an_api_key_other_machines_get_401(server):
    """The client address decides: a request from 203.0.113.5 is refused, one from loopback
    (every test above) is served."""
    async def get(path):
        transport = httpx.ASGITransport(app=server.app, client=("203.0.113.5", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as c:
            return await c.get(path)

    import asyncio
    for path in ("/v1/models", "/"):
        response = asyncio.run(get(path))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_full_queue_gets_503_and_a_client_that_leaves_frees_its_slot():
    """One slot, no queue: while a stream holds the slot another request gets 503. Closing
    the stream gives the slot back, and the next request is served."""
    with serving(small_model(), max_batch=1, max_queue=0) as server:
        client = server.client()
        stream = complete(client, max_tokens=256, stream=True)
        next(iter(stream))
        with pytest.raises(openai.InternalServerError) as refused:
            complete(client, max_tokens=2)
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "server_overloaded"
        stream.close()
        deadline = time.monotonic() + 20
        while server.engine.stats()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.engine.stats()["active"] == 0
        assert complete(client, max_tokens=2).choices[0].text is not None


def run_clients(server, prompts):
    """Each prompt from a client of its own, all at once -> (texts, seconds)."""
    client = server.client()
    complete(client, max_tokens=2)  # the first request pays for compilation and connections
    start = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        replies = list(pool.map(lambda p: complete(client, prompt=p, seed=len(p), max_tokens=48,
                                                   stop=None), prompts))
    return [r.choices[0].text for r in replies], time.perf_counter() - start


def test_sixteen_clients_at_once_get_their_answers_sooner_than_one_at_a_time():
    """16 concurrent clients, served with a batch of 16 and with a batch of 1: the same texts
    (each its own seed), in fewer model passes, and in less wall time. The model is large
    enough (4 layers, width 256) that a step's matmuls, not HTTP, dominate."""
    threadpool_limits = pytest.importorskip("threadpoolctl").threadpool_limits
    model = small_model(n_layer=4, n_embd=256, block_size=64)
    prompts = [f"Client {i} says:" + "!" * i for i in range(16)]
    results = {}
    # One BLAS thread: on a busy machine BLAS threads that wait for a core cost more than the
    # whole step (measured: a batched run went from 0.7 s to 5 s with the default threads).
    with threadpool_limits(1):
        for max_batch in (1, 16):
            with serving(model, max_batch=max_batch, max_queue=16) as server:
                texts, seconds = run_clients(server, prompts)
                results[max_batch] = texts, seconds, server.engine.stats()["forward_calls"]
    (one_texts, one_seconds, one_calls), (texts, seconds, calls) = results[1], results[16]
    assert texts == one_texts
    assert calls < one_calls / 4
    assert seconds < one_seconds / 1.3, (seconds, one_seconds)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    byte_tokenizer().save(tmp / "tokenizer")
    model = GPT(small_model().config.with_(dtype="float32"), seed=0)  # as training saves it
    checkpoint.save(tmp / "out", model, step=1,
                    tokenizer_files=checkpoint.read_tokenizer_files(tmp / "tokenizer"))
    return tmp / "out"


def numpygpt(*args, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "numpygpt", *map(str, args)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


@pytest.mark.parametrize("flags, stop", [((), signal.SIGINT), (("--quantize", "int8"), signal.SIGTERM)])
def test_python_m_numpygpt_serve_serves_a_checkpoint_and_stops_on_ctrl_c_or_sigterm(out_dir, flags, stop):
    process = numpygpt("serve", "--out-dir", out_dir, "--port", "0", *flags)
    try:
        line = process.stdout.readline()
        assert line.startswith("numpygpt serve: serving out on http://127.0.0.1:"), \
            line + process.stderr.read()
        url = line.split(" on ")[1].split("/ ")[0]
        reply = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0).completions.create(
            model="out", prompt="Hi", max_tokens=4, seed=0)
        assert reply.choices[0].finish_reason in ("stop", "length")
    finally:
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and stderr.rstrip().endswith("numpygpt serve: stopped"), stderr


def test_bad_command_lines_fail_with_one_line(out_dir, tmp_path):
    busy = listen("127.0.0.1", 0)
    try:
        cases = [(["serve", "--out-dir", tmp_path / "none"], "no checkpoint"),
                 (["serve", "--out-dir", out_dir, "--port", "70000"], "--port"),
                 (["serve", "--out-dir", out_dir, "--max-batch", "0"], "--max-batch"),
                 (["serve", "--out-dir", out_dir, "--port", busy.getsockname()[1]], "cannot listen"),
                 (["serve", "--out-dir", out_dir, "--host", "no.such.host.invalid"], "cannot listen"),
                 (["frobnicate"], "unknown command")]
        for args, message in cases:
            process = numpygpt(*args)
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode != 0 and stdout == "", (args, stderr)
            first = stderr.splitlines()[0]
            assert first.startswith(("numpygpt serve: error: ", "numpygpt: error: ")), stderr
            assert message in first and "Traceback" not in stderr, stderr
    finally:
        busy.close()


def test_echo_with_max_tokens_0_scores_the_prompt_as_numpygpt_eval_does(server, client):
    """What evaluation harnesses send: the prompt's tokens' log-probabilities equal the
    per-token values of the scoring numpygpt eval uses, and the first is null."""
    from numpygpt.inference.scoring import score_tokens
    text = "To be, or not to be"
    reply = complete(client, prompt=text, max_tokens=0, echo=True, logprobs=3)
    choice, = reply.choices
    assert choice.text == text and choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(text)
    lp = choice.logprobs
    assert lp.tokens == list(text) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == list(range(len(text)))
    expected = score_tokens(server.engine.model, list(text.encode()))
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(lp.token_logprobs[1:], -expected.token_nats[1:], rtol=1e-9)
    for top, logprob, token in zip(lp.top_logprobs[1:], lp.token_logprobs[1:], lp.tokens[1:]):
        assert len(top) == 3 and max(top.values()) >= logprob - 1e-12
        assert token not in top or top[token] == pytest.approx(logprob)


def test_token_id_prompts_and_logprobs_of_generated_tokens(server, client):
    """Prompts as ids (one list, or a list of lists) give what the same text gives; each
    generated token's log-probability is that of the distribution it was drawn from (after
    temperature), and its top alternatives are sorted."""
    by_text = complete(client, prompt="Hello", max_tokens=8, seed=4, temperature=0.7, logprobs=2)
    by_ids = complete(client, prompt=list(b"Hello"), max_tokens=8, seed=4, temperature=0.7, logprobs=2)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.choices[0].logprobs.token_logprobs == by_text.choices[0].logprobs.token_logprobs
    two = complete(client, prompt=[list(b"Hello"), list(b"Hi")], max_tokens=3, seed=4, temperature=0)
    assert len(two.choices) == 2
    lp = by_text.choices[0].logprobs
    assert len(lp.tokens) == by_text.usage.completion_tokens
    whole = [t for t in lp.tokens if not t.startswith("bytes:")]  # a byte of a character cannot stand alone
    assert "".join(lp.tokens) == by_text.choices[0].text or len(whole) < len(lp.tokens)
    assert all(value <= 0 for value in lp.token_logprobs)
    for top in lp.top_logprobs:
        assert len(top) == 2 and list(top.values()) == sorted(top.values(), reverse=True)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert lp.text_offset[-1] <= len(by_text.choices[0].text)
    echoed = complete(client, prompt="Hello", max_tokens=8, seed=4, temperature=0.7, logprobs=2, echo=True)
    assert echoed.choices[0].text == "Hello" + by_text.choices[0].text
    assert echoed.choices[0].logprobs.token_logprobs[5:] == lp.token_logprobs


def test_a_streamed_echo_sends_the_prompt_first_with_its_logprobs(server):
    chunks = []
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=30,
                      json={"prompt": "abc", "max_tokens": 4, "echo": True, "logprobs": 1, "stream": True,
                            "seed": 1}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    first = chunks[0]["choices"][0]
    assert first["text"] == "abc" and first["logprobs"]["token_logprobs"][0] is None
    later = [c["choices"][0]["logprobs"]["text_offset"] for c in chunks[1:] if c["choices"]]
    assert later[0][0] == 3  # offsets count the echoed prompt


def test_tokenize_and_detokenize(server):
    tokens = httpx.post(f"{server.url}/tokenize", json={"prompt": "héllo"}).json()
    assert tokens == {"tokens": list("héllo".encode()), "count": 6, "max_model_len": MAX_PROMPT_TOKENS}
    assert httpx.post(f"{server.url}/detokenize", json={"tokens": tokens["tokens"]}).json() == {"prompt": "héllo"}
    refused = httpx.post(f"{server.url}/detokenize", json={"tokens": [999]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tokens"


def test_metrics_in_prometheus_text_format(server, client):
    complete(client, max_tokens=5, seed=2)
    httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "n": 0})
    text = httpx.get(f"{server.url}/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['numpygpt_requests_total{status="200"}'] >= 1
    assert values['numpygpt_requests_total{status="400"}'] >= 1
    assert values["numpygpt_generated_tokens_total"] >= 5 and values["numpygpt_prompt_tokens_total"] >= 5
    assert values["numpygpt_slots"] == 4 and "numpygpt_queue_sequences" in values
    assert values['numpygpt_time_to_first_token_seconds_bucket{le="+Inf"}'] >= 1
    assert values["numpygpt_time_per_output_token_seconds_count"] >= 4
    assert "# TYPE numpygpt_time_to_first_token_seconds histogram" in text


def test_a_client_that_disconnects_without_a_stream_frees_its_slots():
    """A non-streaming request whose client goes away stops decoding at the next step: its
    slot is free, and the next request is served at once, not after max_tokens."""
    with serving(small_model(n_layer=4, n_embd=256), max_batch=1, max_queue=0) as server:
        complete(server.client(), max_tokens=2)  # compiled and warm
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 256, "seed": 1},
                       timeout=0.3)
        deadline = time.monotonic() + 10
        while server.engine.stats()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.engine.stats()["active"] == 0
        assert server.engine.stats()["steps"] < 250  # it did not decode its 256 tokens
        assert complete(server.client(), max_tokens=2).choices


def test_the_official_client_scores_a_text_as_an_evaluation_harness_does(server, client):
    """lm-evaluation-harness's local-completions sends prompts as token ids, echo, logprobs
    and max_tokens 0, and sums the continuation's token log-probabilities."""
    context, continuation = list(b"The cat "), list(b"sat")
    reply = client.completions.create(model=MODEL, prompt=[context + continuation], max_tokens=0, echo=True,
                                      logprobs=1, temperature=0)
    logprobs = reply.choices[0].logprobs.token_logprobs
    assert len(logprobs) == len(context) + len(continuation)
    assert sum(logprobs[len(context):]) < 0


def test_a_body_over_the_limit_and_a_prompt_that_cannot_fit_are_refused_before_they_are_read(server):
    big = httpx.post(f"{server.url}/v1/completions", content=b"x" * (5 << 20),
                     headers={"content-type": "application/json"}, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    start = time.perf_counter()
    long = httpx.post(f"{server.url}/v1/completions", json={"prompt": "y" * 1_000_000}, timeout=30)
    assert long.status_code == 413 and long.json()["error"]["code"] == "context_length_exceeded"
    assert time.perf_counter() - start < 5  # not tokenized whole


def test_a_declared_length_over_the_limit_is_refused_without_waiting_for_the_body(server):
    """A client that declares 100 GB and sends one byte gets its 413 at once."""
    import socket
    from urllib.parse import urlparse
    address = urlparse(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {address.hostname}:{address.port}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{".encode())
        start = time.perf_counter()
        reply = b""
        while b"request_too_large" not in reply and (chunk := conn.recv(65536)):  # head and body may come apart
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"request_too_large" in reply and time.perf_counter() - start < 5


def test_loopback_as_ipv6_writes_it_is_loopback_and_other_hosts_are_refused(server):
    """A dual-stack socket reports IPv4 loopback as ::ffff:127.0.0.1; a keyless server
    answers only under a local Host name (a DNS-rebinding page sends its own)."""
    from numpygpt.serve.app import is_loopback
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and not is_loopback("::ffff:10.0.0.1")
    refused = httpx.get(f"{server.url}/v1/models", headers={"host": "attacker.example"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden_host"
    assert httpx.get(f"{server.url}/v1/models", headers={"host": "localhost:8000"}).status_code == 200


def test_a_stream_cut_by_shutdown_ends_with_an_error_event_and_done():
    with serving(small_model(n_layer=4, n_embd=256), max_batch=1) as server:
        lines = []
        with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60,
                          json={"prompt": "x", "max_tokens": 256, "stream": True, "seed": 1}) as response:
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) == 3:
                    server.engine.close()  # what a shutdown does to requests in flight
        events = [line for line in lines if line.startswith("data: ")]
        assert json.loads(events[-2][6:])["error"]["message"] == "the server is shutting down"
        assert events[-1] == "data: [DONE]"


def test_an_empty_api_key_is_one_error_line(out_dir):
    done = subprocess.run([sys.executable, "-m", "numpygpt", "serve", "--out-dir", str(out_dir), "--api-key", "",
                           "--port", "0"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--api-key is empty" in done.stderr


def test_a_connection_whose_headers_never_end_is_closed(monkeypatch):
    """numpygpt serve's connections (serve/connections.py) get a time limit for their headers:
    half-sent requests cannot hold connections open forever."""
    import socket
    from numpygpt.serve.connections import HeadersInTime
    monkeypatch.setattr(HeadersInTime, "header_timeout_s", 0.5)
    with serving(small_model(), http=HeadersInTime) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            start = time.monotonic()
            assert slow.recv(100) == b""  # closed by the server
            assert time.monotonic() - start < 5
        assert httpx.get(f"{server.url}/health").status_code == 200  # a whole request is served
