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
# 20 % with freshly started agents), for 15-50 MB more peak RSS. glibc reads tunables only at
# process start, hence this launcher; `exec` keeps one process, so the PID and every signal are
# the agent's own.
# Settings already in GLIBC_TUNABLES come after ours and win; other C libraries ignore it.
set -e
self=$(readlink -f -- "$0" 2>/dev/null || printf '%s\n' "$0")
GLIBC_TUNABLES="glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
export GLIBC_TUNABLES
exec node "$(dirname -- "$self")/../../dist/src/main.js" "$@"
