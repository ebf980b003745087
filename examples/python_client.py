#!/usr/bin/env python3
"""Stream a generation from a moeserve server and print the text as it arrives.

    pip install -r examples/requirements.txt
    python3 examples/python_client.py --server 127.0.0.1:50051 --prompt "Hello" --max-tokens 32

The gRPC stubs are generated at run time from proto/moe/v1/*.proto into a temporary directory
(grpc_tools.protoc), so nothing generated is committed. Use --prompt-ids 1,2,3 for a model
without a tokenizer; --json prints one JSON object per event instead of text.
"""
import argparse
import importlib
import json
import os
import sys
import tempfile

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")


def load_stubs(proto_root=PROTO_ROOT):
    """Generates the Python modules for moe/v1/*.proto and imports them: (pb2, pb2_grpc, control_pb2, control_grpc)."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="moe_stubs_")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = [os.path.join(proto_root, "moe", "v1", name) for name in ("inference.proto", "control.proto")]
    rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {protos}")
    sys.path.insert(0, out)
    return (importlib.import_module("moe.v1.inference_pb2"), importlib.import_module("moe.v1.inference_pb2_grpc"),
            importlib.import_module("moe.v1.control_pb2"), importlib.import_module("moe.v1.control_pb2_grpc"))


def build_request(pb2, args):
    req = pb2.GenerateRequest(request_id=(args.request_id or "").encode())  # bytes on the wire (UTF-8)
    if args.prompt is not None:
        req.text = args.prompt.encode("utf-8")  # `bytes` on the wire: the server checks the UTF-8
    else:
        req.token_ids.ids.extend(int(x) for x in args.prompt_ids.split(","))
    if args.max_tokens is not None:
        req.stopping.max_tokens = args.max_tokens
    if args.temperature is not None:
        req.sampling.temperature = args.temperature
    if args.top_p is not None:
        req.sampling.top_p = args.top_p
    if args.top_k is not None:
        req.sampling.top_k = args.top_k
    if args.seed is not None:
        req.sampling.seed = args.seed
    req.stopping.stop.extend(s.encode() for s in (args.stop or []))
    if args.ignore_eos:
        req.stopping.ignore_eos = True
    return req


def stream(stub, pb2, request, timeout=None):
    """Yields ("delta", token_ids, text) and finally ("final", Final message)."""
    for msg in stub.Generate(request, timeout=timeout):
        if msg.HasField("delta"):
            yield "delta", list(msg.delta.token_ids), msg.delta.text
        elif msg.HasField("final"):
            yield "final", msg.final


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("MOESERVE_SERVER", "127.0.0.1:50051"))
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt")
    g.add_argument("--prompt-ids")
    p.add_argument("--request-id")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--timeout", type=float, help="deadline in seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--info", action="store_true", help="print GetModelInfo first (to stderr)")
    args = p.parse_args(argv)

    import grpc

    pb2, pb2_grpc, control_pb2, control_grpc = load_stubs()
    channel = grpc.insecure_channel(args.server)
    if args.info:
        info = control_grpc.ControlStub(channel).GetModelInfo(control_pb2.GetModelInfoRequest(), timeout=10)
        print(f"model {info.name}: {info.architecture}, {info.num_layers} layers, {info.num_experts} experts "
              f"(top-{info.num_experts_per_tok}), vocab {info.vocab_size}, context {info.max_model_len}",
              file=sys.stderr)
    stub = pb2_grpc.InferenceStub(channel)
    ids = []
    any_text = False
    try:
        for kind, *rest in stream(stub, pb2, build_request(pb2, args), timeout=args.timeout):
            if kind == "delta":
                token_ids, text = rest
                ids.extend(token_ids)
                if args.json:
                    print(json.dumps({"delta": {"token_ids": token_ids, "text": text}}), flush=True)
                elif text:
                    any_text = True
                    print(text, end="", flush=True)
            else:
                final = rest[0]
                reason = pb2.FinishReason.Name(final.finish_reason)
                if args.json:
                    print(json.dumps({"final": {
                        "finish_reason": reason,
                        "prompt_tokens": final.usage.prompt_tokens,
                        "completion_tokens": final.usage.completion_tokens,
                        "cached_prompt_tokens": final.usage.cached_prompt_tokens,
                        "ttft_seconds": final.timing.ttft_seconds,
                        "total_seconds": final.timing.total_seconds,
                        "error": final.error}}), flush=True)
                else:
                    if not any_text and ids:
                        print(",".join(str(i) for i in ids), end="")
                    print(flush=True)
                    print(f"finish: {reason}, {final.usage.prompt_tokens} prompt + "
                          f"{final.usage.completion_tokens} generated tokens, ttft {final.timing.ttft_seconds:.3f} s",
                          file=sys.stderr)
                if final.finish_reason == pb2.FINISH_REASON_ERROR:
                    return 1
    except grpc.RpcError as e:
        print(f"python_client: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
