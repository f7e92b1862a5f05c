#!/usr/bin/env python3
"""Inputs and the torchvision side of bench/dataset_bench.sh (Debian's python3-pil, -torch,
-torchvision).

  dataset_images.py make OUT N WIDTH HEIGHT   N JPEGs (quality 90) in 10 class folders of OUT
  dataset_images.py torchvision DIR THREADS   ImageFolder + DataLoader(num_workers=THREADS) with
                                              Resize(256) -> CenterCrop(224) -> ToTensor ->
                                              Normalize; prints one JSON line with images/s
  dataset_images.py model OUT resnet18|tiny224  a random-init model as ONNX (opset 13)
"""
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageFilter


def make(out, n, width, height):
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        d = os.path.join(out, "class%d" % (i % 10))
        os.makedirs(d, exist_ok=True)
        fx, fy, ph = rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.08), rng.uniform(0, 6.28)
        base = np.stack([np.sin(x * fx + ph) * 80, np.cos(y * fy + ph) * 80,
                         np.sin((x + y) * fx * 0.5) * 80], axis=2) + 128
        noise = rng.normal(0, 25, size=(height, width, 3))
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
        img.filter(ImageFilter.GaussianBlur(1.0)).save(
            os.path.join(d, "%06d.jpg" % i), quality=90)


def torchvision_rate(root, threads):
    import torch
    import torchvision
    from torchvision import transforms as T

    torch.set_num_threads(1)
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(root, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=threads)
    start = time.time()
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    seconds = time.time() - start
    print(json.dumps({"images": n, "seconds": round(seconds, 3),
                      "images_per_s": round(n / seconds, 1), "workers": threads}))


def model(out, kind):
    import torch
    import torchvision

    torch.manual_seed(0)
    if kind == "resnet18":
        net = torchvision.models.resnet18(weights=None, num_classes=10)
    else:
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
            torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10))
    net.eval()
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), out, opset_version=13,
                      do_constant_folding=True, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    # torch 1.13 routes some folded weights through Identity nodes, which the engine's importer
    # does not treat as constants yet: give each Identity's output its input initializer's value.
    import onnx
    m = onnx.load(out)
    inits = {t.name: t for t in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            m.graph.initializer.append(t)
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, out)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "torchvision":
        torchvision_rate(sys.argv[2], int(sys.argv[3]))
    elif cmd == "model":
        model(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)
