#!/bin/sh
# The lm-sidecar command (package.json "bin"): runs dist/src/main.js with glibc malloc settings
# that suit bulk transfers.
#
# Every file chunk and every gRPC frame is a fresh ~1 MiB buffer. With glibc's defaults such a
# buffer is mapped fresh, or its memory trimmed back to the kernel when freed, so each new one
# costs ~256 page faults, and page faults are expensive on the reference VM (perf).
# Serving them from the heap (mmap_threshold 4 MiB) and keeping up to 64 MiB of freed memory
# (trim_threshold) cut the source agent's CPU for the 4 GiB benchmark copy from 8.5 to 6.3 s
# (the source host still serves Cassandra) and the copy from 14.8 to 13.5 s (bench A/B; up to
# 20 % with freshly started agents), for 15-50 MB more peak RSS.
#
# hugetlb=1 asks for transparent huge pages on malloc's memory (madvise(2); nothing changes where
# THP is off). A fresh destination agent grows by ~120 MB during a copy, one page fault per
# 4 KiB, and on the reference VM a fault costs ~12 us: with it, the destination of a copy of the
# small benchmark tree took 20,800 faults instead of 44,500, and copies into fresh destinations
# were faster in 15 rounds of 16 (medians 2.67 against 3.06 s and 3.48 against 3.67 s,
# destination CPU 0.4-0.5 s less; with 3 GB of memory free, 3 of 4), the large tree 8.68 against
# 9.50 s; destination peaks unchanged (small 216 against 215 MB, large 180 against 181), the
# source's large-copy peak 152-161 MB against 141-154. Where THP's defrag is "madvise" (the
# kernel's default) such a fault may wait for the kernel to compact memory: /proc/vmstat counted
# no such stall over the last two sets. GLIBC_TUNABLES=glibc.malloc.hugetlb=0 turns it off.
#
# glibc reads tunables only at process start, hence this launcher; `exec` keeps one process, so
# the PID and every signal are the agent's own.
# Settings already in GLIBC_TUNABLES come after ours and win; other C libraries ignore it.
set -e
self=$(readlink -f -- "$0" 2>/dev/null || printf '%s\n' "$0")
GLIBC_TUNABLES="glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864:glibc.malloc.hugetlb=1${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
export GLIBC_TUNABLES
exec node "$(dirname -- "$self")/../../dist/src/main.js" "$@"
