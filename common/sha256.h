// SHA-256 as lower-case hex, the content address of models and the hash of configs and trials.
// One OpenSSL wrapper for everyone: the engine (config hashes), the coordinator (model hashes,
// dedup keys) and the worker (verifying fetched models, streamed).
//
//   std::string h = Sha256Hex(bytes);
//   Sha256 sha;  sha.Update(chunk.data(), chunk.size());  ...  std::string h = sha.HexDigest();
#ifndef BITSWEEP_COMMON_SHA256_H_
#define BITSWEEP_COMMON_SHA256_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace bitsweep {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  // Ends the digest; call once.
  std::string HexDigest();

 private:
  EVP_MD_CTX* ctx_;
};

std::string Sha256Hex(absl::string_view bytes);

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_SHA256_H_
