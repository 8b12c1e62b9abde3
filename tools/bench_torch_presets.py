#!/usr/bin/env python3
"""The PyTorch side of `resnorm bench train|sample --preset gpt2-124m|llama-135m`: the same
shapes built with Hugging Face transformers (GPT2LMHeadModel, LlamaForCausalLM), random
weights, f32, eager attention, no dropout, on the CPU with the same thread count.

  train   median time of the full training step on random tokens, as `resnorm bench
          train`: forward, mean cross-entropy over every position, backward, clipping at 1,
          AdamW (betas 0.9/0.95, weight decay 0.1); two warm-up steps:
          python3 tools/bench_torch_presets.py train --preset llama-135m --threads 2
          -> {"ms":..,"tok_s":..,"rss_mib":..,"params":..}

  sample  greedy decoding of one sequence with the key/value cache, as `resnorm bench sample`:
          model.generate(do_sample=False, use_cache=True) continues a one-token prompt by
          --tokens tokens (no end-of-text stop); median tokens/s of --runs runs after one
          warm-up run:
          python3 tools/bench_torch_presets.py sample --preset gpt2-124m --threads 2
          -> {"tok_s":..,"tokens":..,"rss_mib":..,"params":..}

rss_mib is the process's peak resident memory (ru_maxrss), the interpreter and libraries
included, as resnorm's VmHWM.
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
import transformers

PRESETS = {
    # GPT-2 small: 12 blocks, width 768, 12 heads, MLP 3072, tanh GELU, tied head.
    "gpt2-124m": dict(layers=12, width=768, heads=12, vocab=50257, context=1024),
    # SmolLM-135M: 30 blocks, width 576, 9 heads (3 key/value), SwiGLU 1536, tied head.
    "llama-135m": dict(layers=30, width=576, heads=9, vocab=49152, context=2048),
}


def build(preset, context):
    shape = PRESETS[preset]
    if preset == "gpt2-124m":
        config = transformers.GPT2Config(
            vocab_size=shape["vocab"], n_positions=context, n_embd=shape["width"],
            n_layer=shape["layers"], n_head=shape["heads"], resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, activation_function="gelu_new", tie_word_embeddings=True,
            bos_token_id=None, eos_token_id=None)
    else:
        config = transformers.LlamaConfig(
            vocab_size=shape["vocab"], hidden_size=shape["width"], intermediate_size=1536,
            num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
            num_key_value_heads=3, max_position_embeddings=context, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=True, hidden_act="silu",
            attention_bias=False, mlp_bias=False, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(1337)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32)
    return model


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(args):
    context = args.context or 512
    model = build(args.preset, context)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(vocab, (args.batch, context), generator=g)
    y = torch.randint(vocab, (args.batch, context), generator=g)
    times = []
    for step in range(args.steps + 2):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times)
    print(json.dumps({"impl": f"torch {torch.__version__} transformers {transformers.__version__}",
                      "threads": torch.get_num_threads(), "ms": round(ms, 3),
                      "tok_s": round(args.batch * context / (ms * 1e-3), 3),
                      "rss_mib": round(peak_rss_mib(), 3), "params": params,
                      "batch": args.batch, "context": context}))


def sample(args):
    model = build(args.preset, args.context or PRESETS[args.preset]["context"])
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    prompt = torch.zeros(1, 1, dtype=torch.long)
    seconds = []
    with torch.no_grad():
        for run in range(args.runs + 1):
            start = time.perf_counter()
            out = model.generate(prompt, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                 do_sample=False, use_cache=True, pad_token_id=0,
                                 eos_token_id=None)
            if run > 0:
                seconds.append(time.perf_counter() - start)
            assert out.shape[1] == 1 + args.tokens
    tok_s = args.tokens / statistics.median(seconds)
    print(json.dumps({"impl": f"torch {torch.__version__} transformers {transformers.__version__}",
                      "threads": torch.get_num_threads(), "tokens": args.tokens,
                      "tok_s": round(tok_s, 1), "rss_mib": round(peak_rss_mib(), 3),
                      "params": params}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["train", "sample"])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int,
                        help="train: tokens per window (default 512); sample: the model's context")
    parser.add_argument("--batch", type=int, default=1, help="train: windows per step")
    parser.add_argument("--steps", type=int, default=3, help="train: timed steps")
    parser.add_argument("--tokens", type=int, default=128, help="sample: tokens to generate")
    parser.add_argument("--runs", type=int, default=3, help="sample: timed runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    {"train": train, "sample": sample}[args.mode](args)


if __name__ == "__main__":
    main()
