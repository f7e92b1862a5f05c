// The coordinator's SQLite layer: one connection opened in WAL mode with foreign keys on and a
// busy timeout, the numbered migrations of schema/ applied in order (recorded in the
// schema_migrations table), prepared statements only (cached per SQL text), and RAII
// transactions. The migrations are compiled into the binary (embedded_migrations.cc is generated
// from schema/*.sql at build time), so a coordinator needs no source tree at run time.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open("results.db"));
//   ASSIGN_OR_RETURN(Transaction txn, db->Begin());
//   ASSIGN_OR_RETURN(Statement insert, db->Prepare("INSERT INTO t(a, b) VALUES (?, ?)"));
//   RETURN_IF_ERROR(insert.BindAll(int64_t{1}, "text").Run());
//   ASSIGN_OR_RETURN(Statement select, db->Prepare("SELECT a, b FROM t WHERE a > ?"));
//   select.Bind(1, int64_t{0});
//   RETURN_IF_ERROR(select.ForEachRow([&] { use(select.Int64(0), select.Text(1)); }));
//   RETURN_IF_ERROR(txn.Commit());   // destroyed without Commit: rolled back
//
// Not thread-safe: one thread at a time per Database (the coordinator holds a mutex around it).
#ifndef BITSWEEP_SERVER_STORE_STORE_H_
#define BITSWEEP_SERVER_STORE_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct sqlite3;
struct sqlite3_stmt;

namespace bitsweep::store {

// One numbered schema change: schema/0001_initial.sql is {1, "0001_initial.sql", <text>}.
struct Migration {
  int version = 0;
  std::string name;
  std::string sql;
};

// The migrations of schema/, in version order, as compiled into this binary.
const std::vector<Migration>& EmbeddedMigrations();

// A blob parameter (text parameters are plain strings).
struct Blob {
  absl::string_view bytes;
};

// A prepared statement. Statements from Database::Prepare are cached: destroying the handle
// resets the statement and returns it to the cache. Bind errors surface at Step/Run.
class Statement {
 public:
  Statement() = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, int value) { return Bind(index, static_cast<int64_t>(value)); }
  Statement& Bind(int index, bool value) { return Bind(index, static_cast<int64_t>(value)); }
  Statement& Bind(int index, double value);
  Statement& Bind(int index, absl::string_view text);
  Statement& Bind(int index, const char* text) { return Bind(index, absl::string_view(text)); }
  Statement& Bind(int index, const std::string& text) {
    return Bind(index, absl::string_view(text));
  }
  Statement& Bind(int index, Blob blob);
  Statement& Bind(int index, std::nullptr_t);
  template <typename T>
  Statement& Bind(int index, const std::optional<T>& value) {
    if (value.has_value()) return Bind(index, *value);
    return Bind(index, nullptr);
  }
  // Binds the arguments to parameters 1..N.
  template <typename... Args>
  Statement& BindAll(const Args&... args) {
    int index = 0;
    (Bind(++index, args), ...);
    return *this;
  }

  // Advances to the next row: true when there is one, false when the statement is done.
  absl::StatusOr<bool> Step();
  // Steps until done (rows, if any, are skipped).
  absl::Status Run();
  // Steps through every row, calling `row` at each (it reads this statement's columns); the
  // first step error is returned and ends the walk.
  absl::Status ForEachRow(absl::FunctionRef<void()> row);
  // Resets the statement and clears its bindings, for running it again.
  void Reset();

  // Columns of the current row, 0-based.
  bool IsNull(int column) const;
  int64_t Int64(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  std::string BlobColumn(int column) const;
  std::optional<int64_t> OptionalInt64(int column) const;
  std::optional<double> OptionalDouble(int column) const;

 private:
  friend class Database;
  struct CacheEntry {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  Statement(sqlite3* db, sqlite3_stmt* stmt, CacheEntry* cache_entry)
      : db_(db), stmt_(stmt), cache_entry_(cache_entry) {}
  void Release();
  absl::Status Error(int code) const;

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  CacheEntry* cache_entry_ = nullptr;  // null: owned, finalized on destruction
  absl::Status bind_status_;
};

class Database;

// Rolls back on destruction unless committed.
class Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  ~Transaction();
  absl::Status Commit();

 private:
  friend class Database;
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;
};

struct DatabaseOptions {
  absl::Duration busy_timeout = absl::Seconds(10);
  // Null: EmbeddedMigrations(). Tests pass their own.
  const std::vector<Migration>* migrations = nullptr;
};

class Database {
 public:
  // Opens (creating when missing) the file and brings its schema up to date. A database whose
  // schema is newer than this binary's migrations is FAILED_PRECONDITION.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path,
                                                        const DatabaseOptions& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // A cached prepared statement (prepared once per SQL text). If the cached one is in use (a
  // statement nested in a loop over itself), a fresh one is prepared instead.
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // Runs every statement in `script` (no parameters): migrations, pragmas.
  absl::Status Exec(absl::string_view script);
  // BEGIN IMMEDIATE: the write lock is taken at once, so the transaction cannot fail later
  // because another connection wrote first.
  absl::StatusOr<Transaction> Begin();
  bool in_transaction() const { return in_transaction_; }

  int64_t LastInsertRowId() const;
  int64_t Changes() const;  // rows changed by the last INSERT/UPDATE/DELETE
  // The versions recorded in schema_migrations, ascending.
  absl::StatusOr<std::vector<int>> AppliedMigrations();
  // PRAGMA journal_mode: "wal" for files.
  absl::StatusOr<std::string> JournalMode();

 private:
  friend class Transaction;
  Database() = default;
  absl::Status ApplyMigrations(const std::vector<Migration>& migrations);
  absl::Status Error(int code, absl::string_view context) const;

  sqlite3* db_ = nullptr;
  bool in_transaction_ = false;
  // Looked up by string_view (no copy of the SQL text per Prepare).
  absl::flat_hash_map<std::string, std::unique_ptr<Statement::CacheEntry>> cache_;
};

}  // namespace bitsweep::store

#endif  // BITSWEEP_SERVER_STORE_STORE_H_
