#!/usr/bin/env python3
"""The encoder classifier's PyTorch twin as a trainer, on the split a resnorm run wrote.

Development tool, run by hand (docs/benchmarks.md, "Sentiment"):

    resnorm classify train --body encoder --data $V --score-column score --threshold 0.5 \\
        --group-column domain --dropout 0.1 --out runs/encoder
    python3 tools/bench_torch_classify.py --data $V --split runs/encoder/split.tsv

Same model as `resnorm classify train --body encoder` (torch.nn.TransformerEncoder, pre-ln
with a final LayerNorm, GELU tanh, --encoder-dropout inside (default 0: on the embedding
and as TransformerEncoderLayer's dropout: sublayer outputs, MLP activation, attention
probabilities, as resnorm's encoder); sqrt(C) E + sinusoids; mean pooling
over the real tokens, dropout before the head), same initialization (E normal(0, C^-1/2),
Xavier-normal linears with the fused q/k/v as three [C, C] blocks, head normal(0, 0.02)),
same tokens (GPT-2 BPE from tiktoken-rs's encoder.json/vocab.bpe, cut to --context), same
recipe (batch sentences drawn uniformly with replacement, AdamW betas 0.9/0.999 eps 1e-8 with
decay on matrices only, linear warm-up then cosine, global-norm clipping). Prints the test
accuracy per domain and overall and the training sentences/s (the steps only, evaluation
excluded); --steps N --no-eval times a short run.
"""
import argparse
import glob
import math
import os
import random
import time

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers


def read_table(path, threshold):
    """line number -> (text, label, domain) for rows with |score| >= threshold."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name: i for i, name in enumerate(header)}
        for n, line in enumerate(f, start=2):
            cells = line.rstrip("\n").split("\t")
            score = float(cells[col["score"]])
            if abs(score) >= threshold:
                rows[n] = (cells[col["text"]], int(score > 0), cells[col["domain"]])
    return rows


def read_split(path):
    out = {"train": [], "valid": [], "test": []}
    with open(path, encoding="utf-8") as f:
        f.readline()
        for line in f:
            n, split = line.split()
            out[split].append(int(n))
    return out


def positions(seq, c):
    p = torch.zeros(seq, c, dtype=torch.float64)
    t = torch.arange(seq, dtype=torch.float64)[:, None]
    rate = torch.exp(-math.log(10000.0) * torch.arange(0, c, 2, dtype=torch.float64) / c)
    p[:, 0::2] = torch.sin(t * rate)
    p[:, 1::2] = torch.cos(t * rate)
    return p.float()


class Twin(torch.nn.Module):
    def __init__(self, vocab, width, heads, layers, context, classes, dropout, encoder_dropout):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=encoder_dropout,
                                                 activation=lambda x: F.gelu(x, approximate="tanh"),
                                                 layer_norm_eps=1e-5, batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, norm=torch.nn.LayerNorm(width, eps=1e-5),
                                                   enable_nested_tensor=False)
        self.drop = torch.nn.Dropout(dropout)
        self.drop_embedding = torch.nn.Dropout(encoder_dropout)
        self.head = torch.nn.Linear(width, classes)
        self.register_buffer("pos", positions(context, width))
        self.width = width
        with torch.no_grad():
            torch.nn.init.normal_(self.embed.weight, 0.0, width ** -0.5)
            for lay in self.encoder.layers:
                w = lay.self_attn.in_proj_weight
                for k in range(3):
                    torch.nn.init.normal_(w[k * width:(k + 1) * width], 0.0, (1.0 / width) ** 0.5)
                for lin in (lay.self_attn.out_proj, lay.linear1, lay.linear2):
                    fan_in, fan_out = lin.weight.shape[1], lin.weight.shape[0]
                    torch.nn.init.normal_(lin.weight, 0.0, (2.0 / (fan_in + fan_out)) ** 0.5)
                    torch.nn.init.zeros_(lin.bias)
                torch.nn.init.zeros_(lay.self_attn.in_proj_bias)
            torch.nn.init.normal_(self.head.weight, 0.0, 0.02)
            torch.nn.init.zeros_(self.head.bias)

    def forward(self, tokens, lengths):
        t = tokens.shape[1]
        x = self.drop_embedding(self.width ** 0.5 * self.embed(tokens) + self.pos[:t])
        valid = torch.arange(t)[None, :] < lengths[:, None]
        h = self.encoder(x, src_key_padding_mask=~valid)
        pooled = (h * valid[..., None]).sum(1) / lengths[:, None]
        return self.head(self.drop(pooled))


def batch_of(encoded, rows, context):
    seq = context
    tokens = torch.zeros(len(rows), seq, dtype=torch.long)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    for i, r in enumerate(rows):
        ids = encoded[r]
        tokens[i, :len(ids)] = torch.tensor(ids)
        lengths[i] = len(ids)
    return tokens, lengths


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if step >= args.steps:
        return args.min_lr
    ratio = (step - args.warmup) / (args.steps - args.warmup)
    return args.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (args.lr - args.min_lr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True, help="split.tsv of the resnorm run")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--encoder-dropout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-eval", action="store_true", help="time the steps only")
    ap.add_argument("--bpe-dir", default=None, help="folder of GPT-2's encoder.json and vocab.bpe "
                    "[default: tiktoken-rs's assets in ~/.cargo/registry]")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    bpe = args.bpe_dir or sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets")))[-1]
    tok = Tokenizer(models.BPE.from_file(f"{bpe}/encoder.json", f"{bpe}/vocab.bpe"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    table = read_table(args.data, args.threshold)
    split = read_split(args.split)
    encoded = {n: tok.encode(text).ids[:args.context] for n, (text, _, _) in table.items()}
    assert min(map(len, encoded.values())) > 0, "a sentence with no token"

    labels = {n: label for n, (_, label, _) in table.items()}
    model = Twin(50257, args.width, args.heads, args.layers, args.context, 2, args.dropout,
                 args.encoder_dropout)
    matrices = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "embed.weight"]
    others = [p for n, p in model.named_parameters() if p.dim() != 2 or n == "embed.weight"]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": args.weight_decay},
                             {"params": others, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    train = split["train"]
    model.train()
    started = time.perf_counter()
    for step in range(args.steps):
        rows = [train[rng.randrange(len(train))] for _ in range(args.batch)]
        tokens, lengths = batch_of(encoded, rows, args.context)
        target = torch.tensor([labels[r] for r in rows])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        loss = F.cross_entropy(model(tokens, lengths), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}", flush=True)
    seconds = time.perf_counter() - started
    print(f"training: {args.steps * args.batch / seconds:.1f} sentences/s ({seconds:.1f} s, {args.threads} threads)")
    if args.no_eval:
        return
    model.eval()
    test = split["test"]
    correct, per = 0, {}
    with torch.no_grad():
        for i in range(0, len(test), args.batch):
            rows = test[i:i + args.batch]
            tokens, lengths = batch_of(encoded, rows, args.context)
            predicted = model(tokens, lengths).argmax(-1).tolist()
            for r, p in zip(rows, predicted):
                ok = int(p == labels[r])
                correct += ok
                d = per.setdefault(table[r][2], [0, 0])
                d[0] += ok
                d[1] += 1
    for domain in sorted(per):
        print(f"  {domain}: accuracy {per[domain][0] / per[domain][1]:.4f} ({per[domain][1]} sentences)")
    print(f"test: accuracy {correct / len(test):.4f} ({len(test)} sentences)")


if __name__ == "__main__":
    main()
