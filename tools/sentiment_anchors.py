#!/usr/bin/env python3
"""Anchors for `resnorm classify` on the VADER ground truth: what a lexicon and a linear
model score on exactly the rows a resnorm run was tested on.

Development tool, run by hand (never in CI):

    pip install vaderSentiment torch numpy
    python3 tools/sentiment_anchors.py --data ../shared/data/sentiment/vader_groundtruth.tsv \
        --split runs/sentiment/split.tsv [--regression-split runs/sentiment-score/split.tsv]

`--split` is the `split.tsv` of a binary run (`--score-column score --threshold 0.5`): its
`line` column names rows of the data file (the header is line 1). On its test rows:

- VADER (the `vaderSentiment` package): compound >= 0.05 is positive, <= -0.05 negative;
  a sentence it calls neutral counts as an error (it predicted neither class).
- A bag-of-words logistic regression: lower-cased word and punctuation tokens seen at least
  twice in the training rows, binary presence features, full-batch L-BFGS with an L2 penalty
  chosen on the validation rows.

Accuracy and macro-F1 per domain and overall. With `--regression-split` (the split of a
regression run, `--score-column score` without a threshold), Pearson's r of VADER's compound
against the human mean score on that run's test rows, per domain and overall.
"""
import argparse
import csv
import json
import re
from collections import defaultdict

import numpy as np
import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def read_rows(path):
    """line -> (domain, score, text); the header is line 1."""
    rows = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        for line, fields in enumerate(reader, start=2):
            rows[line] = (fields[col["domain"]], float(fields[col["score"]]), fields[col["text"]].strip())
    return rows


def read_split(path):
    parts = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        assert next(f).strip() == "line\tsplit"
        for row in f:
            line, name = row.split()
            parts[name].append(int(line))
    return parts


def scores(truth, predicted, domains):
    """Accuracy and macro-F1 (over the two classes), overall and per domain."""
    def one(idx):
        t, p = truth[idx], predicted[idx]
        f1 = []
        for k in (0, 1):
            tp = np.sum((t == k) & (p == k))
            prec = tp / max(np.sum(p == k), 1)
            rec = tp / max(np.sum(t == k), 1)
            f1.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
        return {"rows": int(len(idx)), "accuracy": float(np.mean(t == p)), "macro_f1": float(np.mean(f1))}
    out = {"overall": one(np.arange(len(truth)))}
    for d in sorted(set(domains)):
        out[d] = one(np.array([i for i, x in enumerate(domains) if x == d]))
    return out


def vader_binary(analyzer, texts):
    compound = np.array([analyzer.polarity_scores(t)["compound"] for t in texts])
    predicted = np.full(len(texts), -1)
    predicted[compound >= 0.05] = 1
    predicted[compound <= -0.05] = 0
    return predicted, compound


def bag_of_words(train, valid, test):
    """Fits on train (texts, labels), picks the L2 penalty on valid, predicts test."""
    counts = defaultdict(int)
    for text in train[0]:
        for tok in set(TOKEN.findall(text.lower())):
            counts[tok] += 1
    vocab = {tok: i for i, tok in enumerate(sorted(t for t, n in counts.items() if n >= 2))}

    def features(texts):
        x = torch.zeros(len(texts), len(vocab))
        for r, text in enumerate(texts):
            for tok in set(TOKEN.findall(text.lower())):
                if tok in vocab:
                    x[r, vocab[tok]] = 1.0
        return x

    xs = [features(part[0]) for part in (train, valid, test)]
    ys = [torch.tensor(part[1], dtype=torch.float32) for part in (train, valid, test)]

    def fit(l2):
        torch.manual_seed(0)
        w = torch.zeros(len(vocab), requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xs[0] @ w + b, ys[0]) + l2 * w.pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        return lambda x: ((x @ w + b) > 0).long().numpy()

    best = max((1e-5, 1e-4, 1e-3, 1e-2), key=lambda l2: float(np.mean(fit(l2)(xs[1]) == ys[1].numpy())))
    return fit(best)(xs[2]), best, len(vocab)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True, help="split.tsv of a binary resnorm classify run")
    ap.add_argument("--regression-split", help="split.tsv of a regression run (Pearson r)")
    args = ap.parse_args()
    rows = read_rows(args.data)
    split = read_split(args.split)
    analyzer = SentimentIntensityAnalyzer()

    def part(name):
        lines = split[name]
        return [rows[l][2] for l in lines], [int(rows[l][1] > 0) for l in lines], [rows[l][0] for l in lines]

    (train, valid, test) = (part(n) for n in ("train", "valid", "test"))
    truth = np.array(test[1])
    vader_pred, _ = vader_binary(analyzer, test[0])
    bow_pred, l2, vocab = bag_of_words(train[:2], valid[:2], test[:2])
    result = {
        "test_rows": len(truth),
        "vader": scores(truth, vader_pred, test[2]),
        "vader_neutral_calls": int(np.sum(vader_pred == -1)),
        "bag_of_words": scores(truth, bow_pred, test[2]),
        "bag_of_words_l2": l2,
        "bag_of_words_vocab": vocab,
    }
    if args.regression_split:
        lines = read_split(args.regression_split)["test"]
        compound = np.array([analyzer.polarity_scores(rows[l][2])["compound"] for l in lines])
        human = np.array([rows[l][1] for l in lines])
        domains = np.array([rows[l][0] for l in lines])
        result["vader_pearson"] = {"overall": float(np.corrcoef(compound, human)[0, 1])}
        for d in sorted(set(domains)):
            m = domains == d
            result["vader_pearson"][d] = float(np.corrcoef(compound[m], human[m])[0, 1])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
