#pragma once

#include <string>
#include <vector>

namespace ditserve::tools::make_model {

// The text the model maker carries to build tokenizers from: captions
// "a {colour} {shape} on a {colour} background" for every combination, and
// a few general sentences so other prompts tokenise sensibly.
std::vector<std::string> CaptionCorpus();

// Byte-level BPE merges learned from `corpus` (CLIP-style: lowercase words,
// "</w>" on each word's last symbol), the `num_merges` most frequent pairs
// in turn; ties go to the lexicographically smaller pair.
std::vector<std::pair<std::string, std::string>> LearnBpeMerges(const std::vector<std::string>& corpus,
                                                                int num_merges);

}  // namespace ditserve::tools::make_model
