"""The L² path on a real pretrained LLM: SmolLM2-135M-Instruct fine-tuned on Ray Train (full and LoRA)
on lab traces, registered in MLflow, served on the vLLM graph with the intervention and used by the
official openai client; the untouched base served plainly. A few steps only (CI runs this on 2 cores):
what they make checkable is asserted — the loss falls, the tags join the vocabulary and climb at the
thinking's start, the intervention acts on real weights — and the longer run's figures are in
docs/lab.md ("A real pretrained LLM")."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import torch
from local_servers import free_port

from l2ray.languages import tag_token
from l2ray.recipe import load_recipe
from l2ray.student.tokens import reasoning_tokens
from l2ray.thinking import THINK_START

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS = 8
QUESTION = "Lena hat 5 Karten. Erstens bekommt Lena 2 Karten dazu. Wie viele Karten hat Lena jetzt?"


@pytest.fixture(scope="module")
def trained(ray_cluster, smollm2_path, tmp_path_factory):
    """configs/real.yaml through synthesis (the lab teacher) and full fine-tuning, ``STEPS`` steps."""
    from l2ray.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("real")
    overrides = [f"output_dir={out}", f"student.model={smollm2_path}", f"train.max_steps={STEPS}"]
    overrides.append("train.max_seq_len=256")  # shorter rows: the thinking's start is what 8 steps can move
    recipe = load_recipe(REPO / "configs" / "real.yaml", overrides)
    run_pipeline(recipe, until="train", log=lambda _line: None)
    return recipe, json.loads((recipe.run_dir / "train" / "result.json").read_text())


def losses(result: dict) -> list[float]:
    from mlflow import MlflowClient

    history = MlflowClient(result["tracking_uri"]).get_metric_history(result["run_id"], "loss")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def first_tag_ranks(model_path: str, recipe) -> list[int]:
    """The rank of the right language tag at each trace's first thinking position (0: the top token)."""
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.student.tokens import ensure_reasoning_tokens
    from l2ray.traces import TraceRow
    from l2ray.train.examples import encode_example

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    ensure_reasoning_tokens(tokenizer, model)  # the base gets them as training gave them
    ranks = []
    for shard in sorted((recipe.run_dir / "synth" / "traces").glob("*.parquet"))[:1]:
        for row in pq.read_table(shard).to_pylist()[:4]:
            trace = TraceRow(**row)
            example = encode_example(tokenizer, trace.question, trace.assistant_text(), 256)
            first = next(i for i, label in enumerate(example.labels) if label >= 0)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([example.input_ids[:first]])).logits[0, -1]
            ranks.append(int((logits > logits[example.labels[first]]).sum()))
    return ranks


def test_fine_tuning_a_real_llm_lowers_its_loss_and_lifts_the_tags(trained, smollm2_path):
    from transformers import AutoTokenizer

    from l2ray.student.resolve import resolve_student

    recipe, result = trained
    history = losses(result)
    assert len(history) == STEPS and result["model_uri"] == "models:/real/1"
    assert sum(history[-3:]) / 3 < 0.7 * sum(history[:3]) / 3, history
    student = resolve_student(result["model_uri"], tracking_uri=result["tracking_uri"])
    tokenizer = AutoTokenizer.from_pretrained(student)
    assert set(reasoning_tokens()) <= set(tokenizer.get_vocab()) and THINK_START in tokenizer.chat_template
    assert json.loads((Path(student) / "config.json").read_text())["vocab_size"] == len(tokenizer)
    before, after = first_tag_ranks(str(smollm2_path), recipe), first_tag_ranks(student, recipe)
    assert all(b > 10_000 for b in before)  # mean-initialised rows: a tag starts mid-vocabulary
    assert sum(after) < 0.85 * sum(before), (before, after)


def test_lora_on_a_real_llm_trains_registers_and_reloads(trained, tmp_path):
    """LoRA (adapters on the projections, the grown embeddings trained in full) on the same traces:
    the loss falls, and the registered model is the merged one, tags included."""
    from transformers import AutoTokenizer

    from l2ray.student.resolve import resolve_student
    from l2ray.train.api import train

    recipe, _ = trained
    lora = load_recipe(
        REPO / "configs" / "real.yaml",
        [
            f"output_dir={tmp_path}",
            f"student.model={recipe.student.model}",
            "train.mode=lora",
            "train.max_seq_len=256",
            "train.max_steps=4",
            "train.num_workers=1",  # LoRA is what this asserts; two ranks: the full run and tests/train
            "train.cpus_per_worker=1",
            "name=real-lora",
        ],
    )
    result = train(lora, recipe.run_dir / "synth" / "traces").model_dump()
    history = losses(result)
    assert len(history) == 4 and history[-1] < history[0], history
    student = resolve_student(result["model_uri"], tracking_uri=result["tracking_uri"])
    tokenizer = AutoTokenizer.from_pretrained(student)
    assert tag_token("zh") in tokenizer.get_vocab() and THINK_START in tokenizer.chat_template
    assert not (Path(student) / "adapter_config.json").exists()  # merged, not an adapter


@pytest.fixture(scope="module")
def serve_port(ray_cluster):
    """One Serve instance for this module's two apps (the student on vLLM, the base on transformers)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def graph(trained, serve_port):
    """The registered student on the vLLM graph (``models:/real@candidate``)."""
    from ray import serve

    from l2ray.serve.app import build_app

    _, result = trained
    args = {
        "model": "models:/real@candidate",
        "tracking_uri": result["tracking_uri"],
        "engine": "vllm",
        "vllm": {"dtype": "float32", "enforce_eager": True, "max_num_seqs": 8, "max_model_len": 1024},
        "num_cpus": 0.5,
        "router_num_cpus": 0.1,
        "api_keys_env": None,
        "max_tokens_limit": 256,
    }
    serve.run(build_app(args), name="l2ray-real", route_prefix="/")
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{serve_port}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, l2ray: dict, **options):
    """Greedy unless a test asks otherwise: the model's own generation config samples."""
    options.setdefault("temperature", 0.0)
    messages = [{"role": "user", "content": QUESTION}]
    body = {"l2ray": {"show_thinking": True, **l2ray}}
    return client.chat.completions.create(model="l2ray", messages=messages, extra_body=body, **options)


@pytest.mark.parametrize("code", ["zh", "de"])
def test_force_opens_the_real_students_thinking_in_the_forced_language(graph, code):
    reply = ask(graph, {"force": code}, max_tokens=12)
    thinking = reply.choices[0].message.model_dump()["reasoning_content"]
    assert thinking.startswith(tag_token(code)) and reply.usage.model_dump()["tag_mix"] == {code: 1.0}


def test_a_thinking_budget_cuts_the_real_students_thinking(graph):
    free, budget = ask(graph, {}, max_tokens=40), ask(graph, {"max_thinking_tokens": 6}, max_tokens=40)
    assert free.usage.model_dump()["thinking_tokens"] > 6
    assert budget.usage.model_dump()["thinking_tokens"] == 6
    assert budget.choices[0].message.content  # the thinking was closed: what follows is the answer


def test_the_official_client_plain_streamed_n_and_stop(graph):
    """With no thinking budget left (0) the student answers at once: what a plain client sees."""
    answer_now = {"max_thinking_tokens": 0}
    plain = ask(graph, answer_now, max_tokens=24)
    assert plain.choices[0].message.content and plain.usage.completion_tokens <= 24
    stream = ask(graph, answer_now, max_tokens=24, stream=True, stream_options={"include_usage": True})
    *chunks, last = list(stream)
    assert last.choices == [] and last.usage.completion_tokens == plain.usage.completion_tokens
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content  # greedy: the same text either way
    two = ask(graph, answer_now, max_tokens=8, n=2, temperature=1.0, seed=3)
    assert [c.index for c in two.choices] == [0, 1]
    word = plain.choices[0].message.content.split()[0]
    stopped = ask(graph, answer_now, max_tokens=24, stop=[word])
    assert word not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"


def test_the_untouched_base_answers_a_plain_question_through_the_graph(serve_port, smollm2_path):
    """No reasoning vocabulary: no thinking, everything is content (the transformers graph)."""
    from ray import serve

    from l2ray.serve.app import build_app

    args = {
        "model": str(smollm2_path),
        "device": "cpu",
        "num_cpus": 0.25,
        "router_num_cpus": 0.1,
        "api_keys_env": None,
    }
    serve.run(build_app(args), name="l2ray-base", route_prefix="/base")
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{serve_port}/base/v1", api_key="unused", max_retries=0
        )
        question = [{"role": "user", "content": "What is the capital of France?"}]
        reply = client.chat.completions.create(model="l2ray", messages=question, max_tokens=16, temperature=0)
        message = reply.choices[0].message.model_dump()
        assert "Paris" in message["content"] and not message.get("reasoning_content")
        assert reply.usage.model_dump()["thinking_tokens"] == 0
    finally:
        serve.delete("l2ray-base")
