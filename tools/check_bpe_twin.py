#!/usr/bin/env python3
"""Checks resnorm's joint BPE against Python's `tokenizers` on the real corpus.

Development tool, run by hand (tests never need Python):

    RESNORM_SAVE_BPE=/tmp/bpe8k.json cargo test -p resnorm --test translate_bpe an_8k
    python3 tools/check_bpe_twin.py /tmp/bpe8k.json

Trains the same pipeline in Python (Metaspace, BPE, 8,000 ids, <pad> <s> </s> <unk>) on
../shared/data/translation/train.{en,es}, reports its training time, and checks that its
vocabulary and merges equal resnorm's and that both encode the test split identically.
"""
import json
import pathlib
import sys
import time

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "translation"


def lines(split: str, lang: str) -> list:
    return (DATA / f"{split}.{lang}").read_text(encoding="utf-8").rstrip("\n").split("\n")


def main() -> None:
    ours = Tokenizer.from_file(sys.argv[1])
    vocab = ours.get_vocab_size(with_added_tokens=True)
    twin = Tokenizer(models.BPE(unk_token="<unk>"))
    twin.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    twin.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=0, show_progress=False,
                                  special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    start = time.time()
    twin.train_from_iterator(lines("train", "en") + lines("train", "es"), trainer)
    print(f"python tokenizers: {vocab} ids trained in {time.time() - start:.2f} s")
    a, b = json.loads(twin.to_str())["model"], json.loads(ours.to_str())["model"]
    same = a["vocab"] == b["vocab"] and a["merges"] == b["merges"]
    print(f"vocabulary and merges equal: {same}")
    test = lines("test", "en") + lines("test", "es")
    encode = lambda tok: [tok.encode(t, add_special_tokens=False).ids for t in test]
    same_ids = encode(ours) == encode(twin)
    print(f"test split ({len(test)} lines) encoded identically: {same_ids}")
    sys.exit(0 if same and same_ids else 1)


if __name__ == "__main__":
    main()
