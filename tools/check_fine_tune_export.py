"""Fine-tunes each tiny Hugging Face fixture with resnorm, exports it, and checks that
`transformers` reads the exported directory and computes what resnorm computes on it.

For every architecture in crates/resnorm/tests/fixtures/hf/:

    resnorm train --init-from FIXTURE --data TEXT ... (a few steps)  -> RUN
    resnorm export --checkpoint RUN --out HFDIR
    resnorm eval --model HFDIR --data TEXT --window W --json         -> resnorm's loss
    resnorm sample --model HFDIR --prompt P --temperature 0          -> resnorm's greedy text
    AutoModelForCausalLM.from_pretrained(HFDIR) (float32, eager)      -> the same loss and text

The loss is the mean next-token cross-entropy over the same windows of the same token ids
(the exported tokenizer.json, no special tokens), so equal losses mean equal logits at the
target tokens; the greedy continuations must agree token for token. The fine-tuned weights
differ from the fixture's, so this checks the export of trained weights, not the fixture's.

Usage (from the repository root, after `cargo build -p resnorm-cli`):

    python3 tools/check_fine_tune_export.py [--resnorm target/debug/resnorm] [ARCH ...]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/resnorm/tests/fixtures/hf"
TEXT = "the quick brown fox jumps over the lazy dog. " * 20
WINDOW = 16
PROMPT = "the quick"
TOKENS = 8


def run(resnorm, *args):
    out = subprocess.run([resnorm, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"resnorm {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def transformers_loss(model, ids):
    windows = (len(ids) - 1) // WINDOW
    total = 0.0
    for w in range(windows):
        span = torch.tensor(ids[w * WINDOW:(w + 1) * WINDOW + 1])
        logits = model(span[None, :-1]).logits[0]
        total += torch.nn.functional.cross_entropy(logits.double(), span[1:]).item()
    return total / windows


def check(resnorm, arch, tmp):
    data = tmp / "data.txt"
    data.write_text(TEXT)
    run_dir, hf = tmp / f"{arch}-run", tmp / f"{arch}-hf"
    run(resnorm, "train", "--init-from", str(FIXTURES / arch), "--data", str(data),
        "--out", str(run_dir), "--context", str(WINDOW), "--batch", "4", "--steps", "3",
        "--lr", "3e-3", "--sample-tokens", "0")
    run(resnorm, "export", "--checkpoint", str(run_dir), "--out", str(hf))
    ours = json.loads(run(resnorm, "eval", "--model", str(hf), "--data", str(data),
                          "--window", str(WINDOW), "--json"))["loss"]
    our_text = run(resnorm, "sample", "--model", str(hf), "--prompt", PROMPT,
                   "--tokens", str(TOKENS), "--temperature", "0").rstrip("\n")

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    tokenizer = Tokenizer.from_file(str(hf / "tokenizer.json"))
    with torch.no_grad():
        theirs = transformers_loss(model, tokenizer.encode(TEXT, add_special_tokens=False).ids)
        prompt = tokenizer.encode(PROMPT, add_special_tokens=False).ids
        ids = torch.tensor([prompt])
        for _ in range(TOKENS):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    their_text = PROMPT + tokenizer.decode(ids[0, len(prompt):].tolist())
    architecture = json.loads((hf / "config.json").read_text())["architectures"][0]
    ok = abs(ours - theirs) <= 1e-4 * max(1.0, abs(theirs)) and our_text == their_text
    print(f"{arch:8} {architecture:18} loss resnorm {ours:.6f} transformers {theirs:.6f} "
          f"(diff {abs(ours - theirs):.1e}); greedy {'same' if our_text == their_text else 'DIFFERS'}")
    if our_text != their_text:
        print(f"  resnorm:      {our_text!r}\n  transformers: {their_text!r}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resnorm", default=str(ROOT / "target/debug/resnorm"))
    parser.add_argument("archs", nargs="*", help="fixtures to check (default: all)")
    args = parser.parse_args()
    archs = args.archs or sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        results = [check(args.resnorm, arch, pathlib.Path(tmp)) for arch in archs]
    if not all(results):
        sys.exit("some exported models differ")
    print("every fine-tuned, exported model computes the same in transformers")


if __name__ == "__main__":
    main()
