#!/usr/bin/env python3
"""The PyTorch reference for resnorm's GPT training: the same model (GPT-2 layout, Pre-LN,
LayerNorm, tanh GELU, tied head, no dropout, no biases omitted), the same AdamW, the same
learning-rate schedule, in plain eager PyTorch on the CPU.

Three modes, each printing JSON lines:

  speed   random tokens, median time of the full training step (forward, backward, AdamW):
          python3 tools/bench_torch_gpt.py speed --threads 2 --layers 4 --heads 4 --width 128 \\
              --context 64 --batch 12 --vocab 65 --steps 20
          -> {"ms":..,"tok_s":..,"rss_mib":..,"gflops":..}
          with --profile, first one line per op that took most of three torch.profiler steps:
          {"op":..,"self_ms_per_step":..,"share":..}

  train   character-level training on a text file, then validation loss on the last 10% of
          its characters in consecutive non-overlapping context windows (as `resnorm eval`):
          python3 tools/bench_torch_gpt.py train --data ../shared/data/text/shakespeare_8plays.txt \\
              --threads 2 --layers 4 --heads 4 --width 128 --context 64 --batch 12 --steps 2000 \\
              --lr 1e-3 --min-lr 1e-4 --warmup 100 --weight-decay 0.1 --grad-clip 1.0
          -> one line per --eval-every steps {"step":..,"loss":..,"val_loss":..}, then a summary

  sample  incremental decoding of one sequence with a key/value cache (as `resnorm bench
          sample`): a randomly initialized model continues a one-token prompt by --tokens
          tokens (default: the context), sampling at temperature 1; median of --runs runs:
          python3 tools/bench_torch_gpt.py sample --threads 2 --layers 6 --heads 6 --width 384 \\
              --context 256 --vocab 65
          -> {"tok_s":..,"tokens":..}

The learning-rate schedule is llm.c's: lr·(step+1)/warmup during warm-up, then cosine decay to
min_lr at the last step. AdamW uses betas (0.9, 0.95), eps 1e-8, and decays only the matrix
weights (not embeddings, biases or norm gains), like resnorm's defaults.
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.attn_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.attn_proj(y)

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    def cached_attention(self, x, cache, t):
        """Attention of the token at position t ([1, C]) over positions 0..t; appends its key
        and value to the cache ([H, context, d] each)."""
        c = x.shape[-1]
        d = c // self.heads
        q, k, v = self.c_attn(x).split(c, dim=-1)
        keys, values = cache
        keys[:, t] = k.view(self.heads, d)
        values[:, t] = v.view(self.heads, d)
        att = (q.view(self.heads, 1, d) @ keys[:, :t + 1].transpose(-2, -1)) * (1.0 / math.sqrt(d))
        y = att.softmax(dim=-1) @ values[:, :t + 1]
        return self.attn_proj(y.reshape(1, c))

    def decode(self, x, cache, t):
        x = x + self.cached_attention(self.ln_1(x), cache, t)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, context, layers, heads, width):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        std_out = 0.02 / math.sqrt(2 * layers)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, std_out)
            elif p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


    def decode(self, token, t, caches):
        """Logits [1, vocab] after the token at position t, the earlier ones being cached."""
        x = self.wte.weight[token].view(1, -1) + self.wpe.weight[t].view(1, -1)
        for block, cache in zip(self.h, caches):
            x = block.decode(x, cache, t)
        return self.ln_f(x) @ self.wte.weight.T


def make_optimizer(model, lr, weight_decay):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith(("wte", "wpe")))]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if step >= args.steps:
        return args.min_lr
    ratio = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.lr - args.min_lr)


def train_step(model, opt, x, y, lr, grad_clip):
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss = model(x, y)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def flops_per_token(model, args):
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("wpe"))
    return 6 * params + 12 * args.layers * args.width * args.context


def speed(args):
    model = GPT(args.vocab, args.context, args.layers, args.heads, args.width)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, args.vocab, (args.batch, args.context), generator=g)
    y = torch.randint(0, args.vocab, (args.batch, args.context), generator=g)
    times = []
    for step in range(args.steps + 2):
        t0 = time.perf_counter()
        train_step(model, opt, x, y, args.lr, args.grad_clip)
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    if args.profile:
        # Where the step's time goes: torch.profiler over three more steps, ms per step.
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                train_step(model, opt, x, y, args.lr, args.grad_clip)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        for event in events[:12]:
            print(json.dumps({"op": event.key, "self_ms_per_step": round(event.self_cpu_time_total / 3e3, 1),
                              "share": round(event.self_cpu_time_total / total, 3)}))
    tokens = args.batch * args.context
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gflops = flops_per_token(model, args) * tokens / (ms * 1e-3) / 1e9
    print(json.dumps({"impl": f"torch {torch.__version__}", "threads": args.threads, "ms": round(ms, 3),
                      "tok_s": round(tokens / (ms * 1e-3), 1), "rss_mib": round(rss, 1), "gflops": round(gflops, 2)}))


def sample(args):
    model = GPT(args.vocab, args.context, args.layers, args.heads, args.width).eval()
    tokens = args.tokens or args.context
    if tokens > args.context:
        raise SystemExit("--tokens must be at most --context (no sliding window here)")
    d = args.width // args.heads
    g = torch.Generator().manual_seed(args.seed)
    times = []
    with torch.no_grad():
        for run in range(args.runs + 1):
            caches = [(torch.zeros(args.heads, args.context, d), torch.zeros(args.heads, args.context, d))
                      for _ in range(args.layers)]
            start = time.perf_counter()
            token = 0
            logits = model.decode(token, 0, caches)
            for i in range(tokens):
                token = torch.multinomial(logits.softmax(dim=-1)[0], 1, generator=g).item()
                if i + 1 < tokens:
                    logits = model.decode(token, i + 1, caches)
            if run > 0:  # one warm-up run
                times.append(time.perf_counter() - start)
    tok_s = tokens / statistics.median(times)
    print(json.dumps({"impl": f"torch {torch.__version__}", "threads": args.threads, "tokens": tokens,
                      "tok_s": round(tok_s, 1)}))


def train(args):
    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = len(data) - len(data) // 10
    train_data, val_data = data[:split], data[split:]
    model = GPT(len(chars), args.context, args.layers, args.heads, args.width)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    g = torch.Generator().manual_seed(args.seed)

    def evaluate():
        model.eval()
        windows = (len(val_data) - 1) // args.context
        total = 0.0
        with torch.no_grad():
            for start in range(0, windows, 64):
                rows = range(start, min(windows, start + 64))
                x = torch.stack([val_data[i * args.context:(i + 1) * args.context] for i in rows])
                y = torch.stack([val_data[i * args.context + 1:(i + 1) * args.context + 1] for i in rows])
                total += model(x, y).item() * len(rows)
        model.train()
        return total / windows

    start = time.perf_counter()
    for step in range(args.steps):
        ix = torch.randint(len(train_data) - args.context - 1, (args.batch,), generator=g)
        x = torch.stack([train_data[i:i + args.context] for i in ix])
        y = torch.stack([train_data[i + 1:i + 1 + args.context] for i in ix])
        loss = train_step(model, opt, x, y, lr_at(step, args), args.grad_clip)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            print(json.dumps({"step": step + 1, "loss": round(loss, 4), "val_loss": round(evaluate(), 4),
                              "elapsed_s": round(time.perf_counter() - start, 1)}), flush=True)
    print(json.dumps({"impl": f"torch {torch.__version__}", "final_val_loss": round(evaluate(), 4),
                      "seconds": round(time.perf_counter() - start, 1), "vocab": len(chars)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["speed", "train", "sample"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=65, help="speed mode only (train uses the text's characters)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--data")
    parser.add_argument("--tokens", type=int, help="sample mode: tokens to generate (default: the context)")
    parser.add_argument("--runs", type=int, default=5, help="sample mode: timed runs")
    parser.add_argument("--profile", action="store_true",
                        help="speed mode: also print the ops that took most of three profiled steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.mode == "train" and not args.data:
        parser.error("train needs --data")
    {"speed": speed, "train": train, "sample": sample}[args.mode](args)


if __name__ == "__main__":
    main()
