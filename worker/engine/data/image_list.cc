#include "worker/engine/data/image_list.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace bitsweep::engine::data {
namespace {

namespace fs = std::filesystem;

bool IsImageFileName(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (const char* ext : {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff",
                          ".webp"}) {
    if (absl::EndsWith(lower, ext)) return true;
  }
  return false;
}

// os.walk(dir, followlinks=True), sorted by folder path, files sorted within each folder.
absl::Status WalkSorted(const fs::path& dir, std::vector<std::string>* files) {
  std::vector<std::pair<std::string, std::vector<std::string>>> folders;
  std::vector<fs::path> pending = {dir};
  while (!pending.empty()) {
    const fs::path folder = pending.back();
    pending.pop_back();
    std::error_code ec;
    fs::directory_iterator it(folder, fs::directory_options::follow_directory_symlink, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot list folder '", folder.string(), "': ", ec.message()));
    }
    std::vector<std::string> names;
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) break;
      std::error_code type_ec;
      if (it->is_directory(type_ec)) {
        pending.push_back(it->path());
      } else {
        names.push_back(it->path().filename().string());
      }
    }
    std::sort(names.begin(), names.end());
    folders.emplace_back(folder.string(), std::move(names));
  }
  std::sort(folders.begin(), folders.end());
  for (const auto& [folder, names] : folders) {
    for (const std::string& name : names) {
      if (IsImageFileName(name)) files->push_back((fs::path(folder) / name).string());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageList> ListImageFolder(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("folder '", dir, "' not found"));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' is not a folder"));
  }
  ImageList list;
  for (fs::directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) list.class_names.push_back(it->path().filename().string());
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot list '", dir, "': ", ec.message()));
  std::sort(list.class_names.begin(), list.class_names.end());
  if (list.class_names.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "folder '", dir, "' has no class subfolders (imagefolder:DIR expects DIR/CLASS/IMAGE)"));
  }
  for (size_t label = 0; label < list.class_names.size(); ++label) {
    std::vector<std::string> files;
    const fs::path class_dir = fs::path(dir) / list.class_names[label];
    if (absl::Status s = WalkSorted(class_dir, &files); !s.ok()) return s;
    for (std::string& f : files) {
      list.entries.push_back({std::move(f), static_cast<int>(label)});
    }
  }
  if (list.entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "folder '", dir, "' holds no image files (.jpg, .jpeg, .png) in its ",
        list.class_names.size(), " class subfolders"));
  }
  return list;
}

absl::StatusOr<ImageList> ListCsv(const std::string& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return absl::NotFoundError(absl::StrCat("file '", file, "' not found"));
  std::ifstream in(file);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot open '", file, "'"));
  const fs::path base = fs::path(file).parent_path();
  ImageList list;
  std::string line;
  int64_t line_no = 0;
  bool first = true;
  while (std::getline(in, line)) {
    ++line_no;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || absl::StartsWith(text, "#")) continue;
    const size_t comma = text.rfind(',');
    const bool was_first = first;
    first = false;
    if (comma == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file '", file, "' line ", line_no, ": expected 'path,label', got '", text, "'"));
    }
    const absl::string_view path = absl::StripAsciiWhitespace(text.substr(0, comma));
    const absl::string_view label_text = absl::StripAsciiWhitespace(text.substr(comma + 1));
    int64_t label = 0;
    if (!absl::SimpleAtoi(label_text, &label)) {
      if (was_first) continue;  // a header such as "path,label"
      return absl::InvalidArgumentError(absl::StrCat("file '", file, "' line ", line_no,
                                                     ": label '", label_text,
                                                     "' is not an integer"));
    }
    if (label < 0 || label > (1 << 30)) {
      return absl::InvalidArgumentError(absl::StrCat("file '", file, "' line ", line_no,
                                                     ": label ", label, " is out of range"));
    }
    if (path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("file '", file, "' line ", line_no, ": empty path"));
    }
    const fs::path p(std::string{path});
    list.entries.push_back({(p.is_absolute() ? p : base / p).string(), static_cast<int>(label)});
  }
  if (list.entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("file '", file, "' lists no images"));
  }
  return list;
}

std::vector<int64_t> SelectSubset(const std::vector<int>& labels, int64_t limit, bool stratified) {
  const int64_t n = static_cast<int64_t>(labels.size());
  std::vector<int64_t> keep;
  if (limit <= 0 || limit >= n) {
    keep.resize(static_cast<size_t>(n));
    std::iota(keep.begin(), keep.end(), 0);
    return keep;
  }
  if (!stratified) {
    keep.resize(static_cast<size_t>(limit));
    std::iota(keep.begin(), keep.end(), 0);
    return keep;
  }
  // Counted per label present (labels come from data files: one label of 10^9 must not cost a
  // table of 10^9 classes).
  std::map<int, int64_t> count;
  for (int l : labels) ++count[l];
  // Quotas: floor(limit * count / n), then the remaining samples to the largest remainders.
  std::map<int, int64_t> quota;
  std::vector<std::pair<int64_t, int>> remainders;  // (-remainder, class): sorts largest first
  int64_t given = 0;
  for (const auto& [c, k] : count) {
    const int64_t scaled = limit * k;
    quota[c] = scaled / n;
    given += scaled / n;
    remainders.emplace_back(-(scaled % n), c);
  }
  std::sort(remainders.begin(), remainders.end());
  for (size_t i = 0; given < limit && i < remainders.size(); ++i) {
    ++quota[remainders[i].second];
    ++given;
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t& q = quota[labels[static_cast<size_t>(i)]];
    if (q > 0) {
      keep.push_back(i);
      --q;
    }
  }
  return keep;
}

}  // namespace bitsweep::engine::data
