// bitsweep_store: migrations (applied once, recorded, reopening is a no-op, failures roll back,
// newer schemas refused), WAL and foreign keys, statements and transactions.
#include "server/store/store.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/coordinator/test_util.h"

namespace bitsweep::store {
namespace {

using server::testing::TempDbPath;

int64_t CountRows(Database& db, const std::string& table) {
  absl::StatusOr<Statement> count = db.Prepare("SELECT count(*) FROM " + table);
  EXPECT_TRUE(count.ok()) << count.status();
  absl::StatusOr<bool> row = count->Step();
  EXPECT_TRUE(row.ok() && *row);
  return count->Int64(0);
}

bool TableExists(Database& db, const std::string& name) {
  absl::StatusOr<Statement> select =
      db.Prepare("SELECT 1 FROM sqlite_master WHERE name = ?1");
  EXPECT_TRUE(select.ok());
  select->Bind(1, name);
  absl::StatusOr<bool> row = select->Step();
  return row.ok() && *row;
}

// A fresh database whose only migration is `sql` (used during Open only).
absl::StatusOr<std::unique_ptr<Database>> OpenWithSchema(const std::string& sql) {
  std::vector<Migration> migrations = {{1, "0001.sql", sql}};
  DatabaseOptions options;
  options.migrations = &migrations;
  return Database::Open(TempDbPath("store"), options);
}

TEST(EmbeddedMigrationsTest, NumberedFromOneWithoutGaps) {
  const std::vector<Migration>& migrations = EmbeddedMigrations();
  ASSERT_FALSE(migrations.empty());
  for (size_t i = 0; i < migrations.size(); ++i) {
    EXPECT_EQ(migrations[i].version, static_cast<int>(i) + 1) << migrations[i].name;
    EXPECT_FALSE(migrations[i].sql.empty());
  }
  EXPECT_EQ(migrations[0].name, "0001_initial.sql");
  EXPECT_NE(migrations[0].sql.find("CREATE TABLE trials"), std::string::npos);
}

TEST(DatabaseTest, MigrationsApplyOnceAndAreRecorded) {
  const std::string path = TempDbPath("store");
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<std::vector<int>> applied = (*db)->AppliedMigrations();
  ASSERT_TRUE(applied.ok()) << applied.status();
  std::vector<int> expected;
  for (const Migration& m : EmbeddedMigrations()) expected.push_back(m.version);
  EXPECT_EQ(*applied, expected);
  for (const char* table : {"models", "sweeps", "sweep_stages", "trials", "leases", "results",
                            "trial_layers", "calibration_stats", "workers", "trial_summary",
                            "trial_layer_formats", "sweep_progress", "frontier_top1_size"}) {
    EXPECT_TRUE(TableExists(**db, table)) << table;
  }
  EXPECT_EQ(CountRows(**db, "schema_migrations"), static_cast<int64_t>(expected.size()));
}

TEST(DatabaseTest, ReopeningIsANoOpAndKeepsData) {
  const std::string path = TempDbPath("store");
  int64_t applied_ms = 0;
  {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
    ASSERT_TRUE(db.ok()) << db.status();
    absl::StatusOr<Statement> insert = (*db)->Prepare(
        "INSERT INTO workers(id, name, threads, engine_version, registered_ms, last_seen_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?5)");
    ASSERT_TRUE(insert.ok());
    ASSERT_TRUE(insert->BindAll("w-1", "host", int64_t{4}, "v1", int64_t{123}).Run().ok());
    absl::StatusOr<Statement> select =
        (*db)->Prepare("SELECT applied_ms FROM schema_migrations WHERE version = 1");
    ASSERT_TRUE(select.ok());
    ASSERT_TRUE(*select->Step());
    applied_ms = select->Int64(0);
  }
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(CountRows(**db, "schema_migrations"),
            static_cast<int64_t>(EmbeddedMigrations().size()));
  EXPECT_EQ(CountRows(**db, "workers"), 1);
  absl::StatusOr<Statement> select =
      (*db)->Prepare("SELECT applied_ms FROM schema_migrations WHERE version = 1");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->Step());
  EXPECT_EQ(select->Int64(0), applied_ms);  // not re-applied
}

TEST(DatabaseTest, WalModeAndForeignKeysAreOn) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(TempDbPath("store"));
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<std::string> mode = (*db)->JournalMode();
  ASSERT_TRUE(mode.ok()) << mode.status();
  EXPECT_EQ(*mode, "wal");
  // A sweep naming no stored model violates sweeps.model_hash's foreign key.
  absl::StatusOr<Statement> insert = (*db)->Prepare(
      "INSERT INTO sweeps(name, model_hash, strategy, dataset_eval, error_margin, max_attempts, "
      "spec_proto, spec_json, state, created_ms, updated_ms) "
      "VALUES ('s', 'no-such-model', 'grid', 'idx:x', 1.0, 3, x'', '{}', 'queued', 0, 0)");
  ASSERT_TRUE(insert.ok());
  absl::Status status = insert->Run();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("FOREIGN KEY"), std::string::npos) << status;
}

TEST(DatabaseTest, FailedMigrationRollsBackAndIsRetriedLater) {
  const std::string path = TempDbPath("store");
  std::vector<Migration> broken = {
      {1, "0001_a.sql", "CREATE TABLE a (x INTEGER);"},
      {2, "0002_b.sql", "CREATE TABLE b (y INTEGER); CREATE TABLE oops syntax error;"},
  };
  DatabaseOptions options;
  options.migrations = &broken;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path, options);
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.status().message().find("0002_b.sql"), std::string::npos) << db.status();

  std::vector<Migration> fixed = {
      {1, "0001_a.sql", "CREATE TABLE a (x INTEGER);"},
      {2, "0002_b.sql", "CREATE TABLE b (y INTEGER);"},
  };
  options.migrations = &fixed;
  db = Database::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status();  // table b was rolled back, so 0002 applies cleanly
  absl::StatusOr<std::vector<int>> applied = (*db)->AppliedMigrations();
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(*applied, (std::vector<int>{1, 2}));
  EXPECT_TRUE(TableExists(**db, "b"));
}

TEST(DatabaseTest, RefusesASchemaNewerThanTheBinary) {
  const std::string path = TempDbPath("store");
  std::vector<Migration> newer = {{1, "0001_a.sql", "CREATE TABLE a (x INTEGER);"},
                                  {2, "0002_b.sql", "CREATE TABLE b (y INTEGER);"}};
  std::vector<Migration> older = {{1, "0001_a.sql", "CREATE TABLE a (x INTEGER);"}};
  DatabaseOptions options;
  options.migrations = &newer;
  ASSERT_TRUE(Database::Open(path, options).ok());
  options.migrations = &older;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path, options);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(db.status().message().find("newer"), std::string::npos);
}

TEST(DatabaseTest, FullDatabaseIsUnavailableAndRecoversWhenThereIsRoomAgain) {
  std::vector<Migration> migrations = {{1, "0001.sql", "CREATE TABLE t (b BLOB);"}};
  DatabaseOptions options;
  options.migrations = &migrations;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(TempDbPath("store"), options);
  ASSERT_TRUE(db.ok()) << db.status();
  // A database capped a few pages past its size stands in for a full disk (SQLITE_FULL).
  ASSERT_TRUE((*db)->Exec("PRAGMA max_page_count = 20").ok());
  const std::string chunk(16 * 1024, 'x');
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) {
    absl::StatusOr<Statement> insert = (*db)->Prepare("INSERT INTO t(b) VALUES (?1)");
    ASSERT_TRUE(insert.ok()) << insert.status();
    status = insert->BindAll(Blob{chunk}).Run();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "full")) << status;
  // Room again: the same write succeeds, nothing to restart.
  ASSERT_TRUE((*db)->Exec("PRAGMA max_page_count = 100000").ok());
  absl::StatusOr<Statement> insert = (*db)->Prepare("INSERT INTO t(b) VALUES (?1)");
  ASSERT_TRUE(insert.ok());
  EXPECT_TRUE(insert->BindAll(Blob{chunk}).Run().ok());
}

TEST(StatementTest, BindsAndReadsEveryType) {
  std::vector<Migration> migrations = {
      {1, "0001.sql", "CREATE TABLE t (i INTEGER, d REAL, s TEXT, b BLOB, n INTEGER);"}};
  DatabaseOptions options;
  options.migrations = &migrations;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(TempDbPath("store"), options);
  ASSERT_TRUE(db.ok()) << db.status();
  const std::string blob("a\0b\xff", 4);
  {
    absl::StatusOr<Statement> insert =
        (*db)->Prepare("INSERT INTO t(i, d, s, b, n) VALUES (?1, ?2, ?3, ?4, ?5)");
    ASSERT_TRUE(insert.ok());
    std::optional<int64_t> none;
    ASSERT_TRUE(insert->BindAll(int64_t{1} << 40, 2.5, std::string("héllo"), Blob{blob}, none)
                    .Run()
                    .ok());
  }
  absl::StatusOr<Statement> select = (*db)->Prepare("SELECT i, d, s, b, n FROM t");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->Step());
  EXPECT_EQ(select->Int64(0), int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(select->Double(1), 2.5);
  EXPECT_EQ(select->Text(2), "héllo");
  EXPECT_EQ(select->BlobColumn(3), blob);
  EXPECT_TRUE(select->IsNull(4));
  EXPECT_FALSE(select->OptionalInt64(4).has_value());
  EXPECT_EQ(select->OptionalInt64(0), int64_t{1} << 40);
  EXPECT_FALSE(*select->Step());
}

TEST(StatementTest, CachedStatementsCanNest) {
  absl::StatusOr<std::unique_ptr<Database>> db =
      OpenWithSchema("CREATE TABLE t (i INTEGER); INSERT INTO t VALUES (1), (2), (3);");
  ASSERT_TRUE(db.ok()) << db.status();
  const std::string sql = "SELECT i FROM t WHERE i >= ?1 ORDER BY i";
  absl::StatusOr<Statement> outer = (*db)->Prepare(sql);
  ASSERT_TRUE(outer.ok());
  outer->Bind(1, int64_t{1});
  int64_t pairs = 0;
  while (*outer->Step()) {
    // The same SQL while the cached statement is busy: a separate statement is prepared.
    absl::StatusOr<Statement> inner = (*db)->Prepare(sql);
    ASSERT_TRUE(inner.ok());
    inner->Bind(1, outer->Int64(0));
    while (*inner->Step()) ++pairs;
  }
  EXPECT_EQ(pairs, 3 + 2 + 1);
  // Released statements are reused, with their bindings cleared.
  absl::StatusOr<Statement> again = (*db)->Prepare(sql);
  ASSERT_TRUE(again.ok());
  again->Bind(1, int64_t{3});
  ASSERT_TRUE(*again->Step());
  EXPECT_EQ(again->Int64(0), 3);
}

TEST(StatementTest, ForEachRowVisitsEveryRowInOrderAndReturnsStepErrors) {
  absl::StatusOr<std::unique_ptr<Database>> db =
      OpenWithSchema("CREATE TABLE t (i INTEGER); INSERT INTO t VALUES (3), (1), (2);");
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<Statement> select = (*db)->Prepare("SELECT i FROM t WHERE i >= ?1 ORDER BY i");
  ASSERT_TRUE(select.ok());
  select->Bind(1, int64_t{2});
  std::vector<int64_t> seen;
  ASSERT_TRUE(select->ForEachRow([&] { seen.push_back(select->Int64(0)); }).ok());
  EXPECT_EQ(seen, (std::vector<int64_t>{2, 3}));

  // No rows: the callback never runs.
  select->Reset();
  select->Bind(1, int64_t{10});
  int calls = 0;
  ASSERT_TRUE(select->ForEachRow([&] { ++calls; }).ok());
  EXPECT_EQ(calls, 0);

  // An error while stepping (here a bind error, which surfaces at the first step) is returned
  // and no row is visited.
  absl::StatusOr<Statement> bad = (*db)->Prepare("SELECT i FROM t WHERE i = ?1");
  ASSERT_TRUE(bad.ok());
  bad->Bind(7, int64_t{1});  // there is no parameter 7
  const absl::Status status = bad->ForEachRow([&] { ++calls; });
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(calls, 0);
}

TEST(TransactionTest, RollsBackUnlessCommitted) {
  std::vector<Migration> migrations = {{1, "0001.sql", "CREATE TABLE t (i INTEGER);"}};
  DatabaseOptions options;
  options.migrations = &migrations;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(TempDbPath("store"), options);
  ASSERT_TRUE(db.ok()) << db.status();
  {
    absl::StatusOr<Transaction> txn = (*db)->Begin();
    ASSERT_TRUE(txn.ok());
    EXPECT_TRUE((*db)->in_transaction());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1)").ok());
    EXPECT_FALSE((*db)->Begin().ok());  // no nesting
  }
  EXPECT_FALSE((*db)->in_transaction());
  EXPECT_EQ(CountRows(**db, "t"), 0);
  {
    absl::StatusOr<Transaction> txn = (*db)->Begin();
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)").ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  EXPECT_EQ(CountRows(**db, "t"), 2);
}

}  // namespace
}  // namespace bitsweep::store
