#!/usr/bin/env python3
"""The PyTorch twin of `resnorm translate train` for BLEU: the same recipe, trained to the
end, with test BLEU along the way.

Same model (tools/bench_torch_translate.py's `Twin`: torch.nn.Transformer, pre-LN, tanh
GELU, residual dropout, resnorm's initialization), same tokenizer (the resnorm run's
tokenizer.json), same kind of batches (length-sorted buckets of at most --max-tokens padded
tokens, reshuffled every epoch with the twin's own seed), same loss (label-smoothed cross
entropy, the mean over target tokens), same optimizer (AdamW, betas 0.9/0.999, weight decay
on the linear weights only), same schedule (linear warm-up, then cosine to --min-lr), same
clipping. Defaults are resnorm's default recipe (crates/resnorm/src/translate/config.rs).

At every --eval-every steps and at the end the clock stops, the model translates the
--bleu-sentences first test sentences greedily (batched, sources sorted by length, at most
min(2·S+10, max_len) tokens, as resnorm), and sacreBLEU scores them; one JSON line per
evaluation goes to --log and to stdout:

    python3 tools/train_torch_translate.py --tokenizer RUN/checkpoint/tokenizer.json \\
        --data ../shared/data/translation --threads 2 --log twin.jsonl
    -> {"step":..,"train_s":..,"loss":..,"bleu":..,"chrf":..,"sentences":..}

train_s counts the training steps' time only (batching, forward, backward, update).
"""

import argparse
import json
import math
import random
import time
import warnings

import sacrebleu
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from bench_torch_translate import BOS, EOS, PAD, Twin, batches, tensors


def learning_rate(a, step):
    """resnorm's WarmupCosine at 0-based `step`."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    progress = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (a.lr - a.min_lr)


@torch.no_grad()
def greedy(model, sources, max_tokens, max_len):
    """Greedy translations of `sources` (ids ending in </s>), in the order given."""
    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs = [None] * len(sources)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * min(len(sources[order[end]]), max_len) <= max_tokens:
            end += 1
        group = order[start:end]
        s = min(max(1, len(sources[group[-1]])), max_len)
        src = torch.full((len(group), s), PAD)
        for r, i in enumerate(group):
            ids = sources[i][:s]
            src[r, : len(ids)] = torch.tensor(ids)
        pad = src == PAD
        memory = model.transformer.encoder(model.embed_tokens(src), src_key_padding_mask=pad)
        ys = torch.full((len(group), 1), BOS)
        done = torch.zeros(len(group), dtype=torch.bool)
        for _ in range(min(2 * s + 10, max_len)):
            mask = model.transformer.generate_square_subsequent_mask(ys.shape[1])
            y = model.transformer.decoder(model.embed_tokens(ys), memory, tgt_mask=mask,
                                          memory_key_padding_mask=pad)
            nxt = (y[:, -1] @ model.embed.weight.t()).argmax(-1)
            ys = torch.cat([ys, nxt[:, None]], 1)
            done |= nxt == EOS
            if done.all():
                break
        for r, i in enumerate(group):
            ids = ys[r, 1:].tolist()
            outputs[i] = ids[: ids.index(EOS)] if EOS in ids else ids
        start = end
    model.train()
    return outputs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="es")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--bleu-sentences", type=int, default=1000)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    warnings.filterwarnings("ignore")  # nn.Transformer's notes on nested tensors and masks
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = Tokenizer.from_file(a.tokenizer)
    read = lambda split, lang: open(f"{a.data}/{split}.{lang}", encoding="utf-8").read().splitlines()
    enc = lambda lines: [e.ids + [EOS] for e in tok.encode_batch(lines, add_special_tokens=False)]
    pairs = list(zip(enc(read("train", a.src)), enc(read("train", a.tgt))))
    test_src = enc(read("test", a.src))[: a.bleu_sentences]
    test_ref = read("test", a.tgt)[: a.bleu_sentences]
    model = Twin(tok.get_vocab_size(), a.width, a.heads, a.layers, a.layers, a.max_len, a.dropout)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "embed.weight"]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n != "embed.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=a.lr)
    log = open(a.log, "w")
    train_s, losses, epoch, queue = 0.0, [], 0, []

    def evaluate(step):
        hyps = [tok.decode(ids) for ids in greedy(model, test_src, a.max_tokens, a.max_len)]
        line = {"step": step, "train_s": round(train_s, 2),
                "loss": sum(losses) / max(1, len(losses)),
                "bleu": round(sacrebleu.corpus_bleu(hyps, [test_ref]).score, 2),
                "chrf": round(sacrebleu.corpus_chrf(hyps, [test_ref]).score, 2),
                "sentences": len(hyps)}
        losses.clear()
        print(json.dumps(line), flush=True)
        log.write(json.dumps(line) + "\n")
        log.flush()

    for step in range(a.steps):
        started = time.perf_counter()
        if not queue:
            queue = batches(pairs, a.max_tokens, a.max_len, a.seed + epoch)
            random.Random(a.seed + 1000 + epoch).shuffle(queue)
            epoch += 1
        src, tgt, out = tensors(pairs, queue.pop())
        for group in opt.param_groups:
            group["lr"] = learning_rate(a, step)
        logits = model(src, tgt, src == PAD, out == -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), out.reshape(-1),
                               ignore_index=-100, label_smoothing=a.label_smoothing)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        losses.append(loss.item())
        train_s += time.perf_counter() - started
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            evaluate(step + 1)


if __name__ == "__main__":
    main()
