// Helpers shared by the libFuzzer harnesses of tests/fuzz (see CMakeLists.txt there).
//
// FUZZ_CHECK(cond) aborts with the condition's text when a property of the code under test does
// not hold, so libFuzzer records the input as a crash; ScratchDir() is a per-process folder for
// harnesses whose readers take file paths; WriteFile puts bytes there. SplitInput cuts a
// two-file input (images and labels) with a few setting bytes; tests/fuzz/make_seeds.py writes
// seeds in that layout.
//
//   FUZZ_CHECK(!status.message().empty());
//   const std::string path = ScratchDir() + "/images.npy";
//   WriteFile(path, data, size);
#ifndef BITSWEEP_TESTS_FUZZ_FUZZ_UTIL_H_
#define BITSWEEP_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace bitsweep::fuzz {

// A folder of this process under $TMPDIR (or /tmp), created on first use, removed at exit.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string path = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                       "/bitsweep-fuzz-" + std::to_string(getpid());
    std::filesystem::create_directories(path);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*dir, ec);
    });
    return new std::string(path);
  }();
  return *dir;
}

inline void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  FUZZ_CHECK(out.good());
}

// Input of the dataset harnesses:
//   4 setting bytes, a 4-byte little-endian length L, L bytes of the first file (images), and
//   the rest: the second file (labels).
// A shorter input, or an L past the end, gives nothing (the input is skipped).
struct TwoFileInput {
  uint8_t settings[4];
  std::string_view first, second;
};

inline bool SplitInput(const uint8_t* data, size_t size, TwoFileInput& out) {
  if (size < 8) return false;
  for (int i = 0; i < 4; ++i) out.settings[i] = data[i];
  const size_t length = size_t{data[4]} | (size_t{data[5]} << 8) | (size_t{data[6]} << 16) |
                        (size_t{data[7]} << 24);
  if (length > size - 8) return false;
  const char* bytes = reinterpret_cast<const char*>(data) + 8;
  out.first = std::string_view(bytes, length);
  out.second = std::string_view(bytes + length, size - 8 - length);
  return true;
}

inline void WriteFile(const std::string& path, std::string_view bytes) {
  WriteFile(path, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace bitsweep::fuzz

#endif  // BITSWEEP_TESTS_FUZZ_FUZZ_UTIL_H_
