#include "server/coordinator/model_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace bitsweep::server {
namespace {

// A disk error: retryable (the disk may get space, the device recover); nothing was stored.
absl::Status DiskError(absl::string_view what, const std::string& path, int error) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(error)));
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return DiskError("cannot open", dir, errno);
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (synced != 0) return DiskError("cannot sync", dir, error);
  return absl::OkStatus();
}

}  // namespace

ModelUpload::~ModelUpload() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

absl::Status ModelUpload::Append(absl::string_view chunk) {
  if (fd_ < 0) return absl::FailedPreconditionError("model upload already finished");
  if (static_cast<int64_t>(chunk.size()) > max_bytes_ - size_) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name_, "' is larger than ",
                                                   max_bytes_, " bytes (--max-model-bytes)"));
  }
  const char* data = chunk.data();
  size_t left = chunk.size();
  while (left > 0) {
    const ssize_t written = ::write(fd_, data, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      return DiskError("cannot write", path_, errno);
    }
    data += written;
    left -= static_cast<size_t>(written);
  }
  sha_.Update(chunk.data(), chunk.size());
  size_ += static_cast<int64_t>(chunk.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ModelUpload::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError("model upload already finished");
  const int synced = ::fsync(fd_);
  const int error = errno;
  ::close(fd_);
  fd_ = -1;
  if (synced != 0) return DiskError("cannot sync", path_, error);
  return sha_.HexDigest();
}

absl::StatusOr<std::unique_ptr<ModelFiles>> ModelFiles::Open(std::string dir, int64_t max_bytes) {
  if (max_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max model bytes: must be > 0, got ", max_bytes));
  }
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create the model directory ", dir, ": ", error.message()));
  }
  // Staging files of uploads cut short by a crash.
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".part") std::filesystem::remove(entry.path(), error);
  }
  return std::unique_ptr<ModelFiles>(new ModelFiles(std::move(dir), max_bytes));
}

absl::StatusOr<std::unique_ptr<ModelUpload>> ModelFiles::StartUpload(absl::string_view name) {
  std::string path = absl::StrCat(dir_, "/upload-XXXXXX.part");
  std::vector<char> buffer(path.begin(), path.end());
  buffer.push_back('\0');
  const int fd = ::mkostemps(buffer.data(), 5, O_CLOEXEC);
  if (fd < 0) return DiskError("cannot create a staging file in", dir_, errno);
  return std::unique_ptr<ModelUpload>(
      new ModelUpload(std::string(name), std::string(buffer.data()), fd, max_bytes_));
}

absl::Status ModelFiles::Commit(ModelUpload& upload, const std::string& hash) {
  if (upload.fd_ >= 0) return absl::FailedPreconditionError("model upload not finished");
  const std::string target = PathOf(hash);
  if (Has(hash)) return absl::OkStatus();  // the same bytes, stored before (dropped on destroy)
  if (::rename(upload.path_.c_str(), target.c_str()) != 0) {
    return DiskError("cannot store", target, errno);
  }
  upload.committed_ = true;
  return SyncDirectory(dir_);
}

bool ModelFiles::Has(const std::string& hash) const {
  struct stat st;
  return ::stat(PathOf(hash).c_str(), &st) == 0;
}

std::string ModelFiles::PathOf(const std::string& hash) const {
  return absl::StrCat(dir_, "/", hash, ".onnx");
}

absl::Status ModelFiles::Read(const std::string& hash, size_t chunk_bytes,
                              const std::function<bool(int64_t, absl::string_view)>& sink) const {
  const std::string path = PathOf(hash);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::DataLossError(absl::StrCat("model ", hash, ": its file ", path, " is missing"));
    }
    return DiskError("cannot open", path, errno);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return DiskError("cannot stat", path, error);
  }
  const int64_t total = st.st_size;
  std::string buffer(std::max<size_t>(chunk_bytes, 1), '\0');
  int64_t offset = 0;
  absl::Status status;
  do {
    const ssize_t got = ::pread(fd, buffer.data(), buffer.size(), offset);
    if (got < 0) {
      if (errno == EINTR) continue;
      status = DiskError("cannot read", path, errno);
      break;
    }
    if (got == 0 && offset < total) {
      status = absl::DataLossError(absl::StrCat(path, ": shorter than its ", total, " bytes"));
      break;
    }
    offset += got;
    if (!sink(total, absl::string_view(buffer.data(), static_cast<size_t>(got)))) break;
  } while (offset < total);
  ::close(fd);
  return status;
}

}  // namespace bitsweep::server
