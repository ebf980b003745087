#!/usr/bin/env bash
# Fails when a tracked C++/CUDA source is not as clang-format 14 (Debian 12's, .clang-format at the
# root) would write it, and lists the files. Run by scripts/test.sh before anything is built.
#
#   scripts/check_format.sh            check every tracked .cc/.h/.cu/.cuh file
#   scripts/check_format.sh --fix      reformat them in place
set -euo pipefail
cd "$(dirname "$0")/.."

CF=${MOE_CLANG_FORMAT:-}
if [[ -z "$CF" ]]; then
  if command -v clang-format-14 >/dev/null 2>&1; then CF=clang-format-14; else CF=clang-format; fi
fi
if ! command -v "$CF" >/dev/null 2>&1; then
  echo "check_format: $CF not found (scripts/install_deps.sh installs Debian's clang-format 14)" >&2
  exit 1
fi
version=$("$CF" --version)
if [[ ! "$version" =~ version\ 14\. ]]; then
  # Other majors format some constructs differently; the tree is kept in 14's style.
  echo "check_format: $CF is '$version'; the tree is formatted with clang-format 14" \
       "(set MOE_CLANG_FORMAT to a clang-format 14 binary)" >&2
  exit 1
fi

mapfile -d '' files < <(git ls-files -z -- '*.cc' '*.h' '*.cu' '*.cuh')
if [[ "${1:-}" == "--fix" ]]; then
  printf '%s\0' "${files[@]}" | xargs -0 "$CF" -i
  echo "check_format: reformatted ${#files[@]} files"
  exit 0
fi

# One clang-format process for the lot (a process per file is slow on a loaded machine); each
# finding is printed as "<file>:<line>:<col>: error: code should be clang-formatted".
out=$(printf '%s\0' "${files[@]}" | xargs -0 "$CF" --dry-run -Werror 2>&1) && rc=0 || rc=$?
mapfile -t bad < <(grep -oE '^[^:]+:[0-9]+:[0-9]+: error' <<<"$out" | cut -d: -f1 | sort -u)
if ((rc != 0 && ${#bad[@]} == 0)); then
  echo "check_format: $CF failed:" >&2
  echo "$out" >&2
  exit 1
fi
if ((${#bad[@]} > 0)); then
  echo "check_format: ${#bad[@]} of ${#files[@]} files are not clang-formatted:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "fix with: clang-format -i <files>   (or scripts/check_format.sh --fix)" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
