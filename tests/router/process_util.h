// Child processes for the router's end-to-end tests: `moeserve` started with fork/exec, its
// stdout read by a thread (so a line such as "listening on ADDR" can be waited for), killed and
// reaped on destruction.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace moe::router::testing {

class Process {
public:
    explicit Process(std::vector<std::string> args) : args_(std::move(args)) {
        int out[2];
        if (pipe2(out, O_CLOEXEC) != 0) return;
        pid_ = fork();
        if (pid_ == 0) {
            dup2(out[1], STDOUT_FILENO);
            dup2(out[1], STDERR_FILENO);
            setenv("OMP_NUM_THREADS", "1", 1);  // the tests pin --threads 1; no OpenMP pool beside it
            std::vector<char*> argv;
            for (auto& a : args_) argv.push_back(a.data());
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(out[1]);
        fd_ = out[0];
        reader_ = std::thread([this] {
            char buf[4096];
            for (;;) {
                const ssize_t n = read(fd_, buf, sizeof(buf));
                if (n <= 0) break;
                std::lock_guard<std::mutex> lock(mu_);
                output_.append(buf, static_cast<size_t>(n));
                cv_.notify_all();
            }
            std::lock_guard<std::mutex> lock(mu_);
            eof_ = true;
            cv_.notify_all();
        });
    }
    ~Process() {
        kill_now();
        wait_exit(std::chrono::seconds(30));
        if (reader_.joinable()) reader_.join();
        if (fd_ >= 0) close(fd_);
    }

    // The first match's group 1 of `pattern` in the output, waiting up to `timeout`.
    std::optional<std::string> wait_for(const std::string& pattern, std::chrono::seconds timeout) {
        const std::regex re(pattern);
        std::unique_lock<std::mutex> lock(mu_);
        std::smatch m;
        const bool found = cv_.wait_for(lock, timeout, [&] { return std::regex_search(output_, m, re) || eof_; });
        if (found && std::regex_search(output_, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
        return std::nullopt;
    }
    std::string output() {
        std::lock_guard<std::mutex> lock(mu_);
        return output_;
    }
    void signal(int sig) {
        if (pid_ > 0 && !exited_) ::kill(pid_, sig);
    }
    void kill_now() { signal(SIGKILL); }
    // The exit status (waitpid's), or -1 when it did not exit in time.
    int wait_exit(std::chrono::seconds timeout) {
        if (pid_ <= 0) return -1;
        if (exited_) return status_;
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < until) {
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                exited_ = true;
                status_ = st;
                return st;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return -1;
    }

private:
    std::vector<std::string> args_;
    pid_t pid_ = -1;
    int fd_ = -1;
    bool exited_ = false;
    int status_ = 0;
    std::thread reader_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::string output_;
    bool eof_ = false;
};

}  // namespace moe::router::testing
