#!/usr/bin/env python3
"""Test BLEU against training time, resnorm and the PyTorch twin, as one SVG (no plotting
library needed).

    python3 tools/plot_bleu_curve.py RESNORM.jsonl TWIN.jsonl OUT.svg [TWIN_SHORT.jsonl]

RESNORM.jsonl lines carry {"elapsed","bleu"} (tools/bench_translate_bleu.sh), TWIN.jsonl
lines {"train_s","bleu"} (tools/train_torch_translate.py); time is drawn in minutes.
TWIN_SHORT.jsonl, if given, is a twin run whose whole schedule fits in resnorm's time; its
last line is drawn as a square.
"""
import json
import sys

W, H, L, R, T, B = 640, 400, 60, 20, 40, 50


def points(path, clock):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return [(r[clock] / 60, r["bleu"]) for r in rows]


def main():
    ours = points(sys.argv[1], "elapsed")
    twin = points(sys.argv[2], "train_s")
    short = [json.loads(line) for line in open(sys.argv[4]) if line.strip()][-1:] if len(sys.argv) > 4 else []
    short = [(r["train_s"] / 60, r["bleu"], r["step"]) for r in short]
    title = "Test BLEU (greedy) against training time, 2 threads"
    x_max = max(x for x, _ in ours + twin) * 1.05
    y_max = max(5.0, max(y for _, y in ours + twin) * 1.1)
    sx = lambda x: L + (W - L - R) * x / x_max
    sy = lambda y: H - B - (H - T - B) * y / y_max
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">training time (minutes)</text>',
           f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 {(T + H - B) / 2})">BLEU</text>']
    step = 5 if x_max <= 60 else 15
    for m in range(0, int(x_max) + 1, step):
        svg.append(f'<text x="{sx(m):.1f}" y="{H - B + 16}" text-anchor="middle">{m}</text>')
    for b in range(0, int(y_max) + 1, 5):
        svg.append(f'<line x1="{L}" y1="{sy(b):.1f}" x2="{W - R}" y2="{sy(b):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{L - 6}" y="{sy(b) + 4:.1f}" text-anchor="end">{b}</text>')
    for (name, pts, colour), row in zip([("resnorm", ours, "#c0392b"), ("PyTorch twin", twin, "#2c3e50")], range(2)):
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in [(0, 0)] + pts)
        svg.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        svg += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        y = T + 16 + 18 * row
        svg.append(f'<line x1="{L + 16}" y1="{y - 4}" x2="{L + 40}" y2="{y - 4}" stroke="{colour}" stroke-width="2"/>')
        svg.append(f'<text x="{L + 46}" y="{y}">{name}: {pts[-1][1]:.2f} BLEU after {pts[-1][0]:.1f} min</text>')
    for x, y, steps in short:
        svg.append(f'<rect x="{sx(x) - 4:.1f}" y="{sy(y) - 4:.1f}" width="8" height="8" fill="#2c3e50"/>')
        svg.append(f'<rect x="{L + 24}" y="{T + 44}" width="8" height="8" fill="#2c3e50"/>')
        svg.append(f'<text x="{L + 46}" y="{T + 52}">PyTorch twin, schedule of {steps} steps: {y:.2f} BLEU after {x:.1f} min</text>')
    svg.append("</svg>")
    open(sys.argv[3], "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
