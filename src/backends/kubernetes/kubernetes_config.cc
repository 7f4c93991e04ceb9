// The `kubernetes` block: its schema (Velda's fields), its checks, and its registration.
#include <yaml-cpp/yaml.h>

#include <fmt/format.h>

#include "backends/kubernetes/kubernetes_backend.h"
#include "backends/kubernetes/pods.h"
#include "backends/registry.h"
#include "common/fs.h"
#include "config/schema.h"

namespace tidepool::backends {

namespace {

using config::schema::Field;
using config::schema::Message;
using config::schema::Type;
using namespace config::schema::make;

const Message* KubernetesSchema() {
  static const Message m{
      "kubernetes",
      {
          Str("kubeconfig"),
          Str("context"),
          InOneof(Str("pod_template_path"), "pod_template"),
          Str("pod_selector"),
          Str("namespace"),
          Str("name_prefix"),
          InOneof(Field{.name = "pod_template", .type = Type::kAny}, "pod_template"),
      }};
  return &m;
}

std::string Field_(const nlohmann::json& f, const char* key) {
  auto it = f.find(key);
  return it != f.end() && it->is_string() ? it->get<std::string>() : "";
}

bool IsDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

void CheckKubernetes(const nlohmann::json& fields, const config::BackendErrorReport& report) {
  if (std::string p = Field_(fields, "name_prefix"); !p.empty()) {
    if (Status s = kube::CheckNamePrefix(p); !s.ok()) report("name_prefix", s.message(), false);
  }
  if (std::string ns = Field_(fields, "namespace"); !ns.empty() && !IsDnsLabel(ns)) {
    report("namespace", fmt::format("namespace \"{}\" is not a DNS label (a-z 0-9 '-', at most 63)", ns), false);
  }
  if (std::string sel = Field_(fields, "pod_selector"); !sel.empty()) {
    if (auto l = kube::ParseSelectorLabels(sel); !l.ok()) report("pod_selector", l.status().message(), false);
  }
  // (Neither given is reported when the pool starts: a template that failed to decode is absent
  // here too, and has its own error already.)
  auto t = fields.find("pod_template");
  if (t != fields.end() && t->is_object() && Field_(fields, "pod_template_path").empty()) {
    if (auto n = kube::NormalizeTemplate(*t, "pod_template"); !n.ok()) report("pod_template", n.status().message(), false);
  }
}

nlohmann::json YamlToJson(const YAML::Node& v) {
  if (v.IsNull()) return nullptr;
  if (v.IsSequence()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& n : v) out.push_back(YamlToJson(n));
    return out;
  }
  if (v.IsMap()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& e : v) out[e.first.Scalar()] = YamlToJson(e.second);
    return out;
  }
  const std::string& s = v.Scalar();
  if (v.Tag() != "!") {
    if (s == "true" || s == "True") return true;
    if (s == "false" || s == "False") return false;
    if (s == "null" || s == "~") return nullptr;
    char* end = nullptr;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && end && *end == 0) return i;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0) return d;
  }
  return s;
}

Result<nlohmann::json> ReadTemplateFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return InvalidArgument(fmt::format("pod_template_path {}: {}", path, text.status().message()));
  try {
    return YamlToJson(YAML::Load(*text));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("pod_template_path {}: not YAML or JSON: {}", path, e.what()));
  }
}

Result<std::unique_ptr<Backend>> MakeKubernetes(const config::BackendConfig& cfg, const BackendContext& ctx) {
  const auto& f = cfg.fields;
  kube::KubeOptions o;
  o.pool = ctx.pool;
  o.slots = ctx.slots;
  nlohmann::json given;
  std::string where = "pod_template";
  if (auto t = f.find("pod_template"); t != f.end() && !t->is_null()) {
    given = *t;
  } else if (Field_(f, "pod_template_path").empty()) {
    return InvalidArgument("kubernetes backend: it needs a pod_template or a pod_template_path");
  } else {
    where = "pod_template_path " + Field_(f, "pod_template_path");
    auto read = ReadTemplateFile(Field_(f, "pod_template_path"));
    if (!read.ok()) return Status(read.status().code(), "kubernetes backend: " + read.status().message());
    given = std::move(read).value();
  }
  auto tmpl = kube::NormalizeTemplate(given, where);
  if (!tmpl.ok()) return InvalidArgument("kubernetes backend: " + tmpl.status().message());
  o.pod_template = std::move(tmpl).value();
  auto labels = kube::ParseSelectorLabels(Field_(f, "pod_selector"));
  if (!labels.ok()) return InvalidArgument("kubernetes backend: " + labels.status().message());
  o.selector_labels = std::move(labels).value();
  o.name_prefix = Field_(f, "name_prefix");
  if (o.name_prefix.empty()) o.name_prefix = kube::DefaultNamePrefix(ctx.pool);
  if (Status s = kube::CheckNamePrefix(o.name_prefix); !s.ok()) return InvalidArgument("kubernetes backend: " + s.message());
  auto access = kube::Access::Resolve(Field_(f, "kubeconfig"), Field_(f, "context"));
  if (!access.ok()) return Status(access.status().code(), "kubernetes backend: " + access.status().message());
  o.ns = Field_(f, "namespace");
  if (o.ns.empty()) o.ns = (*access)->default_namespace();
  auto api = std::make_shared<kube::Api>(*access, std::make_shared<HttpClient>());
  return std::unique_ptr<Backend>(new kube::KubernetesBackend(std::move(api), std::move(o)));
}

const Registrar kRegistrar({.key = "kubernetes",
                            .order = 50,
                            .message = KubernetesSchema,
                            .active = true,
                            .check = CheckKubernetes,
                            .remote = true},
                           &MakeKubernetes);

}  // namespace

}  // namespace tidepool::backends
