#include "config/decode.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "common/duration.h"
#include "common/strings.h"
#include "config/expand.h"

namespace tidepool::config {

using nlohmann::json;
using schema::Field;
using schema::Message;
using schema::Type;

std::string FormatPos(const SourcePos& pos) {
  if (pos.line <= 0) return pos.file;
  return pos.file + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
}

std::string ChildPath(const std::string& parent, std::string_view field) {
  return parent.empty() ? std::string(field) : parent + "." + std::string(field);
}

std::string ItemPath(const std::string& list, size_t i) {
  return list + "[" + std::to_string(i) + "]";
}

namespace {

SourcePos ToPos(const std::string& file, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return {file, 0, 0};
  return {file, mark.line + 1, mark.column + 1};
}

// Lowercase without separators, so "MaxAgents", "max-agents" and "maxagents" compare equal.
std::string Fold(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '_' || c == '-') continue;
    out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return out;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// Close enough to be worth suggesting: a typo, not a different word.
bool Close(std::string_view typed, std::string_view known) {
  std::string a = Fold(typed), b = Fold(known);
  size_t limit = a.size() <= 4 ? 1 : a.size() <= 8 ? 2 : 3;
  return EditDistance(a, b) <= limit;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// "a list", "a mapping", "\"x\"": what was found where something else was expected.
std::string Describe(const YAML::Node& n, bool secret) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return secret ? "a string" : Quote(n.Scalar());
    default: return "nothing";
  }
}

std::string Expected(const Field& f) {
  switch (f.type) {
    case Type::kString: return "a string";
    case Type::kBool: return "true or false";
    case Type::kInt32:
    case Type::kInt64: return "an integer";
    case Type::kDouble: return "a number";
    case Type::kDuration: return "a duration such as \"300s\", \"5m\" or \"1h30m\"";
    case Type::kRate: return "a rate such as \"2/s\", \"30/m\", \"100/h\" or a number per second";
    case Type::kEnum: {
      std::vector<std::string> names;
      for (const schema::EnumValue& e : f.enum_values) names.emplace_back(e.name);
      return "one of " + Join(names, ", ");
    }
    default: return "a value";
  }
}

std::optional<int64_t> ParseInt(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<double> ParseDouble(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

// "2/s", "30/m", "100/h", or a bare number meaning per second.
std::optional<double> ParseRate(const std::string& s) {
  double per = 1;
  std::string number = s;
  if (size_t slash = s.find('/'); slash != std::string::npos) {
    std::string unit = s.substr(slash + 1);
    if (unit == "s") per = 1;
    else if (unit == "m") per = 60;
    else if (unit == "h") per = 3600;
    else return std::nullopt;
    number = s.substr(0, slash);
  }
  std::optional<double> v = ParseDouble(std::string(Trim(number)));
  if (!v) return std::nullopt;
  return *v / per;
}

class Decoder {
 public:
  Decoder(std::string file, const EnvLookup& env, std::vector<ConfigError>* errors,
          PosIndex* index)
      : file_(std::move(file)), env_(env), errors_(errors), index_(index) {}

  // Decodes a mapping against `m`; nullopt (after an error) when `node` is not a mapping.
  std::optional<json> DecodeMessage(const YAML::Node& node, const Message& m,
                                    const std::string& path, const SourcePos& at) {
    if (node.IsNull()) return FinishMessage(json::object(), m, path, at, 0, {});
    if (!node.IsMap()) {
      Error(at, path, "expected a mapping (the fields of " + std::string(Label(m, path)) +
                          "), got " + Describe(node, false));
      return std::nullopt;
    }
    json out = json::object();
    std::map<std::string_view, std::string> spelled;  // canonical name -> as written
    std::map<std::string_view, std::string_view> oneof_taken;
    std::vector<std::string> set_names;
    size_t unknown = 0;
    for (const auto& entry : node) {
      const YAML::Node& k = entry.first;
      const YAML::Node& v = entry.second;
      SourcePos kp = ToPos(file_, k.Mark());
      if (!k.IsScalar()) {
        Error(kp, path, "field names must be plain strings");
        continue;
      }
      const std::string& name = k.Scalar();
      const Field* f = Lookup(m, name);
      if (f == nullptr) {
        UnknownField(kp, m, path, name);
        ++unknown;  // a misspelt backend is still a backend given: no "none given" as well
        continue;
      }
      if (auto it = spelled.find(f->name); it != spelled.end()) {
        Error(kp, path,
              it->second == name
                  ? "field " + Quote(name) + " is given twice"
                  : "field " + Quote(f->name) + " is given twice, as " + Quote(it->second) +
                        " and as " + Quote(name));
        continue;
      }
      spelled[f->name] = name;
      std::string child = ChildPath(path, f->name);
      SourcePos vp = v.IsNull() ? kp : ToPos(file_, v.Mark());
      (*index_)[child] = {kp, vp};
      if (!f->oneof.empty()) {
        auto [it, fresh] = oneof_taken.emplace(f->oneof, f->name);
        if (!fresh) {
          Error(kp, path, Quote(it->second) + " and " + Quote(f->name) +
                              " cannot both be set; give one of them");
        }
      }
      set_names.emplace_back(f->name);
      if (f->type == Type::kUnsupported) {
        Error(kp, child, std::string(f->unsupported));
        continue;
      }
      if (std::optional<json> value = DecodeValue(v, *f, child, vp)) out[f->name] = *value;
    }
    return FinishMessage(std::move(out), m, path, at, set_names.size() + unknown, set_names);
  }

 private:
  std::string_view Label(const Message& m, const std::string& path) const {
    return m.name.empty() ? std::string_view("the file") : (path.empty() ? m.name : path);
  }

  json FinishMessage(json out, const Message& m, const std::string& path, const SourcePos& at,
                     size_t set_count, const std::vector<std::string>& set_names) {
    if (m.exactly_one && set_count == 0) {
      Error(at, path, "no " + std::string(m.name) + " given; set one of: " + KnownNames(m));
    } else if (m.exactly_one && set_names.size() > 1) {
      Error(at, path, "several " + std::string(m.name) + "s given (" + Join(set_names, ", ") +
                          "); set exactly one");
    }
    for (const Field& f : m.fields) {
      if (f.default_value && !out.contains(f.name)) out[f.name] = *f.default_value;
    }
    return out;
  }

  static std::string KnownNames(const Message& m) {
    std::vector<std::string> names;
    for (const Field& f : m.fields) {
      if (f.type != Type::kUnsupported) names.emplace_back(f.name);
    }
    return Join(names, ", ");
  }

  static const Field* Lookup(const Message& m, const std::string& name) {
    for (const Field& f : m.fields) {
      if (name == f.name || name == schema::CamelCase(f.name)) return &f;
    }
    return nullptr;
  }

  void UnknownField(const SourcePos& at, const Message& m, const std::string& path,
                    const std::string& name) {
    std::string msg = m.exactly_one ? "unknown " + std::string(m.name) + " " + Quote(name) +
                                          "; known " + std::string(m.name) + "s: " + KnownNames(m)
                                    : "unknown field " + Quote(name);
    // A typo of a field here, else a field that belongs one level down.
    std::string hint;
    for (const Field& f : m.fields) {
      if (Close(name, f.name)) {
        hint = std::string(f.name);
        break;
      }
    }
    if (hint.empty()) {
      for (const Field& f : m.fields) {
        if (f.message == nullptr) continue;
        const Message* sub = f.message();
        if (sub == &m) continue;
        for (const Field& g : sub->fields) {
          if (Fold(name) == Fold(g.name)) {
            hint = std::string(f.name) + "." + std::string(g.name);
            break;
          }
        }
        if (!hint.empty()) break;
      }
    }
    if (!hint.empty()) msg += " (did you mean " + Quote(hint) + "?)";
    Error(at, path, msg);
  }

  // A scalar's text with ${VAR} expanded; nullopt after an error.
  std::optional<std::string> Text(const YAML::Node& n, const Field& f, const std::string& path,
                                  const SourcePos& at) {
    if (!n.IsScalar()) {
      Error(at, path, "expected " + Expected(f) + ", got " + Describe(n, f.has(schema::kSecret)));
      return std::nullopt;
    }
    if (f.has(schema::kVerbatim)) return n.Scalar();
    Result<std::string> text = ExpandEnv(n.Scalar(), env_, f.fallback_env);
    if (!text.ok()) {
      Error(at, path, text.status().message());
      return std::nullopt;
    }
    return *text;
  }

  std::optional<json> Integer(const std::string& text, const Field& f, const std::string& path,
                              const SourcePos& at) {
    std::optional<int64_t> v = ParseInt(text);
    if (!v) {
      Error(at, path, "expected an integer, got " + Quote(text));
      return std::nullopt;
    }
    if (f.type != Type::kInt64 && (*v < std::numeric_limits<int32_t>::min() ||
                                   *v > std::numeric_limits<int32_t>::max())) {
      Error(at, path, "integer " + text + " is out of range");
      return std::nullopt;
    }
    if (f.has(schema::kNonNegative) && *v < 0) {
      Error(at, path, "must not be negative (got " + text + ")");
      return std::nullopt;
    }
    return json(*v);
  }

  std::optional<json> Scalar(const YAML::Node& n, const Field& f, const std::string& path,
                             const SourcePos& at) {
    std::optional<std::string> text = Text(n, f, path, at);
    if (!text) return std::nullopt;
    switch (f.type) {
      case Type::kString:
        return json(*text);
      case Type::kBool: {
        std::string lower = Lower(*text);
        if (lower == "true") return json(true);
        if (lower == "false") return json(false);
        Error(at, path, "expected true or false, got " + Quote(*text));
        return std::nullopt;
      }
      case Type::kInt32:
      case Type::kInt64:
        return Integer(*text, f, path, at);
      case Type::kDouble: {
        std::optional<double> v = ParseDouble(*text);
        if (!v) {
          Error(at, path, "expected a number, got " + Quote(*text));
          return std::nullopt;
        }
        if (f.has(schema::kNonNegative) && *v < 0) {
          Error(at, path, "must not be negative (got " + *text + ")");
          return std::nullopt;
        }
        return json(*v);
      }
      case Type::kDuration: {
        Result<Millis> d = ParseDuration(*text);
        if (!d.ok()) {
          Error(at, path, d.status().message());
          return std::nullopt;
        }
        return json(static_cast<int64_t>(d->count()));
      }
      case Type::kRate: {
        std::optional<double> v = ParseRate(*text);
        if (!v) {
          Error(at, path, "invalid rate " + Quote(*text) + " (expected " + Expected(f) + ")");
          return std::nullopt;
        }
        if (*v <= 0) {
          Error(at, path, "rate must be greater than 0 (got " + Quote(*text) + ")");
          return std::nullopt;
        }
        return json(*v);
      }
      case Type::kEnum: {
        std::optional<int64_t> number = ParseInt(*text);
        std::vector<std::string> allowed;
        for (const schema::EnumValue& e : f.enum_values) {
          bool match = *text == e.name || (number && e.alias_of.empty() && *number == e.number);
          if (match) return json(std::string(e.alias_of.empty() ? e.name : e.alias_of));
          allowed.emplace_back(e.name);
        }
        Error(at, path, "invalid value " + Quote(*text) + "; allowed: " + Join(allowed, ", "));
        return std::nullopt;
      }
      default:
        return std::nullopt;
    }
  }

  std::optional<json> DecodeValue(const YAML::Node& v, const Field& f, const std::string& path,
                                  const SourcePos& at) {
    switch (f.type) {
      case Type::kMessage:
        return DecodeMessage(v, *f.message(), path, at);
      case Type::kAny:  // free-form inside, but a manifest is a mapping (unless kAnyShape)
        if (!(f.flags & schema::kAnyShape) && !v.IsMap() && !v.IsNull()) {
          Error(at, path, "expected a mapping, got " + Describe(v, false));
          return std::nullopt;
        }
        return Any(v, path, at);
      default:
        break;
    }
    if (v.IsNull()) return std::nullopt;  // written but empty: as if absent
    switch (f.type) {
      case Type::kStringList:
      case Type::kInt32List:
      case Type::kMessageList:
      case Type::kMessageOrList:
        return List(v, f, path, at);
      case Type::kStringMap:
        return StringMap(v, f, path, at);
      default:
        return Scalar(v, f, path, at);
    }
  }

  std::optional<json> List(const YAML::Node& v, const Field& f, const std::string& path,
                           const SourcePos& at) {
    if (f.type == Type::kMessageOrList && v.IsMap()) {
      (*index_)[ItemPath(path, 0)] = {at, at};
      std::optional<json> one = DecodeMessage(v, *f.message(), ItemPath(path, 0), at);
      if (!one) return std::nullopt;
      return json::array({*one});
    }
    if (!v.IsSequence()) {
      Error(at, path, "expected a list, got " + Describe(v, f.has(schema::kSecret)));
      return std::nullopt;
    }
    json out = json::array();
    Field item = f;  // items are read with the element type of the list
    item.type = f.type == Type::kInt32List ? Type::kInt32 : Type::kString;
    for (size_t i = 0; i < v.size(); ++i) {
      const YAML::Node& n = v[i];
      std::string p = ItemPath(path, i);
      SourcePos ip = n.IsNull() ? at : ToPos(file_, n.Mark());
      (*index_)[p] = {ip, ip};
      std::optional<json> value;
      if (f.type == Type::kMessageList || f.type == Type::kMessageOrList) {
        value = DecodeMessage(n, *f.message(), p, ip);
      } else if (n.IsNull()) {
        Error(ip, p, "empty list item");
      } else {
        value = Scalar(n, item, p, ip);
      }
      // A null placeholder keeps later items at their source index (positions stay right).
      out.push_back(value ? std::move(*value) : json(nullptr));
    }
    return out;
  }

  std::optional<json> StringMap(const YAML::Node& v, const Field& f, const std::string& path,
                                const SourcePos& at) {
    if (!v.IsMap()) {
      Error(at, path, "expected a mapping of names to strings, got " + Describe(v, false));
      return std::nullopt;
    }
    json out = json::object();
    Field value = f;
    value.type = Type::kString;
    for (const auto& entry : v) {
      SourcePos kp = ToPos(file_, entry.first.Mark());
      if (!entry.first.IsScalar()) {
        Error(kp, path, "keys must be plain strings");
        continue;
      }
      std::string key = entry.first.Scalar();
      std::string p = ChildPath(path, key);
      SourcePos vp = entry.second.IsNull() ? kp : ToPos(file_, entry.second.Mark());
      (*index_)[p] = {kp, vp};
      if (out.contains(key)) {
        Error(kp, path, "key " + Quote(key) + " is given twice");
        continue;
      }
      if (entry.second.IsNull()) {
        out[key] = "";
      } else if (std::optional<json> s = Scalar(entry.second, value, p, vp)) {
        out[key] = *s;
      }
    }
    return out;
  }

  // Free-form YAML to JSON: plain scalars become numbers and booleans where they look like them.
  std::optional<json> Any(const YAML::Node& v, const std::string& path, const SourcePos& at) {
    if (v.IsNull()) return json(nullptr);
    if (v.IsSequence()) {
      json out = json::array();
      for (size_t i = 0; i < v.size(); ++i) {
        const YAML::Node& n = v[i];
        std::optional<json> item = Any(n, ItemPath(path, i), ToPos(file_, n.Mark()));
        out.push_back(item ? *item : json(nullptr));
      }
      return out;
    }
    if (v.IsMap()) {
      json out = json::object();
      for (const auto& entry : v) {
        SourcePos kp = ToPos(file_, entry.first.Mark());
        if (!entry.first.IsScalar()) {
          Error(kp, path, "keys must be plain strings");
          continue;
        }
        std::string key = entry.first.Scalar();
        SourcePos vp = entry.second.IsNull() ? kp : ToPos(file_, entry.second.Mark());
        std::optional<json> item = Any(entry.second, ChildPath(path, key), vp);
        out[key] = item ? *item : json(nullptr);
      }
      return out;
    }
    Result<std::string> text = ExpandEnv(v.Scalar(), env_);
    if (!text.ok()) {
      Error(at, path, text.status().message());
      return std::nullopt;
    }
    if (v.Tag() != "!" && *text == v.Scalar()) {  // plain and not from a variable
      std::string lower = Lower(*text);
      if (lower == "true" || lower == "false") return json(lower == "true");
      if (std::optional<int64_t> i = ParseInt(*text)) return json(*i);
      if (std::optional<double> d = ParseDouble(*text)) return json(*d);
    }
    return json(*text);
  }

  void Error(const SourcePos& at, const std::string& path, std::string message) {
    errors_->push_back({at, path.empty() ? std::move(message) : path + ": " + message});
  }

  std::string file_;
  const EnvLookup& env_;
  std::vector<ConfigError>* errors_;
  PosIndex* index_;
};

// Where each document of a YAML stream starts; nothing else.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

}  // namespace

Document DecodeYaml(const std::string& text, const std::string& file, const EnvLookup& env,
                    std::vector<ConfigError>* errors) {
  Document doc;
  doc.file = file;
  // YAML allows no C0 control characters but tab, LF and CR (its c-printable set).
  for (size_t i = 0, line = 1, col = 1; i < text.size(); ++i, ++col) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      col = 0;
    } else if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
      errors->push_back({SourcePos{file, static_cast<int>(line), static_cast<int>(col)},
                         fmt::format("control character 0x{:02x} is not allowed in YAML", c)});
      return doc;
    }
  }
  std::vector<YAML::Node> docs;
  try {
    // Never YAML::LoadAll: on some inputs (",\x02", found by fuzz_config) yaml-cpp 0.7 yields
    // empty documents forever. Count documents with the event parser, stopping at the second.
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentStarts starts;
    while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
    }
    if (starts.marks.size() > 1) {
      errors->push_back({ToPos(file, starts.marks[1]),
                         "only one YAML document per file (put further pools in the first one, or "
                         "in another file of a config directory)"});
    }
    if (!starts.marks.empty()) docs.push_back(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    errors->push_back({ToPos(file, e.mark), "YAML syntax error: " + e.msg});
    return doc;
  }
  if (docs.empty() || docs[0].IsNull()) return doc;
  Decoder decoder(file, env, errors, &doc.index);
  if (std::optional<json> root =
          decoder.DecodeMessage(docs[0], *schema::Root(), "", ToPos(file, docs[0].Mark()))) {
    doc.root = std::move(*root);
  }
  return doc;
}

std::vector<std::string> SecretPaths(const schema::Message& message, const json& value) {
  std::vector<std::string> out;
  if (!value.is_object()) return out;
  for (const Field& f : message.fields) {
    auto it = value.find(std::string(f.name));
    if (it == value.end()) continue;
    if (f.has(schema::kSecret)) out.emplace_back(f.name);
    if (f.type == Type::kMessage) {
      for (const std::string& p : SecretPaths(*f.message(), *it)) {
        out.push_back(ChildPath(std::string(f.name), p));
      }
    } else if ((f.type == Type::kMessageList || f.type == Type::kMessageOrList) &&
               it->is_array()) {
      for (size_t i = 0; i < it->size(); ++i) {
        for (const std::string& p : SecretPaths(*f.message(), (*it)[i])) {
          out.push_back(ChildPath(ItemPath(std::string(f.name), i), p));
        }
      }
    }
  }
  return out;
}

}  // namespace tidepool::config
