#!/usr/bin/python3
"""Images/s of bitsweep against PyTorch on torchvision models, fp32 and fixed:8 emulation.

For each model and input size, in one run and on the same cores: `bitsweep eval` of the ONNX
export (fp32, then fixed:8 weights, inputs and outputs with a calibration set), PyTorch eval of
the same module (torch.inference_mode, the same threads and batch) and PyTorch with fake
quantization of the same tensors (torch.fake_quantize_per_tensor_affine on every Conv/Linear
input, weight and output, fixed point: scale 2^-FL, zero point 0, [-128, 127], FL from the
maxima of one calibration batch). The four measurements are interleaved and each reports its
best of --repeats: only the ratios of one run mean much on a shared machine.

  real_models_bench.py --bitsweep build/client/bitsweep --work /tmp/rmb \
      [--models resnet18,mobilenet_v2,efficientnet_b0] [--sizes 64,224] [--batch 64:64,224:32]
      [--images 64:256,224:64] [--threads 2] [--repeats 3]

Prints one table row per model and size; ours/torch > 1 means bitsweep is faster.
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "real_models"))
import export_torchvision  # noqa: E402

BITS = 8


def fractional_length(max_abs):
    """Ristretto's rule, as bitsweep's fixed:8 default: FL = bits - (ceil(log2 max) + 1)."""
    if max_abs <= 0:
        return BITS - 1
    return BITS - (math.ceil(math.log2(max_abs)) + 1)


def fake_quant(x, fl):
    return torch.fake_quantize_per_tensor_affine(x, 2.0 ** -fl, 0, -128, 127)


class FakeQuantModel:
    """Every Conv2d/Linear of `model` with fixed:8 weights (quantized once), input and output."""

    def __init__(self, model, calibration):
        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        maxima = {}
        hooks = [m.register_forward_hook(self._observer(maxima)) for m in self.layers]
        with torch.inference_mode():
            model(calibration)
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for m in self.layers:
                m.weight.copy_(fake_quant(m.weight, fractional_length(m.weight.abs().max().item())))
        for m in self.layers:
            fl_in, fl_out = (fractional_length(v) for v in maxima[m])
            m.register_forward_pre_hook(lambda mod, args, fl=fl_in: (fake_quant(args[0], fl),))
            m.register_forward_hook(lambda mod, args, out, fl=fl_out: fake_quant(out, fl))

    @staticmethod
    def _observer(maxima):
        def hook(module, args, out):
            maxima[module] = (args[0].abs().max().item(), out.abs().max().item())
        return hook

    def __call__(self, x):
        return self.model(x)


def torch_images_per_s(model, images, batch):
    """One pass over `images` in batches of `batch`, after one warm-up batch."""
    with torch.inference_mode():
        model(images[:batch])
        start = time.perf_counter()
        for first in range(0, len(images), batch):
            model(images[first:first + batch])
        return len(images) / (time.perf_counter() - start)


def ours_images_per_s(args, model_path, data, batch, config=None, calibration=None):
    """`bitsweep eval`'s images/s (the evaluation loop, without compiling and calibrating)."""
    cmd = [args.bitsweep, "eval", "--model", model_path, "--dataset", data, "--batch", str(batch),
           "--threads", str(args.threads), "--json"]
    if config:
        cmd += ["--config", config, "--calibration_data", calibration]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def parse_map(text):
    return {int(k): int(v) for k, v in (item.split(":") for item in text.split(","))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bitsweep", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--models", default="resnet18,mobilenet_v2,efficientnet_b0")
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", default="64:64,224:32", help="size:batch,...")
    parser.add_argument("--images", default="64:256,224:64", help="size:images,...")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches, counts = parse_map(args.batch), parse_map(args.images)
    os.makedirs(args.work, exist_ok=True)
    config = os.path.join(args.work, "fixed8.json")
    with open(config, "w") as f:
        json.dump({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}}, f)

    print(f"threads {args.threads}, torch {torch.__version__}; images/s (best of {args.repeats})")
    header = ("model", "size", "batch", "ours fp32", "torch fp32", "ratio", "ours fixed:8",
              "torch fakequant", "ratio")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size in [int(s) for s in args.sizes.split(",")]:
        batch, count = batches[size], counts[size]
        rng = np.random.default_rng(size)
        x = rng.standard_normal((count, 3, size, size)).astype(np.float32)
        xc = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        stem = os.path.join(args.work, f"data{size}")
        np.save(f"{stem}_x.npy", x)
        np.save(f"{stem}_y.npy", (np.arange(count) % 1000).astype(np.int64))
        np.save(f"{stem}_cx.npy", xc)
        np.save(f"{stem}_cy.npy", (np.arange(batch) % 1000).astype(np.int64))
        data = f"npy:{stem}_x.npy,{stem}_y.npy"
        calibration = f"npy:{stem}_cx.npy,{stem}_cy.npy"
        images, calib = torch.from_numpy(x), torch.from_numpy(xc)
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = export_torchvision.build(name)
            path = os.path.join(args.work, f"{name}-{size}.onnx")
            if not os.path.exists(path):
                export_torchvision.export(model, calib[:1], path, 13)
            fake_quant_model = FakeQuantModel(copy.deepcopy(model), calib)
            # The four measurements interleaved, best of `repeats` each: load from other
            # processes then hits all four alike.
            ours = theirs = ours_q = theirs_q = 0.0
            for _ in range(args.repeats):
                ours = max(ours, ours_images_per_s(args, path, data, batch))
                theirs = max(theirs, torch_images_per_s(model, images, batch))
                ours_q = max(ours_q, ours_images_per_s(args, path, data, batch, config,
                                                       calibration))
                theirs_q = max(theirs_q, torch_images_per_s(fake_quant_model, images, batch))
            print(f"| {name} | {size} | {batch} | {ours:.0f} | {theirs:.0f} | "
                  f"{ours / theirs:.2f} | {ours_q:.0f} | {theirs_q:.0f} | "
                  f"{ours_q / theirs_q:.2f} |", flush=True)


if __name__ == "__main__":
    main()
