// The client's listing formats against their specifications: RFC 4180 CSV read back by an
// independent parser written here, doubles that read back to the same bits, JSON with numbers
// as numbers.
#include "client/listing.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/cli/csv.h"

namespace bitsweep::cli {
namespace {

TEST(ListingTest, DoublesReadBackToTheSameBits) {
  for (double v : {0.1, 1.0 / 3.0, 0.8512000000000001, 123456.789e-300, 5e-324, 1e300,
                   std::numeric_limits<double>::max(), -2.5, 0.0}) {
    const std::string text = RoundTripDouble(v);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), v) << text;
  }
  EXPECT_EQ(RoundTripDouble(0.1), "0.1");  // shortest, not 0.10000000000000001
}

TEST(ListingTest, CsvQuotesPerRfc4180) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");

  Listing listing({{"id"}, {"label", true, true}, {"top1"}, {"config", false}, {"missing"}});
  nlohmann::json config = {{"default", {{"weights", "fixed:8"}}}};
  listing.AddRow({Cell(int64_t{9007199254740993}), Cell("conv weights fixed:4, fc \"x\"\nnext"),
                  Cell(1.0 / 3.0, "33.33%"), Cell(config), Cell()});
  const std::vector<std::vector<std::string>> rows = testing::ParseCsv(listing.Csv());
  ASSERT_EQ(rows.size(), 2u) << listing.Csv();
  EXPECT_EQ(rows[0], (std::vector<std::string>{"id", "label", "top1", "config", "missing"}));
  EXPECT_EQ(rows[1][0], "9007199254740993");
  EXPECT_EQ(rows[1][1], "conv weights fixed:4, fc \"x\"\nnext");
  EXPECT_EQ(std::strtod(rows[1][2].c_str(), nullptr), 1.0 / 3.0);
  EXPECT_EQ(nlohmann::json::parse(rows[1][3]), config);
  EXPECT_EQ(rows[1][4], "");
}

TEST(ListingTest, JsonIsOneDocumentWithNumbersAsNumbers) {
  Listing listing({{"id"}, {"top1"}, {"ok"}, {"error"}});
  listing.AddRow({Cell(int64_t{9007199254740993}), Cell(0.25), Cell(true), Cell()});
  listing.AddRow({Cell(int64_t{2}), Cell(0.5), Cell(false), Cell("boom")});
  nlohmann::json meta = {{"sweep_id", 3}};
  char* buffer = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buffer, &size);
  listing.Print("json", out, meta, "trials");
  std::fclose(out);
  const nlohmann::json doc = nlohmann::json::parse(std::string(buffer, size));
  std::free(buffer);
  EXPECT_EQ(doc["sweep_id"], 3);
  ASSERT_EQ(doc["trials"].size(), 2u);
  EXPECT_TRUE(doc["trials"][0]["id"].is_number_integer());
  EXPECT_EQ(doc["trials"][0]["id"].get<int64_t>(), 9007199254740993);
  EXPECT_EQ(doc["trials"][1]["top1"].get<double>(), 0.5);
  EXPECT_TRUE(doc["trials"][0]["error"].is_null());
  EXPECT_EQ(doc["trials"][1]["error"], "boom");

  // jsonl: one object per line.
  buffer = nullptr;
  out = open_memstream(&buffer, &size);
  listing.Print("jsonl", out, meta, "trials");
  std::fclose(out);
  const std::string lines(buffer, size);
  std::free(buffer);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 2) << lines;
  EXPECT_EQ(nlohmann::json::parse(lines.substr(0, lines.find('\n')))["ok"], true);
}

TEST(ListingTest, TableAlignsByCharactersNotBytes) {
  Listing listing({{"trial"}, {"energy"}, {"label", true, true}});
  listing.AddRow({Cell(int64_t{1}), Cell(5.9e6, "5.9 µJ"), Cell("a")});
  listing.AddRow({Cell(int64_t{2}), Cell(41.5e6, "41.5 µJ"), Cell("b")});
  const std::string table = listing.Table();
  std::vector<size_t> label_column;  // where each line's last field starts, in characters
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);) {
    const std::string before = line.substr(0, line.find_last_of(' ') + 1);
    label_column.push_back(std::count_if(before.begin(), before.end(),
                                         [](unsigned char c) { return (c & 0xC0) != 0x80; }));
  }
  ASSERT_EQ(label_column.size(), 3u) << table;
  EXPECT_EQ(label_column[0], label_column[1]) << table;
  EXPECT_EQ(label_column[1], label_column[2]) << table;
}

TEST(ListingTest, TableShowsTheTableTextAndHidesMachineColumns) {
  Listing listing({{"trial"}, {"top1"}, {"config", false}, {"label", true, true}});
  listing.AddRow({Cell(int64_t{7}), Cell(0.8512, "85.12%"), Cell("{}"), Cell("conv w4")});
  const std::string table = listing.Table();
  EXPECT_NE(table.find("85.12%"), std::string::npos) << table;
  EXPECT_EQ(table.find("config"), std::string::npos) << table;
  EXPECT_EQ(table.find("0.8512"), std::string::npos) << table;
}

}  // namespace
}  // namespace bitsweep::cli
