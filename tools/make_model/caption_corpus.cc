#include "tools/make_model/caption_corpus.h"

#include <cctype>
#include <map>

#include "tools/make_model/scene_vocabulary.h"

namespace ditserve::tools::make_model {

std::vector<std::string> CaptionCorpus() {
  std::vector<std::string> out;
  for (size_t c = 0; c < kSceneColours.size(); ++c)
    for (int s = 0; s < static_cast<int>(kSceneShapeNames.size()); ++s)
      for (size_t b = 0; b < kSceneColours.size(); ++b)
        if (c != b) out.push_back(SceneCaption(static_cast<int>(c), static_cast<SceneShape>(s), static_cast<int>(b)));
  for (const char* s : {"a photo of a cat sitting on a chair", "the quick brown fox jumps over the lazy dog",
                        "an oil painting of a mountain lake at sunset", "a small house in a green field",
                        "two people walking along the beach", "a bowl of fruit on a wooden table"}) {
    out.push_back(s);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> LearnBpeMerges(const std::vector<std::string>& corpus,
                                                                int num_merges) {
  std::map<std::vector<std::string>, int> words;
  for (const std::string& line : corpus) {
    std::string word;
    for (size_t i = 0; i <= line.size(); ++i) {
      const char ch = i < line.size() ? line[i] : ' ';
      if (std::isalnum(static_cast<unsigned char>(ch))) {
        word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
      } else if (!word.empty()) {
        std::vector<std::string> symbols;
        for (char c : word) symbols.push_back(std::string(1, c));
        symbols.back() += "</w>";
        ++words[symbols];
        word.clear();
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (int m = 0; m < num_merges; ++m) {
    std::map<std::pair<std::string, std::string>, int> pairs;
    for (const auto& [symbols, count] : words)
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += count;
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it)
      if (it->second > best->second) best = it;
    merges.push_back(best->first);
    std::map<std::vector<std::string>, int> next;
    for (const auto& [symbols, count] : words) {
      std::vector<std::string> merged;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == best->first.first && symbols[i + 1] == best->first.second) {
          merged.push_back(symbols[i] + symbols[i + 1]);
          ++i;
        } else {
          merged.push_back(symbols[i]);
        }
      }
      next[merged] += count;
    }
    words.swap(next);
  }
  return merges;
}

}  // namespace ditserve::tools::make_model
