#!/usr/bin/env python3
"""The official `openai` Python package against `moeserve serve --http-port 0` on the demo model,
streaming and not, and raw HTTP (as curl sends it) for the bad requests: each gets its 4xx and the
server keeps serving. A client that disconnects mid-stream frees its KV (seen on /metrics).

Needs: pip install -r tests/http/requirements.txt
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import openai


def start_server(moeserve, extra):
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [moeserve, "serve", "--threads", "1", "--port", "0", "--http-port", "0", "--kv-cache-bytes",
         str(64 << 20), "--max-message-bytes", "65536", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 60
    port = None
    while time.time() < deadline and port is None:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"moeserve http listening on .*:(\d+)", line)
        if m:
            port = int(m.group(1))
    if port is None:
        proc.kill()
        log.seek(0)
        sys.exit("the server did not start:\n" + log.read())
    return proc, port


def raw(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def metric(port, name):
    status, body = raw(port, "GET", "/metrics")
    assert status == 200, status
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{body.decode()}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def test_openai_client(port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    models = client.models.list()
    check([m.id for m in models.data] == ["demo"], "models.list names the served model")

    c = client.completions.create(model="demo", prompt="Hello", max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True})
    check(c.usage.completion_tokens == 6 and c.choices[0].finish_reason == "length",
          "completions.create: 6 tokens, finish_reason length, usage")

    chunks = list(client.completions.create(model="demo", prompt="Hello", max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    check(text == c.choices[0].text, "streamed text equals the non-streamed text (greedy)")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6, "stream usage chunk")
    check([ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length", "stream finish_reason")

    lp = client.completions.create(model="demo", prompt="Hello", max_tokens=3, logprobs=2, seed=7, temperature=0.7)
    check(len(lp.choices[0].logprobs.token_logprobs) == 3, "logprobs: one per token")

    try:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("chat without a template must fail")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "chat template" in str(e), "chat on a model without a template: 400")

    try:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
        raise AssertionError("an unknown model must fail")
    except openai.NotFoundError as e:
        check(e.status_code == 404, "unknown model: NotFoundError 404")

    try:
        client.completions.create(model="demo", prompt="x", n=2)
        raise AssertionError("n=2 must fail")
    except openai.BadRequestError as e:
        check("n = 1" in str(e), "n=2: BadRequestError naming n")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def test_chat(port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model="demo", messages=messages, max_tokens=4,
                                       extra_body={"ignore_eos": True})
    check(r.choices[0].message.role == "assistant" and r.usage.completion_tokens == 4, "chat.completions.create")
    t = client.chat.completions.create(model="demo", messages=messages, tools=TOOLS, max_tokens=4,
                                       extra_body={"ignore_eos": True})
    check(t.usage.prompt_tokens > r.usage.prompt_tokens + 20, "tools are rendered into the prompt by the template")
    chunks = list(client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4, stream=True, extra_body={"ignore_eos": True}))
    check(chunks[0].choices[0].delta.role == "assistant", "chat stream: the first delta carries the role")
    check(chunks[-1].choices[0].finish_reason == "length", "chat stream: finish_reason")


def test_bad_requests(port):
    cases = [
        (b'{"prompt": "hi", "max_tokens": "5"}', 400, "max_tokens"),
        (b'{"prompt": "hi", "max_tokens": -1}', 400, "max_tokens"),
        (b'{"prompt": "hi", "n": 2}', 400, "n"),
        (b'{"prompt": 5}', 400, "prompt"),
        (b'{"model": "nope", "prompt": "hi"}', 404, "model"),
        (b'{"prompt": "caf\xc3"}', 400, "prompt"),
        (b'{"prompt": "hi", "temperature": 1e9}', 400, "temperature"),
        (b'not json', 400, None),
        (json.dumps({"prompt": "x" * 70000}).encode(), 413, None),
    ]
    for body, want, param in cases:
        status, data = raw(port, "POST", "/v1/completions", body)
        err = json.loads(data)["error"]
        check(status == want and err["param"] == param and err["message"],
              f"{body[:40]!r}: {status} {err['message'][:70]}")
    status, _ = raw(port, "POST", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 2}).encode())
    check(status == 200, "still serving after the bad requests")


def test_disconnect(port):
    body = json.dumps({"prompt": "Hello", "max_tokens": 3000, "ignore_eos": True, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    # The engine updates its gauges at the end of a step, a moment after the step's tokens go out.
    deadline = time.time() + 10
    while time.time() < deadline and metric(port, "vllm:num_requests_running") != 1:
        time.sleep(0.02)
    check(metric(port, "vllm:num_requests_running") == 1 and metric(port, "moe:kv_blocks_used") > 0,
          "one request running, holding KV blocks")
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        if metric(port, "vllm:num_requests_running") == 0 and metric(port, "moe:kv_blocks_used") == 0:
            break
        time.sleep(0.05)
    check(metric(port, "vllm:num_requests_running") == 0, "the disconnect cancelled the request")
    check(metric(port, "moe:kv_blocks_used") == 0, "its KV blocks are free")
    check(metric(port, "vllm:generation_tokens_total") < 3000, "cancelled long before max_tokens")


def test_sigterm_mid_stream(moeserve):
    proc, port = start_server(moeserve, ["--drain-grace-seconds", "0.5"])
    body = json.dumps({"prompt": "Hello", "max_tokens": 3000, "ignore_eos": True, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    while b"[DONE]" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    rc = proc.wait(timeout=30)
    check(b"[DONE]" in got and b'"error"' in got, "SIGTERM mid-stream: the stream ends with an error event and [DONE]")
    check(rc == 0 and time.time() - t0 < 15, f"SIGTERM mid-stream: exit 0 after the grace ({time.time() - t0:.1f} s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--source-dir", required=True)
    args = ap.parse_args()
    proc, port = start_server(args.moeserve, [])
    try:
        test_openai_client(port)
        test_bad_requests(port)
        test_disconnect(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    check(rc == 0, "SIGTERM: the server exits 0")

    # Chat with a real model's template (Qwen3's, from the template test data) via --chat-template.
    config = os.path.join(args.source_dir, "tests/data/chat-templates/qwen3/tokenizer_config.json")
    with open(config) as f, tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as out:
        out.write(json.load(f)["chat_template"])
    try:
        proc, port = start_server(args.moeserve, ["--chat-template", out.name])
        try:
            test_chat(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
        check(rc == 0, "SIGTERM: the server exits 0")
    finally:
        os.unlink(out.name)
    test_sigterm_mid_stream(args.moeserve)


if __name__ == "__main__":
    main()
