// The frontier check shared by the end-to-end tests (tests/service on loopback, tests/ops in
// Docker): a sweep's (top-1, size) frontier recomputed from the coordinator's SQLite file by SQL,
// to compare with the one the coordinator serves.
//
//   EXPECT_EQ(served_ids, QueryIds(db_path, FrontierSql(sweep_id)));
#ifndef BITSWEEP_TESTS_SERVICE_FRONTIER_SQL_H_
#define BITSWEEP_TESTS_SERVICE_FRONTIER_SQL_H_

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitsweep::testing {

// Succeeded trials (cached ones read their original's result) that no other dominates; of equal
// points the oldest trial.
inline std::string FrontierSql(int64_t sweep_id) {
  return "WITH pts AS (SELECT t.id, r.top1, r.size_bits FROM trials t "
         "JOIN results r ON r.trial_id = COALESCE(t.cached_from, t.id) "
         "WHERE t.sweep_id = " + std::to_string(sweep_id) + " AND t.state = 'succeeded') "
         "SELECT a.id FROM pts a WHERE NOT EXISTS (SELECT 1 FROM pts b WHERE "
         "b.top1 >= a.top1 AND b.size_bits <= a.size_bits AND "
         "(b.top1 > a.top1 OR b.size_bits < a.size_bits OR b.id < a.id)) ORDER BY a.id";
}

// Runs `sql` (one integer column) on the database file, read-only.
inline std::vector<int64_t> QueryIds(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::vector<int64_t> ids;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK)
      << db_path << ": " << sqlite3_errmsg(db);
  sqlite3_stmt* statement = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  while (statement != nullptr && sqlite3_step(statement) == SQLITE_ROW) {
    ids.push_back(sqlite3_column_int64(statement, 0));
  }
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return ids;
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_SERVICE_FRONTIER_SQL_H_
