// Writing a file atomically: the bytes go to a temporary file beside the target, are flushed
// to disk, and the temporary file is then renamed over the target, so a reader sees either the
// old file or the complete new one. A target that exists and is not a regular file (a device
// node, FIFO, socket, directory, or a symbolic link to one) is refused before anything is
// written: the rename would otherwise replace, say, /dev/null by a regular file.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tmm::io {

// Thrown by the functions below. what() is "<path>: <problem>"; problem() is the part after
// the path, for callers that put the path in a message of their own.
class atomic_write_error : public std::runtime_error {
  public:
    atomic_write_error(const std::filesystem::path& path, const std::string& problem)
        : std::runtime_error(path.string() + ": " + problem), path_(path), problem_(problem) {}
    const std::filesystem::path& path() const { return path_; }
    const std::string& problem() const { return problem_; }

  private:
    std::filesystem::path path_;
    std::string problem_;
};

namespace detail {

inline const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

// Throws unless `path` is absent or (after following symbolic links) a regular file.
inline void require_regular_or_absent(const std::filesystem::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        const int e = errno;
        // A missing file or directory on the way: creating the temporary file says which.
        if (e == ENOENT || e == ENOTDIR) return;
        throw atomic_write_error(
            path, std::string("cannot write: ") + std::strerror(e) + "; nothing was written");
    }
    bool link = S_ISLNK(st.st_mode);
    if (link) {
        // A link to a regular file is replaced by the new file, as before; a dangling link
        // is replaced too. A link to anything else is refused like its target.
        struct stat target {};
        if (::stat(path.c_str(), &target) != 0) return;
        st = target;
    }
    if (!S_ISREG(st.st_mode))
        throw atomic_write_error(path, std::string("exists and is not a regular file (") +
                                           (link ? "a symbolic link to " : "") +
                                           file_kind(st.st_mode) +
                                           "); refusing to replace it, nothing was written");
}

// The temporary file's name: hidden, beside the target, and short enough for the file
// system even when the target's own name is close to the 255-byte limit.
inline std::string temp_template(const std::filesystem::path& path) {
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
    std::string name = path.filename().string();
    if (name.size() > 200) name.resize(200);
    return (dir / ("." + name + ".tmp.XXXXXX")).string();
}

inline void write_all(int fd, std::span<const std::uint8_t> bytes, const std::string& temp,
                      const std::filesystem::path& path) {
    for (std::size_t done = 0; done < bytes.size();) {
        const ::ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            throw atomic_write_error(path, "cannot write " + temp + ": " +
                                               std::strerror(n < 0 ? errno : EIO) +
                                               "; the temporary file was removed and any "
                                               "existing file left as it was");
        done += std::size_t(n);
    }
}

}  // namespace detail

// Writes the file through `fill`, which gets a file descriptor open for writing on the
// temporary file and writes the contents (throwing on failure); then flushes, closes and
// renames. On any error the temporary file is removed, an existing target is left as it was,
// and atomic_write_error (or what `fill` threw) says why.
inline void write_file_atomically(const std::filesystem::path& path,
                                  const std::function<void(int fd)>& fill) {
    if (path.empty()) throw atomic_write_error(path, "the output path is empty");
    detail::require_regular_or_absent(path);
    std::string name = detail::temp_template(path);
    const int fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0)
        throw atomic_write_error(path, "cannot create the temporary file " + name + ": " +
                                           std::strerror(errno) + "; nothing was written");
    const std::string temp = name;
    const std::string undone =
        "; the temporary file was removed and any existing file left as it was";
    bool open = true;
    try {
        if (::fchmod(fd, 0644) != 0)
            throw atomic_write_error(
                path, "cannot set the mode of " + temp + ": " + std::strerror(errno) + undone);
        fill(fd);
        // The data must be on disk before the rename makes it the file: a crash in between
        // leaves either the old file or the complete new one.
        if (::fsync(fd) != 0)
            throw atomic_write_error(
                path, "cannot flush " + temp + " to disk: " + std::strerror(errno) + undone);
        open = false;
        if (::close(fd) != 0)
            throw atomic_write_error(path,
                                     "cannot close " + temp + ": " + std::strerror(errno) + undone);
        // Checked again: the target may have been replaced while the data was written.
        detail::require_regular_or_absent(path);
        if (::rename(temp.c_str(), path.c_str()) != 0)
            throw atomic_write_error(path, "cannot rename " + temp + " to " + path.string() + ": " +
                                               std::strerror(errno) + undone);
    } catch (...) {
        if (open) ::close(fd);
        ::unlink(temp.c_str());
        throw;
    }
    // Best effort: make the rename itself durable.
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

// Writes `bytes` as the whole file, as above.
inline void write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::uint8_t> bytes) {
    write_file_atomically(
        path, [&](int fd) { detail::write_all(fd, bytes, "the temporary file", path); });
}

inline void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
    write_file_atomically(
        path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                            text.size()));
}

// Checks up front, for real, that write_file_atomically(path, ...) can succeed as far as the
// file system goes: the target is absent or a regular file, and a temporary file can be
// created (then removed at once) beside it. Run before long work whose result goes to `path`.
inline void check_atomic_write(const std::filesystem::path& path) {
    if (path.empty()) throw atomic_write_error(path, "the output path is empty");
    detail::require_regular_or_absent(path);
    std::string name = detail::temp_template(path);
    const int fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0)
        throw atomic_write_error(
            path, "cannot create a file beside it (" + name + "): " + std::strerror(errno));
    ::close(fd);
    ::unlink(name.c_str());
}

}  // namespace tmm::io
