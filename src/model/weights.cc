#include "model/weights.h"

#include <nlohmann/json.hpp>

#include "core/json_limits.h"

namespace moe {

namespace fs = std::filesystem;

bool weights_present(const fs::path& dir) {
    std::error_code ec;
    return fs::exists(dir / kSingleWeightsFile, ec) || fs::exists(dir / kWeightsIndexFile, ec);
}

namespace {

// A shard name from the index must stay inside the model directory: a hostile index could
// otherwise make us map /etc/shadow or another model's files.
Status check_shard_name(const fs::path& dir, const std::string& shard, const std::string& index_name) {
    const std::string where = index_name + ": weight_map shard \"" + shard + "\"";
    if (shard.empty()) return invalid_argument(where + ": empty file name");
    if (shard.find('\0') != std::string::npos) return invalid_argument(where + ": path traversal (NUL byte)");
    const fs::path p(shard);
    if (p.is_absolute() || shard.front() == '/') return invalid_argument(where + ": path traversal (absolute path)");
    for (const auto& part : p) {
        if (part == "..") return invalid_argument(where + ": path traversal (\"..\")");
    }
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(dir, ec);
    if (ec) return invalid_argument(dir.string() + ": cannot resolve model directory: " + ec.message());
    const fs::path full = fs::weakly_canonical(dir / p, ec);
    if (ec) return invalid_argument(where + ": cannot resolve: " + ec.message());
    // Component-wise prefix test (a string prefix would accept /models/a-evil for /models/a).
    auto r = root.begin(), f = full.begin();
    for (; r != root.end(); ++r, ++f) {
        if (f == full.end() || *r != *f)
            return invalid_argument(where + ": path traversal (resolves outside " + root.string() + ")");
    }
    return ok_status();
}

}  // namespace

StatusOr<WeightStore> WeightStore::open(const fs::path& dir) {
    WeightStore store;
    store.dir_ = dir;
    std::error_code ec;
    const fs::path single = dir / kSingleWeightsFile;
    const fs::path index = dir / kWeightsIndexFile;

    if (fs::exists(index, ec)) {
        const std::string index_name = index.string();
        MOE_ASSIGN_OR_RETURN(const nlohmann::json j, read_json_file(index, size_t{256} << 20));
        if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
            return invalid_argument(index_name + ": weight_map missing or not a JSON object");
        // Each shard is opened once; the index decides which shard owns which tensor.
        std::map<std::string, size_t> shard_ids;
        for (const auto& [tensor, shard_v] : j.at("weight_map").items()) {
            if (!shard_v.is_string())
                return invalid_argument(index_name + ": weight_map entry " + tensor + " must be a file name string");
            const std::string shard = shard_v.get<std::string>();
            auto it = shard_ids.find(shard);
            if (it == shard_ids.end()) {
                MOE_RETURN_IF_ERROR(check_shard_name(dir, shard, index_name));
                const fs::path shard_path = dir / shard;
                if (!fs::exists(shard_path, ec)) {
                    return not_found(index_name + ": weight_map shard " + shard + " (holding " + tensor +
                                     ") is missing from " + dir.string());
                }
                MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(shard_path));
                store.files_.push_back(std::move(file));
                it = shard_ids.emplace(shard, store.files_.size() - 1).first;
            }
            const auto& tensors = store.files_[it->second]->tensors();
            auto t = tensors.find(tensor);
            if (t == tensors.end()) {
                return invalid_argument(index_name + ": weight_map promises tensor " + tensor + " in " + shard +
                                        " but that shard does not hold it");
            }
            store.tensors_.emplace(tensor, t->second);
        }
        return store;
    }
    if (fs::exists(single, ec)) {
        MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(single));
        store.tensors_ = file->tensors();
        store.files_.push_back(std::move(file));
        return store;
    }
    return not_found("weights absent: neither " + single.string() + " nor " + index.string() + " exists");
}

StatusOr<TensorInfo> WeightStore::get(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return not_found("tensor " + name + " not found in the weights of " + dir_.string());
    return it->second;
}

StatusOr<TensorInfo> WeightStore::get_checked(const std::string& name, const std::vector<int64_t>& shape) const {
    MOE_ASSIGN_OR_RETURN(TensorInfo t, get(name));
    if (t.shape != shape) {
        return invalid_argument("tensor " + name + " in " + fs::path(t.file).filename().string() + ": shape " +
                                shape_to_string(t.shape) + ", expected " + shape_to_string(shape) +
                                " from config.json");
    }
    return t;
}

Status WeightStore::expect(const std::string& name, std::initializer_list<int64_t> shape) const {
    return get_checked(name, std::vector<int64_t>(shape)).status();
}

std::vector<std::string> WeightStore::names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& [n, t] : tensors_) out.push_back(n);
    return out;
}

uint64_t WeightStore::total_bytes() const {
    uint64_t total = 0;
    for (const auto& [n, t] : tensors_) total += t.nbytes;
    return total;
}

void WeightStore::populate() const {
    for (const auto& f : files_) f->populate();
}

void WeightStore::release(const void* data, size_t bytes) const {
    for (const auto& f : files_) f->release(data, bytes);
}

}  // namespace moe
