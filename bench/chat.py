"""Benchmark: chat serving on the default model, in one run.

1. One greedy stream of --tokens new tokens through the API vs the engine's raw loop (its forward passes for one
   row, greedy, in-process, without scheduler or server: the model's prefill, then the fast decoder's steps) and
   vs llama.cpp on the same weights: the packaged Q4_1 GGUF dequantized to F32 by llama.cpp itself, the values the
   engine loads (run by --llama-python, an interpreter with llama-cpp-python; reported as not measured without
   one). The three alternate round by round, so that a ratio compares runs minutes apart at most; the ratios are
   medians of the rounds' ratios. Also checked: the API's text is Hugging Face generate's (greedy) on the same
   weights, and llama.cpp's tokens are too.
2. Eight concurrent streams, each a different fine-tuned model (LoRA adapter), decoded in one batch: aggregate
   tokens/s vs one adapter stream alone; time to first token (TTFT) of requests that arrive while they run vs
   unloaded, and of the eight themselves (arriving together).
3. The time from a fine-tuning job's `succeeded` (seen by polling every 20 ms) to the first token of its model.

Usage: python bench/chat.py [--tokens 128] [--rounds 3] [--llama-python /path/to/python]"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
import torch
from tests.e2e.serve import ServeProcess

from inhouse.config import Settings
from inhouse.engines.causal.generation import CausalEngine
from inhouse.engines.causal.loading import load_model, load_tokenizer, model_dir
from inhouse.engines.locate import require_model

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
ADAPTERS = 8

DEQUANTIZE = r"""
import sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.allow_requantize = llama_cpp.LLAMA_FTYPE_ALL_F32, True
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))
"""

LLAMA_SCRIPT = r"""
import json, sys, time
import llama_cpp
path, ids, tokens, rounds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import os
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=os.cpu_count(), n_batch=512, verbose=False)
out = []
for _ in range(rounds + 1):
    llm.reset()
    t = time.perf_counter()
    got = []
    for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        got.append(tok)
        if len(got) == tokens:
            break
    out.append((len(got) / (time.perf_counter() - t), got))
print(json.dumps(out))
"""


def eos_ids(path: Path) -> set[int]:
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(path).eos_token_id
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def hf_generate(path: Path, ids: list[int], tokens: int) -> list[int]:
    """The reference text: Hugging Face generate, greedy, on the same weights and prompt."""
    tok = load_tokenizer(path)
    model = load_model(path, 0)
    t_ids = torch.tensor([ids])
    with torch.inference_mode():
        seq = model.generate(input_ids=t_ids, attention_mask=torch.ones_like(t_ids), do_sample=False,
                             max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=tok.pad_token_id)
    new: list[int] = seq[0, len(ids):].tolist()
    return new


def raw_loop(engine: CausalEngine, ids: list[int], tokens: int) -> tuple[float, list[int]]:
    """The engine's own loop for one row, bare: its forward passes (the prompt's prefill, then decode steps),
    greedy, in-process: no scheduler, sampler or server."""
    t = time.perf_counter()
    with torch.inference_mode():
        logits, cache = engine.forward(torch.tensor([ids]), None, None, None, [None])
        new = [int(logits[0].argmax())]
        while len(new) < tokens:
            pos = torch.tensor([[len(ids) + len(new) - 1]])
            logits, cache = engine.forward(torch.tensor([[new[-1]]]), None, pos, cache, [None])
            new.append(int(logits[0].argmax()))
    return len(new) / (time.perf_counter() - t), new


def llama_cpp(python: str, gguf: Path, ids: list[int], tokens: int, rounds: int) -> tuple[float, list[int]]:
    """llama.cpp on the engine's weights (the packaged GGUF dequantized to F32), greedy, all cores, without
    OMP_WAIT_POLICY=PASSIVE (it runs slower with it): the median of `rounds` runs after a warm-up."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([python, "-c", LLAMA_SCRIPT, str(gguf), json.dumps(ids), str(tokens), str(rounds)],
                          check=True, capture_output=True, text=True, env=env)
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    return statistics.median(r[0] for r in runs[1:]), runs[-1][1]


class Stream:
    """One streamed chat completion, timed: start, first content token, end, completion tokens. `no_end`: the
    end-of-text tokens are banned (logit_bias -100), so the stream runs to its max_tokens."""

    no_end: ClassVar[dict[str, int]] = {}

    def __init__(self, client: openai.OpenAI, model: str, tokens: int, full: bool = False) -> None:
        self.client, self.model, self.tokens = client, model, tokens
        self.bias = self.no_end if full else None
        self.start = self.first = self.end = 0.0
        self.completion = 0
        self.text = ""

    def run(self) -> Stream:
        self.start = time.perf_counter()
        for chunk in self.client.chat.completions.create(
                model=self.model, messages=MESSAGES, temperature=0, max_tokens=self.tokens, stream=True,
                stream_options={"include_usage": True}, logit_bias=self.bias):
            if chunk.choices and chunk.choices[0].delta.content:
                if not self.first:
                    self.first = time.perf_counter()
                self.text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                self.completion = chunk.usage.completion_tokens
        self.end = time.perf_counter()
        return self

    @property
    def ttft(self) -> float:
        return self.first - self.start

    @property
    def rate(self) -> float:
        return self.completion / (self.end - self.start)


def together(client: openai.OpenAI, models: list[str], tokens: int, probe: str | None = None
             ) -> tuple[list[Stream], float, list[float]]:
    """One stream per model, started at once: the streams, the wall time to the last one's end, and the TTFT of
    `probe` requests sent one at a time, 0.5 s apart, once every stream is decoding and while all still are."""
    streams = [Stream(client, m, tokens, full=True) for m in models]
    threads = [threading.Thread(target=s.run) for s in streams]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    probes: list[float] = []
    while probe is not None and not all(s.first for s in streams):
        time.sleep(0.005)
    while probe is not None and len(probes) < 4 and all(t.is_alive() for t in threads):
        p = Stream(client, probe, 1).run()
        if all(t.is_alive() for t in threads):
            probes.append(p.ttft)
        time.sleep(0.5)
    for t in threads:
        t.join()
    return streams, max(s.end for s in streams) - t0, probes


def fine_tune(client: openai.OpenAI, training: str, suffix: str) -> str:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training, suffix=suffix, seed=len(suffix),
                                         hyperparameters={"n_epochs": 1, "batch_size": 10,
                                                          "learning_rate_multiplier": 20.0})
    return job.id


def wait_succeeded(client: openai.OpenAI, job_id: str, poll: float = 0.02) -> tuple[str, float]:
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status == "succeeded":
            assert job.fine_tuned_model
            return job.fine_tuned_model, time.perf_counter()
        if job.status in ("failed", "cancelled"):
            raise RuntimeError(f"fine-tuning job {job_id} {job.status}: {job.error}")
        time.sleep(poll)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-python", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data)
        entry = next(e for e in settings.models if e.kind == "chat")
        path = model_dir(entry, data / "models")  # converts the packaged GGUF once
        tok = load_tokenizer(path)
        text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        # The fine-tuned models learnt a one-line answer: their streams run to max_tokens without end tokens.
        Stream.no_end = {str(t): -100 for t in {tok.eos_token_id, *eos_ids(path)} if t is not None}
        hf_ids = hf_generate(path, ids, args.tokens)
        gguf = Path(tmp) / "model-f32.gguf"
        if args.llama_python:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            packaged = require_model(entry) / str(entry.gguf_file)
            subprocess.run([args.llama_python, "-c", DEQUANTIZE, str(packaged), str(gguf)], check=True,
                           capture_output=True, env=env)
        engine = CausalEngine(path, 0)
        raw_loop(engine, ids, args.tokens)  # warm-up (the fast decoder is made on the first step)

        server = ServeProcess(data).start()
        server.settle()
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", timeout=600, max_retries=0)
            Stream(client, entry.id, args.tokens).run()  # warm-up
            raw_runs, api_runs, llama_runs, llama_ids, raw_ids = [], [], [], hf_ids, hf_ids
            single: list[Stream] = []
            for r in range(args.rounds):  # alternating: raw loop, API, llama.cpp
                raw_tps, raw_ids = raw_loop(engine, ids, args.tokens)
                raw_runs.append(raw_tps)
                single.append(Stream(client, entry.id, args.tokens).run())
                api_runs.append(single[-1].rate)
                if args.llama_python:
                    llama_tps, llama_ids = llama_cpp(args.llama_python, gguf, ids, args.tokens, 1)
                    llama_runs.append(llama_tps)
                print(f"# round {r}: raw {raw_tps:.1f}, API {api_runs[-1]:.1f}, llama.cpp "
                      f"{llama_runs[-1] if llama_runs else '-'}", flush=True)
            engine.close()
            api_tps, raw_tps = statistics.median(api_runs), statistics.median(raw_runs)
            unloaded_ttft = statistics.median(Stream(client, entry.id, 1).run().ttft for _ in range(5))
            same_text = single[-1].text == tok.decode(hf_ids[:single[-1].completion], skip_special_tokens=True)

            lines = [json.dumps({"messages": [*MESSAGES, {"role": "assistant", "content": f"Story {i}: the keeper "
                                                          "lit the lamp and the storm came."}]}) for i in range(10)]
            training = client.files.create(file=("t.jsonl", "\n".join(lines).encode()), purpose="fine-tune").id
            first_job = fine_tune(client, training, "a0")
            first_model, seen = wait_succeeded(client, first_job)
            probe = Stream(client, first_model, 1).run()
            ready = probe.first - seen
            print(f"# succeeded -> first token {ready:.2f} s", flush=True)
            jobs = [fine_tune(client, training, f"a{i}") for i in range(1, ADAPTERS)]
            models = [first_model] + [wait_succeeded(client, j)[0] for j in jobs]
            server.settle()

            alone_runs, aggregate_runs, together_ttft, loaded_ttft = [], [], [], []
            for _ in range(args.rounds):
                alone_runs.append(Stream(client, models[1], args.tokens, full=True).run().rate)
                streams, wall, _ = together(client, models, args.tokens)
                aggregate_runs.append(sum(s.completion for s in streams) / wall)
                together_ttft.extend(s.ttft for s in streams)
            for _ in range(args.rounds):  # requests arriving at the loaded server, a few per round
                loaded_ttft.extend(together(client, models, args.tokens, probe=entry.id)[2])
        finally:
            server.stop()

    alone, aggregate = statistics.median(alone_runs), statistics.median(aggregate_runs)
    print(f"model {entry.id} (fp32 weights), greedy, {args.tokens} new tokens, median of {args.rounds} rounds, "
          f"cores={os.cpu_count()}")
    ratio_raw = statistics.median(a / r for a, r in zip(api_runs, raw_runs, strict=True))
    print(f"raw loop (engine, in-process): {raw_tps:6.1f} tokens/s; same tokens as HF generate: {raw_ids == hf_ids}")
    print(f"API, one stream             : {api_tps:6.1f} tokens/s  ratio to raw loop {ratio_raw:5.2f} "
          "(aim >= 0.9); same text as HF generate: " + str(same_text))
    if not llama_runs:
        print("llama.cpp F32               : not measured: pass --llama-python (an interpreter with llama-cpp-python)")
    else:
        ratio = statistics.median(a / b for a, b in zip(api_runs, llama_runs, strict=True))
        print(f"llama.cpp F32               : {statistics.median(llama_runs):6.1f} tokens/s  ratio API / llama.cpp "
              f"{ratio:5.2f} (aim >= 1.0); same greedy tokens as HF: {llama_ids == hf_ids}")
    print(f"one adapter stream alone    : {alone:6.1f} tokens/s (end tokens banned: {args.tokens} tokens a stream)")
    print(f"{ADAPTERS} adapters, one stream each: {aggregate:6.1f} tokens/s aggregate  ratio {aggregate / alone:5.2f} "
          "(aim >= 4)")
    print(f"TTFT unloaded p50           : {unloaded_ttft * 1000:6.0f} ms")
    print(f"TTFT arriving under load p50: {statistics.median(loaded_ttft) * 1000:6.0f} ms  ratio "
          f"{statistics.median(loaded_ttft) / unloaded_ttft:5.2f} (aim <= 2; {len(loaded_ttft)} requests, "
          f"{ADAPTERS} adapter streams decoding)")
    print(f"TTFT of the {ADAPTERS} arriving together p50: {statistics.median(together_ttft) * 1000:6.0f} ms  ratio "
          f"{statistics.median(together_ttft) / unloaded_ttft:5.2f}")
    print(f"fine-tune succeeded -> first token of its model: {ready:5.2f} s (aim <= 2; polled every 20 ms)")
    print(f"rounds: raw {[round(r, 1) for r in raw_runs]}, API {[round(r, 1) for r in api_runs]}, llama.cpp "
          f"{[round(r, 1) for r in llama_runs]}")
    print(f"rounds: alone {[round(r, 1) for r in alone_runs]}, aggregate {[round(r, 1) for r in aggregate_runs]}")


if __name__ == "__main__":
    main()
