#!/usr/bin/env bash
# Runs one failure case of mpi_fault_prog under mpirun and asserts on what a user would see:
#   run_mpi_fault.sh MODE MPIEXEC PROG [extra mpirun flags...]
# abort:    rank 0 calls abort(reason) while rank 1 waits: the reason is printed, nobody
#           outlives it, the job ends non-zero before the timeout would have fired.
# lying:    rank 1 sends fewer, then more bytes than announced: rank 0 says so (DATA_LOSS, then
#           MPI's truncation) and the job exits non-zero.
# timeout:  rank 0 reports UNAVAILABLE naming the collective, rank and timeout, after at least
#           the timeout and well before twice it; its next call fails fast; the job exits
#           non-zero within a bound (no hang).
# kill:     the job exits non-zero within a bound, and either mpirun names the killed rank
#           (default) or rank 0 reports UNAVAILABLE (with --enable-recovery).
set -uo pipefail
mode=$1 mpiexec=$2 prog=$3
shift 3
timeout_ms=2000
limit_s=40
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
# Flags every run here needs: root in containers, more ranks than free cores, no pinning of
# ranks to cores another rank is using.
timeout -k 5 "$limit_s" "$mpiexec" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$@" \
  "$prog" "$mode" "$timeout_ms" >"$out" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
cat "$out"
fail() { echo "run_mpi_fault.sh $mode: FAILED: $*" >&2; exit 1; }
# mpirun's own status mirrors a killed rank's (137 = 128 + SIGKILL); only `timeout` gives 124,
# and the wall time tells a hang from that.
((rc == 124 || elapsed >= limit_s)) && fail "mpirun hung (killed by timeout after ${limit_s}s)"
recovery=0
[[ " $* " == *" --enable-recovery "* ]] && recovery=1
# With --enable-recovery OpenMPI 4.1's mpirun exits 0 even after MPI_Abort (seen here); the
# messages below are then what tells the failure.
((rc == 0 && !recovery)) && fail "mpirun exited 0 although a rank failed"
case $mode in
  timeout)
    line=$(grep '^FAULT rank 0 all_reduce_sum returned' "$out") || fail "rank 0 never returned from all_reduce_sum"
    [[ $line == *"UNAVAILABLE"* && $line == *"rank 0 of 2: all_reduce_sum timed out after ${timeout_ms} ms"* ]] ||
      fail "rank 0's error does not name the collective, rank and timeout: $line"
    ms=$(sed -E 's/.*returned after ([0-9]+) ms.*/\1/' <<<"$line")
    ((ms >= timeout_ms && ms < 2 * timeout_ms)) || fail "rank 0 waited ${ms} ms for a ${timeout_ms} ms timeout"
    next=$(grep '^FAULT rank 0 next call' "$out") || fail "rank 0 made no second call"
    [[ $next == *"UNAVAILABLE"*"broken"* ]] || fail "the call after the timeout did not fail as broken: $next"
    nms=$(sed -E 's/.*returned after ([0-9]+) ms.*/\1/' <<<"$next")
    ((nms < 100)) || fail "the call after the timeout took ${nms} ms instead of failing fast"
    grep -q 'rank 1 woke up' "$out" && fail "rank 1 outlived the aborted job"
    ;;
  kill)
    grep -q '^FAULT rank 1 raises SIGKILL' "$out" || fail "rank 1 never got to the kill"
    if ((recovery)); then
      line=$(grep '^FAULT rank 0 step' "$out") || fail "rank 0's collective never returned"
      # The timeout, or (when ORTE's recovery reports the dead peer first) MPI's error: either way
      # UNAVAILABLE naming the collective and the rank.
      [[ $line == *"UNAVAILABLE: MpiComm rank 0 of 2: all_to_all_"* ]] ||
        fail "rank 0's error does not name the collective and rank: $line"
      # Rank 0 then ends the job (MPI_Abort); under --enable-recovery mpirun does not always print
      # its MPI_ABORT banner before it exits, so rank 0's own last line counts too.
      grep -Eq 'MPI_ABORT was invoked on rank 0|^FAULT rank 0 exits with [1-9]' "$out" ||
        fail "rank 0 did not end the job"
    else
      grep -Eq 'rank 1 .*exited on signal 9' "$out" || fail "mpirun did not say that rank 1 was killed"
    fi
    ((elapsed < 3 * timeout_ms / 1000 + 15)) || fail "the job took ${elapsed}s to end"
    ;;
  abort)
    grep -q 'moeserve: rank 0 of 2 aborts the MPI job: expert kernel failed in layer 3 (test)' "$out" ||
      fail "rank 0's abort reason was not printed"
    grep -q 'all_reduce_sum returned' "$out" && fail "a rank outlived the abort"
    ((elapsed < timeout_ms / 1000 + 10)) || fail "the job took ${elapsed}s to end after the abort"
    ;;
  lying)
    short=$(grep '^FAULT rank 0 received 4 announced as 8' "$out") || fail "rank 0 never reported the short message"
    [[ $short == *"DATA_LOSS"*"rank 1 sent 4 bytes, the counts exchange announced 8"* ]] ||
      fail "the short message was not DATA_LOSS naming the peer and both counts: $short"
    long=$(grep '^FAULT rank 0 received 16 announced as 8' "$out") || fail "rank 0 never reported the long message"
    [[ $long == *"UNAVAILABLE"*"receiving from rank 1"* ]] || fail "the long message was not refused naming rank 1: $long"
    ;;
  *) fail "unknown mode $mode" ;;
esac
echo "run_mpi_fault.sh $mode: ok (mpirun exit $rc after ${elapsed}s)"
