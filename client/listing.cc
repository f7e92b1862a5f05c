#include "client/listing.h"

#include <algorithm>
#include <charconv>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

ABSL_FLAG(std::string, format, "table",
          "output: table (for people), csv (RFC 4180, full precision), json (one document), "
          "jsonl (one object per line)");

namespace bitsweep::cli {
namespace {

std::string CellText(const Cell& cell, bool for_table) {
  if (for_table && !cell.text.empty()) return cell.text;
  const nlohmann::json& v = cell.value;
  if (v.is_null()) return for_table ? "-" : "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? (for_table ? "yes" : "true") : (for_table ? "no" : "false");
  if (v.is_number_integer()) return absl::StrCat(v.get<int64_t>());
  if (v.is_number_unsigned()) return absl::StrCat(v.get<uint64_t>());
  if (v.is_number_float()) return RoundTripDouble(v.get<double>());
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // objects, arrays
}

// Columns on a terminal: UTF-8 continuation bytes take none ("µJ" is two).
size_t DisplayWidth(const std::string& text) {
  size_t width = 0;
  for (unsigned char c : text) width += (c & 0xC0) != 0x80;
  return width;
}

std::string Pad(const std::string& text, size_t width, bool left) {
  const std::string fill(width > DisplayWidth(text) ? width - DisplayWidth(text) : 0, ' ');
  return left ? text + fill : fill + text;
}

}  // namespace

std::string RoundTripDouble(double v) {
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return ec == std::errc() ? std::string(buffer, end) : absl::StrFormat("%.17g", v);
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string Listing::Table() const {
  std::vector<size_t> width(columns_.size());
  auto title = [&](size_t c) {
    return columns_[c].title.empty() ? columns_[c].name : columns_[c].title;
  };
  for (size_t c = 0; c < columns_.size(); ++c) width[c] = DisplayWidth(title(c));
  for (const auto& row : rows_) {
    for (size_t c = 0; c < columns_.size() && c < row.size(); ++c) {
      width[c] = std::max(width[c], DisplayWidth(CellText(row[c], true)));
    }
  }
  // The last shown column is not padded (labels are long and ragged).
  size_t last = 0;
  for (size_t c = 0; c < columns_.size(); ++c) {
    if (columns_[c].in_table) last = c;
  }
  auto line = [&](auto text_of) {
    std::string out;
    for (size_t c = 0; c < columns_.size(); ++c) {
      if (!columns_[c].in_table) continue;
      const std::string text = text_of(c);
      if (!out.empty()) out += "  ";
      out += c == last && columns_[c].align_left ? text : Pad(text, width[c], columns_[c].align_left);
    }
    return out + "\n";
  };
  std::string out = line(title);
  for (const auto& row : rows_) {
    out += line([&](size_t c) { return c < row.size() ? CellText(row[c], true) : ""; });
  }
  return out;
}

std::string Listing::Csv() const {
  std::string out;
  for (size_t c = 0; c < columns_.size(); ++c) {
    absl::StrAppend(&out, c ? "," : "", CsvField(columns_[c].name));
  }
  out += "\n";
  for (const auto& row : rows_) {
    for (size_t c = 0; c < columns_.size(); ++c) {
      absl::StrAppend(&out, c ? "," : "", c < row.size() ? CsvField(CellText(row[c], false)) : "");
    }
    out += "\n";
  }
  return out;
}

nlohmann::json Listing::RowsJson() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : rows_) {
    nlohmann::json object = nlohmann::json::object();
    for (size_t c = 0; c < columns_.size(); ++c) {
      object[columns_[c].name] = c < row.size() ? row[c].value : nlohmann::json();
    }
    rows.push_back(std::move(object));
  }
  return rows;
}

void Listing::Print(const std::string& format, FILE* out, const nlohmann::json& meta,
                    const std::string& rows_key) const {
  std::string text;
  if (format == "csv") {
    text = Csv();
  } else if (format == "json") {
    nlohmann::json document = meta.is_object() ? meta : nlohmann::json::object();
    document[rows_key] = RowsJson();
    text = document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  } else if (format == "jsonl") {
    for (const nlohmann::json& row : RowsJson()) {
      text += row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
  } else {
    text = Table();
  }
  std::fputs(text.c_str(), out);
}

}  // namespace bitsweep::cli
