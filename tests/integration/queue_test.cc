// Queue order (tasks.md): lower --priority first, FIFO within a priority.
#include <gtest/gtest.h>

#include "harness.h"

namespace tidepool::testing {
namespace {

TEST(Queue, LowerPriorityFirstThenFifo) {
  Server server(OnePool("one", 1, {"max_idle_agents: 1", "idle_decay: \"60s\""}));
  std::string gate = server.dir() + "/gate";
  std::string order = server.dir() + "/order";
  // A blocker holds the only slot while the others queue.
  ProcResult b = server.Vbatch({"sh", "-c", "while [ ! -e " + gate + " ]; do sleep 0.05; done"});
  std::string blocker = Lines(b.out)[0];
  ASSERT_TRUE(WaitFor([&] { return server.Task(blocker)["state"] == "RUNNING"; }));
  struct Job { std::string name; int priority; };
  std::vector<Job> jobs = {{"p5a", 5}, {"p0a", 0}, {"p5b", 5}, {"pm1", -1}, {"p0b", 0}, {"p0c", 0}};
  std::vector<std::string> ids;
  for (const Job& j : jobs) {
    ProcResult r = server.Vbatch({"--name", j.name, "--priority", std::to_string(j.priority), "sh", "-c",
                                  "echo " + j.name + " >> " + order});
    ids.push_back(Lines(r.out)[0]);
  }
  WriteAll(gate, "");
  for (auto& id : ids) server.WaitTask(id);
  EXPECT_EQ(Lines(ReadAll(order)), (std::vector<std::string>{"pm1", "p0a", "p0b", "p0c", "p5a", "p5b"}));
}

}  // namespace
}  // namespace tidepool::testing
