// Reads the start tags of an SVG (or HTML) document the client wrote, with their attributes and
// the text that follows each, so that tests can count and inspect elements by class. Not a
// general XML parser: enough for the well-formed documents our figures are (rsvg-convert checks
// well-formedness when the tests render them).
//
//   for (const Element& e : ReadElements(svg)) if (e.HasClass("frontier-point")) ...
#ifndef BITSWEEP_TESTS_CLI_SVG_READER_H_
#define BITSWEEP_TESTS_CLI_SVG_READER_H_

#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace bitsweep::testing {

struct Element {
  std::string tag;
  std::map<std::string, std::string> attributes;
  std::string text;  // characters up to the next tag

  bool HasClass(const std::string& name) const {
    auto it = attributes.find("class");
    if (it == attributes.end()) return false;
    std::istringstream classes(it->second);
    for (std::string c; classes >> c;) {
      if (c == name) return true;
    }
    return false;
  }
  double Number(const std::string& attribute) const {
    auto it = attributes.find(attribute);
    if (it == attributes.end()) it = attributes.find("data-" + attribute);  // on paths
    return it == attributes.end() ? 0 : std::stod(it->second);
  }
};

inline std::vector<Element> ReadElements(const std::string& document) {
  static const std::regex tag(R"(<([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"]*")*)\s*/?>)");
  static const std::regex attribute(R"re(([\w:-]+)="([^"]*)")re");
  std::vector<Element> elements;
  for (auto it = std::sregex_iterator(document.begin(), document.end(), tag);
       it != std::sregex_iterator(); ++it) {
    Element e;
    e.tag = (*it)[1];
    const std::string attributes = (*it)[2];
    for (auto a = std::sregex_iterator(attributes.begin(), attributes.end(), attribute);
         a != std::sregex_iterator(); ++a) {
      e.attributes[(*a)[1]] = (*a)[2];
    }
    const size_t end = it->position() + it->length();
    e.text = document.substr(end, document.find('<', end) - end);
    elements.push_back(std::move(e));
  }
  return elements;
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_CLI_SVG_READER_H_
