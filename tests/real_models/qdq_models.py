#!/usr/bin/python3
"""Writes the torchvision models and data of the QDQ / ONNX Runtime agreement test
(ort_qdq_torchvision_test.cc): per model, DIR/<model>/model.onnx (opset 13, the first opset
whose per-channel DequantizeLinear the QDQ export needs) and two seeded sets of 64x64 images as
.npy, labelled by the fp32 model's argmax.

The models are fakequant_torch.build's: torchvision's architecture, random init, BatchNorm
statistics from a seeded probe set and a 10-way head whose logits vary with the input (so that
top-1 and argmax agreement mean something). Exit 77 (skipped) when torch is missing.

  qdq_models.py --out DIR [--models resnet18_stem,mobilenet_v2_stem,mobilenet_v3_small_stem,
                                   resnet18,mobilenet_v2]
                [--calibration 64] [--eval 48]

Writes DIR/<model>/{model.onnx, calibration_x.npy, calibration_y.npy, eval_x.npy, eval_y.npy}.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakequant_torch  # noqa: E402  (exits 77 itself when torch is missing)
import numpy as np  # noqa: E402
import torch  # noqa: E402


# The first blocks of each model, with its own 10-way head: few enough quantized layers that a
# code flipped at a rounding tie does not grow on its way to the logits (the full random-init
# models amplify such flips to tens of output steps, in our own int8 path against our emulation
# as much as in ONNX Runtime), so they can be held to the zoo models' bounds. resnet18_stem:
# conv1, maxpool, layer1 (two residual blocks); mobilenet_v2_stem: features[:4] (the stem conv
# and three inverted residual blocks, depthwise convolutions and one residual Add).
# mobilenet_v3_small_stem: features[:5] (HardSwish, squeeze-excitation with HardSigmoid and a
# broadcast Mul, depthwise convolutions), exported at opset 17 where HardSwish is one op that the
# engine fuses into the Conv before it.
STEMS = {"resnet18_stem": "resnet18", "mobilenet_v2_stem": "mobilenet_v2",
         "mobilenet_v3_small_stem": "mobilenet_v3_small"}
OPSET = {"mobilenet_v3_small_stem": 17}


def centred_head(body, features_in):
    """A Linear(features_in, 10) whose logits vary with the input: centred on the features of a
    seeded probe set and scaled by their spread (as fakequant_torch.build does)."""
    with torch.no_grad():
        feats = body(fakequant_torch.images(64, seed=11))
        g = torch.Generator().manual_seed(12)
        head = torch.nn.Linear(features_in, fakequant_torch.CLASSES)
        w = torch.randn(fakequant_torch.CLASSES, features_in, generator=g)
        spread = (feats - feats.mean(0)).std()
        head.weight.copy_(w / (spread * features_in ** 0.5))
        head.bias.copy_(-head.weight @ feats.mean(0))
    return head


def mobilenet_v3_small_stem():
    """torchvision's mobilenet_v3_small cut after features[4], BatchNorm statistics from the
    probe set as fakequant_torch.build sets them, and a centred 10-way head."""
    import torchvision
    model = torchvision.models.mobilenet_v3_small(weights=None)
    model.features = model.features[:5]
    g = torch.Generator().manual_seed(10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=g))
    body = torch.nn.Sequential(model.features, model.avgpool, torch.nn.Flatten())
    body.train()
    with torch.no_grad():
        for seed in (13, 14):
            body(fakequant_torch.images(32, seed=seed))
    body.eval()
    return torch.nn.Sequential(body, centred_head(body, 40)).eval()


def build(name):
    if name in fakequant_torch.FORWARD:
        return fakequant_torch.build(name)
    if name == "mobilenet_v3_small_stem":
        return mobilenet_v3_small_stem()
    full = fakequant_torch.build(STEMS[name])
    if name == "resnet18_stem":
        for layer in ("layer2", "layer3", "layer4"):
            setattr(full, layer, torch.nn.Identity())
        full.fc = torch.nn.Identity()
        full.fc = centred_head(full, 64)
    else:
        full.features = full.features[:4]
        full.classifier[1] = torch.nn.Identity()
        full.classifier[1] = centred_head(full, 24)
    return full.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models",
                        default="resnet18_stem,mobilenet_v2_stem,mobilenet_v3_small_stem,resnet18,mobilenet_v2")
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        if name not in fakequant_torch.FORWARD and name not in STEMS:
            sys.exit(f"unknown model {name}: use {', '.join([*fakequant_torch.FORWARD, *STEMS])}")
        start = time.time()
        work = os.path.join(args.out, name)
        os.makedirs(work, exist_ok=True)
        torch.manual_seed(0)
        model = build(name)
        cal_x = fakequant_torch.images(args.calibration, seed=31)
        eval_x = fakequant_torch.images(args.eval, seed=32)
        with torch.no_grad():
            cal_y, eval_y = model(cal_x).argmax(1), model(eval_x).argmax(1)
            # The batch of the exported input is the evaluation set's: ONNX Runtime runs it whole.
            torch.onnx.export(model, eval_x, os.path.join(work, "model.onnx"), opset_version=OPSET.get(name, 13),
                              input_names=["input"], output_names=["output"])
        for stem, x, y in (("calibration", cal_x, cal_y), ("eval", eval_x, eval_y)):
            np.save(os.path.join(work, f"{stem}_x.npy"), x.numpy().astype(np.float32))
            np.save(os.path.join(work, f"{stem}_y.npy"), y.numpy().astype(np.int64))
        print(f"{name}: {work} ({time.time() - start:.1f} s; {len(set(eval_y.tolist()))} classes "
              f"among {args.eval} evaluation images)", flush=True)


if __name__ == "__main__":
    main()
