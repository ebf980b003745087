#!/usr/bin/env bash
# Compiles every kernel (kernels/*/*.cu) with `-Xptxas -v` for sm_80 and sm_90 and fails when a hot
# kernel (anything in namespace moe::kernels) reports spill stores or loads. Library kernels (CUB's
# scan) are listed but not judged. Prints a table: arch, registers, stack, spills, kernel; and the
# compile time of each file.
#
# Usage: scripts/check_ptxas_spills.sh [--nvcc PATH] [--out REPORT] [--archs "80 90"]
# CMake: `cmake --build <build> --target check_ptxas_spills` (defined in kernels/CMakeLists.txt).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
out=""
archs="80 90"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nvcc) nvcc="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --archs) archs="$2"; shift 2 ;;
        *) echo "check_ptxas_spills: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ ! -x "$nvcc" ]]; then
    echo "check_ptxas_spills: nvcc not found (looked for '$nvcc'); set NVCC or pass --nvcc" >&2
    exit 2
fi
demangle() { if command -v c++filt >/dev/null; then c++filt; else cat; fi; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
report="$tmp/report.txt"
: > "$report"
status=0
shopt -s nullglob
files=("$root"/kernels/*/*.cu)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "check_ptxas_spills: no kernels under $root/kernels" >&2
    exit 2
fi
for arch in $archs; do
    for cu in "${files[@]}"; do
        rel="${cu#"$root"/}"
        log="$tmp/$(basename "$cu").sm_$arch.log"
        start=$(date +%s%N)
        if ! "$nvcc" -std=c++17 -O3 -I"$root" -c "$cu" -o "$tmp/obj.o" \
                --generate-code "arch=compute_$arch,code=sm_$arch" -Xptxas -v >"$log" 2>&1; then
            cat "$log" >&2
            echo "check_ptxas_spills: $rel failed to compile for sm_$arch" >&2
            exit 1
        fi
        end=$(date +%s%N)
        ms=$(((end - start) / 1000000))
        printf 'compile %-40s sm_%s %4d.%01d s\n' "$rel" "$arch" $((ms / 1000)) $((ms % 1000 / 100)) >> "$tmp/times.txt"
        # ptxas prints, per entry: "Compiling entry function 'NAME' for 'sm_XX'", then
        # "N bytes stack frame, S bytes spill stores, L bytes spill loads", then "Used R registers".
        awk -v arch="$arch" '
            /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART + 1, RLENGTH - 2); st = ""; }
            /bytes stack frame/ && fn != "" { stack = $1; stores = $5; loads = $9; st = "y"; }
            /Used [0-9]+ registers/ && fn != "" && st == "y" {
                for (i = 1; i <= NF; ++i) if ($i == "Used") regs = $(i + 1);
                printf "sm_%s\t%s\t%s\t%s\t%s\t%s\n", arch, regs, stack, stores, loads, fn;
                fn = ""; st = "";
            }' "$log" >> "$report"
    done
done

{
    printf '%-6s %5s %6s %7s %7s  %s\n' arch regs stack spill_st spill_ld kernel
    while IFS=$'\t' read -r a regs stack stores loads fn; do
        name="$(echo "$fn" | demangle)"
        printf '%-6s %5s %6s %7s %7s  %s\n' "$a" "$regs" "$stack" "$stores" "$loads" "${name:0:160}"
    done < "$report"
    echo
    cat "$tmp/times.txt"
} > "$tmp/table.txt"
cat "$tmp/table.txt"
[[ -n "$out" ]] && cp "$tmp/table.txt" "$out"

hot=0
bad=0
while IFS=$'\t' read -r a regs stack stores loads fn; do
    [[ "$fn" == *3moe7kernels* ]] || continue
    hot=$((hot + 1))
    if [[ "$stores" != "0" || "$loads" != "0" ]]; then
        echo "SPILL: $a $(echo "$fn" | demangle): $stores bytes stores, $loads bytes loads" >&2
        bad=$((bad + 1))
    fi
done < "$report"
if [[ $hot -eq 0 ]]; then
    echo "check_ptxas_spills: no moe::kernels entries found in the ptxas output (parser out of date?)" >&2
    exit 1
fi
if [[ $bad -ne 0 ]]; then
    echo "check_ptxas_spills: $bad hot kernel instance(s) spill" >&2
    exit 1
fi
echo "check_ptxas_spills: $hot hot kernel instances over sm_${archs// /, sm_}, no spills"
exit $status
