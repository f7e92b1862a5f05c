// Uploaded models as files in one directory beside the results database, content-addressed
// (DIR/<sha256>.onnx), so that a model of any size (up to protobuf's 2 GiB) is received, checked,
// stored and served to workers a chunk at a time, never whole in memory. The database keeps one
// row per model (hash, name, size); this class keeps the bytes.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> files, ModelFiles::Open(dir, 2 << 30));
//   ASSIGN_OR_RETURN(std::unique_ptr<ModelUpload> upload, files->StartUpload("resnet50.onnx"));
//   RETURN_IF_ERROR(upload->Append(chunk));           // per chunk: written and hashed
//   ASSIGN_OR_RETURN(std::string hash, upload->Finish());
//   RETURN_IF_ERROR(CheckOnnxModelFile(upload->path(), upload->name()));
//   RETURN_IF_ERROR(files->Commit(*upload, hash));    // fsync'd, renamed to DIR/<hash>.onnx
//   RETURN_IF_ERROR(files->Read(hash, 1 << 20, sink)); // to a worker, chunk by chunk
//
// An upload dropped before Commit removes its staging file. Disk errors (full, I/O) are
// UNAVAILABLE: nothing was stored and the upload can be retried.
#ifndef BITSWEEP_SERVER_COORDINATOR_MODEL_STORE_H_
#define BITSWEEP_SERVER_COORDINATOR_MODEL_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"

namespace bitsweep::server {

// A model being received: bytes go to a staging file and into the hash as they arrive.
class ModelUpload {
 public:
  ~ModelUpload();
  ModelUpload(const ModelUpload&) = delete;
  ModelUpload& operator=(const ModelUpload&) = delete;

  // INVALID_ARGUMENT once the model would pass the store's size limit; UNAVAILABLE on a disk
  // error.
  absl::Status Append(absl::string_view chunk);
  // Ends the upload (flushed to disk); the lower-case hex SHA-256 of every byte appended.
  absl::StatusOr<std::string> Finish();

  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }  // the staging file
  int64_t size() const { return size_; }

 private:
  friend class ModelFiles;
  ModelUpload(std::string name, std::string path, int fd, int64_t max_bytes)
      : name_(std::move(name)), path_(std::move(path)), fd_(fd), max_bytes_(max_bytes) {}

  const std::string name_;
  const std::string path_;
  int fd_;
  const int64_t max_bytes_;
  int64_t size_ = 0;
  Sha256 sha_;
  bool committed_ = false;
};

class ModelFiles {
 public:
  // Creates `dir` if missing. `max_bytes`: the largest model accepted.
  static absl::StatusOr<std::unique_ptr<ModelFiles>> Open(std::string dir, int64_t max_bytes);

  // `name` is the model's name for people (error messages).
  absl::StatusOr<std::unique_ptr<ModelUpload>> StartUpload(absl::string_view name);
  // Makes a finished upload the file of `hash` (atomically; a file already there is kept).
  absl::Status Commit(ModelUpload& upload, const std::string& hash);

  bool Has(const std::string& hash) const;
  std::string PathOf(const std::string& hash) const;
  // Calls sink(total size, chunk) for consecutive chunks of at most `chunk_bytes` (once with an
  // empty chunk for an empty file) until the end or until sink returns false.
  absl::Status Read(const std::string& hash, size_t chunk_bytes,
                    const std::function<bool(int64_t, absl::string_view)>& sink) const;

  int64_t max_bytes() const { return max_bytes_; }
  const std::string& dir() const { return dir_; }

 private:
  ModelFiles(std::string dir, int64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}

  const std::string dir_;
  const int64_t max_bytes_;
};

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_MODEL_STORE_H_
