#!/usr/bin/env python3
"""Training throughput of resnet20 on 28x28 one-channel images: PyTorch eager vs resnorm.

Both sides run the same step (forward, mean cross-entropy, backward, SGD with momentum 0.9
and weight decay 5e-4) on batches of the same size with the same number of threads, one
after the other in this process, so the shared machine's load hits both alike.

    python3 tools/bench_torch_resnet.py --threads 2 --batch-size 128 \
        --resnorm target/release/resnorm --data ../shared/data/images/fashion-mnist

PyTorch runs on random images (the cost does not depend on the pixels); resnorm trains
`--images` Fashion-MNIST images for one epoch and reports the training part's images/s from
its metrics.jsonl (data loading and evaluation excluded; the test set is cut to one batch).
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fixtures.resnet import CifarResNet  # noqa: E402
from torchvision.models.resnet import BasicBlock  # noqa: E402


def torch_images_per_second(threads, batch, steps, warmup):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CifarResNet(BasicBlock, 1, [3, 3, 3], [16, 32, 64], 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def resnorm_images_per_second(binary, data, threads, batch, images):
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([binary, "--threads", str(threads), "vision", "train", "--model", "resnet20",
                        "--data", data, "--out", out, "--epochs", "1", "--batch-size", str(batch),
                        "--train-limit", str(images), "--test-limit", str(batch)],
                       check=True, stdout=subprocess.DEVNULL)
        line = pathlib.Path(out, "metrics.jsonl").read_text().splitlines()[-1]
        return json.loads(line)["images_per_second"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--resnorm", help="path of the resnorm binary (release build)")
    parser.add_argument("--data", help="Fashion-MNIST folder, for resnorm")
    parser.add_argument("--images", type=int, default=2560, help="images resnorm trains on")
    args = parser.parse_args()
    ours = None
    if args.resnorm:
        ours = resnorm_images_per_second(args.resnorm, args.data, args.threads, args.batch_size,
                                         args.images)
    theirs = torch_images_per_second(args.threads, args.batch_size, args.steps, args.warmup)
    result = {"threads": args.threads, "batch_size": args.batch_size,
              "torch_images_per_second": round(theirs, 1)}
    if ours is not None:
        result["resnorm_images_per_second"] = round(ours, 1)
        result["ratio"] = round(ours / theirs, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
