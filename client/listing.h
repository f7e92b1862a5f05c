// Listings printed by the client (sweeps, trials, frontier) in the --format people ask for:
//   table  aligned columns for people (units, rounding; some columns only in the machine formats)
//   csv    RFC 4180 quoting: a header row, fields quoted when they hold a comma,
//          quote or line break, doubles at full precision (they read back to the same bits);
//          rows end in "\n" rather than RFC 4180's CRLF, as Unix tools expect
//   json   one JSON document: {META..., "<rows_key>": [ {column: value, ...}, ... ]}, numbers
//          as numbers (64-bit ids included), missing values as null
//   jsonl  one JSON object per row and line, for streaming into other tools
//
//   Listing trials({{"trial"}, {"top1"}, {"config", /*in_table=*/false}});
//   trials.AddRow({Cell(int64_t{3}), Cell(0.8512, "85.12%"), Cell(nlohmann::json::object())});
//   trials.Print("csv", stdout);
#ifndef BITSWEEP_CLIENT_LISTING_H_
#define BITSWEEP_CLIENT_LISTING_H_

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/declare.h"

// --format, shared by every command that prints a listing.
ABSL_DECLARE_FLAG(std::string, format);

namespace bitsweep::cli {

struct Column {
  std::string name;         // CSV header and JSON key
  bool in_table = true;     // shown by --format table
  bool align_left = false;  // table alignment (numbers right, text left)
  std::string title = "";   // table header (empty: name)
};

struct Cell {
  Cell() = default;  // null: "-" in a table, empty in CSV, null in JSON
  // A value, with the text a table shows (empty: the value itself).
  Cell(nlohmann::json v, std::string table_text = "")
      : value(std::move(v)), text(std::move(table_text)) {}
  nlohmann::json value;
  std::string text;
};

// Shortest decimal text that reads back to the same double ("0.1", "1e-05", "123456789").
std::string RoundTripDouble(double v);
// One CSV field per RFC 4180.
std::string CsvField(const std::string& text);

class Listing {
 public:
  explicit Listing(std::vector<Column> columns) : columns_(std::move(columns)) {}

  void AddRow(std::vector<Cell> cells) { rows_.push_back(std::move(cells)); }
  size_t size() const { return rows_.size(); }

  // Prints in `format` (table, csv, json, jsonl). `meta` holds the JSON document's other members
  // (and is ignored by the other formats); the rows go under `rows_key`.
  void Print(const std::string& format, FILE* out, const nlohmann::json& meta = {},
             const std::string& rows_key = "rows") const;

  std::string Table() const;
  std::string Csv() const;
  nlohmann::json RowsJson() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<Cell>> rows_;
};

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_LISTING_H_
