#!/usr/bin/env python3
"""Greedy decoding speed, resnorm against a PyTorch twin of the same checkpoint.

The twin loads the run's `model.safetensors` (resnorm's names; linear weights input-major,
y = x @ W + b, transposed here once for F.linear) and decodes as fairseq does: the sources
encoded once per batch, each decoder layer's cross-attention keys and values computed once,
and a self-attention key/value cache (preallocated, written in place) so that each step runs
the decoder on one new position per sentence. Pre-LN with LayerNorm only (the default
recipe), tanh GELU, eps from config.json. The same batching as `resnorm translate`: sources
sorted by length, grouped while `count x longest <= --max-tokens`; the same limit of
`min(2 x longest + 10, max_len)` tokens per batch; finished rows keep being computed until
the whole batch is done (resnorm does the same), so both sides do the same work when they
emit the same tokens: the script reports how many translations are identical.

Each round runs, alternately: resnorm batched, the twin batched, resnorm one sentence at a
time (`--max-tokens 1`), the twin one at a time, and resnorm's beam search (`--beam 5`,
batched). Both time decoding only: the twin without loading and torch's import, and resnorm's decoding as `--speed` reports it (loading and BPE left out).

    python3 tools/bench_torch_translate_decode.py --checkpoint RUN \\
        --input ../shared/data/translation/test.en --resnorm target/release/resnorm \\
        --rounds 3 --single 100 --threads 2
"""

import argparse
import json
import math
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

PAD, BOS, EOS = 0, 1, 2


class Twin:
    """resnorm's pre-LN encoder-decoder, run with a key/value cache."""

    def __init__(self, run):
        config = json.load(open(f"{run}/checkpoint/config.json"))
        assert config["placement"] == "pre-ln" and config["norm"] == "layer", config
        p = load_file(f"{run}/checkpoint/model.safetensors")
        self.p = {k: (v.t().contiguous() if k.endswith(".weight") and v.dim() == 2 and k != "embed.weight" else v)
                  for k, v in p.items()}
        self.c, self.heads = config["width"], config["heads"]
        self.enc, self.dec = config["encoder_layers"], config["decoder_layers"]
        self.max_len, self.eps = config["max_len"], config["eps"]
        pos = torch.arange(self.max_len, dtype=torch.float64)[:, None]
        rate = torch.exp(-math.log(10000.0) * torch.arange(0, self.c, 2, dtype=torch.float64) / self.c)
        table = torch.zeros(self.max_len, self.c, dtype=torch.float64)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos * rate), torch.cos(pos * rate)
        self.pos = table.float()

    def lin(self, x, name):
        return F.linear(x, self.p[f"{name}.weight"], self.p[f"{name}.bias"])

    def ln(self, x, name):
        return F.layer_norm(x, (self.c,), self.p[f"{name}.weight"], self.p[f"{name}.bias"], self.eps)

    def split(self, x):  # [B, T, C] -> [B, H, T, d]
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def merge(self, x):
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.c)

    def mlp(self, h, p):
        return self.lin(F.gelu(self.lin(h, f"{p}.mlp.c_fc"), approximate="tanh"), f"{p}.mlp.c_proj")

    def greedy(self, src, lengths, limit):
        b, s = src.shape
        c, e = self.c, self.p["embed.weight"]
        seen = (torch.arange(s)[None, :] < lengths[:, None])[:, None, None, :]  # [B,1,1,S]
        x = math.sqrt(c) * e[src] + self.pos[:s]
        for i in range(self.enc):
            p = f"encoder.{i}"
            q, k, v = self.lin(self.ln(x, f"{p}.ln_1"), f"{p}.self_attn.c_attn").split(c, -1)
            a = F.scaled_dot_product_attention(self.split(q), self.split(k), self.split(v), attn_mask=seen)
            x = x + self.lin(self.merge(a), f"{p}.self_attn.c_proj")
            x = x + self.mlp(self.ln(x, f"{p}.ln_2"), p)
        memory = self.ln(x, "encoder.ln_f")
        cross = []
        for i in range(self.dec):
            k, v = self.lin(memory, f"decoder.{i}.cross_attn.c_kv").split(c, -1)
            cross.append((self.split(k), self.split(v)))
        d = c // self.heads
        caches = [(torch.zeros(b, self.heads, limit, d), torch.zeros(b, self.heads, limit, d))
                  for _ in range(self.dec)]
        tokens = torch.full((b,), BOS)
        out = torch.zeros(b, limit, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        steps = 0
        for t in range(limit):
            y = (math.sqrt(c) * e[tokens] + self.pos[t])[:, None, :]  # [B,1,C]
            for i in range(self.dec):
                p = f"decoder.{i}"
                q, k, v = self.lin(self.ln(y, f"{p}.ln_1"), f"{p}.self_attn.c_attn").split(c, -1)
                kc, vc = caches[i]
                kc[:, :, t : t + 1] = self.split(k)
                vc[:, :, t : t + 1] = self.split(v)
                a = F.scaled_dot_product_attention(self.split(q), kc[:, :, : t + 1], vc[:, :, : t + 1])
                y = y + self.lin(self.merge(a), f"{p}.self_attn.c_proj")
                q = self.lin(self.ln(y, f"{p}.ln_2"), f"{p}.cross_attn.c_q")
                a = F.scaled_dot_product_attention(self.split(q), *cross[i], attn_mask=seen)
                y = y + self.lin(self.merge(a), f"{p}.cross_attn.c_proj")
                y = y + self.mlp(self.ln(y, f"{p}.ln_3"), p)
            logits = self.ln(y[:, 0], "decoder.ln_f") @ e.t()
            tokens = logits.argmax(-1)
            out[:, t] = tokens
            done |= tokens == EOS
            steps += 1
            if bool(done.all()):
                break
        result = []
        for row in out[:, :steps].tolist():
            result.append(row[: row.index(EOS)] if EOS in row else row)
        return result


def batches(sources, max_tokens, max_len):
    """resnorm's grouping (translate::evaluate::decode)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * min(len(sources[order[end]]), max_len) <= max_tokens:
            end += 1
        yield order[start:end]
        start = end


def twin_decode(twin, sources, max_tokens):
    out = [None] * len(sources)
    with torch.inference_mode():
        for group in batches(sources, max_tokens, twin.max_len):
            s = max(1, min(len(sources[group[-1]]), twin.max_len))
            src = torch.full((len(group), s), PAD)
            lengths = torch.zeros(len(group), dtype=torch.long)
            for r, i in enumerate(group):
                ids = sources[i][:s]
                src[r, : len(ids)] = torch.tensor(ids)
                lengths[r] = max(1, len(ids))
            limit = min(2 * s + 10, twin.max_len)
            for i, ids in zip(group, twin.greedy(src, lengths, limit)):
                out[i] = ids
    return out


def resnorm_decode(binary, run, path, threads, extra):
    """Decoding seconds as `--speed` reports them (loading left out), and the lines."""
    cmd = [binary, "--threads", str(threads), "translate", "--checkpoint", run, "--input", path,
           "--speed", *extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = float(done.stderr.split(" in ")[1].split(" s:")[0])
    return seconds, done.stdout.splitlines()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--resnorm", default="target/release/resnorm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sentences", type=int, default=0, help="the first N lines only (0: all)")
    p.add_argument("--single", type=int, default=100, help="sentences decoded one at a time")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--out", default="/tmp/bench_decode")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(f"{a.checkpoint}/checkpoint/tokenizer.json")
    max_tokens = json.load(open(f"{a.checkpoint}/checkpoint/translate.json"))["max_tokens"]
    lines = open(a.input, encoding="utf-8").read().splitlines()
    lines = lines[: a.sentences or len(lines)]
    batched_path = f"{a.out}.batched.txt"
    open(batched_path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    single_path = f"{a.out}.single.txt"
    open(single_path, "w", encoding="utf-8").write("\n".join(lines[: a.single]) + "\n")
    sources = [e.ids + [EOS] for e in tok.encode_batch(lines, add_special_tokens=False)]
    twin = Twin(a.checkpoint)
    rows = {k: [] for k in ("resnorm", "torch", "resnorm_1", "torch_1", "resnorm_beam")}
    for r in range(a.rounds):
        t, ours = resnorm_decode(a.resnorm, a.checkpoint, batched_path, a.threads, [])
        rows["resnorm"].append(t)
        started = time.perf_counter()
        theirs = twin_decode(twin, sources, max_tokens)
        rows["torch"].append(time.perf_counter() - started)
        t, ours_1 = resnorm_decode(a.resnorm, a.checkpoint, single_path, a.threads, ["--max-tokens", "1"])
        rows["resnorm_1"].append(t)
        started = time.perf_counter()
        theirs_1 = twin_decode(twin, sources[: a.single], 1)
        rows["torch_1"].append(time.perf_counter() - started)
        t, _ = resnorm_decode(a.resnorm, a.checkpoint, batched_path, a.threads, ["--beam", str(a.beam)])
        rows["resnorm_beam"].append(t)
        print(json.dumps({"round": r, **{k: round(v[-1], 3) for k, v in rows.items()}}), flush=True)
    same = sum(x == tok.decode(y) for x, y in zip(ours, theirs))
    same_1 = sum(x == tok.decode(y) for x, y in zip(ours_1, theirs_1))
    n, n1 = len(lines), a.single
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(json.dumps({
        "sentences": n, "single_sentences": n1, "rounds": a.rounds,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "sent_per_s": {"resnorm": n / med["resnorm"], "torch": n / med["torch"],
                       "resnorm_1": n1 / med["resnorm_1"], "torch_1": n1 / med["torch_1"],
                       f"resnorm_beam{a.beam}": n / med["resnorm_beam"]},
        "ratio_batched_per_round": [round(t / r, 2) for r, t in zip(rows["resnorm"], rows["torch"])],
        "ratio_single_per_round": [round(t / r, 2) for r, t in zip(rows["resnorm_1"], rows["torch_1"])],
        "identical_translations": [same, n], "identical_single": [same_1, n1],
        "output_tokens_torch": sum(len(y) for y in theirs), "threads": a.threads,
        "load_average": open("/proc/loadavg").read().split()[:3], "utc": time.strftime("%H:%M:%S", time.gmtime()),
    }))


if __name__ == "__main__":
    main()
