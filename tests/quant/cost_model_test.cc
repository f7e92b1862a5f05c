// The size / BOPs / energy model (docs/COST_MODEL.md) against numbers computed by hand, and the
// hardware profile files.
//
// Default profile (Horowitz, ISSCC 2014, 45 nm) in closed form, used by every hand computation:
//   E_int_mult(x, y) = 0.2 + (x*y - 64) * (3.1 - 0.2) / 960 = (2.9*x*y + 6.4) / 960   [pJ]
//   E_int_add(b)     = 0.03 + (b - 8) * (0.1 - 0.03) / 24  = (0.07*b + 0.16) / 24     [pJ]
//   weight bit (DRAM)     = 640 / 32 = 20 pJ
//   activation bit (SRAM) =   5 / 32 = 0.15625 pJ
//
// The two-layer net:
//   conv: input [1,4,4] (16 values), weights [2,1,3,3] (18) + 2 biases, output [2,2,2] (8),
//         fan_in 1*3*3 = 9, MACs 8 * 9 = 72, ceil(log2 9) = 4.
//   fc:   input [1,8] (8 values), weights [3,8] (24) + 3 biases, output [1,3] (3),
//         fan_in 8, MACs 3 * 8 = 24, ceil(log2 8) = 3.
#include "quant/cost_model.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitsweep::quant {
namespace {

// ---------------------------------------------------------------------------------------------
// Helpers.

NumberFormat Fp32() { return NumberFormat{}; }
NumberFormat Fixed(int bits) {
  NumberFormat f;
  f.kind = FormatKind::kFixed;
  f.bits = bits;
  return f;
}
NumberFormat Ufixed(int bits) {
  NumberFormat f = Fixed(bits);
  f.kind = FormatKind::kUfixed;
  return f;
}
NumberFormat Pow2(int bits) {
  NumberFormat f;
  f.kind = FormatKind::kPow2;
  f.bits = bits;
  return f;
}
NumberFormat Int(int bits, bool symmetric = true, bool per_channel = false) {
  NumberFormat f;
  f.kind = FormatKind::kInt;
  f.bits = bits;
  f.symmetric = symmetric;
  f.per_channel = per_channel;
  return f;
}
NumberFormat Minifloat(int e, int m) {
  NumberFormat f;
  f.kind = FormatKind::kMinifloat;
  f.exponent_bits = e;
  f.mantissa_bits = m;
  f.bits = 1 + e + m;
  return f;
}

LayerInfo Conv() {
  LayerInfo l;
  l.name = "conv";
  l.layer_class = LayerClass::kConv;
  l.weight_shape = {2, 1, 3, 3};
  l.input_shape = {1, 4, 4};
  l.output_shape = {2, 2, 2};
  l.macs = 72;
  l.weight_count = 18;
  l.bias_count = 2;
  l.output_channels = 2;
  l.fan_in = 9;
  return l;
}

LayerInfo Fc() {
  LayerInfo l;
  l.name = "fc";
  l.layer_class = LayerClass::kFc;
  l.weight_shape = {3, 8};
  l.input_shape = {1, 8};
  l.output_shape = {1, 3};
  l.macs = 24;
  l.weight_count = 24;
  l.bias_count = 3;
  l.output_channels = 3;
  l.fan_in = 8;
  return l;
}

std::vector<LayerInfo> TwoLayerNet() { return {Conv(), Fc()}; }

LayerFormats Uniform(const NumberFormat& weights, const NumberFormat& activations) {
  return LayerFormats{weights, activations, activations};
}

void ExpectNear(double got, double want, const char* what) {
  EXPECT_NEAR(got, want, 1e-9 * std::max(1.0, std::abs(want))) << what;
}

void ExpectCost(const LayerCost& got, const LayerCost& want) {
  SCOPED_TRACE("layer " + want.name);
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.macs, want.macs);
  EXPECT_EQ(got.weight_bits, want.weight_bits);
  EXPECT_EQ(got.activation_bits, want.activation_bits);
  EXPECT_EQ(got.bops, want.bops);
  ExpectNear(got.mult_pj, want.mult_pj, "mult_pj");
  ExpectNear(got.add_pj, want.add_pj, "add_pj");
  ExpectNear(got.weight_fetch_pj, want.weight_fetch_pj, "weight_fetch_pj");
  ExpectNear(got.activation_pj, want.activation_pj, "activation_pj");
  ExpectNear(got.energy_pj, want.energy_pj, "energy_pj");
}

// Every field of the total is the sum of the layers', peak is the max of activation bits.
void ExpectTotals(const CostReport& r) {
  LayerCost sum;
  sum.name = "total";
  int64_t peak = 0;
  for (const LayerCost& l : r.layers) {
    sum.macs += l.macs;
    sum.weight_bits += l.weight_bits;
    sum.activation_bits += l.activation_bits;
    sum.bops += l.bops;
    sum.mult_pj += l.mult_pj;
    sum.add_pj += l.add_pj;
    sum.weight_fetch_pj += l.weight_fetch_pj;
    sum.activation_pj += l.activation_pj;
    sum.energy_pj += l.energy_pj;
    peak = std::max(peak, l.activation_bits);
  }
  ExpectCost(r.total, sum);
  EXPECT_EQ(r.peak_activation_bits, peak);
}

CostReport TwoLayer(const LayerFormats& conv, const LayerFormats& fc,
                    const HardwareProfile& hw = DefaultHardwareProfile()) {
  return EstimateCost(TwoLayerNet(), {conv, fc}, hw);
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) /
                                     ("cost_model_test_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path.string();
}

std::filesystem::path ShippedProfilePath() {
  // From CMake, not __FILE__: ccache's base_dir makes __FILE__ relative to the build folder.
  return std::filesystem::path(BITSWEEP_SOURCE_DIR) /
         "quant/profiles/horowitz-isscc2014-45nm.json";
}

void ExpectSameProfile(const HardwareProfile& a, const HardwareProfile& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.int8_add_pj, b.int8_add_pj);
  EXPECT_EQ(a.int32_add_pj, b.int32_add_pj);
  EXPECT_EQ(a.int8_mult_pj, b.int8_mult_pj);
  EXPECT_EQ(a.int32_mult_pj, b.int32_mult_pj);
  EXPECT_EQ(a.fp16_add_pj, b.fp16_add_pj);
  EXPECT_EQ(a.fp32_add_pj, b.fp32_add_pj);
  EXPECT_EQ(a.fp16_mult_pj, b.fp16_mult_pj);
  EXPECT_EQ(a.fp32_mult_pj, b.fp32_mult_pj);
  EXPECT_EQ(a.sram_read_32bit_pj, b.sram_read_32bit_pj);
  EXPECT_EQ(a.dram_read_32bit_pj, b.dram_read_32bit_pj);
  EXPECT_EQ(a.weight_memory, b.weight_memory);
  EXPECT_EQ(a.activation_memory, b.activation_memory);
}

// ---------------------------------------------------------------------------------------------
// The two-layer net under each family of formats.

TEST(CostModelTest, Fp32) {
  const CostReport r = TwoLayer(Uniform(Fp32(), Fp32()), Uniform(Fp32(), Fp32()));
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.profile_name, "horowitz-isscc2014-45nm");
  // conv: mult 72 * 3.7 = 266.4; add 72 * 0.9 = 64.8;
  //   weight bits 18*32 + 2*32 = 640 -> 640 * 20 = 12800;
  //   activation bits 16*32 + 8*32 = 768 -> 768 * 0.15625 = 120; BOPs 72 * 32*32 = 73728;
  //   energy 266.4 + 64.8 + 12800 + 120 = 13251.2.
  ExpectCost(r.layers[0], {.name = "conv", .macs = 72, .weight_bits = 640, .activation_bits = 768,
                           .bops = 73728, .mult_pj = 266.4, .add_pj = 64.8,
                           .weight_fetch_pj = 12800, .activation_pj = 120, .energy_pj = 13251.2});
  // fc: mult 24 * 3.7 = 88.8; add 24 * 0.9 = 21.6; weight bits 24*32 + 3*32 = 864 -> 17280;
  //   activation bits 8*32 + 3*32 = 352 -> 55; BOPs 24 * 1024 = 24576;
  //   energy 88.8 + 21.6 + 17280 + 55 = 17445.4.
  ExpectCost(r.layers[1], {.name = "fc", .macs = 24, .weight_bits = 864, .activation_bits = 352,
                           .bops = 24576, .mult_pj = 88.8, .add_pj = 21.6,
                           .weight_fetch_pj = 17280, .activation_pj = 55, .energy_pj = 17445.4});
  // total: 96 MACs, 1504 weight bits, 1120 activation bits, 98304 BOPs, 30696.6 pJ; peak 768.
  ExpectCost(r.total, {.name = "total", .macs = 96, .weight_bits = 1504, .activation_bits = 1120,
                       .bops = 98304, .mult_pj = 355.2, .add_pj = 86.4,
                       .weight_fetch_pj = 30080, .activation_pj = 175, .energy_pj = 30696.6});
  EXPECT_EQ(r.peak_activation_bits, 768);
}

TEST(CostModelTest, Fixed8Everywhere) {
  const CostReport r = TwoLayer(Uniform(Fixed(8), Fixed(8)), Uniform(Fixed(8), Fixed(8)));
  ASSERT_EQ(r.layers.size(), 2u);
  // conv: E_mult(8,8) = 0.2 -> 72 * 0.2 = 14.4;
  //   b_acc = min(32, 8 + 8 + 4) = 20, E_add(20) = (1.4 + 0.16)/24 = 0.065 -> 72 * 0.065 = 4.68;
  //   weight bits 18*8 + 2*32 = 208 -> 4160; activation bits 16*8 + 8*8 = 192 -> 30;
  //   BOPs 72 * 64 = 4608; energy 14.4 + 4.68 + 4160 + 30 = 4209.08.
  ExpectCost(r.layers[0], {.name = "conv", .macs = 72, .weight_bits = 208, .activation_bits = 192,
                           .bops = 4608, .mult_pj = 14.4, .add_pj = 4.68, .weight_fetch_pj = 4160,
                           .activation_pj = 30, .energy_pj = 4209.08});
  // fc: mult 24 * 0.2 = 4.8; b_acc = 8 + 8 + 3 = 19, E_add(19) = 1.49/24 -> 24 * 1.49/24 = 1.49;
  //   weight bits 24*8 + 3*32 = 288 -> 5760; activation bits 8*8 + 3*8 = 88 -> 13.75;
  //   BOPs 24 * 64 = 1536; energy 4.8 + 1.49 + 5760 + 13.75 = 5780.04.
  ExpectCost(r.layers[1], {.name = "fc", .macs = 24, .weight_bits = 288, .activation_bits = 88,
                           .bops = 1536, .mult_pj = 4.8, .add_pj = 1.49, .weight_fetch_pj = 5760,
                           .activation_pj = 13.75, .energy_pj = 5780.04});
  ExpectTotals(r);
  EXPECT_EQ(r.peak_activation_bits, 192);
  ExpectNear(r.total.energy_pj, 4209.08 + 5780.04, "total energy");
}

TEST(CostModelTest, MixedFixed4WeightsFixed8Activations) {
  const LayerFormats f = Uniform(Fixed(4), Fixed(8));
  const CostReport r = TwoLayer(f, f);
  ASSERT_EQ(r.layers.size(), 2u);
  // conv: E_mult(4,8) = (2.9*32 + 6.4)/960 = 99.2/960 -> 72 * 99.2/960 = 7.44;
  //   b_acc = 4 + 8 + 4 = 16, E_add(16) = 1.28/24 -> 72 * 1.28/24 = 3.84;
  //   weight bits 18*4 + 64 = 136 -> 2720; activation bits 192 -> 30; BOPs 72 * 32 = 2304;
  //   energy 7.44 + 3.84 + 2720 + 30 = 2761.28.
  ExpectCost(r.layers[0], {.name = "conv", .macs = 72, .weight_bits = 136, .activation_bits = 192,
                           .bops = 2304, .mult_pj = 7.44, .add_pj = 3.84, .weight_fetch_pj = 2720,
                           .activation_pj = 30, .energy_pj = 2761.28});
  // fc: mult 24 * 99.2/960 = 2.48; b_acc = 4 + 8 + 3 = 15, E_add(15) = 1.21/24 -> 1.21;
  //   weight bits 24*4 + 96 = 192 -> 3840; activation bits 88 -> 13.75; BOPs 24 * 32 = 768;
  //   energy 2.48 + 1.21 + 3840 + 13.75 = 3857.44.
  ExpectCost(r.layers[1], {.name = "fc", .macs = 24, .weight_bits = 192, .activation_bits = 88,
                           .bops = 768, .mult_pj = 2.48, .add_pj = 1.21, .weight_fetch_pj = 3840,
                           .activation_pj = 13.75, .energy_pj = 3857.44});
  ExpectTotals(r);
}

TEST(CostModelTest, Pow2Weights) {
  const LayerFormats f = Uniform(Pow2(4), Fixed(8));
  const CostReport r = TwoLayer(f, f);
  ASSERT_EQ(r.layers.size(), 2u);
  // The multiply is a shift of the 8-bit activation priced as E_int_add(8) = 0.03.
  // conv: mult 72 * 0.03 = 2.16; add as in the mixed case (b_acc 16) = 3.84; weight bits 136 ->
  //   2720; activation bits 192 -> 30; BOPs 72 * 4*8 = 2304; energy 2.16 + 3.84 + 2720 + 30 = 2756.
  ExpectCost(r.layers[0], {.name = "conv", .macs = 72, .weight_bits = 136, .activation_bits = 192,
                           .bops = 2304, .mult_pj = 2.16, .add_pj = 3.84, .weight_fetch_pj = 2720,
                           .activation_pj = 30, .energy_pj = 2756});
  // fc: mult 24 * 0.03 = 0.72; add 1.21 (b_acc 15); weight bits 192 -> 3840; activation 13.75;
  //   BOPs 768; energy 0.72 + 1.21 + 3840 + 13.75 = 3855.68.
  ExpectCost(r.layers[1], {.name = "fc", .macs = 24, .weight_bits = 192, .activation_bits = 88,
                           .bops = 768, .mult_pj = 0.72, .add_pj = 1.21, .weight_fetch_pj = 3840,
                           .activation_pj = 13.75, .energy_pj = 3855.68});
  ExpectTotals(r);
}

TEST(CostModelTest, Minifloat) {
  // Weights minifloat:4:3 (8 bits), activations minifloat:5:10 (16 bits).
  const LayerFormats f = Uniform(Minifloat(4, 3), Minifloat(5, 10));
  const CostReport r = TwoLayer(f, f);
  ASSERT_EQ(r.layers.size(), 2u);
  // E_mult = E_int_mult(3+1, 10+1) + E_int_add(max(4,5) + 1)
  //        = (2.9*44 + 6.4)/960 + (0.07*6 + 0.16)/24 = 134/960 + 0.58/24 = 0.16375.
  // Accumulation: wider operand 16 bits <= 16 -> fp16 add 0.4.
  // conv: mult 72 * 0.16375 = 11.79; add 72 * 0.4 = 28.8; weight bits 18*8 + 64 = 208 -> 4160;
  //   activation bits 16*16 + 8*16 = 384 -> 60; BOPs 72 * 8*16 = 9216;
  //   energy 11.79 + 28.8 + 4160 + 60 = 4260.59.
  ExpectCost(r.layers[0], {.name = "conv", .macs = 72, .weight_bits = 208, .activation_bits = 384,
                           .bops = 9216, .mult_pj = 11.79, .add_pj = 28.8, .weight_fetch_pj = 4160,
                           .activation_pj = 60, .energy_pj = 4260.59});
  // fc: mult 24 * 0.16375 = 3.93; add 24 * 0.4 = 9.6; weight bits 24*8 + 96 = 288 -> 5760;
  //   activation bits 8*16 + 3*16 = 176 -> 27.5; BOPs 24 * 128 = 3072;
  //   energy 3.93 + 9.6 + 5760 + 27.5 = 5801.03.
  ExpectCost(r.layers[1], {.name = "fc", .macs = 24, .weight_bits = 288, .activation_bits = 176,
                           .bops = 3072, .mult_pj = 3.93, .add_pj = 9.6, .weight_fetch_pj = 5760,
                           .activation_pj = 27.5, .energy_pj = 5801.03});
  ExpectTotals(r);
  EXPECT_EQ(r.peak_activation_bits, 384);
}

TEST(CostModelTest, IntAffine) {
  // int:6:sym:channel weights, int:8:asym activations: priced like any 6 x 8 integer MAC; the
  // weights' per-channel scales (32 bits each, no zero point: symmetric) are fetched with them.
  const LayerFormats f = Uniform(Int(6, true, true), Int(8, false, false));
  const CostReport r = TwoLayer(f, f);
  ASSERT_EQ(r.layers.size(), 2u);
  // E_mult(6,8) = (2.9*48 + 6.4)/960 = 145.6/960.
  // conv: mult 72 * 145.6/960 = 10.92; b_acc = 6 + 8 + 4 = 18, E_add = 1.42/24 -> 72*1.42/24 =
  //   4.26; weight bits 18*6 + 64 + 2 scales * 32 = 236 -> 4720; activation bits 192 -> 30;
  //   BOPs 72 * 48 = 3456; energy 10.92 + 4.26 + 4720 + 30 = 4765.18.
  ExpectCost(r.layers[0], {.name = "conv", .macs = 72, .weight_bits = 236, .activation_bits = 192,
                           .bops = 3456, .mult_pj = 10.92, .add_pj = 4.26, .weight_fetch_pj = 4720,
                           .activation_pj = 30, .energy_pj = 4765.18});
  // fc: mult 24 * 145.6/960 = 3.64; b_acc = 6 + 8 + 3 = 17, E_add = 1.35/24 -> 1.35;
  //   weight bits 24*6 + 96 + 3 scales * 32 = 336 -> 6720; activation bits 88 -> 13.75;
  //   BOPs 24 * 48 = 1152; energy 3.64 + 1.35 + 6720 + 13.75 = 6738.74.
  ExpectCost(r.layers[1], {.name = "fc", .macs = 24, .weight_bits = 336, .activation_bits = 88,
                           .bops = 1152, .mult_pj = 3.64, .add_pj = 1.35, .weight_fetch_pj = 6720,
                           .activation_pj = 13.75, .energy_pj = 6738.74});
  ExpectTotals(r);
}

TEST(CostModelTest, IntWeightParameters) {
  // Per scale group: a 32-bit scale, and a B-bit zero point when asymmetric.
  EXPECT_EQ(WeightParameterBits(Int(4, /*symmetric=*/false, /*per_channel=*/true), 10),
            10 * (32 + 4));
  EXPECT_EQ(WeightParameterBits(Int(4, false, false), 10), 32 + 4);
  EXPECT_EQ(WeightParameterBits(Int(8, true, false), 10), 32);
  EXPECT_EQ(WeightParameterBits(Int(8, true, true), 10), 10 * 32);
  EXPECT_EQ(WeightParameterBits(Int(8, true, true), 0), 32);  // channels unknown: one group
  EXPECT_EQ(WeightParameterBits(Fixed(8), 10), 0);
  EXPECT_EQ(WeightParameterBits(Fp32(), 10), 0);
  // In a report: the fc layer (N = 3) with int:4:asym:channel weights stores 24 four-bit codes,
  // 3 biases, and 3 scales and 3 zero points: 96 + 96 + 3 * 36 = 300 bits.
  const CostReport r = TwoLayer(Uniform(Fp32(), Fp32()), Uniform(Int(4, false, true), Fp32()));
  EXPECT_EQ(r.layers[1].weight_bits, 300);
  EXPECT_DOUBLE_EQ(r.layers[1].weight_fetch_pj, 300 * 20.0);
}

TEST(CostModelTest, PerLayerFormatsAndTotals) {
  // Different formats per layer; the totals are the sums of the hand-computed layers above.
  const CostReport r =
      TwoLayer(Uniform(Fixed(8), Fixed(8)), Uniform(Minifloat(4, 3), Minifloat(5, 10)));
  ASSERT_EQ(r.layers.size(), 2u);
  ExpectNear(r.layers[0].energy_pj, 4209.08, "conv fixed:8");
  ExpectNear(r.layers[1].energy_pj, 5801.03, "fc minifloat");
  // total: MACs 96, weight bits 208 + 288 = 496, activation bits 192 + 176 = 368,
  //   BOPs 4608 + 3072 = 7680, mult 14.4 + 3.93, add 4.68 + 9.6, fetch 4160 + 5760,
  //   activations 30 + 27.5, energy 4209.08 + 5801.03 = 10010.11. Peak: max(192, 176) = 192.
  ExpectCost(r.total, {.name = "total", .macs = 96, .weight_bits = 496, .activation_bits = 368,
                       .bops = 7680, .mult_pj = 18.33, .add_pj = 14.28, .weight_fetch_pj = 9920,
                       .activation_pj = 57.5, .energy_pj = 10010.11});
  EXPECT_EQ(r.peak_activation_bits, 192);
  ExpectTotals(r);
}

// ---------------------------------------------------------------------------------------------
// One layer: widths, BOPs, and the less common rule branches.

TEST(CostModelTest, OneLayerBitsAndBops) {
  // fc with fixed:5 weights, ufixed:7 inputs, fixed:3 outputs (the widths differ on purpose).
  const LayerFormats f{Fixed(5), Ufixed(7), Fixed(3)};
  const CostReport r = EstimateCost({Fc()}, {f}, DefaultHardwareProfile());
  ASSERT_EQ(r.layers.size(), 1u);
  // weight bits 24*5 + 3*32 = 216; activation bits 8*7 + 3*3 = 65; BOPs 24 * 5*7 = 840.
  EXPECT_EQ(r.layers[0].weight_bits, 216);
  EXPECT_EQ(r.layers[0].activation_bits, 65);
  EXPECT_EQ(r.layers[0].bops, 840);
  EXPECT_EQ(r.total.bops, 840);
  EXPECT_EQ(r.total.weight_bits, 216);
  EXPECT_EQ(r.peak_activation_bits, 65);
  // mult 24 * (2.9*35 + 6.4)/960 = 24 * 107.9/960 = 2.6975;
  // b_acc = 5 + 7 + 3 = 15 -> add 24 * 1.21/24 = 1.21; fetch 216 * 20 = 4320;
  // activations 65 * 0.15625 = 10.15625; energy 2.6975 + 1.21 + 4320 + 10.15625 = 4334.06375.
  ExpectCost(r.layers[0], {.name = "fc", .macs = 24, .weight_bits = 216, .activation_bits = 65,
                           .bops = 840, .mult_pj = 2.6975, .add_pj = 1.21,
                           .weight_fetch_pj = 4320, .activation_pj = 10.15625,
                           .energy_pj = 4334.06375});
  ExpectTotals(r);
}

TEST(CostModelTest, MinifloatBitWidth) {
  // minifloat:5:12 is 1 + 5 + 12 = 18 bits, whatever `bits` says.
  NumberFormat mf = Minifloat(5, 12);
  mf.bits = 0;
  const CostReport r = EstimateCost({Fc()}, {Uniform(mf, Fixed(8))}, DefaultHardwareProfile());
  // weight bits 24*18 + 96 = 528; BOPs 24 * 18*8 = 3456.
  EXPECT_EQ(r.layers[0].weight_bits, 528);
  EXPECT_EQ(r.layers[0].bops, 3456);
}

TEST(CostModelTest, MinifloatTimesFixedWiderThan16UsesFp32Add) {
  // minifloat:5:12 (18 bits) weights x fixed:8 inputs: the fixed operand is mantissa 7, exponent 0.
  // E_mult = E_int_mult(12+1, 7+1) + E_int_add(max(5, 0) + 1) = (2.9*104 + 6.4)/960 + 0.58/24
  //        = 308/960 + 0.58/24 = 0.345; max(18, 8) = 18 > 16 -> fp32 add 0.9.
  const CostReport r =
      EstimateCost({Fc()}, {Uniform(Minifloat(5, 12), Fixed(8))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].mult_pj, 24 * 0.345, "mult");  // 8.28
  ExpectNear(r.layers[0].add_pj, 24 * 0.9, "add");      // 21.6
}

TEST(CostModelTest, MinifloatTimesFixedNarrowUsesFp16Add) {
  // fixed:6 weights x minifloat:3:2 inputs: E_int_mult(5+1, 2+1) + E_int_add(max(0, 3) + 1)
  //   = (2.9*18 + 6.4)/960 + (0.28 + 0.16)/24 = 58.6/960 + 0.44/24; max(6, 6) <= 16 -> fp16 add.
  const CostReport r =
      EstimateCost({Fc()}, {Uniform(Fixed(6), Minifloat(3, 2))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].mult_pj, 24 * (58.6 / 960 + 0.44 / 24), "mult");  // 1.465 + 0.44
  ExpectNear(r.layers[0].add_pj, 24 * 0.4, "add");
}

TEST(CostModelTest, AnyFp32OperandUsesFp32Arithmetic) {
  // fp32 weights x fixed:8 inputs and fixed:8 weights x fp32 inputs: fp32 mult and add;
  // the widths still count 32 bits for the fp32 side.
  for (const LayerFormats& f : {LayerFormats{Fp32(), Fixed(8), Fixed(8)},
                                LayerFormats{Fixed(8), Fp32(), Fixed(8)}}) {
    const CostReport r = EstimateCost({Fc()}, {f}, DefaultHardwareProfile());
    ExpectNear(r.layers[0].mult_pj, 24 * 3.7, "mult");  // 88.8
    ExpectNear(r.layers[0].add_pj, 24 * 0.9, "add");    // 21.6
    EXPECT_EQ(r.layers[0].bops, 24 * 32 * 8);           // 6144
  }
  // weights fp32: 24*32 + 96 = 864 weight bits; activation bits 8*8 + 3*8 = 88.
  const CostReport w = EstimateCost({Fc()}, {LayerFormats{Fp32(), Fixed(8), Fixed(8)}},
                                    DefaultHardwareProfile());
  EXPECT_EQ(w.layers[0].weight_bits, 864);
  EXPECT_EQ(w.layers[0].activation_bits, 88);
  // inputs fp32: 24*8 + 96 = 288 weight bits; activation bits 8*32 + 3*8 = 280.
  const CostReport a = EstimateCost({Fc()}, {LayerFormats{Fixed(8), Fp32(), Fixed(8)}},
                                    DefaultHardwareProfile());
  EXPECT_EQ(a.layers[0].weight_bits, 288);
  EXPECT_EQ(a.layers[0].activation_bits, 280);
}

TEST(CostModelTest, AccumulatorWidthIsCappedAt32) {
  // fixed:16 x fixed:16 over fan_in 9: 16 + 16 + 4 = 36 -> 32 -> int32_add_pj = 0.1 per MAC.
  const CostReport r =
      EstimateCost({Conv()}, {Uniform(Fixed(16), Fixed(16))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].add_pj, 72 * 0.1, "add");  // 7.2
  // E_int_mult(16,16) = (2.9*256 + 6.4)/960 = 748.8/960 = 0.78 -> 72 * 0.78 = 56.16.
  ExpectNear(r.layers[0].mult_pj, 56.16, "mult");
}

TEST(CostModelTest, FanInOneAddsNoCarryBits) {
  // fan_in 1: ceil(log2 1) = 0, b_acc = 8 + 8 = 16 -> E_add(16) = 1.28/24.
  LayerInfo l = Fc();
  l.fan_in = 1;
  l.macs = 3;
  const CostReport r = EstimateCost({l}, {Uniform(Fixed(8), Fixed(8))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].add_pj, 3 * 1.28 / 24, "add");  // 0.16
}

TEST(CostModelTest, ProfileConstantsAreMatchedExactly) {
  // The multiplier fit passes through both of the profile's points: 8x8 -> int8_mult_pj and
  // 32x32 -> int32_mult_pj; the adder line through 8 -> int8_add_pj and 32 -> int32_add_pj.
  HardwareProfile hw;
  hw.int8_mult_pj = 0.5;
  hw.int32_mult_pj = 9.0;
  hw.int8_add_pj = 0.04;
  hw.int32_add_pj = 0.2;
  LayerInfo l = Fc();
  l.macs = 1;
  l.fan_in = 1;  // b_acc = b_w + b_a
  {
    const CostReport r = EstimateCost({l}, {Uniform(Int(8), Int(8))}, hw);
    ExpectNear(r.layers[0].mult_pj, 0.5, "8x8 mult");
  }
  {
    const CostReport r = EstimateCost({l}, {Uniform(Int(32), Int(32))}, hw);
    ExpectNear(r.layers[0].mult_pj, 9.0, "32x32 mult");
    ExpectNear(r.layers[0].add_pj, 0.2, "32-bit add");  // 64 -> capped at 32
  }
  {
    // b_acc = 4 + 4 = 8 -> int8_add_pj; mult 0.5 + (16 - 64) * 8.5/960 = 0.075.
    const CostReport r = EstimateCost({l}, {Uniform(Fixed(4), Fixed(4))}, hw);
    ExpectNear(r.layers[0].add_pj, 0.04, "8-bit add");
    ExpectNear(r.layers[0].mult_pj, 0.075, "4x4 mult");
  }
}

TEST(CostModelTest, ExtrapolationIsClampedAtZero) {
  // A steep adder line: 0.01 + (b - 8) * 0.99/24 is negative for b = 1 -> clamped to 0.
  HardwareProfile hw;
  hw.int8_add_pj = 0.01;
  hw.int32_add_pj = 1.0;
  LayerInfo l = Fc();
  l.macs = 10;
  // pow2 weights x ufixed:1 inputs: a 1-bit "shift" -> E_int_add(1) -> 0.
  const CostReport r = EstimateCost({l}, {Uniform(Pow2(2), Ufixed(1))}, hw);
  EXPECT_EQ(r.layers[0].mult_pj, 0.0);
}

TEST(CostModelTest, Pow2WithMinifloatAndPow2Operands) {
  LayerInfo l = Fc();
  l.macs = 1;
  // pow2:4 weights x minifloat:5:2 inputs: exponent add of max(5, 4-1) + 1 = 6 bits
  //   = 0.58/24; accumulation minifloat, max(4, 8) <= 16 -> fp16 add 0.4.
  CostReport r = EstimateCost({l}, {Uniform(Pow2(4), Minifloat(5, 2))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].mult_pj, 0.58 / 24, "pow2 x minifloat mult");
  ExpectNear(r.layers[0].add_pj, 0.4, "pow2 x minifloat add");
  // pow2:5 x pow2:3: exponent codes add in max(5, 3) = 5 bits -> (0.35 + 0.16)/24;
  //   accumulation integer-like: b_acc = 5 + 3 + ceil(log2 8) = 11 -> (0.77 + 0.16)/24.
  r = EstimateCost({l}, {Uniform(Pow2(5), Pow2(3))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].mult_pj, 0.51 / 24, "pow2 x pow2 mult");
  ExpectNear(r.layers[0].add_pj, 0.93 / 24, "pow2 x pow2 add");
  // fixed:8 weights x pow2:4 inputs: shift of the 8-bit weight -> E_int_add(8) = 0.03.
  r = EstimateCost({l}, {Uniform(Fixed(8), Pow2(4))}, DefaultHardwareProfile());
  ExpectNear(r.layers[0].mult_pj, 0.03, "fixed x pow2 mult");
}

TEST(CostModelTest, MemoryPlacementFromProfile) {
  // Weights in SRAM (5/32 per bit), activations in DRAM (640/32 = 20 per bit).
  HardwareProfile hw;
  hw.name = "on-chip-weights";
  hw.weight_memory = "sram";
  hw.activation_memory = "dram";
  const CostReport r = EstimateCost({Conv()}, {Uniform(Fixed(8), Fixed(8))}, hw);
  EXPECT_EQ(r.profile_name, "on-chip-weights");
  // weight bits 208 * 0.15625 = 32.5; activation bits 192 * 20 = 3840.
  ExpectNear(r.layers[0].weight_fetch_pj, 32.5, "weight fetch");
  ExpectNear(r.layers[0].activation_pj, 3840, "activations");
  ExpectNear(r.layers[0].energy_pj, 14.4 + 4.68 + 32.5 + 3840, "energy");
}

TEST(CostModelTest, EmptyNetworkAndMissingFormats) {
  const CostReport empty = EstimateCost({}, {}, DefaultHardwareProfile());
  EXPECT_TRUE(empty.layers.empty());
  EXPECT_EQ(empty.total.name, "total");
  EXPECT_EQ(empty.total.energy_pj, 0.0);
  EXPECT_EQ(empty.peak_activation_bits, 0);
  EXPECT_EQ(empty.profile_name, "horowitz-isscc2014-45nm");
  // A layer without a formats entry is costed in fp32 (the fc numbers of the Fp32 test).
  const CostReport r = EstimateCost(TwoLayerNet(), {Uniform(Fixed(8), Fixed(8))},
                                    DefaultHardwareProfile());
  ASSERT_EQ(r.layers.size(), 2u);
  ExpectNear(r.layers[0].energy_pj, 4209.08, "conv fixed:8");
  ExpectNear(r.layers[1].energy_pj, 17445.4, "fc fp32");
}

// ---------------------------------------------------------------------------------------------
// Profile files.

TEST(HardwareProfileTest, ShippedDefaultFileEqualsDefault) {
  const std::filesystem::path path = ShippedProfilePath();
  absl::StatusOr<HardwareProfile> hw = LoadHardwareProfile(path.string());
  ASSERT_TRUE(hw.ok()) << hw.status();
  ExpectSameProfile(*hw, DefaultHardwareProfile());
}

TEST(HardwareProfileTest, DefaultIsHorowitz) {
  const HardwareProfile hw = DefaultHardwareProfile();
  EXPECT_EQ(hw.name, "horowitz-isscc2014-45nm");
  EXPECT_EQ(hw.int8_add_pj, 0.03);
  EXPECT_EQ(hw.int32_mult_pj, 3.1);
  EXPECT_EQ(hw.dram_read_32bit_pj, 640.0);
  EXPECT_EQ(hw.weight_memory, "dram");
  EXPECT_EQ(hw.activation_memory, "sram");
}

TEST(HardwareProfileTest, SubsetOverridesDefaults) {
  const std::string path = WriteTemp("subset.json", R"({
    "name": "my-7nm",
    "int8_mult_pj": 0.07,
    "dram_read_32bit_pj": 100,
    "weight_memory": "sram",
    "notes": ["documentation only"],
    "scaling": {"mult": "ignored"},
    "source": "my lab"
  })");
  absl::StatusOr<HardwareProfile> hw = LoadHardwareProfile(path);
  ASSERT_TRUE(hw.ok()) << hw.status();
  HardwareProfile want = DefaultHardwareProfile();
  want.name = "my-7nm";
  want.int8_mult_pj = 0.07;
  want.dram_read_32bit_pj = 100;
  want.weight_memory = "sram";
  ExpectSameProfile(*hw, want);
}

TEST(HardwareProfileTest, UnnamedFileIsNamedAfterItsFile) {
  const std::string path = WriteTemp("my_process.json", R"({"fp32_mult_pj": 2.5})");
  absl::StatusOr<HardwareProfile> hw = LoadHardwareProfile(path);
  ASSERT_TRUE(hw.ok()) << hw.status();
  EXPECT_EQ(hw->name, std::filesystem::path(path).stem().string());
  EXPECT_NE(hw->name, DefaultHardwareProfile().name);
  EXPECT_EQ(hw->fp32_mult_pj, 2.5);
  // The empty object is the default constants under the file's name.
  const std::string empty = WriteTemp("empty.json", "{}");
  hw = LoadHardwareProfile(empty);
  ASSERT_TRUE(hw.ok()) << hw.status();
  HardwareProfile want = DefaultHardwareProfile();
  want.name = std::filesystem::path(empty).stem().string();
  ExpectSameProfile(*hw, want);
}

// Expects InvalidArgument whose message names the file and `needle`.
void ExpectInvalid(const std::string& file, const std::string& text, const std::string& needle) {
  SCOPED_TRACE(text);
  const std::string path = WriteTemp(file, text);
  absl::StatusOr<HardwareProfile> hw = LoadHardwareProfile(path);
  ASSERT_FALSE(hw.ok());
  EXPECT_EQ(hw.status().code(), absl::StatusCode::kInvalidArgument) << hw.status();
  const std::string message(hw.status().message());
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(needle), std::string::npos) << message;
}

TEST(HardwareProfileTest, UnknownKey) {
  ExpectInvalid("unknown.json", R"({"int8_add_pj": 0.03, "int4_add_pj": 0.01})", "'int4_add_pj'");
}

TEST(HardwareProfileTest, BadMemory) {
  ExpectInvalid("bad_memory.json", R"({"weight_memory": "hbm"})", "'weight_memory'");
  ExpectInvalid("bad_memory2.json", R"({"activation_memory": "SRAM"})", "'activation_memory'");
  ExpectInvalid("bad_memory3.json", R"({"activation_memory": 1})", "'activation_memory'");
}

TEST(HardwareProfileTest, WrongTypeAndNegative) {
  ExpectInvalid("string_energy.json", R"({"fp32_add_pj": "0.9"})", "'fp32_add_pj'");
  ExpectInvalid("bool_energy.json", R"({"fp32_add_pj": true})", "'fp32_add_pj'");
  ExpectInvalid("negative.json", R"({"sram_read_32bit_pj": -5})", "'sram_read_32bit_pj'");
  ExpectInvalid("name_type.json", R"({"name": 3})", "'name'");
  ExpectInvalid("name_empty.json", R"({"name": ""})", "'name'");
}

TEST(HardwareProfileTest, MalformedFile) {
  ExpectInvalid("not_json.json", "{\"int8_add_pj\": ", "JSON");
  ExpectInvalid("array.json", "[1, 2]", "object");
}

TEST(HardwareProfileTest, MissingFile) {
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "no_such_profile_dir" / "hw.json").string();
  absl::StatusOr<HardwareProfile> hw = LoadHardwareProfile(path);
  ASSERT_FALSE(hw.ok());
  EXPECT_EQ(hw.status().code(), absl::StatusCode::kNotFound) << hw.status();
  EXPECT_NE(std::string(hw.status().message()).find(path), std::string::npos) << hw.status();
}

TEST(HardwareProfileTest, LoadedProfileIsRecordedInReports) {
  const std::string path = WriteTemp("recorded.json", R"({"name": "fab-x-28nm"})");
  absl::StatusOr<HardwareProfile> hw = LoadHardwareProfile(path);
  ASSERT_TRUE(hw.ok()) << hw.status();
  EXPECT_EQ(EstimateCost(TwoLayerNet(), {}, *hw).profile_name, "fab-x-28nm");
}

// A sweep's profile arrives as text: the same parser, errors naming the settings field, an
// unnamed profile called "settings" and an empty text the default profile.
TEST(HardwareProfileTest, SettingsTextParsesLikeAFile) {
  absl::StatusOr<HardwareProfile> empty = SettingsHardwareProfile("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->name, DefaultHardwareProfile().name);
  absl::StatusOr<HardwareProfile> text = SettingsHardwareProfile(R"({"int8_mult_pj": 0.5})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->name, "settings");
  EXPECT_EQ(text->int8_mult_pj, 0.5);
  EXPECT_EQ(text->fp32_add_pj, DefaultHardwareProfile().fp32_add_pj);
  absl::StatusOr<HardwareProfile> bad = SettingsHardwareProfile(R"({"no_such_pj": 1})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(bad.status().message())
                .rfind("settings.hardware_profile_json: hardware profile (settings): key "
                       "'no_such_pj' is unknown",
                       0),
            0u)
      << bad.status();
}

}  // namespace
}  // namespace bitsweep::quant
