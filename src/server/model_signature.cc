#include "server/model_signature.h"

#include "core/log_field.h"

namespace moe::server {

std::optional<SignatureDifference> first_signature_difference(const v1::ModelSignature& a,
                                                              const v1::ModelSignature& b) {
    const auto* d = v1::ModelSignature::descriptor();
    const auto* r = v1::ModelSignature::GetReflection();
    for (int i = 0; i < d->field_count(); ++i) {
        const auto* f = d->field(i);
        std::string va, vb;
        switch (f->cpp_type()) {
            case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
                va = std::to_string(r->GetInt32(a, f));
                vb = std::to_string(r->GetInt32(b, f));
                break;
            case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
                va = std::to_string(r->GetInt64(a, f));
                vb = std::to_string(r->GetInt64(b, f));
                break;
            case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
                va = "\"" + log_field(r->GetString(a, f)) + "\"";
                vb = "\"" + log_field(r->GetString(b, f)) + "\"";
                break;
            default:
                continue;
        }
        if (va != vb) return SignatureDifference{f->name(), std::move(va), std::move(vb)};
    }
    return std::nullopt;
}

}  // namespace moe::server
