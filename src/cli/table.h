// Aligned text tables with a header, as every listing prints them.
#pragma once

#include <string>
#include <vector>

namespace tidepool::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace tidepool::cli
