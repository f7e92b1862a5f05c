// Models through the coordinator: streamed uploads checked and stored as files (model_store),
// chunked reads for workers, and each model's input channel count for submit's checks.
#include "server/coordinator/sqlite_coordinator.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "server/coordinator/model_check.h"

namespace bitsweep::server::coordinator_internal {

absl::StatusOr<std::unique_ptr<ModelUpload>> SqliteCoordinator::StartModelUpload(
    absl::string_view name) {
  return model_files_->StartUpload(name);
}

absl::StatusOr<v1::UploadModelResponse> SqliteCoordinator::FinishModelUpload(
    std::unique_ptr<ModelUpload> upload, absl::string_view expected_sha256) {
  ASSIGN_OR_RETURN(const std::string hash, upload->Finish());
  if (upload->size() == 0) return absl::InvalidArgumentError("model: no bytes uploaded");
  if (!expected_sha256.empty() && absl::AsciiStrToLower(expected_sha256) != hash) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected_sha256: the upload hashes to ", hash, ", not ", expected_sha256));
  }
  v1::UploadModelResponse response;
  response.set_model_hash(hash);
  response.set_size_bytes(upload->size());
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::optional<int64_t> present,
                     QueryInt("SELECT 1 FROM models WHERE hash = ?1", hash));
    if (present.has_value()) {
      response.set_already_present(true);
      return response;
    }
  }
  // Checking reads the whole file (a chunk at a time) and can take a while for big models: done
  // outside the lock, like storing the file under its hash.
  RETURN_IF_ERROR(CheckOnnxModelFile(upload->path(), upload->name()));
  RETURN_IF_ERROR(model_files_->Commit(*upload, hash));
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(std::optional<int64_t> present,
                   QueryInt("SELECT 1 FROM models WHERE hash = ?1", hash));
  if (present.has_value()) {
    response.set_already_present(true);  // a concurrent upload of the same bytes won
    return response;
  }
  RETURN_IF_ERROR(Exec("INSERT INTO models(hash, name, size_bytes, bytes, created_ms, in_file) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                       hash, upload->name(), upload->size(), Blob{std::string()}, NowMs()));
  RETURN_IF_ERROR(txn.Commit());
  return response;
}

absl::StatusOr<v1::UploadModelResponse> SqliteCoordinator::PutModel(
    absl::string_view name, const std::string& bytes, absl::string_view expected_sha256) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelUpload> upload, StartModelUpload(name));
  RETURN_IF_ERROR(upload->Append(bytes));
  return FinishModelUpload(std::move(upload), expected_sha256);
}

absl::Status SqliteCoordinator::ReadModel(
    absl::string_view model_hash, size_t chunk_bytes,
    const std::function<bool(int64_t, absl::string_view)>& sink) {
  std::string in_table;  // the bytes of a model stored before version 5 of the schema
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT in_file, bytes FROM models WHERE hash = ?1"));
    select.Bind(1, model_hash);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("model '", model_hash, "' not found"));
    if (select.Int64(0) == 0) in_table = select.BlobColumn(1);
  }
  if (in_table.empty()) return model_files_->Read(std::string(model_hash), chunk_bytes, sink);
  const int64_t total = static_cast<int64_t>(in_table.size());
  for (size_t offset = 0; offset < in_table.size(); offset += chunk_bytes) {
    if (!sink(total, absl::string_view(in_table).substr(offset, chunk_bytes))) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> SqliteCoordinator::InputChannelsOf(
    const std::string& model_hash) {
  bool in_file = false;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = input_channels_.find(model_hash); it != input_channels_.end()) return it->second;
    ASSIGN_OR_RETURN(std::optional<int64_t> stored,
                     QueryInt("SELECT in_file FROM models WHERE hash = ?1", model_hash));
    if (!stored.has_value()) return std::optional<int64_t>();
    in_file = *stored != 0;
  }
  absl::StatusOr<std::optional<int64_t>> channels;
  if (in_file) {
    channels = ModelInputChannels(model_files_->PathOf(model_hash));
  } else {
    ASSIGN_OR_RETURN(std::string bytes, GetModelBytes(model_hash));
    channels = ModelInputChannelsOfBytes(bytes);
  }
  // The model passed the checker when it was stored: a shape we cannot read refuses nothing.
  const std::optional<int64_t> known = channels.ok() ? *channels : std::nullopt;
  absl::MutexLock lock(&mu_);
  input_channels_[model_hash] = known;
  return known;
}

absl::StatusOr<std::string> SqliteCoordinator::GetModelBytes(absl::string_view model_hash) {
  std::string bytes;
  RETURN_IF_ERROR(ReadModel(model_hash, 1 << 20, [&](int64_t total, absl::string_view chunk) {
    if (bytes.empty()) bytes.reserve(static_cast<size_t>(total));
    bytes.append(chunk.data(), chunk.size());
    return true;
  }));
  return bytes;
}

}  // namespace bitsweep::server::coordinator_internal
