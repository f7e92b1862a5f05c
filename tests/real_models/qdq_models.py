#!/usr/bin/python3
"""Writes the torchvision models and data of the QDQ / ONNX Runtime agreement test
(ort_qdq_torchvision_test.cc): per model, DIR/<model>/model.onnx (opset 13, the first opset
whose per-channel DequantizeLinear the QDQ export needs; 17 for mobilenet_v3_small's HardSwish)
and two seeded sets of images (64x64; alexnet and vgg11_bn 224x224) as .npy, labelled by the
fp32 model's argmax.

The models are fakequant_torch.build's, for every model of export_torchvision.MODELS:
torchvision's architecture, random init, BatchNorm statistics from a seeded probe set and a
10-way head whose logits vary with the input (so that top-1 and argmax agreement mean
something); and the stems below (the first blocks of a family). Exit 77 (skipped) when torch
is missing.

  qdq_models.py --out DIR [--models resnet18_stem,mobilenet_v2,...]  (default: all but LARGE)
                [--calibration 64] [--eval 48] [--size N]

Writes DIR/<model>/{model.onnx, calibration_x.npy, calibration_y.npy, eval_x.npy, eval_y.npy}.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakequant_torch  # noqa: E402  (exits 77 itself when torch is missing)
import export_torchvision  # noqa: E402
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
# The other stems (stem()): the first blocks of each family, global average pooling and a head.
# efficientnet_b0: features[:3] (SiLU as x * Sigmoid(x), squeeze-excitation, depthwise, a
# residual Add); mnasnet0_5: layers[:10] (depthwise, the first two inverted-residual stacks);
# shufflenet_v2: conv1, maxpool, stage2 (channel split, channel shuffle: Reshape -> Transpose ->
# Reshape, Concat); googlenet: up to inception3a (four branches, Concat); densenet121: up to
# transition1 (dense block 1: BatchNorm -> ReLU -> Conv, Concat; BatchNorms that follow no Conv
# stay unfolded in fp32); regnet_x_400mf: stem and block1 (grouped convolutions).
STEM_CUTS = {
    "mobilenet_v3_small_stem": lambda m: m.features[:5],
    "efficientnet_b0_stem": lambda m: m.features[:3],
    "mnasnet0_5_stem": lambda m: m.layers[:10],
    "shufflenet_v2_x1_0_stem": lambda m: torch.nn.Sequential(m.conv1, m.maxpool, m.stage2),
    "googlenet_stem": lambda m: torch.nn.Sequential(m.conv1, m.maxpool1, m.conv2, m.conv3,
                                                    m.maxpool2, m.inception3a),
    "densenet121_stem": lambda m: m.features[:6],
    "regnet_x_400mf_stem": lambda m: torch.nn.Sequential(m.stem, m.trunk_output.block1),
}
# resnet18_stem_bias_free: resnet18_stem with a bias-free Linear head, exported without constant
# folding, as PyTorch then writes it: MatMul(x, Transpose(W)) (with folding, the default, W^T
# becomes an initializer).
NO_CONSTANT_FOLDING = ("resnet18_stem_bias_free",)
STEMS = {"resnet18_stem": "resnet18", "resnet18_stem_bias_free": "resnet18",
         "mobilenet_v2_stem": "mobilenet_v2",
         **{name: name.removesuffix("_stem") for name in STEM_CUTS}}
OPSET = {"mobilenet_v3_small_stem": 17, "mobilenet_v3_small": 17}
# Input sizes other than 64x64: alexnet and vgg11_bn pool to 6x6 / 7x7 and need 224x224
# (export_torchvision.MODELS).
SIZE = {name: size for name, size in export_torchvision.MODELS.items() if size != 64}
# Not written by default: too slow for CI (ort_qdq_torchvision_test.cc runs them on request).
LARGE = ("alexnet", "vgg11_bn")


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


def stem(name):
    """torchvision's model cut by STEM_CUTS[name], BatchNorm statistics from the probe set as
    fakequant_torch.build sets them, global average pooling and a centred 10-way head."""
    model = export_torchvision.build(name.removesuffix("_stem"))
    features = STEM_CUTS[name](model)
    g = torch.Generator().manual_seed(10)
    for module in features.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=g))
    body = torch.nn.Sequential(features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    body.train()
    with torch.no_grad():
        for seed in (13, 14):
            body(fakequant_torch.images(32, seed=seed))
    body.eval()
    with torch.no_grad():
        features_in = body(fakequant_torch.images(1, seed=11)).shape[1]
    return torch.nn.Sequential(body, centred_head(body, features_in)).eval()


def build(name, size):
    if name in export_torchvision.MODELS:
        return fakequant_torch.build(name, size)
    if name in STEM_CUTS:
        return stem(name)
    full = fakequant_torch.build(STEMS[name])
    if name.startswith("resnet18_stem"):
        for layer in ("layer2", "layer3", "layer4"):
            setattr(full, layer, torch.nn.Identity())
        full.fc = torch.nn.Identity()
        full.fc = centred_head(full, 64)
        if name == "resnet18_stem_bias_free":
            head = torch.nn.Linear(64, fakequant_torch.CLASSES, bias=False)
            with torch.no_grad():
                head.weight.copy_(full.fc.weight)
            full.fc = head
    else:
        full.features = full.features[:4]
        full.classifier[1] = torch.nn.Identity()
        full.classifier[1] = centred_head(full, 24)
    return full.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default=",".join(
        [*STEMS, *(m for m in export_torchvision.MODELS if m not in LARGE)]))
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=0,
                        help="input size (0: the model's, SIZE or 64)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        if name not in export_torchvision.MODELS and name not in STEMS:
            sys.exit(f"unknown model {name}: use {', '.join([*export_torchvision.MODELS, *STEMS])}")
        size = args.size or SIZE.get(name, fakequant_torch.SIZE)
        start = time.time()
        work = os.path.join(args.out, name)
        os.makedirs(work, exist_ok=True)
        torch.manual_seed(0)
        model = build(name, size)
        cal_x = fakequant_torch.images(args.calibration, seed=31, size=size)
        eval_x = fakequant_torch.images(args.eval, seed=32, size=size)
        with torch.no_grad():
            cal_y, eval_y = model(cal_x).argmax(1), model(eval_x).argmax(1)
            # The batch of the exported input is the evaluation set's: ONNX Runtime runs it whole.
            torch.onnx.export(model, eval_x, os.path.join(work, "model.onnx"),
                              opset_version=OPSET.get(name, 13), input_names=["input"],
                              output_names=["output"],
                              do_constant_folding=name not in NO_CONSTANT_FOLDING)
        for stem, x, y in (("calibration", cal_x, cal_y), ("eval", eval_x, eval_y)):
            np.save(os.path.join(work, f"{stem}_x.npy"), x.numpy().astype(np.float32))
            np.save(os.path.join(work, f"{stem}_y.npy"), y.numpy().astype(np.int64))
        print(f"{name}: {work} ({time.time() - start:.1f} s; {len(set(eval_y.tolist()))} classes "
              f"among {args.eval} evaluation images)", flush=True)


if __name__ == "__main__":
    main()
