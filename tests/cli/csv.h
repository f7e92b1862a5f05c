// An RFC 4180 CSV reader for the tests, written independently of the client's writer.
//
//   std::vector<std::vector<std::string>> rows = ParseCsv(output);  // rows[0] is the header
#ifndef BITSWEEP_TESTS_CLI_CSV_H_
#define BITSWEEP_TESTS_CLI_CSV_H_

#include <string>
#include <vector>

namespace bitsweep::testing {

// RFC 4180 records from text (fields may be quoted, "" is a quote, line breaks inside quotes).
inline std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1, std::vector<std::string>(1));
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        rows.back().back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        rows.back().back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().emplace_back();
    } else if (c == '\n') {
      rows.emplace_back(1);
    } else {
      rows.back().back() += c;
    }
  }
  if (rows.back().size() == 1 && rows.back()[0].empty()) rows.pop_back();
  return rows;
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_CLI_CSV_H_
