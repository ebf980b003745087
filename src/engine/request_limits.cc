#include "engine/request_limits.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace moe {

StatusOr<std::string> new_request_id() {
    unsigned char bytes[16];
    size_t got = 0;
    while (got < sizeof(bytes)) {
        const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return internal_error(std::string("getrandom failed: ") + std::strerror(errno));
        }
        got += static_cast<size_t>(n);
    }
    static const char kHex[] = "0123456789abcdef";
    std::string id = "req-";
    for (unsigned char b : bytes) {
        id.push_back(kHex[b >> 4]);
        id.push_back(kHex[b & 15]);
    }
    return id;
}

}  // namespace moe
