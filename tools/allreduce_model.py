#!/usr/bin/env python3
"""The cost of data-parallel training on N machines: step time and scaling efficiency from a
measured compute time and the ring all-reduce formula (docs/benchmarks.md prints its output).

Per step, each of N machines computes its share of the batch (weak scaling: the per-machine
batch stays fixed, the global batch grows with N) in t_compute, a third forward and two
thirds backward, then the gradients (S bytes of f32) are averaged by a ring all-reduce:

    t_allreduce = 2 (N-1)/N * S / bandwidth + 2 (N-1) * latency * buckets

(a reduce-scatter and an all-gather, each N-1 steps over the ring, one message per step and
bucket). Without overlap the step is t_compute + t_allreduce. With overlap, as resnorm does
it, each unit's bucket starts when its backward ends, so the units' sums travel during the
rest of the backward; the last bucket (embeddings, final norm) starts only at the end:

    exposed = t_last + max(0, t_units - t_backward * (2L-1)/(2L))

Efficiency = t_compute / t_step. Communication dominates once t_allreduce > t_compute: the
last line of each table gives the machine speed (FLOP/s) at which that happens on 64 machines.

Usage: python3 tools/allreduce_model.py [--flops F1 F2 ...]
"""

import argparse

GBIT = 1e9 / 8  # bytes per second in one Gbit/s


def gpt(name, layers, width, vocab, context, tokens_per_machine, flops_per_s):
    """Sizes of a GPT-2-layout model and its compute time per step on one machine."""
    per_unit = [4 * width * width + 6 * width, 8 * width * width + 7 * width]  # attn, mlp
    units = [per_unit[k % 2] for k in range(2 * layers)]
    last = vocab * width + context * width + 2 * width  # wte, wpe, ln_f
    params = sum(units) + last
    # 6 flops per parameter and token in matrix products (the tied head counts once more),
    # plus the attention's 12 L C T.
    flops_per_token = 6 * (sum(units) + vocab * width) + 12 * layers * width * context
    t_compute = flops_per_token * tokens_per_machine / flops_per_s
    return {
        "name": name,
        "layers": layers,
        "params": params,
        "units": units,
        "last": last,
        "t_compute": t_compute,
    }


def step(model, n, gbit_per_s, latency, overlap):
    """Step time on n machines."""
    if n == 1:
        return model["t_compute"]
    bandwidth = gbit_per_s * GBIT

    def ring(elements):
        return 2 * (n - 1) / n * 4 * elements / bandwidth + 2 * (n - 1) * latency

    t_units = sum(ring(e) for e in model["units"])
    t_last = ring(model["last"])
    t_backward = model["t_compute"] * 2 / 3
    if overlap:
        hidden = t_backward * (2 * model["layers"] - 1) / (2 * model["layers"])
        exposed = t_last + max(0.0, t_units - hidden)
    else:
        exposed = t_units + t_last
    return model["t_compute"] + exposed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--flops",
        type=float,
        nargs="+",
        default=[220e9, 7e12],
        help="machines' sustained training FLOP/s, one table each (default: this 2-core "
        "machine's 6-layer step, 145 GFLOP in ~0.65 s on an idle machine, docs/benchmarks.md; "
        "and a 64-core server of the same cores, 32 times that)",
    )
    parser.add_argument("--latency-10", type=float, default=30e-6, help="per message, 10 Gbit/s Ethernet (TCP)")
    parser.add_argument("--latency-100", type=float, default=3e-6, help="per message, 100 Gbit/s RDMA")
    args = parser.parse_args()

    for flops in args.flops:
        print(f"## machines of {flops / 1e9:.0f} GFLOP/s; latency {args.latency_10 * 1e6:.0f} us at "
              f"10 Gbit/s, {args.latency_100 * 1e6:.0f} us at 100 Gbit/s\n")
        table(args, flops)


def table(args, flops):
    models = [
        # The 6-layer model of docs/benchmarks.md: batch 8 x 256 tokens per machine.
        gpt("6-layer GPT (width 384, vocab 65)", 6, 384, 65, 256, 8 * 256, flops),
        # GPT-2 small: 12 layers, width 768, GPT-2 vocabulary, context 1024, 8 windows per machine.
        gpt("GPT-2-124M (width 768, vocab 50257)", 12, 768, 50257, 1024, 8 * 1024, flops),
    ]
    for model in models:
        mb = 4 * model["params"] / 1e6
        print(f"### {model['name']}: {model['params'] / 1e6:.1f}M parameters, {mb:.0f} MB of gradients, "
              f"{len(model['units']) + 1} buckets, compute {model['t_compute'] * 1e3:.0f} ms per step\n")
        print("| machines | 10 Gbit/s | overlapped | 100 Gbit/s | overlapped |")
        print("|---:|---:|---:|---:|---:|")
        for n in [2, 4, 8, 16, 32, 64]:
            cells = []
            for gbit, latency in [(10, args.latency_10), (100, args.latency_100)]:
                for overlap in [False, True]:
                    t = step(model, n, gbit, latency, overlap)
                    cells.append(f"{t * 1e3:.0f} ms ({100 * model['t_compute'] / t:.0f} %)")
            print(f"| {n} | " + " | ".join(cells) + " |")
        crossover = []
        for gbit, latency in [(10, args.latency_10), (100, args.latency_100)]:
            t_comm = step(model, 64, gbit, latency, False) - model["t_compute"]
            work = model["t_compute"] * flops
            crossover.append(f"{work / t_comm / 1e12:.2g} TFLOP/s at {gbit} Gbit/s")
        print(f"\nOn 64 machines the all-reduce takes longer than the compute (without overlap) "
              f"once a machine sustains more than {' or '.join(crossover)}.\n")


if __name__ == "__main__":
    main()
