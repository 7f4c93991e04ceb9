// fuzz_client: everything a client (vrun, vbatch, `tidepool task|pool|worker ...`) can send the
// server, fed to a real Core the way TaskService and PoolService hand it over.
//
// Per input: a fresh Core (empty SQLite store on tmpfs, the fuzz config of core_harness.cc) with
// two agents attached, "w1" in pool "p" (2 slots) and "w2" in pool "q" (1 slot), so that tasks
// are dispatched, cancels and stdin reach an agent, and workers exist to drain or delete. Then
// each record (format.h) is one call: ctl & 0x0f picks it (client_op), ctl >> 4 is a small
// argument, the payload is the request message. A payload that does not parse is dropped, as
// gRPC would refuse the call before the service sees it. Op 15 lets agent "w1" speak (exits,
// output, stdin acks), so that tasks end and vrun clients get output.
//
// At the end: every watch is removed, every vrun goes away, the agents disconnect.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core_harness.h"
#include "format.h"

using namespace tidepool;
using namespace tidepool::fuzz;

namespace {

constexpr int kMaxRecords = 256;
constexpr size_t kMaxRuns = 8;
constexpr size_t kMaxWatches = 16;

struct RunStream {
  std::shared_ptr<FakeRunClient> client;
  std::string task_id;
  bool gone = false;
};

struct WatchEntry {
  std::string id;
  uint64_t wid;
};

template <class Msg>
bool Parse(std::string_view payload, Msg* m) {
  return m->ParseFromArray(payload.data(), static_cast<int>(payload.size()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  InitFuzzProcess();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CoreHarness h;
  server::Core& core = h.core();
  std::vector<std::shared_ptr<FakeAgentLink>> agents = {h.ConnectAgent("w1", "p", 2), h.ConnectAgent("w2", "q", 1)};
  bool w1_attached = true;
  std::vector<RunStream> runs;
  std::vector<WatchEntry> watches;
  auto notified = std::make_shared<std::atomic<uint64_t>>(0);

  RecordReader reader(data, size);
  Record r;
  for (int n = 0; n < kMaxRecords && reader.Next(&r); ++n) {
    const uint8_t op = r.ctl & 0x0f;
    const uint8_t arg = r.ctl >> 4;
    switch (op) {
      case client_op::kSubmit: {
        v1::SubmitRequest req;
        if (!Parse(r.payload, &req)) break;
        // As the service does: the answer comes once durable (or refused at once).
        core.Submit(req.spec(), [](Result<std::string>) {});
        break;
      }
      case client_op::kRun: {
        v1::RunRequest req;
        if (!Parse(r.payload, &req)) break;
        if (!req.has_start()) break;  // "the first request must carry the task": no core call
        auto client = std::make_shared<FakeRunClient>();
        std::string id = core.Run(client, std::move(*req.mutable_start()));
        if (id.empty()) break;  // refused; the client was finished with the error
        if (runs.size() < kMaxRuns) {
          runs.push_back({client, id});
        } else {
          core.RunClientGone(id);
        }
        break;
      }
      case client_op::kRunInput: {
        v1::RunRequest req;
        if (runs.empty() || !Parse(r.payload, &req)) break;
        RunStream& rs = runs[arg % runs.size()];
        if (!rs.gone) core.RunInput(rs.task_id, req);
        break;
      }
      case client_op::kRunGone: {
        if (runs.empty()) break;
        RunStream& rs = runs[arg % runs.size()];
        if (!rs.gone) {
          rs.gone = true;
          core.RunClientGone(rs.task_id);
        }
        break;
      }
      case client_op::kListTasks: {
        v1::ListTasksRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.ListTasks(req);
        break;
      }
      case client_op::kGetTask: {
        v1::GetTaskRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.GetTask(req.id());
        break;
      }
      case client_op::kCancelTask: {
        v1::CancelTaskRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.CancelTask(req.id());
        break;
      }
      case client_op::kWatch: {
        v1::WatchTaskRequest req;
        if (!Parse(r.payload, &req)) break;
        // Like WatchStream: the callback only queues (it runs under the core lock).
        uint64_t wid = WatchId(core.Watch(req.id(), [notified](const v1::Task& t) {
          (void)t.ByteSizeLong();
          notified->fetch_add(1);
        }));
        if (wid != 0 && wid != UINT64_MAX) {
          if (watches.size() < kMaxWatches) {
            watches.push_back({req.id(), wid});
          } else {
            core.Unwatch(req.id(), wid);
          }
        }
        break;
      }
      case client_op::kUnwatch: {
        if (watches.empty()) break;
        size_t i = arg % watches.size();
        core.Unwatch(watches[i].id, watches[i].wid);
        watches.erase(watches.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
      case client_op::kLogs: {
        v1::StreamLogsRequest req;
        if (!Parse(r.payload, &req)) break;
        auto logs = core.Logs(req.id());
        if (logs.ok()) {
          // What LogStream does with the sink, short of reading the files.
          auto& sink = logs->first;
          (void)sink->size(v1::OUTPUT_STREAM_STDOUT);
          (void)sink->size(v1::OUTPUT_STREAM_STDERR);
          (void)sink->path(v1::OUTPUT_STREAM_STDERR);
          if (req.follow() && !logs->second) sink->RemoveListener(sink->AddListener([] {}));
        }
        break;
      }
      case client_op::kListPools: {
        v1::ListPoolsRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.ListPools();
        break;
      }
      case client_op::kGetPool: {
        v1::GetPoolRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.GetPool(req.name());
        break;
      }
      case client_op::kListWorkers: {
        v1::ListWorkersRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.ListWorkers(req.pool());
        break;
      }
      case client_op::kDrainWorker: {
        v1::WorkerRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.DrainWorker(req.name());
        break;
      }
      case client_op::kDeleteWorker: {
        v1::WorkerRequest req;
        if (!Parse(r.payload, &req)) break;
        (void)core.DeleteWorker(req.name(), req.force());
        break;
      }
      case client_op::kAgent: {
        v1::AgentMessage msg;
        if (!Parse(r.payload, &msg)) break;
        if (w1_attached && agents[0]->closed()) {
          core.AgentGone(agents[0].get());
          w1_attached = false;
        }
        if (!w1_attached) break;
        if (arg & 1) {
          // Let dispatches in flight reach the agent, so that what it says next can be about them.
          v1::ListTasksRequest all;
          all.set_all(true);
          all.set_limit(1000);
          std::vector<std::string> ids;
          while (true) {
            auto tasks = core.ListTasks(all);
            if (!tasks.ok()) break;
            for (const auto& t : tasks->tasks) ids.push_back(t.id());
            if (tasks->next_after.empty()) break;
            all.set_after(tasks->next_after);
          }
          h.SettleDispatches(ids, agents);
        }
        if (msg.has_output()) {
          core.AgentOutput(agents[0].get(), msg.output());
        } else {
          core.AgentMessage(agents[0].get(), msg);
        }
        break;
      }
    }
  }
  for (const WatchEntry& w : watches) core.Unwatch(w.id, w.wid);
  for (RunStream& rs : runs) {
    if (!rs.gone) core.RunClientGone(rs.task_id);
  }
  for (auto& a : agents) core.AgentGone(a.get());
  return 0;
}
