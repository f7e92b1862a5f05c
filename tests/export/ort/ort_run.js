#!/usr/bin/env node
// Runs an ONNX model once in ONNX Runtime (npm's onnxruntime-node, CPU execution provider) on
// inputs read from ONNX TensorProto (.pb) or NumPy (.npy) files, and writes every graph output
// to OUTPUT_DIR/<output name>.pb (or .npy): the same files `bitsweep run` reads and writes, so a
// model can be checked against our engine, or a QDQ export against our int8 path, by comparing
// files. Installed by deploy/install-deps.sh (`npm ci --ignore-scripts` in this folder).
//
//   node tests/export/ort/ort_run.js --model M.onnx --input [NAME=]X.pb [--input ...]
//        --output-dir DIR [--format pb|npy] [--threads N]
//        [--optimization all|extended|basic|disabled]
//
// An --input without NAME= takes the name stored in the .pb tensor, else the model's next
// unbound input. Data types: float32, float64, int8, uint8, int32, int64, bool. Prints one line
// per output (name, type, shape); a slash or backslash in an output name becomes "_" in its
// file name. Errors name the file or option and exit 1.
'use strict';

const fs = require('fs');
const path = require('path');

// ONNX TensorProto.DataType codes <-> onnxruntime tensor types, typed arrays and .npy dtypes.
const TYPES = [
  {onnx: 1, ort: 'float32', array: Float32Array, npy: '<f4'},
  {onnx: 2, ort: 'uint8', array: Uint8Array, npy: '|u1'},
  {onnx: 3, ort: 'int8', array: Int8Array, npy: '|i1'},
  {onnx: 6, ort: 'int32', array: Int32Array, npy: '<i4'},
  {onnx: 7, ort: 'int64', array: BigInt64Array, npy: '<i8'},
  {onnx: 9, ort: 'bool', array: Uint8Array, npy: '|b1'},
  {onnx: 11, ort: 'float64', array: Float64Array, npy: '<f8'},
];
const byOnnx = (code) => TYPES.find((t) => t.onnx === code);
const byOrt = (name) => TYPES.find((t) => t.ort === name);
const byNpy = (descr) => TYPES.find((t) => t.npy === descr ||
                                      (t.npy[0] === '|' && descr === '<' + t.npy.slice(1)));

function fail(message) {
  process.stderr.write(`ort_run: ${message}\n`);
  process.exit(1);
}

// ---- protobuf wire format (just what TensorProto needs) ----
class Reader {
  constructor(buf) { this.buf = buf; this.pos = 0; }
  done() { return this.pos >= this.buf.length; }
  varint() {  // as BigInt (int64 fields may be negative: ten bytes)
    let result = 0n, shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
  }
  bytes() {
    const n = Number(this.varint());
    if (this.pos + n > this.buf.length) throw new Error('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

const asInt64 = (v) => BigInt.asIntN(64, v);

// Repeated scalar field values, packed (wire 2) or not.
function readRepeated(r, wire, readOne, fixedSize) {
  if (wire !== 2) return [readOne(r)];
  const sub = new Reader(r.bytes());
  const out = [];
  while (!sub.done()) out.push(readOne(sub));
  if (fixedSize && sub.pos !== sub.buf.length) throw new Error('bad packed field');
  return out;
}

function readFixed(r, size, get) {
  const v = get(Buffer.from(r.buf.buffer, r.buf.byteOffset + r.pos, size));
  r.pos += size;
  return v;
}

const readFloat = (r) => readFixed(r, 4, (b) => b.readFloatLE(0));
const readDouble = (r) => readFixed(r, 8, (b) => b.readDoubleLE(0));
const readInt32 = (r) => Number(BigInt.asIntN(32, r.varint()));

function parseTensorProto(buf) {
  const r = new Reader(buf);
  const t = {dims: [], dataType: 0, name: '', floats: [], ints32: [], ints64: [], doubles: [],
             raw: null};
  while (!r.done()) {
    const key = Number(r.varint()), field = key >> 3, wire = key & 7;
    if (field === 1) t.dims.push(...readRepeated(r, wire, (x) => Number(asInt64(x.varint()))));
    else if (field === 2) t.dataType = Number(r.varint());
    else if (field === 4) t.floats.push(...readRepeated(r, wire, readFloat, true));
    else if (field === 5) t.ints32.push(...readRepeated(r, wire, readInt32));
    else if (field === 7) t.ints64.push(...readRepeated(r, wire, (x) => asInt64(x.varint())));
    else if (field === 8) t.name = r.bytes().toString('utf8');
    else if (field === 9) t.raw = r.bytes();
    else if (field === 10) t.doubles.push(...readRepeated(r, wire, readDouble, true));
    else if (field === 13 || field === 14) throw new Error('external data is not supported');
    else r.skip(wire);
  }
  const type = byOnnx(t.dataType);
  if (!type) throw new Error(`unsupported TensorProto data_type ${t.dataType}`);
  const count = t.dims.reduce((a, b) => a * b, 1);
  let data;
  if (t.raw) {
    const bytes = Uint8Array.from(t.raw);  // copy: aligned for the typed array
    data = new type.array(bytes.buffer, 0, bytes.length / type.array.BYTES_PER_ELEMENT);
  } else {
    const values = {1: t.floats, 11: t.doubles, 7: t.ints64}[t.dataType] ?? t.ints32;
    data = type.array.from(t.dataType === 7 ? values : values.map(Number));
  }
  if (data.length !== count) {
    throw new Error(`${data.length} values for shape [${t.dims}] (${count} expected)`);
  }
  return {name: t.name, type: type.ort, dims: t.dims, data};
}

function varintBytes(value) {
  let v = BigInt.asUintN(64, BigInt(value));
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}

function serializeTensorProto(name, tensor) {
  const type = byOrt(tensor.type);
  if (!type) throw new Error(`output ${name}: unsupported type ${tensor.type}`);
  const parts = [];
  for (const d of tensor.dims) parts.push(varintBytes(1 << 3), varintBytes(d));
  parts.push(varintBytes(2 << 3), varintBytes(type.onnx));
  const nameBytes = Buffer.from(name, 'utf8');
  parts.push(varintBytes((8 << 3) | 2), varintBytes(nameBytes.length), nameBytes);
  const raw = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  parts.push(varintBytes((9 << 3) | 2), varintBytes(raw.length), raw);
  return Buffer.concat(parts);
}

// ---- .npy (format versions 1 to 3, C order) ----
function parseNpy(buf) {
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') {
    throw new Error('not a .npy file');
  }
  const major = buf[6];
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', start, start + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const order = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !order || !shape) throw new Error(`bad .npy header ${header.trim()}`);
  if (order[1] === 'True') throw new Error('Fortran-order .npy arrays are not supported');
  const type = byNpy(descr[1]);
  if (!type) throw new Error(`unsupported .npy dtype ${descr[1]}`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
  const bytes = Uint8Array.from(buf.subarray(start + headerLength));
  const data = new type.array(bytes.buffer, 0, bytes.length / type.array.BYTES_PER_ELEMENT);
  const count = dims.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new Error(`${data.length} values for shape (${dims})`);
  return {name: '', type: type.ort, dims, data};
}

function serializeNpy(tensor) {
  const type = byOrt(tensor.type);
  const shape = tensor.dims.length === 1 ? `(${tensor.dims[0]},)` : `(${tensor.dims.join(', ')})`;
  let header = `{'descr': '${type.npy}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';  // 64-byte aligned data
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const raw = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), raw]);
}

// ---- command line ----
function parseArgs(argv) {
  const args = {inputs: [], format: 'pb', threads: 2, optimization: 'all'};
  for (let i = 0; i < argv.length; ++i) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--model') args.model = value();
    else if (flag === '--input') args.inputs.push(value());
    else if (flag === '--output-dir' || flag === '--output_dir') args.outputDir = value();
    else if (flag === '--format') args.format = value();
    else if (flag === '--threads') args.threads = Number(value());
    else if (flag === '--optimization') args.optimization = value();
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(fs.readFileSync(__filename, 'utf8').split("\n").slice(1, 15)
                               .map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else fail(`unknown option ${flag} (--help lists them)`);
  }
  if (!args.model) fail('--model is required');
  if (!args.outputDir) fail('--output-dir is required');
  if (args.inputs.length === 0) fail('at least one --input is required');
  if (!['pb', 'npy'].includes(args.format)) fail(`--format ${args.format}: use pb or npy`);
  if (!Number.isInteger(args.threads) || args.threads < 0) fail('--threads takes an integer >= 0');
  if (!['all', 'extended', 'basic', 'disabled'].includes(args.optimization)) {
    fail(`--optimization ${args.optimization}: use all, extended, basic or disabled`);
  }
  return args;
}

function readInput(file) {
  let buf;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    fail(`${file}: ${e.message}`);
  }
  try {
    return file.endsWith('.npy') ? parseNpy(buf) : parseTensorProto(buf);
  } catch (e) {
    fail(`${file}: ${e.message}`);
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    fail(`cannot load onnxruntime-node (${e.message.split('\n')[0]}); ` +
         'install it with deploy/install-deps.sh (npm ci --ignore-scripts in tests/export/ort)');
  }
  let session;
  try {
    session = await ort.InferenceSession.create(args.model, {
      executionProviders: ['cpu'],
      intraOpNumThreads: args.threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: args.optimization,
    });
  } catch (e) {
    fail(`${args.model}: ONNX Runtime refuses the model: ${e.message}`);
  }
  const feeds = {};
  const unbound = session.inputNames.slice();
  for (const spec of args.inputs) {
    const eq = spec.indexOf('=');
    const named = eq > 0 && !fs.existsSync(spec);
    const file = named ? spec.slice(eq + 1) : spec;
    const t = readInput(file);
    let name = named ? spec.slice(0, eq) : t.name;
    if (named && !session.inputNames.includes(name)) {
      fail(`${file}: the model has no input '${name}' (inputs: ${session.inputNames.join(', ')})`);
    }
    if (!named && !session.inputNames.includes(name)) {
      if (!unbound.length) fail(`${file}: every model input is already bound`);
      name = unbound[0];
    }
    if (feeds[name]) fail(`${file}: input '${name}' is given twice`);
    unbound.splice(unbound.indexOf(name), 1);
    feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
  }
  if (unbound.length) fail(`no value for model input(s) ${unbound.join(', ')}`);
  let results;
  try {
    results = await session.run(feeds);
  } catch (e) {
    fail(`${args.model}: ONNX Runtime failed to run it: ${e.message}`);
  }
  fs.mkdirSync(args.outputDir, {recursive: true});
  for (const name of session.outputNames) {
    const out = results[name];
    const safe = name.replace(/[\/\\]/g, '_');
    const file = path.join(args.outputDir, `${safe}.${args.format}`);
    const bytes = args.format === 'npy' ? serializeNpy(out) : serializeTensorProto(name, out);
    fs.writeFileSync(file, bytes);
    process.stdout.write(`${name} ${out.type} [${out.dims.join(',')}] -> ${file}\n`);
  }
}

main().catch((e) => fail(e.stack || String(e)));
