#include "core/json_limits.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moe {

Status check_json_depth(std::string_view text, const std::string& origin, int max_depth) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char ch = text[i];
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (ch == '\\') {
                escaped = true;
            } else if (ch == '"') {
                in_string = false;
            }
            continue;
        }
        switch (ch) {
            case '"':
                in_string = true;
                break;
            case '[':
            case '{':
                if (++depth > max_depth) {
                    return invalid_argument(origin + ": JSON nested deeper than the limit of " +
                                            std::to_string(max_depth) + " levels (at byte " + std::to_string(i) + ")");
                }
                break;
            case ']':
            case '}':
                if (depth > 0) --depth;
                break;
            default:
                break;
        }
    }
    return ok_status();
}

StatusOr<nlohmann::json> parse_json_bounded(std::string_view text, const std::string& origin, int max_depth) {
    MOE_RETURN_IF_ERROR(check_json_depth(text, origin, max_depth));
    try {
        return nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(origin + ": not valid JSON: " + e.what());
    }
}

StatusOr<int> open_regular_file(const std::filesystem::path& path) {
    const std::string name = path.string();
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT || err == ENOTDIR) return not_found(name + ": no such file");
        return invalid_argument(name + ": cannot open: " + std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        return internal_error(name + ": fstat failed: " + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                           : S_ISFIFO(st.st_mode) ? "a FIFO"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                           : S_ISCHR(st.st_mode)  ? "a character device"
                           : S_ISBLK(st.st_mode)  ? "a block device"
                                                  : "not a plain file";
        return invalid_argument(name + ": not a regular file (" + kind + ")");
    }
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

StatusOr<std::string> read_regular_file(const std::filesystem::path& path, size_t max_bytes) {
    const std::string name = path.string();
    MOE_ASSIGN_OR_RETURN(const int fd, open_regular_file(path));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) return internal_error(name + ": fstat failed: " + std::strerror(errno));
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size > max_bytes) {
        return invalid_argument(name + ": " + std::to_string(size) + " bytes is over the limit of " +
                                std::to_string(max_bytes) + " bytes for this file");
    }
    std::string data(static_cast<size_t>(size), '\0');
    size_t got = 0;
    while (got < data.size()) {
        const ssize_t n = ::read(fd, data.data() + got, data.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return invalid_argument(name + ": read failed: " + std::strerror(errno));
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    if (got != data.size()) {
        return data_loss(name + ": short read: " + std::to_string(got) + " of " + std::to_string(size) + " bytes");
    }
    return data;
}

StatusOr<nlohmann::json> read_json_file(const std::filesystem::path& path, size_t max_bytes, int max_depth) {
    MOE_ASSIGN_OR_RETURN(std::string text, read_regular_file(path, max_bytes));
    return parse_json_bounded(text, path.string(), max_depth);
}

}  // namespace moe
