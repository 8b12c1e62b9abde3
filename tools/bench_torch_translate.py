#!/usr/bin/env python3
"""The PyTorch twin of `resnorm translate train`, for training speed side by side: the same
encoder-decoder shape (torch.nn.Transformer, norm_first=True for pre-LN, tanh-GELU MLP of
4x the width, no dropout), the shared embedding scaled by sqrt(width) and tied to the output
projection, sinusoidal positions, the same BPE (the run's tokenizer.json), the same batches
by token count (pairs sorted by length, filled up to --max-tokens padded tokens), AdamW with
torch's defaults and weight decay 0.01, clipping at 1.0, in plain eager PyTorch on the CPU.
`Twin`, `batches` and `tensors` are shared with tools/train_torch_translate.py, the BLEU twin.

    python3 tools/bench_torch_translate.py --checkpoint runs/translate \\
        --data ../shared/data/translation --threads 2 --steps 30
    -> {"steps":..,"s_per_step":..,"tgt_tok_s":..,"loss_first":..,"loss_last":..,"rss_mib":..}

tgt_tok_s counts target tokens (padding left out), as resnorm's metrics.jsonl does.
"""

import argparse
import json
import math
import random
import resource
import time

import torch
from tokenizers import Tokenizer

PAD, BOS, EOS = 0, 1, 2


def batches(pairs, max_tokens, max_len, seed):
    """fairseq-style buckets: shuffle, stable sort by (source, target) length, fill greedily."""
    order = [i for i, (s, t) in enumerate(pairs) if max(len(s), len(t)) <= min(max_len, max_tokens)]
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    out, cur, longest = [], [], 0
    for i in order:
        size = max(len(pairs[i][0]), len(pairs[i][1]))
        if cur and (len(cur) + 1) * max(longest, size) > max_tokens:
            out.append(cur)
            cur, longest = [], 0
        longest = max(longest, size)
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def tensors(pairs, batch):
    """The batch's sources, decoder inputs (<s> + target[:-1]) and targets, right padded
    (PAD, and -100 where the loss ignores a target)."""
    s_len = max(len(pairs[i][0]) for i in batch)
    t_len = max(len(pairs[i][1]) for i in batch)
    src = torch.full((len(batch), s_len), PAD)
    tgt = torch.full((len(batch), t_len), PAD)
    out = torch.full((len(batch), t_len), -100)
    for r, i in enumerate(batch):
        s, t = pairs[i]
        src[r, : len(s)] = torch.tensor(s)
        tgt[r, : len(t)] = torch.tensor([BOS] + t[:-1])
        out[r, : len(t)] = torch.tensor(t)
    return src, tgt, out


class Twin(torch.nn.Module):
    """resnorm's pre-LN encoder-decoder as torch.nn.Transformer, initialized as resnorm's
    (crates/resnorm/src/models/seq2seq/init.rs): embedding normal(0, width^-1/2), every
    linear Xavier-normal (q, k, v as three matrices), biases 0. `dropout` is resnorm's
    residual dropout (embeddings and every sublayer's output); attention and activation
    dropout stay off, as in resnorm's default recipe."""

    def __init__(self, vocab, width, heads, enc, dec, max_len, dropout=0.0):
        super().__init__()
        self.width = width
        self.embed = torch.nn.Embedding(vocab, width)
        torch.nn.init.normal_(self.embed.weight, std=width ** -0.5)
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
        table = torch.zeros(max_len, width)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pos", table)
        self.drop = torch.nn.Dropout(dropout)
        self.transformer = torch.nn.Transformer(
            d_model=width, nhead=heads, num_encoder_layers=enc, num_decoder_layers=dec,
            dim_feedforward=4 * width, dropout=dropout,
            activation=lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
            batch_first=True, norm_first=True)
        for name, m in self.transformer.named_modules():
            if isinstance(m, torch.nn.MultiheadAttention):
                m.dropout = 0.0  # attention dropout off
                for w in m.in_proj_weight.data.chunk(3):
                    torch.nn.init.xavier_normal_(w)
                torch.nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_normal_(m.weight)
                torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.Dropout) and name.endswith(".dropout"):
                m.p = 0.0  # the MLP's activation dropout off; dropout1/2/3 stay residual

    def embed_tokens(self, ids):
        return self.drop(self.embed(ids) * math.sqrt(self.width) + self.pos[: ids.shape[1]])

    def forward(self, src, tgt, src_pad, tgt_pad):
        mask = self.transformer.generate_square_subsequent_mask(tgt.shape[1])
        y = self.transformer(self.embed_tokens(src), self.embed_tokens(tgt), tgt_mask=mask,
                             src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                             memory_key_padding_mask=src_pad)
        return y @ self.embed.weight.t()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="es")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    tok = Tokenizer.from_file(f"{a.checkpoint}/checkpoint/tokenizer.json")
    read = lambda lang: open(f"{a.data}/train.{lang}", encoding="utf-8").read().splitlines()
    enc = lambda lines: [e.ids + [EOS] for e in tok.encode_batch(lines, add_special_tokens=False)]
    pairs = list(zip(enc(read(a.src)), enc(read(a.tgt))))
    model = Twin(tok.get_vocab_size(), a.width, a.heads, a.layers, a.layers, a.max_len)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    bs = batches(pairs, a.max_tokens, a.max_len, 1)
    random.Random(2).shuffle(bs)
    losses, times, tokens = [], [], 0
    for step, b in enumerate(bs[: a.steps + 1]):
        src, tgt, out = tensors(pairs, b)
        started = time.perf_counter()
        logits = model(src, tgt, src == PAD, out == -100)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step > 0:  # the first step warms up the allocator
            times.append(time.perf_counter() - started)
            tokens += int((out != -100).sum())
        losses.append(loss.item())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps": len(times), "s_per_step": sum(times) / len(times),
                      "tgt_tok_s": tokens / sum(times), "loss_first": losses[0],
                      "loss_last": losses[-1], "rss_mib": rss}))


if __name__ == "__main__":
    main()
