#include "backends/slurm/scripts.h"

#include <fmt/format.h>

#include "common/strings.h"

namespace tidepool::backends::slurm {

namespace {

std::string Q(const std::string& s) { return ShellQuote({s}); }

constexpr const char* kUser = "u=$(id -un)\n";

}  // namespace

std::string JobScript(const SubmitArgs& a) {
  std::string s =
      "PATH=/usr/local/bin:/usr/bin:/bin:$PATH\n"
      "e=$(squeue -h -j \"$SLURM_JOB_ID\" -o %e 2>/dev/null || true)\n"
      "TIDEPOOL_AGENT_ENDS_AT=$(date -d \"$e\" +%s 2>/dev/null || true)\n"
      "export TIDEPOOL_AGENT_ENDS_AT\n";
  if (a.nodes <= 1) {
    return s + "TIDEPOOL_AGENT_ADDRESS=$(hostname); export TIDEPOOL_AGENT_ADDRESS\nexec " + Q(a.agent) + "\n";
  }
  // One step per node, named by its worker; each takes its own token and drops the others'.
  const std::string inner =
      "TIDEPOOL_WORKER_NAME=\"$1\"; eval \"TIDEPOOL_WORKER_TOKEN=\\$TIDEPOOL_WORKER_TOKEN_$2\"\n"
      "for v in $(env | sed -n 's/^\\(TIDEPOOL_WORKER_TOKEN_[0-9]*\\)=.*/\\1/p'); do unset \"$v\"; done\n"
      "TIDEPOOL_AGENT_ADDRESS=$(hostname)\n"
      "export TIDEPOOL_WORKER_NAME TIDEPOOL_WORKER_TOKEN TIDEPOOL_AGENT_ADDRESS\nexec \"$3\"\n";
  return s + fmt::format(
                 "i=0\n"
                 "for node in $(scontrol show hostnames \"$SLURM_JOB_NODELIST\"); do\n"
                 "  srun --nodes=1 --ntasks=1 --nodelist=\"$node\" --job-name={stem}-$i --export=ALL "
                 "/bin/sh -c {inner} sh {stem}-$i $i {agent} &\n"
                 "  i=$((i+1))\n"
                 "done\n"
                 "wait\n",
                 fmt::arg("stem", Q(a.job_name)), fmt::arg("inner", Q(inner)), fmt::arg("agent", Q(a.agent)));
}

std::string SubmitScript(const SubmitArgs& a) {
  std::string s = "set -e\numask 077\nmkdir -p " + Q(a.output_dir) + "\n";
  for (const auto& [k, v] : a.env) s += "export " + k + "=" + Q(v) + "\n";
  if (a.nodes <= 1) {
    s += "export TIDEPOOL_WORKER_NAME=" + Q(a.worker_names.at(0)) + "\n";
    s += "IFS= read -r TIDEPOOL_WORKER_TOKEN; export TIDEPOOL_WORKER_TOKEN\n";
  } else {
    for (int i = 0; i < a.nodes; ++i) {
      s += fmt::format("IFS= read -r TIDEPOOL_WORKER_TOKEN_{0}; export TIDEPOOL_WORKER_TOKEN_{0}\n", i);
    }
  }
  std::vector<std::string> argv = {"sbatch",
                                   "--parsable",
                                   "--job-name=" + a.job_name,
                                   "--output=" + a.output_dir + "/%x-%j.log",
                                   // ALL: a list without ALL makes slurmd fetch the user's login
                                   // environment (`su - USER -c env`), about 2 s per job here.
                                   // What ALL carries is only what the submitting shell has: the
                                   // backend runs it with a minimal environment (SlurmBackend::Run).
                                   "--export=ALL",
                                   fmt::format("--nodes={}", a.nodes)};
  if (a.nodes > 1) argv.push_back("--ntasks-per-node=1");
  else argv.push_back("--ntasks=1");
  argv.insert(argv.end(), a.sbatch_args.begin(), a.sbatch_args.end());
  argv.push_back("--wrap=" + JobScript(a));
  return s + "exec " + ShellQuote(argv) + "\n";
}

std::string CancelJobScript(const std::string& job_name) {
  return std::string(kUser) + "scancel --user=\"$u\" --name=" + Q(job_name) + "\necho CANCELLED\n";
}

std::string CancelStepScript(const std::string& job_name, const std::string& worker, bool whole) {
  return fmt::format(
      "{user}"
      "st=$(squeue -h --user=\"$u\" --name={job} -o %T | head -n 1)\n"
      "if [ {whole} = 1 ] || [ \"$st\" = PENDING ] || [ \"$st\" = CONFIGURING ]; then\n"
      "  scancel --user=\"$u\" --name={job}\n"
      "else\n"
      "  s=$(squeue -h -s --user=\"$u\" -o '%i|%j' | awk -F'|' -v n={worker} '$2 == n {{ print $1 }}')\n"
      "  if [ -n \"$s\" ]; then scancel $s; fi\n"
      "fi\n"
      "echo CANCELLED\n",
      fmt::arg("user", kUser), fmt::arg("job", Q(job_name)), fmt::arg("worker", Q(worker)),
      fmt::arg("whole", whole ? 1 : 0));
}

std::string ListScript() {
  return "set -e\n" + std::string(kUser) +
         "squeue -h --user=\"$u\" -o '%i|%T|%r|%M|%j'\n"
         "echo STEPS\n"
         "squeue -h -s --user=\"$u\" -o '%i|%j'\n"
         "echo LISTED\n";
}

}  // namespace tidepool::backends::slurm
