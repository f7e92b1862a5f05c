#!/usr/bin/python3
"""Writes the seed corpora of the libFuzzer harnesses into tests/fuzz/corpus/<harness>/.

Small, real inputs: zoo models and ONNX node-test models, the first Fashion-MNIST images, .npy
files written by numpy, configs and format strings from the docs, sweep specs of every strategy.
The committed corpus is this script's output plus the inputs of fixed findings (crash-*, added by
hand and kept by this script); re-run it after changing an input layout (tests/fuzz/fuzz_util.h,
the harness headers):

    /usr/bin/python3 tests/fuzz/make_seeds.py   (Debian python3-numpy, python3-protobuf)
"""
import gzip
import io
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
FASHION = "/usr/share/datasets/fashion-mnist"
NODE_TESTS = "/usr/share/libonnx-testdata/data/node"


def write(harness, name, data):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def two_files(settings, first, second):
    """The dataset harnesses' layout (tests/fuzz/fuzz_util.h, SplitInput)."""
    return bytes(settings) + struct.pack("<I", len(first)) + first + second


def onnx_import():
    for name in ["lenet5", "squeezenet-mini", "resnet-mini"]:
        with open(os.path.join(ROOT, "models", name + ".onnx"), "rb") as f:
            write("onnx_import", name + ".onnx", f.read())
    for test in ["test_conv_with_strides_padding", "test_batchnorm_example", "test_relu",
                 "test_gemm_default_single_elem_vector_bias", "test_maxpool_2d_pads",
                 "test_averagepool_2d_default", "test_concat_2d_axis_0", "test_flatten_axis1",
                 "test_reshape_reduced_dims", "test_constantofshape_float_ones",
                 "test_softmax_axis_1_expanded", "test_lrn_default", "test_transpose_default",
                 "test_slice", "test_split_equal_parts_2d", "test_clip_example",
                 "test_hardswish", "test_matmul_2d", "test_globalaveragepool",
                 "test_reduce_mean_default_axes_keepdims_example", "test_squeeze"]:
        with open(os.path.join(NODE_TESTS, test, "model.onnx"), "rb") as f:
            write("onnx_import", test + ".onnx", f.read())


def idx_reader():
    def first(kind, count):
        path = os.path.join(FASHION, "t10k-%s-idx%d-ubyte.gz" % (kind, 3 if kind == "images" else 1))
        with gzip.open(path) as f:
            data = f.read()
        header = 16 if kind == "images" else 8
        size = 28 * 28 if kind == "images" else 1
        head = bytearray(data[:header])
        head[4:8] = struct.pack(">I", count)
        return bytes(head) + data[header:header + count * size]

    images, labels = first("images", 3), first("labels", 3)
    write("idx_reader", "t10k-3", two_files([0, 0, 0, 0], images, labels))
    # limit 2, one mean/std value
    write("idx_reader", "t10k-3-limit-mean", two_files([1 | 4, 2, 0, 0], images, labels))
    # gzip images under the .gz name, stratified limit
    write("idx_reader", "t10k-3-gz-stratified",
          two_files([16 | 1 | 2, 2, 0, 0], gzip.compress(images, mtime=0), labels))
    small = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 2, 3) + bytes(range(12))
    write("idx_reader", "tiny-2x2x3",
          two_files([0, 0, 0, 0], small, bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\x01\x00"))


def npy(array):
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def npy_reader():
    rng = np.random.default_rng(7)
    floats = rng.standard_normal((3, 1, 4, 4)).astype("<f4")
    write("npy_reader", "float-nchw-int64",
          two_files([0, 0, 0, 0], npy(floats), npy(np.array([0, 2, 1], dtype="<i8"))))
    write("npy_reader", "float-nd-int32-limit",
          two_files([1 | 4, 2, 0, 0], npy(rng.standard_normal((4, 6)).astype("<f4")),
                    npy(np.array([1, 0, 1, 3], dtype="<i4"))))
    gray = rng.integers(0, 256, (2, 5, 7), dtype=np.uint8)
    write("npy_reader", "uint8-nhw-gray",
          two_files([128, 0, 0, 0], npy(gray), npy(np.array([0, 1], dtype=np.uint8))))
    rgb = rng.integers(0, 256, (2, 6, 8, 3), dtype=np.uint8)
    write("npy_reader", "uint8-nhwc-rgb-resize-crop",
          two_files([8, 0, 5, 4], npy(rgb), npy(np.array([1, 0], dtype="<i8"))))
    chw = rng.integers(0, 256, (3, 3, 4, 4), dtype=np.uint8)
    write("npy_reader", "uint8-nchw-bgr-stratified",
          two_files([64 | 2 | 1, 2, 0, 0], npy(chw), npy(np.array([0, 1, 0], dtype="<i4"))))


def quant_config():
    configs = {
        "readme": '{"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"},'
                  ' "fc": {"weights": "fixed:4"}}',
        "int8": '{"default": {"weights": "int:8:sym:channel", "inputs": "int:8", "outputs": "int:8"}}',
        "everything": '{"default": {"weights": "minifloat:4:3", "inputs": "ufixed:8:4"},'
                      ' "conv": {"outputs": "fixed:6"}, "fc": {"weights": "pow2:5"},'
                      ' "layers": {"conv1": {"weights": "int:4:asym"}, "fc3": {"inputs": "fp32"}},'
                      ' "rounding": "stochastic", "seed": 42,'
                      ' "calibration": {"method": "percentile", "percentile": 99.9},'
                      ' "ristretto_activations": true}',
        "entropy": '{"conv": {"weights": "int:8"}, "calibration": {"method": "entropy"},'
                   ' "rounding": "nearest_away"}',
        "empty": "{}",
    }
    for name, text in configs.items():
        write("quant_config", name + ".json", text.encode())


def quant_format():
    values = [0.0, -0.0, 1.0, -1.0, 0.5, 0.24, -3.7, 2.5, 100.0, 1e-8, 6.1e-5, 65504.0,
              float("inf"), float("-inf"), float("nan"), 3.4e38]
    cases = [("fp32", 0, 0.0, 0.0), ("fixed:8", 0, 3.2, 0.0), ("fixed:8:3", 1, 0.0, 0.0),
             ("fixed:8:-4", 2, 0.0, 0.0), ("ufixed:4", 4, 1.5, 0.0), ("fixed:16", 4, 0.01, 0.0),
             ("minifloat:4:3", 0, 0.0, 0.0), ("minifloat:5:2:denormal", 1, 0.0, 0.0),
             ("minifloat:8:3", 2, 0.0, 0.0), ("pow2:4", 0, 2.0, 0.0), ("pow2:6", 0, 1e-3, 0.0),
             ("int:8", 0, -1.0, 3.0), ("int:4:asym", 1, -0.5, 2.0),
             ("int:4:sym:channel", 16 | 0, -1.0, 1.0), ("int:8:asym:channel", 32 | 2, -2.0, 0.5),
             ("fixed:32", 0, 1.0, 0.0)]
    for text, settings, a, b in cases:
        data = text.encode() + b"\n" + bytes([settings]) + struct.pack("<ff", a, b)
        data += struct.pack("<%df" % len(values), *values)
        write("quant_format", text.replace(":", "_"), data)


def sweep_spec():
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), "--python_out", out,
                        "bitsweep/v1/common.proto", "bitsweep/v1/explorer.proto"], check=True)
        sys.path.insert(0, out)
        from bitsweep.v1 import common_pb2, explorer_pb2

        def spec(name, strategy, **fields):
            request = explorer_pb2.SubmitSweepRequest()
            s = request.spec
            s.name = name
            s.strategy = strategy
            s.settings.dataset.train = FASHION + "/train"
            s.settings.dataset.eval = FASHION + "/t10k"
            s.settings.dataset.mean.append(0.2860)
            s.settings.dataset.std.append(0.3530)
            for key, value in fields.items():
                if key == "axes":
                    for selector, role, formats in value:
                        axis = s.space.axes.add()
                        axis.selector, axis.role = selector, role
                        axis.formats.extend(formats)
                elif key in ("weight_formats", "activation_formats"):
                    getattr(s.space, key).extend(value)
                elif key == "objectives":
                    s.objectives.extend(value)
                elif key == "finetune_steps":
                    s.finetune.steps = value
                elif key == "eval_limit":
                    s.settings.dataset.eval_limit = value
                else:
                    setattr(s, key, value)
            write("sweep_spec", name, request.SerializeToString())

        spec("grid", "grid", axes=[("conv", "weights", ["fixed:8", "fixed:4"]),
                                   ("layers.fc3", "activations", ["int:8", "minifloat:4:3"])])
        spec("ristretto", "ristretto", error_margin=1.0, finetune_steps=100,
             weight_formats=["fixed:16", "fixed:8", "fixed:4"], activation_formats=["fixed:8"])
        spec("sensitivity", "sensitivity", weight_formats=["int:8:sym:channel", "pow2:4"],
             activation_formats=["ufixed:8"], objectives=[common_pb2.OBJECTIVE_TOP1,
                                                          common_pb2.OBJECTIVE_ENERGY])
        spec("random", "random", budget=5, seed=3, eval_limit=1000)
        spec("evolutionary", "evolutionary", budget=20, population=4, max_attempts=2,
             no_cache=True)


def main():
    onnx_import()
    idx_reader()
    npy_reader()
    quant_config()
    quant_format()
    sweep_spec()


if __name__ == "__main__":
    main()
