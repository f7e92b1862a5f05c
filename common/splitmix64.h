// SplitMix64 (Steele, Lea and Flood, 2014): the small, fast, portable pseudo-random generator
// every deterministic draw in bitsweep uses (stochastic rounding, random and evolutionary search,
// lease ids). Written out because the standard distributions differ between library
// implementations: the same seed gives the same numbers on every machine.
//
//   SplitMix64 rng(seed);
//   uint64_t bits = rng.Next();
//   uint64_t die = rng.Below(6);     // uniform in [0, 6), no modulo bias
//   double u = rng.Uniform();        // uniform in [0, 1), 53 bits
//   uint64_t h = SplitMix64Mix(x);   // the stateless finalizer, for counter-based streams
#ifndef BITSWEEP_COMMON_SPLITMIX64_H_
#define BITSWEEP_COMMON_SPLITMIX64_H_

#include <cstdint>

namespace bitsweep {

inline constexpr uint64_t kSplitMix64Gamma = 0x9E3779B97F4A7C15ULL;

// The output function: a bijective mix of all 64 bits.
inline constexpr uint64_t SplitMix64Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Bits as a double in [0, 1) (the top 53). Converted through int64 (exact below 2^53), which
// compiles to one instruction where an unsigned conversion needs several.
inline constexpr double UnitInterval(uint64_t bits) {
  return static_cast<double>(static_cast<int64_t>(bits >> 11)) * 0x1.0p-53;
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return SplitMix64Mix(state_ += kSplitMix64Gamma); }
  // Uniform in [0, n), n > 0, by rejection.
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
      x = Next();
    } while (x >= limit);
    return x % n;
  }
  double Uniform() { return UnitInterval(Next()); }

 private:
  uint64_t state_;
};

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_SPLITMIX64_H_
