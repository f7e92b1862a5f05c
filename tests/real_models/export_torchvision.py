#!/usr/bin/python3
"""Exports torchvision classification CNNs to ONNX with torch.onnx.export's default options and
writes, beside each model, one input batch and PyTorch's output as ONNX TensorProto files.

The models are randomly initialised (Debian's python3-torchvision has no pretrained weights) and
put in eval mode; BatchNorm statistics are randomised too, so that folding them is exercised.

  export_torchvision.py --out DIR [--models resnet18,mobilenet_v2] [--opsets 11,13,17]
                        [--size 64] [--batch 2]

Writes DIR/<model>-op<opset>/{model.onnx,input.pb,output.pb} and prints one line per export.
"""
import argparse
import os
import sys
import time

import onnx
import onnx.numpy_helper
import torch
import torchvision

# Every model of the suite, with the smallest input size its architecture takes; models whose
# pooling needs a larger input, or that are too large for CI time, say so here.
MODELS = {
    "resnet18": 64,
    "resnet50": 64,
    "mobilenet_v2": 64,
    "mobilenet_v3_small": 64,
    "squeezenet1_1": 64,
    "alexnet": 224,
    "vgg11_bn": 224,
    "googlenet": 64,
    "shufflenet_v2_x1_0": 64,
    "mnasnet0_5": 64,
    "efficientnet_b0": 64,
    "densenet121": 64,
    "regnet_x_400mf": 64,
}


def build(name):
    kwargs = {}
    if name == "googlenet":
        kwargs = {"aux_logits": False, "init_weights": True}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    # Non-trivial BatchNorm statistics: random init leaves mean 0 / var 1.
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def export(model, x, path, opset):
    """Exports `model` on input `x` with torch.onnx.export's defaults at `opset`."""
    with torch.no_grad():
        torch.onnx.export(model, x, path, opset_version=opset,
                          input_names=["input"], output_names=["output"])


def write_tensor(array, name, path):
    with open(path, "wb") as f:
        f.write(onnx.numpy_helper.from_array(array, name).SerializeToString())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--opsets", default="11,13,17")
    parser.add_argument("--size", type=int, default=0, help="input size (0: the model's default)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        model = build(name)
        size = args.size or MODELS[name]
        x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = model(x)
        for opset in [int(o) for o in args.opsets.split(",")]:
            d = os.path.join(args.out, f"{name}-op{opset}")
            os.makedirs(d, exist_ok=True)
            start = time.time()
            path = os.path.join(d, "model.onnx")
            export(model, x, path, opset)
            write_tensor(x.numpy(), "input", os.path.join(d, "input.pb"))
            write_tensor(y.numpy(), "output", os.path.join(d, "output.pb"))
            print(f"{name} opset {opset}: {os.path.getsize(path)} bytes, "
                  f"{time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
