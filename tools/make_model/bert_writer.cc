#include "tools/make_model/bert_writer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tools/make_model/caption_corpus.h"
#include "tools/make_model/directory_writer.h"
#include "worker/tokenizers/bert_normalizer.h"
#include "worker/tokenizers/bert_tokenizer.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::tools::make_model {
namespace {

using json = nlohmann::ordered_json;
using worker::tokenizers::DecodeUtf8Lossy;
using worker::tokenizers::EncodeUtf8;

// Characters of everyday prompts beyond ASCII, each a vocabulary entry.
// Punctuation (never inside a word, so no "##" form):
constexpr const char* kPunctuation =
    "“”‘’—–…，。、！？：；（）「」『』《》【】〈〉·¡¿«»§¶°±×"
    "÷•‰′″€£¥©®™";
// Letters and symbols that also get a "##" form:
constexpr const char* kFullwidth =
    "０１２３４５６７８９ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ";
constexpr const char* kKana =
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもや"
    "ゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽっゃゅ"
    "ょー"
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤ"
    "ユヨラリルレロワヲンガギグゲゴザジズゼゾダデドバビブベボパピプペポッャュ"
    "ョ";
constexpr const char* kHangul =
    "가나다라마바사아자차카타파하한국어의이는을를에고서로도만요다니고양개산강"
    "빨파노검흰색원";
constexpr const char* kEmoji = "🙂😀😂❤⭐🔥🐱🐶🌸🌙☀🌊";
// Common CJK ideographs: frequent characters and those of simple scene
// prompts (colours, shapes, animals, landscapes).
constexpr const char* kIdeographs =
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以"
    "生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想"
    "看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但"
    "身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机"
    "给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信"
    "北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书任更"
    "色红蓝绿黄白黑紫橙灰粉圆形角背景猫狗鸟鱼马花草树林湖河云雨雪风光影画照片"
    "油幅张坐椅桌房屋田野沙滩落阳夜星空城街路车船飞桥亮暗丽爱乐孩男狐狸跳懒惰"
    "棕碗果木盘猪牛羊龙虎熊兔春夏秋冬晴雾岛森丘石墙窗灯";

std::vector<std::string> Characters(const char* utf8) {
  std::vector<std::string> out;
  for (char32_t c : DecodeUtf8Lossy(utf8)) out.push_back(EncodeUtf8(std::u32string(1, c)));
  return out;
}

// The corpus's words as BERT's pre-tokeniser sees them (lower case,
// split at anything but ASCII letters and digits), with their counts.
std::map<std::string, int> CorpusWords() {
  std::map<std::string, int> words;
  for (const std::string& line : CaptionCorpus()) {
    std::string word;
    for (size_t i = 0; i <= line.size(); ++i) {
      const unsigned char ch = i < line.size() ? static_cast<unsigned char>(line[i]) : ' ';
      if (std::isalnum(ch)) {
        word.push_back(static_cast<char>(std::tolower(ch)));
      } else if (!word.empty()) {
        ++words[word];
        word.clear();
      }
    }
  }
  return words;
}

class Vocabulary {
 public:
  void Add(const std::string& token) {
    if (seen_.insert(token).second) tokens_.push_back(token);
  }
  bool Has(const std::string& token) const { return seen_.count(token) > 0; }
  size_t size() const { return tokens_.size(); }
  const std::vector<std::string>& tokens() const { return tokens_; }

 private:
  std::vector<std::string> tokens_;
  std::set<std::string> seen_;
};

std::vector<std::string> BuildVocabulary(int vocab_target) {
  Vocabulary v;
  v.Add("[PAD]");
  for (int i = 1; i < kBertUnkId; ++i) v.Add(absl::StrCat("[unused", i, "]"));
  for (const char* s : {"[UNK]", "[CLS]", "[SEP]", "[MASK]"}) v.Add(s);
  // Single characters; `continued` also get their "##" form below.
  std::vector<std::string> continued;
  for (int c = 33; c <= 126; ++c) {
    v.Add(std::string(1, static_cast<char>(c)));
    if (std::isalnum(c)) continued.push_back(std::string(1, static_cast<char>(c)));
  }
  for (char32_t c = 0xC0; c <= 0xFF; ++c) {
    if (c == 0xD7 || c == 0xF7) continue;  // × and ÷ are in kPunctuation
    const std::string s = EncodeUtf8(std::u32string(1, c));
    v.Add(s);
    continued.push_back(s);
  }
  for (const std::string& s : Characters(kPunctuation)) v.Add(s);
  std::vector<std::string> letters;
  for (const char* group : {kFullwidth, kKana, kHangul}) {
    for (const std::string& s : Characters(group)) letters.push_back(s);
  }
  for (char32_t lo : {0x1100, 0x1161, 0x11A8}) {  // conjoining jamo: leading, vowels, trailing
    const char32_t hi = lo == 0x1100 ? 0x1112 : lo == 0x1161 ? 0x1175 : 0x11C2;
    for (char32_t c = lo; c <= hi; ++c) letters.push_back(EncodeUtf8(std::u32string(1, c)));
  }
  for (const std::string& s : Characters(kIdeographs)) letters.push_back(s);
  for (const std::string& s : Characters(kEmoji)) letters.push_back(s);
  for (const std::string& s : letters) {
    v.Add(s);
    continued.push_back(s);
  }
  for (const std::string& s : continued) v.Add("##" + s);
  // Whole words, the most frequent first.
  const std::map<std::string, int> words = CorpusWords();
  std::vector<std::pair<int, std::string>> ranked;
  for (const auto& [word, count] : words) ranked.push_back({-count, word});
  std::sort(ranked.begin(), ranked.end());
  for (const auto& [count, word] : ranked) v.Add(word);
  // Learned pieces: prefixes (2+ characters) and "##" suffixes (2+
  // characters) of the corpus words, weighted by the words' counts.
  std::map<std::string, int> pieces;
  for (const auto& [word, count] : words) {
    for (size_t k = 2; k < word.size(); ++k) pieces[word.substr(0, k)] += count;
    for (size_t k = 1; k + 2 <= word.size(); ++k) pieces["##" + word.substr(k)] += count;
  }
  ranked.clear();
  for (const auto& [piece, count] : pieces) ranked.push_back({-count, piece});
  std::sort(ranked.begin(), ranked.end());
  for (const auto& [count, piece] : ranked) {
    if (static_cast<int>(v.size()) >= vocab_target) break;
    v.Add(piece);
  }
  return v.tokens();
}

json AddedToken(const std::string& content) {
  return {{"content", content}, {"lstrip", false}, {"normalized", false},
          {"rstrip", false},    {"single_word", false}, {"special", true}};
}

}  // namespace

absl::StatusOr<int> WriteBertTokenizer(const std::string& d, int vocab_target, int model_max_length) {
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  const std::vector<std::string> tokens = BuildVocabulary(vocab_target);
  {
    std::ofstream out(d + "/vocab.txt", std::ios::binary);
    for (const std::string& t : tokens) out << t << "\n";
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", d, "/vocab.txt"));
  }
  json added = json::object();
  for (auto [id, content] : {std::pair{kBertPadId, "[PAD]"}, {kBertUnkId, "[UNK]"}, {kBertClsId, "[CLS]"},
                             {kBertSepId, "[SEP]"}, {kBertMaskId, "[MASK]"}}) {
    added[std::to_string(id)] = AddedToken(content);
  }
  const json config = {{"tokenizer_class", "BertTokenizer"}, {"added_tokens_decoder", added},
                       {"clean_up_tokenization_spaces", true}, {"cls_token", "[CLS]"},
                       {"do_basic_tokenize", true}, {"do_lower_case", true}, {"mask_token", "[MASK]"},
                       {"model_max_length", model_max_length}, {"never_split", nullptr}, {"pad_token", "[PAD]"},
                       {"sep_token", "[SEP]"}, {"strip_accents", nullptr}, {"tokenize_chinese_chars", true},
                       {"unk_token", "[UNK]"}};
  if (absl::Status s = WriteJson(d + "/tokenizer_config.json", config); !s.ok()) return s;
  const json special = {{"cls_token", "[CLS]"}, {"mask_token", "[MASK]"}, {"pad_token", "[PAD]"},
                        {"sep_token", "[SEP]"}, {"unk_token", "[UNK]"}};
  if (absl::Status s = WriteJson(d + "/special_tokens_map.json", special); !s.ok()) return s;
  auto check = worker::tokenizers::BertTokenizer::Load(d);
  if (!check.ok()) return check.status();
  return (*check)->vocab_size();
}

absl::Status WriteBertTextEncoder(const std::string& d, const worker::text::BertConfig& c, at::Generator& generator,
                                  at::ScalarType dtype) {
  auto model = worker::text::BertModel::Create(c, at::kFloat);
  if (!model.ok()) return model.status();
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  at::NoGradGuard no_grad;
  NamedTensors params = ModuleParameters((*model)->module());
  params.push_back({"pooler.dense.weight", at::empty({c.hidden_size, c.hidden_size}, at::kFloat)});
  params.push_back({"pooler.dense.bias", at::empty({c.hidden_size}, at::kFloat)});
  // InitialiseRandom's norm rule looks for "norm": BERT's are "LayerNorm".
  NamedTensors drawn;
  for (auto& [name, t] : params) {
    if (absl::EndsWith(name, "LayerNorm.weight")) {
      t.fill_(1.0);
    } else {
      drawn.push_back({name, t});
    }
  }
  InitialiseRandom(drawn, generator, 0.02);
  if (absl::Status s = worker::weights::WriteSafetensors(d + "/model.safetensors", Cast(params, dtype)); !s.ok()) return s;
  return WriteJson(d + "/config.json",
                   {{"architectures", {"BertModel"}}, {"model_type", "bert"},
                    {"attention_probs_dropout_prob", 0.1}, {"hidden_act", c.hidden_act},
                    {"hidden_dropout_prob", 0.1}, {"hidden_size", c.hidden_size}, {"initializer_range", 0.02},
                    {"intermediate_size", c.intermediate_size}, {"layer_norm_eps", c.layer_norm_eps},
                    {"max_position_embeddings", c.max_position_embeddings},
                    {"num_attention_heads", c.num_attention_heads}, {"num_hidden_layers", c.num_hidden_layers},
                    {"pad_token_id", c.pad_token_id}, {"position_embedding_type", "absolute"},
                    {"type_vocab_size", c.type_vocab_size}, {"vocab_size", c.vocab_size},
                    {"torch_dtype", TorchDtype(dtype)}});
}

}  // namespace ditserve::tools::make_model
