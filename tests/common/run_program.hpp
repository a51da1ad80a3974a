// Running a command-line program from a Boost.Test case: its exit code and output, and the
// checks every run gets (it reports what went wrong with exit code 1 or 2, never by crashing or
// with an uncaught exception). Shared by the tests of the `tmm` program (tests/io,
// tests/generate). Include after <boost/test/unit_test.hpp> and BOOST_TEST_MODULE.
#pragma once

#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <system_error>

namespace tmm_test {

// A fresh directory under the system's temporary one, removed with everything in it.
struct scratch_dir {
    std::filesystem::path path;
    explicit scratch_dir(const std::string& prefix = "tmm_cli_") {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() /
               (prefix + std::to_string(::getpid()) + "_" + std::to_string(rd()));
        std::filesystem::create_directories(path);
    }
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
};

// `s` as one word for the shell.
inline std::string quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

inline std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

struct result {
    int code = -1;
    std::string out, err;
};

// Runs `program args` (in the directory `cwd` when given), its output captured in files in
// `dir`.
inline result run_program(const std::string& program, const std::string& args,
                          const std::filesystem::path& dir, const std::filesystem::path& cwd = {}) {
    const std::filesystem::path out = dir / "stdout", err = dir / "stderr";
    const std::string command = (cwd.empty() ? "" : "cd " + quote(cwd.string()) + " && ") +
                                quote(program) + " " + args + " >" + quote(out.string()) + " 2>" +
                                quote(err.string());
    const int status = std::system(command.c_str());
    result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_text(out);
    r.err = read_text(err);
    BOOST_TEST_MESSAGE("tmm " << args << "\n  exit " << r.code << "\n  stdout: " << r.out
                              << "\n  stderr: " << r.err);
    // Whatever went wrong, the program reports it: no crash, no uncaught exception.
    BOOST_TEST((r.code == 0 || r.code == 1 || r.code == 2), "exit code " << r.code);
    BOOST_TEST(!contains(r.err, "terminate called"));
    return r;
}

}  // namespace tmm_test
