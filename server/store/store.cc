#include "server/store/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace bitsweep::store {
namespace {

// Busy and locked mean another connection holds the database, full and I/O errors a disk out
// of space or failing: worth retrying (UNAVAILABLE), the request itself is fine.
absl::Status StatusFromCode(int code, absl::string_view message) {
  const int primary = code & 0xff;  // extended codes (SQLITE_IOERR_WRITE, ...) share it
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_FULL ||
      primary == SQLITE_IOERR) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Statement

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      cache_entry_(std::exchange(other.cache_entry_, nullptr)),
      bind_status_(std::move(other.bind_status_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    Release();
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
    cache_entry_ = std::exchange(other.cache_entry_, nullptr);
    bind_status_ = std::move(other.bind_status_);
  }
  return *this;
}

Statement::~Statement() { Release(); }

void Statement::Release() {
  if (stmt_ == nullptr) return;
  if (cache_entry_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    cache_entry_->in_use = false;
  } else {
    sqlite3_finalize(stmt_);
  }
  stmt_ = nullptr;
  cache_entry_ = nullptr;
}

absl::Status Statement::Error(int code) const {
  const char* sql = stmt_ != nullptr ? sqlite3_sql(stmt_) : "";
  return StatusFromCode(code, absl::StrCat("sqlite: ", sqlite3_errmsg(db_), " (in: ",
                                           absl::string_view(sql).substr(0, 120), ")"));
}

Statement& Statement::Bind(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = Error(rc);
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = Error(rc);
  return *this;
}

Statement& Statement::Bind(int index, absl::string_view text) {
  int rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT,
                               SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = Error(rc);
  return *this;
}

Statement& Statement::Bind(int index, Blob blob) {
  // A zero-length blob with a null pointer would bind NULL: bind an explicit empty blob.
  int rc = blob.bytes.empty()
               ? sqlite3_bind_zeroblob(stmt_, index, 0)
               : sqlite3_bind_blob64(stmt_, index, blob.bytes.data(), blob.bytes.size(),
                                     SQLITE_TRANSIENT);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = Error(rc);
  return *this;
}

Statement& Statement::Bind(int index, std::nullptr_t) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = Error(rc);
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(rc);
}

absl::Status Statement::Run() {
  return ForEachRow([] {});
}

absl::Status Statement::ForEachRow(absl::FunctionRef<void()> row) {
  for (;;) {
    absl::StatusOr<bool> has_row = Step();
    if (!has_row.ok()) return has_row.status();
    if (!*has_row) return absl::OkStatus();
    row();
  }
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_status_ = absl::OkStatus();
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

int64_t Statement::Int64(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::Double(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt_, column));
}

std::string Statement::BlobColumn(int column) const {
  const void* data = sqlite3_column_blob(stmt_, column);
  if (data == nullptr) return "";
  return std::string(static_cast<const char*>(data), sqlite3_column_bytes(stmt_, column));
}

std::optional<int64_t> Statement::OptionalInt64(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Int64(column);
}

std::optional<double> Statement::OptionalDouble(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Double(column);
}

// ---------------------------------------------------------------------------------------------
// Transaction

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  if (db_ == nullptr || !db_->in_transaction_) return;
  // Best effort: a failed rollback leaves SQLite to roll back when the connection closes.
  db_->Exec("ROLLBACK").IgnoreError();
  db_->in_transaction_ = false;
}

absl::Status Transaction::Commit() {
  if (db_ == nullptr || !db_->in_transaction_) {
    return absl::FailedPreconditionError("transaction is not active");
  }
  absl::Status status = db_->Exec("COMMIT");
  if (!status.ok()) {
    db_->Exec("ROLLBACK").IgnoreError();
  }
  db_->in_transaction_ = false;
  db_ = nullptr;
  return status;
}

// ---------------------------------------------------------------------------------------------
// Database

absl::Status Database::Error(int code, absl::string_view context) const {
  return StatusFromCode(code, absl::StrCat("sqlite: ", context, ": ",
                                           db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory"));
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path,
                                                         const DatabaseOptions& options) {
  std::unique_ptr<Database> db(new Database());
  int rc = sqlite3_open_v2(path.c_str(), &db->db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    return db->Error(rc, absl::StrCat("cannot open '", path, "'"));
  }
  sqlite3_extended_result_codes(db->db_, 0);
  sqlite3_busy_timeout(db->db_,
                       static_cast<int>(absl::ToInt64Milliseconds(options.busy_timeout)));
  // WAL: readers never block the writer and a commit is one append. synchronous=NORMAL keeps
  // every committed transaction across a killed process (only an OS crash or power loss can lose
  // the last commits), at a fraction of FULL's fsync cost.
  // cache_size: 16 MiB of pages (the default is 2 MiB) keeps the hot indexes in memory.
  // temp_store = MEMORY: the coordinator's group commit runs every call in a savepoint, whose
  // sub-journal then never touches a temporary file. wal_autocheckpoint = 8192 pages (32 MiB of
  // WAL, the default is 1000): a checkpoint (two fsyncs and a copy of every page it holds) runs
  // an eighth as often, and hot pages rewritten by many commits are copied once.
  absl::Status status = db->Exec(
      "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
      "PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; "
      "PRAGMA wal_autocheckpoint = 8192;");
  if (!status.ok()) return status;
  const std::vector<Migration>& migrations =
      options.migrations != nullptr ? *options.migrations : EmbeddedMigrations();
  status = db->ApplyMigrations(migrations);
  if (!status.ok()) return status;
  return db;
}

Database::~Database() {
  for (auto& [sql, entry] : cache_) sqlite3_finalize(entry->stmt);
  cache_.clear();
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

absl::StatusOr<Statement> Database::Prepare(absl::string_view sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end() && !it->second->in_use) {
    it->second->in_use = true;
    return Statement(db_, it->second->stmt, it->second.get());
  }
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return Error(rc, absl::StrCat("cannot prepare '", sql.substr(0, 120), "'"));
  }
  if (it != cache_.end()) return Statement(db_, stmt, nullptr);  // nested use: an owned copy
  auto entry = std::make_unique<Statement::CacheEntry>();
  entry->stmt = stmt;
  entry->in_use = true;
  Statement::CacheEntry* raw = entry.get();
  cache_.emplace(std::string(sql), std::move(entry));
  return Statement(db_, stmt, raw);
}

absl::Status Database::Exec(absl::string_view script) {
  const char* next = script.data();
  const char* end = script.data() + script.size();
  while (next < end) {
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db_, next, static_cast<int>(end - next), &stmt, &tail);
    if (rc != SQLITE_OK) {
      return Error(rc, absl::StrCat("cannot prepare '",
                                    absl::string_view(next, end - next).substr(0, 120), "'"));
    }
    next = tail;
    if (stmt == nullptr) continue;  // whitespace or a comment
    Statement statement(db_, stmt, nullptr);
    absl::Status status = statement.Run();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<Transaction> Database::Begin() {
  if (in_transaction_) return absl::InternalError("sqlite: nested transaction");
  absl::Status status = Exec("BEGIN IMMEDIATE");
  if (!status.ok()) return status;
  in_transaction_ = true;
  return Transaction(this);
}

int64_t Database::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

int64_t Database::Changes() const { return sqlite3_changes64(db_); }

absl::StatusOr<std::vector<int>> Database::AppliedMigrations() {
  absl::StatusOr<Statement> select =
      Prepare("SELECT version FROM schema_migrations ORDER BY version");
  if (!select.ok()) return select.status();
  std::vector<int> versions;
  absl::Status status =
      select->ForEachRow([&] { versions.push_back(static_cast<int>(select->Int64(0))); });
  if (!status.ok()) return status;
  return versions;
}

absl::StatusOr<std::string> Database::JournalMode() {
  absl::StatusOr<Statement> pragma = Prepare("PRAGMA journal_mode");
  if (!pragma.ok()) return pragma.status();
  absl::StatusOr<bool> row = pragma->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::InternalError("sqlite: PRAGMA journal_mode returned nothing");
  return pragma->Text(0);
}

absl::Status Database::ApplyMigrations(const std::vector<Migration>& migrations) {
  absl::Status status = Exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      "  version INTEGER PRIMARY KEY,"
      "  name TEXT NOT NULL,"
      "  applied_ms INTEGER NOT NULL)");
  if (!status.ok()) return status;
  absl::StatusOr<std::vector<int>> applied = AppliedMigrations();
  if (!applied.ok()) return applied.status();
  int latest_known = 0;
  for (const Migration& m : migrations) latest_known = std::max(latest_known, m.version);
  if (!applied->empty() && applied->back() > latest_known) {
    return absl::FailedPreconditionError(
        absl::StrCat("database schema version ", applied->back(),
                     " is newer than this binary's (", latest_known, "): upgrade bitsweep"));
  }
  for (const Migration& migration : migrations) {
    if (std::find(applied->begin(), applied->end(), migration.version) != applied->end()) {
      continue;
    }
    // Each migration and its record commit together: a crash leaves it applied or not at all.
    absl::StatusOr<Transaction> txn = Begin();
    if (!txn.ok()) return txn.status();
    status = Exec(migration.sql);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("migration ", migration.name, ": ",
                                                      status.message()));
    }
    absl::StatusOr<Statement> record = Prepare(
        "INSERT INTO schema_migrations(version, name, applied_ms) VALUES (?, ?, ?)");
    if (!record.ok()) return record.status();
    status = record->BindAll(static_cast<int64_t>(migration.version), migration.name,
                             absl::ToUnixMillis(absl::Now()))
                 .Run();
    if (!status.ok()) return status;
    status = txn->Commit();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace bitsweep::store
