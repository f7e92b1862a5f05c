// Child processes for the integration tests: start a binary with arguments, read its output
// file, wait for a line, kill it (SIGKILL included). Never leaves children behind.
#ifndef BITSWEEP_TESTS_SERVICE_PROCESS_H_
#define BITSWEEP_TESTS_SERVICE_PROCESS_H_

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace bitsweep::testing {

class Process {
 public:
  // stdout and stderr go to `log_path`.
  Process(const std::string& binary, const std::vector<std::string>& args,
          const std::string& log_path)
      : log_path_(log_path) {
    pid_ = fork();
    if (pid_ == 0) {
      FILE* log = std::fopen(log_path.c_str(), "w");
      if (log != nullptr) {
        dup2(fileno(log), 1);
        dup2(fileno(log), 2);
      }
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(binary.c_str()));
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~Process() { Kill(SIGKILL); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Polls the log until it contains `text`, up to `timeout`; the text after it on that line.
  std::optional<std::string> WaitForLine(const std::string& text,
                                         std::chrono::milliseconds timeout) const {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      const std::string log = Log();
      if (size_t at = log.find(text); at != std::string::npos) {
        const size_t from = at + text.size();
        const size_t eol = log.find('\n', from);
        if (eol != std::string::npos) return log.substr(from, eol - from);
      }
      if (!Running()) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::nullopt;
  }

  bool Running() {
    if (pid_ <= 0) return false;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  bool Running() const { return const_cast<Process*>(this)->Running(); }

  void Kill(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
};

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_SERVICE_PROCESS_H_
