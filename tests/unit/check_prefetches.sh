#!/bin/sh
# The CPU kernels' software prefetches are in the machine code: GCC deletes a call to a helper
# whose only effect is __builtin_prefetch when the helper is left out of line (its pure-const
# analysis sees no effect), and nothing else would notice; attention ran 30-40% slower for a
# week that way. Usage: check_prefetches.sh OBJDUMP LIBRARY
set -eu
objdump=$1
lib=$2
counts=$("$objdump" -d --no-show-raw-insn "$lib" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $2 }
  /prefetcht[0-2]/ {
    if (fn ~ /attention_task/) att++
    if (fn ~ /panel_tile/) pan++
  }
  END { printf "%d %d", att, pan }')
att=${counts% *}
pan=${counts#* }
echo "prefetch instructions: attention_task $att, panel_tile $pan"
if [ "$att" -lt 4 ] || [ "$pan" -lt 1 ]; then
  echo "FAIL: expected the decode attention's K/V prefetches (>= 4) and the panel kernel's (>= 1)" >&2
  exit 1
fi
