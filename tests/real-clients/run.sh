#!/usr/bin/env bash
# Runs Debian bookworm's real xenstore clients and Xen's test-xenstore against our xenstored.
#
# Usage: tests/real-clients/run.sh            (as root on Debian bookworm; needs apt-get)
# Environment:
#   CARGO_TARGET_DIR            honoured when building the daemon
#   XENSTORE_REAL_CLIENTS_DIR   work directory (default: a fresh temporary one, removed at exit)
#   XENSTORE_RANDOM_SECONDS     duration of test-xenstore's random mode (default 10)
#   XENSTORE_SKIP_BUILD=1       use the already built release binary
#
# The packages are unpacked with tests/lib/debian-packages.sh, never installed. Every check
# prints PASS or FAIL; the last line is "N passed, M failed"; the exit status is non-zero
# when any check failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$repo/tests/lib/setup.sh" || { echo "real-clients: set-up failed (tests/lib/setup.sh)" >&2; exit 1; }
if [ -n "${XENSTORE_REAL_CLIENTS_DIR:-}" ]; then
    work=$XENSTORE_REAL_CLIENTS_DIR
    keep_work=1
else
    work=$(mktemp -d /tmp/xenstore-real-clients.XXXXXX)
    keep_work=0
fi
mkdir -p "$work"
root=$work/debian
run=$work/run
random_seconds=${XENSTORE_RANDOM_SECONDS:-10}

passed=0
failed=0
failures=()
daemon_pid=

cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    if [ "$keep_work" = 0 ]; then
        rm -rf "$work"
    fi
}
trap cleanup EXIT

pass() {
    echo "PASS $1"
    passed=$((passed + 1))
}

fail() {
    echo "FAIL $1${2:+: $2}"
    failed=$((failed + 1))
    failures+=("$1")
}

summary_and_exit() {
    if [ "$failed" -gt 0 ]; then
        echo "failed checks:"
        printf '  %s\n' "${failures[@]}"
    fi
    echo "$passed passed, $failed failed"
    if [ "$failed" -gt 0 ]; then
        exit 1
    fi
    exit 0
}

# --- 1. The clients, from Debian bookworm (xenstore-control needs libxenctrl from libxenmisc).
packages=(
    xenstore-utils xen-utils-4.17 libxenstore4 libxentoolcore1 libxenmisc4.17
    libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1
    libxenhypfs1 libxentoollog1 libyajl2
)
if bash "$repo/tests/lib/debian-packages.sh" "$root" "${packages[@]}"; then
    pass "fetch Debian packages"
else
    fail "fetch Debian packages"
    summary_and_exit
fi
export LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=$root/usr/bin
control=$root/usr/lib/xen-4.17/bin/xenstore-control
test_xenstore=$root/usr/lib/xen-4.17/bin/test-xenstore
missing_libraries=$(ldd "$bin/xenstore" "$control" "$test_xenstore" 2>&1 | grep "not found" | sort -u)
if [ -z "$missing_libraries" ]; then
    pass "client libraries resolve"
else
    fail "client libraries resolve" "$missing_libraries"
fi

# --- 2. The daemon.
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in
    /*) ;;
    *) target=$repo/$target ;;
esac
if [ "${XENSTORE_SKIP_BUILD:-}" != 1 ]; then
    if (cd "$repo" && cargo build --release -p xenstored-linux -p xenstore-client); then
        pass "build xenstored"
    else
        fail "build xenstored"
        summary_and_exit
    fi
fi
daemon=$target/release/xenstored
mkdir -p "$run"
export XENSTORED_PATH=$run/socket
"$daemon" --socket "$XENSTORED_PATH" --rundir "$run" -T "$work/trace" -N 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
    [ -S "$XENSTORED_PATH" ] && break
    sleep 0.1
done
if [ -S "$XENSTORED_PATH" ]; then
    pass "xenstored listens on $XENSTORED_PATH"
else
    fail "xenstored listens" "$(cat "$work/daemon.log")"
    summary_and_exit
fi

# --- 3. Checks.
output=$work/output

# expect NAME EXPECTED_OUTPUT COMMAND...: the command succeeds and prints exactly EXPECTED_OUTPUT
# (compared byte for byte; a trailing newline is added to EXPECTED_OUTPUT unless it is empty).
expect() {
    local name=$1 expected=$2
    shift 2
    if [ -n "$expected" ]; then
        expected+=$'\n'
    fi
    timeout 20 "$@" >"$output" 2>"$output.stderr"
    local status=$?
    if [ "$status" -ne 0 ]; then
        fail "$name" "exit status $status: $(head -c 300 "$output.stderr")"
    elif [ "$(cat "$output"; echo .)" != "$expected." ]; then
        fail "$name" "expected $(printf '%q' "$expected"), got $(printf '%q' "$(cat "$output")")"
    else
        pass "$name"
    fi
}

# expect_raw NAME EXPECTED_OUTPUT COMMAND...: like expect, without adding a newline.
expect_raw() {
    local name=$1 expected=$2
    shift 2
    timeout 20 "$@" >"$output" 2>"$output.stderr"
    local status=$?
    if [ "$status" -ne 0 ]; then
        fail "$name" "exit status $status"
    elif [ "$(cat "$output"; echo .)" != "$expected." ]; then
        fail "$name" "expected $(printf '%q' "$expected"), got $(printf '%q' "$(cat "$output")")"
    else
        pass "$name"
    fi
}

# expect_failure NAME COMMAND...: the command exits non-zero.
expect_failure() {
    local name=$1
    shift
    if timeout 20 "$@" >"$output" 2>&1; then
        fail "$name" "succeeded: $(head -c 300 "$output")"
    else
        pass "$name"
    fi
}

# expect_match NAME REGEX COMMAND...: the command succeeds and a line of its output matches REGEX.
expect_match() {
    local name=$1 pattern=$2
    shift 2
    timeout 20 "$@" >"$output" 2>&1
    local status=$?
    if [ "$status" -ne 0 ]; then
        fail "$name" "exit status $status: $(head -c 300 "$output")"
    elif grep -Eq -- "$pattern" "$output"; then
        pass "$name"
    else
        fail "$name" "no line matches /$pattern/ in $(printf '%q' "$(head -c 600 "$output")")"
    fi
}

# xenstore-write / -read / -exists / -list / -ls.
expect "xenstore-write several pairs" "" "$bin/xenstore-write" /rc/a 1 /rc/b "two words"
expect "xenstore-read" "1" "$bin/xenstore-read" /rc/a
expect "xenstore-read several keys" $'1\ntwo words' "$bin/xenstore-read" /rc/a /rc/b
expect "xenstore-read -p" "/rc/a: 1" "$bin/xenstore-read" -p /rc/a
expect_failure "xenstore-read missing node" "$bin/xenstore-read" /rc/missing
expect "xenstore-write escapes" "" "$bin/xenstore-write" /rc/escaped 'a\tb'
expect "xenstore-read sanitises" 'a\tb' "$bin/xenstore-read" /rc/escaped
expect_raw "xenstore-read -R is raw" $'a\tb' "$bin/xenstore-read" -R /rc/escaped
expect "xenstore-write -R keeps backslashes" "" "$bin/xenstore-write" -R /rc/literal 'x\ty'
expect_raw "xenstore-read -R of a literal value" 'x\ty' "$bin/xenstore-read" -R /rc/literal
expect "xenstore-exists" "" "$bin/xenstore-exists" /rc/a /rc/b
expect_failure "xenstore-exists missing node" "$bin/xenstore-exists" /rc/missing
expect "xenstore-write nested" "" "$bin/xenstore-write" /rc/dir/x 10 /rc/dir/y 20
expect "xenstore-list" $'a\nb\nescaped\nliteral\ndir' "$bin/xenstore-list" /rc
expect "xenstore-list -p" $'/rc/dir/x\n/rc/dir/y' "$bin/xenstore-list" -p /rc/dir
expect "xenstore-ls" $'x = "10"\ny = "20"' "$bin/xenstore-ls" /rc/dir
expect "xenstore-write for ls nesting" "" "$bin/xenstore-write" /rc3/dir/x 10 /rc3/dir/y 20
expect "xenstore-ls nested" $'dir = ""\n x = "10"\n y = "20"' "$bin/xenstore-ls" /rc3
expect "xenstore-ls -f" $'/rc/dir/x = "10"\n/rc/dir/y = "20"' "$bin/xenstore-ls" -f /rc/dir
expect "xenstore-ls -f -p" $'/rc/dir/x = "10"   (n0)\n/rc/dir/y = "20"   (n0)' "$bin/xenstore-ls" -f -p /rc/dir
expect_failure "xenstore-ls missing node" "$bin/xenstore-ls" /rc/missing

# xenstore-chmod.
expect "xenstore-chmod" "" "$bin/xenstore-chmod" /rc/dir/x n0 r5 w7
expect "xenstore-ls -f -p after chmod" $'/rc/dir/x = "10"   (n0,r5,w7)\n/rc/dir/y = "20"   (n0)' \
    "$bin/xenstore-ls" -f -p /rc/dir
expect "xenstore-chmod -r" "" "$bin/xenstore-chmod" -r /rc/dir b0
expect "xenstore-ls -f -p after chmod -r" $'/rc/dir/x = "10"   (b0)\n/rc/dir/y = "20"   (b0)' \
    "$bin/xenstore-ls" -f -p /rc/dir
expect "xenstore-write for chmod -u" "" "$bin/xenstore-write" /rcu/p/q v
expect "xenstore-chmod -u" "" "$bin/xenstore-chmod" -u /rcu/p/q n0 r9
expect "xenstore-ls -f -p after chmod -u" $'/rcu = ""   (n0,r9)\n/rcu/p = ""   (n0,r9)\n/rcu/p/q = "v"   (n0,r9)' \
    bash -c "'$bin/xenstore-ls' -f -p / | grep '^/rcu'"
expect_failure "xenstore-chmod bad permission" "$bin/xenstore-chmod" /rc/a x5

# xenstore-rm.
expect "xenstore-rm" "" "$bin/xenstore-rm" /rc/b
expect_failure "xenstore-read removed node" "$bin/xenstore-read" /rc/b
expect "xenstore-rm of a missing node with a parent" "" "$bin/xenstore-rm" /rc/b
expect_failure "xenstore-rm of a node without a parent" "$bin/xenstore-rm" /rc/none/none
expect "xenstore-write for rm -t" "" "$bin/xenstore-write" /rct/keep 1 /rct/d1/d2/leaf 2
expect "xenstore-rm -t" "" "$bin/xenstore-rm" -t /rct/d1/d2/leaf
expect "xenstore-rm -t removed empty parents" "keep" "$bin/xenstore-list" /rct
expect "xenstore-rm subtree" "" "$bin/xenstore-rm" /rct
expect_failure "xenstore-exists removed subtree" "$bin/xenstore-exists" /rct/keep

# xenstore-watch.
watch_output=$work/watch
timeout 20 "$bin/xenstore-watch" -n 3 /rcw >"$watch_output" 2>&1 &
watch_pid=$!
for _ in $(seq 100); do
    [ -s "$watch_output" ] && break
    sleep 0.05
done
"$bin/xenstore-write" /rcw/x 1
"$bin/xenstore-write" /rcw/x/y 2
if wait "$watch_pid" && [ "$(cat "$watch_output")" = $'/rcw\n/rcw/x\n/rcw/x/y' ]; then
    pass "xenstore-watch -n"
else
    fail "xenstore-watch -n" "got $(printf '%q' "$(cat "$watch_output")")"
fi

# The multi-call binary.
expect "xenstore write" "" "$bin/xenstore" write /rcm/k v
expect "xenstore read" "v" "$bin/xenstore" read /rcm/k
expect "xenstore exists" "" "$bin/xenstore" exists /rcm/k
expect "xenstore list" "k" "$bin/xenstore" list /rcm
expect "xenstore ls" 'k = "v"' "$bin/xenstore" ls /rcm
expect "xenstore chmod" "" "$bin/xenstore" chmod /rcm/k n0 r1
expect "xenstore ls -f -p" '/rcm/k = "v"   (n0,r1)' "$bin/xenstore" ls -f -p /rcm
expect "xenstore rm" "" "$bin/xenstore" rm /rcm
expect_failure "xenstore exists after rm" "$bin/xenstore" exists /rcm

# A simulated guest (daemon/README.md) seen through the real clients.
guest_tool=$target/release/xenstore-guest
expect "prepare a guest home" "" "$bin/xenstore-write" /local/domain/42 ""
expect "give the guest its home" "" "$bin/xenstore-chmod" /local/domain/42 n42
expect "xenstore-guest --introduce write" "" \
    "$guest_tool" --rundir "$run" --domid 42 --introduce write name guest42
expect "xenstore-read of a guest's node" "guest42" "$bin/xenstore-read" /local/domain/42/name
expect "xenstore-ls -f -p of a guest's node" '/local/domain/42/name = "guest42"   (n42)' \
    "$bin/xenstore-ls" -f -p /local/domain/42
expect "xenstore-guest is refused outside its home" "ERROR EACCES" \
    bash -c "'$guest_tool' --rundir '$run' --domid 42 read /local/domain/0; [ \$? -eq 1 ]"
# Empty the file first: the wait below must not mistake the /rcw watch's output for this one's.
: >"$watch_output"
timeout 20 "$bin/xenstore-watch" -n 2 @releaseDomain >"$watch_output" 2>&1 &
watch_pid=$!
for _ in $(seq 100); do
    [ -s "$watch_output" ] && break
    sleep 0.05
done
"$guest_tool" --rundir "$run" --domid 42 --destroy
if wait "$watch_pid" && [ "$(cat "$watch_output")" = $'@releaseDomain\n@releaseDomain' ]; then
    pass "xenstore-watch sees the simulated death"
else
    fail "xenstore-watch sees the simulated death" "got $(printf '%q' "$(cat "$watch_output")")"
fi
expect_failure "the dead guest's nodes are gone" "$bin/xenstore-exists" /local/domain/42/name

# xenstore-control.
expect_match "xenstore-control help" "^quota" "$control" help
expect_match "xenstore-control log" "." "$control" log
expect "xenstore-control log off" "OK" "$control" log off
expect "xenstore-control log on" "OK" "$control" log on
expect_match "xenstore-control quota" "^nodes +: +1000 " "$control" quota
expect_match "xenstore-control quota-soft" "^memory +: +2097152 " "$control" quota-soft
expect "xenstore-control quota set" "OK" "$control" quota set nodes 2000
expect_match "xenstore-control quota after set" "^nodes +: +2000 " "$control" quota
expect "xenstore-control quota set back" "OK" "$control" quota set nodes 1000
expect_match "xenstore-control quota <domid>" "^nodes +: +[0-9]+" "$control" quota 0
expect_match "xenstore-control memreport" "." "$control" memreport
expect "xenstore-control check" "OK" "$control" check
expect "xenstore-control print" "OK" "$control" print "hello from run.sh"
expect_failure "xenstore-control unknown command" "$control" no-such-command
if grep -q "hello from run.sh" "$work/trace" "$work/daemon.log" 2>/dev/null; then
    pass "xenstore-control print reaches the log"
else
    fail "xenstore-control print reaches the log"
fi

# Xen's test-xenstore: every test on its own, then random mode. 4.17 always exits 0, so the
# output decides: a passing test prints "<name>: <n> ns", a failing one "<name>: failed ...".
"$test_xenstore" -l >"$work/tests" 2>&1
test_names=()
while IFS= read -r line; do
    name=${line%%:*}
    name=${name%"${name##*[! ]}"}
    [ -n "$name" ] && test_names+=("$name")
done <"$work/tests"
if [ "${#test_names[@]}" -ge 12 ]; then
    pass "test-xenstore -l lists ${#test_names[@]} tests"
else
    fail "test-xenstore -l" "$(cat "$work/tests")"
fi
for name in "${test_names[@]}"; do
    result=$(timeout 60 "$test_xenstore" -t "$name" 2>&1)
    if printf '%s\n' "$result" | grep -Eq "^${name} *: [0-9]+ ns$"; then
        pass "test-xenstore -t '$name'"
    else
        fail "test-xenstore -t '$name'" "$result"
    fi
done
result=$(timeout $((random_seconds + 60)) "$test_xenstore" -r "$random_seconds" 2>&1)
status=$?
if [ "$status" -eq 0 ] && ! printf '%s\n' "$result" | grep -q "failed"; then
    pass "test-xenstore -r $random_seconds"
else
    fail "test-xenstore -r $random_seconds" "status $status: $(printf '%s' "$result" | head -c 600)"
fi

# The daemon survived everything.
if kill -0 "$daemon_pid" 2>/dev/null; then
    pass "xenstored still running"
else
    fail "xenstored still running" "$(tail -n 20 "$work/daemon.log")"
fi

summary_and_exit
