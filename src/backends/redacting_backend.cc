#include "backends/redacting_backend.h"

namespace tidepool::backends {

namespace {

class RedactingBackend final : public Backend {
 public:
  RedactingBackend(std::unique_ptr<Backend> inner, std::shared_ptr<const Redactor> redactor)
      : inner_(std::move(inner)), redactor_(std::move(redactor)) {}

  Result<std::string> Create(const CreateRequest& request, Deadline deadline) override {
    return Clean(inner_->Create(request, deadline));
  }
  Status Delete(const std::string& name, Deadline deadline) override { return Clean(inner_->Delete(name, deadline)); }
  Result<std::vector<ListedWorker>> List(Deadline deadline) override {
    auto listed = Clean(inner_->List(deadline));
    if (listed.ok()) {
      for (ListedWorker& w : *listed) w.detail = redactor_->Scrub(w.detail);
    }
    return listed;
  }
  std::chrono::milliseconds CallTimeout() const override { return inner_->CallTimeout(); }
  void Abandon() override { inner_->Abandon(); }
  void Watch(std::function<void()> changed) override { inner_->Watch(std::move(changed)); }
  bool SupportsBatch() const override { return inner_->SupportsBatch(); }
  Result<std::vector<std::string>> CreateBatch(const CreateRequest& request, int count, const std::string& label,
                                               Deadline deadline) override {
    return Clean(inner_->CreateBatch(request, count, label, deadline));
  }

 private:
  Status Clean(const Status& s) const { return s.ok() ? s : Status(s.code(), redactor_->Scrub(s.message())); }
  template <typename T>
  Result<T> Clean(Result<T> r) const {
    if (r.ok()) return r;
    return Clean(r.status());
  }

  std::unique_ptr<Backend> inner_;
  std::shared_ptr<const Redactor> redactor_;
};

}  // namespace

std::shared_ptr<const Redactor> ServerRedactor(const config::Config& config, const std::vector<std::string>& env) {
  auto r = std::make_shared<Redactor>();
  for (const std::string& v : config::SecretValues(config)) r->AddValue(v);
  r->AddEnvironment(env);
  return r;
}

std::unique_ptr<Backend> Redacting(std::unique_ptr<Backend> inner, std::shared_ptr<const Redactor> redactor) {
  return std::make_unique<RedactingBackend>(std::move(inner), std::move(redactor));
}

}  // namespace tidepool::backends
