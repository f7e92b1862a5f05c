#!/usr/bin/env python3
"""Image fixtures for tests/data/image_dataset_test.cc, written at test time.

  image_fixtures.py fashion IDX_PREFIX OUT N
      The first N images of an IDX split (e.g. Fashion-MNIST t10k) as OUT/png/cK/NNNNN.png and
      OUT/jpeg/cK/NNNNN.jpg (PIL, quality 90), OUT/list.csv ("png/cK/NNNNN.png,K" lines, shuffled
      by a fixed permutation), and OUT/u8_nhwc.npy, OUT/u8_nchw.npy, OUT/labels.npy.
  image_fixtures.py synthetic OUT
      Generated images in OUT/images/<class>/ in every mode the loader must read (RGB, L, P with
      transparency, RGBA, LA, 1-bit; PNG, baseline and progressive JPEG with 4:2:0 and 4:4:4
      chroma) and sizes from 40x56 to 300x257, plus corrupt files in OUT/bad/ (truncated JPEG,
      text named .jpg, CMYK JPEG, truncated PNG).
  image_fixtures.py all OUT IDX_PREFIX N
      synthetic OUT, then fashion IDX_PREFIX OUT/fashion N, then the file OUT/done.
  image_fixtures.py reference DIR OUT.npy LABELS.npy CHANNELS RESIZE CROP MEAN STD
      torchvision's ImageFolder(DIR) with [Grayscale()] -> Resize(RESIZE) -> CenterCrop(CROP) ->
      ToTensor() -> Normalize(MEAN, STD) (RESIZE 0: no Resize), stacked as float32 [N,C,H,W].
"""
import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image


def fashion(prefix, out, n):
    with gzip.open(prefix + "-images-idx3-ubyte.gz") as f:
        _, count, h, w = struct.unpack(">IIII", f.read(16))
        images = np.frombuffer(f.read(n * h * w), np.uint8).reshape(n, h, w)
    with gzip.open(prefix + "-labels-idx1-ubyte.gz") as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), np.uint8)
    lines = []
    for i in range(n):
        for kind, ext, kw in (("png", "png", {}), ("jpeg", "jpg", {"quality": 90})):
            d = os.path.join(out, kind, "c%d" % labels[i])
            os.makedirs(d, exist_ok=True)
            Image.fromarray(images[i], "L").save(os.path.join(d, "%05d.%s" % (i, ext)), **kw)
        lines.append("png/c%d/%05d.png,%d" % (labels[i], i, labels[i]))
    order = np.random.RandomState(7).permutation(n)
    with open(os.path.join(out, "list.csv"), "w") as f:
        f.write("path,label\n")
        f.write("\n".join(lines[i] for i in order) + "\n")
    rgb = np.repeat(images[:, :, :, None], 3, axis=3)
    np.save(os.path.join(out, "u8_nhwc.npy"), rgb)
    np.save(os.path.join(out, "u8_nchw.npy"), np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
    np.save(os.path.join(out, "labels.npy"), labels.astype(np.int64))


def pattern(h, w, seed):
    """Smooth gradients, sharp edges and noise: resampling errors cannot hide."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / (3 + seed % 5) + y / 7.0)
    g = (x * 255.0 / max(w - 1, 1) + ((x // 9 + y // 11) % 2) * 60) % 256
    b = rng.randint(0, 256, size=(h, w)).astype(np.float64)
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def synthetic(out):
    sizes = [(256, 256), (200, 300), (313, 197), (48, 64), (257, 300), (56, 40)]
    k = 0
    for cls in ("alpha", "beta", "gamma"):
        d = os.path.join(out, "images", cls)
        os.makedirs(d, exist_ok=True)
        for h, w in sizes:
            k += 1
            rgb = Image.fromarray(pattern(h, w, k), "RGB")
            rgb.save(os.path.join(d, "%02d_rgb.png" % k))
            rgb.save(os.path.join(d, "%02d_rgb.jpg" % k), quality=92)
            rgb.save(os.path.join(d, "%02d_rgb444.jpeg" % k), quality=95, subsampling=0)
            rgb.save(os.path.join(d, "%02d_prog.JPG" % k), quality=85, progressive=True)
            rgb.convert("L").save(os.path.join(d, "%02d_gray.png" % k))
            rgb.convert("L").save(os.path.join(d, "%02d_gray.jpg" % k), quality=90)
            pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=64)
            pal.info["transparency"] = 3
            pal.save(os.path.join(d, "%02d_pal.png" % k), transparency=3)
            rgba = rgb.copy()
            rgba.putalpha(Image.fromarray(pattern(h, w, k + 50)[:, :, 2], "L"))
            rgba.save(os.path.join(d, "%02d_rgba.png" % k))
            rgba.convert("LA").save(os.path.join(d, "%02d_la.png" % k))
            rgb.convert("1").save(os.path.join(d, "%02d_bits.png" % k))
        with open(os.path.join(d, "notes.txt"), "w") as f:
            f.write("not an image: ignored by name\n")
    bad = os.path.join(out, "bad")
    os.makedirs(os.path.join(bad, "x"), exist_ok=True)
    good = Image.fromarray(pattern(64, 64, 99), "RGB")
    good.save(os.path.join(bad, "x", "a_good.png"))
    good.save(os.path.join(bad, "x", "b_truncated.jpg"), quality=90)
    with open(os.path.join(bad, "x", "b_truncated.jpg"), "r+b") as f:
        size = f.seek(0, 2)
        f.truncate(size // 2)
    with open(os.path.join(bad, "x", "c_text.jpg"), "w") as f:
        f.write("this is not a JPEG\n")
    good.convert("CMYK").save(os.path.join(bad, "x", "d_cmyk.jpg"), quality=90)
    good.save(os.path.join(bad, "x", "e_good.jpg"), quality=90)
    good.save(os.path.join(bad, "x", "f_truncated.png"))
    with open(os.path.join(bad, "x", "f_truncated.png"), "r+b") as f:
        f.truncate(f.seek(0, 2) - 40)


def reference(root, out, labels_out, channels, resize, crop, mean, std):
    import torch
    import torchvision
    from torchvision import transforms as T

    steps = [T.Grayscale(1)] if channels == 1 else []
    if resize > 0:
        steps.append(T.Resize(resize))
    if crop > 0:
        steps.append(T.CenterCrop(crop))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    ds = torchvision.datasets.ImageFolder(root, transform=T.Compose(steps))
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    np.save(out, xs.numpy().astype(np.float32))
    np.save(labels_out, np.array(ds.targets, dtype=np.int64))


def floats(text):
    return [float(v) for v in text.split(",")]


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "all":
        synthetic(sys.argv[2])
        fashion(sys.argv[3], os.path.join(sys.argv[2], "fashion"), int(sys.argv[4]))
        open(os.path.join(sys.argv[2], "done"), "w").close()
    elif cmd == "fashion":
        fashion(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "synthetic":
        synthetic(sys.argv[2])
    elif cmd == "reference":
        reference(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
                  int(sys.argv[7]), floats(sys.argv[8]), floats(sys.argv[9]))
    else:
        sys.exit("unknown command " + cmd)
