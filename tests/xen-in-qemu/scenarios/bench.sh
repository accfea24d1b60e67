# Scenario `bench`: the same timed workload on whichever xenstore runs (XENSTORE=stub, the
# default, or c), for bench/xen-in-qemu.sh, which runs it on both and prints the ratios.
# Under TCG absolute times say little; compare the two runs of one machine.
#  (a) Xen's test-xenstore, dom0 as the client. Every test of `test-xenstore -l`, one
#      iteration each (`-t NAME`, test-xenstore's own timing in ns), TX_RUNS times in
#      rounds, through two paths; the figure is the median of the runs:
#        tx.NAME      the client's default path (C: the Unix socket of the dom0 daemon;
#                     stub: dom0's kernel ring, there is no socket)
#        txring.NAME  XENSTORED_PATH=/dev/xen/xenbus, i.e. dom0's kernel ring for both
#      (medians, not test-xenstore's -i averages: under TCG on a busy host single
#      iterations stall for tens to hundreds of ms now and then, and averages follow them).
#      Then the repetition runs tx.all-wall and txring.all-wall: wall time of one whole
#      `test-xenstore -i TX_ITER` (every test, TX_ITER iterations each), with each test's
#      own average of that run as txloop.NAME and txringloop.NAME, and
#      `-r RANDOM_SECONDS` (random mode) as a check only: it runs for a fixed time and
#      prints no count, so it has no figure.
#  (b) GUESTS (default 3) PVH Linux guests (guests/xsclient, xsmode=boot, the guest of
#      guest-lifecycle), one at a time, each created, booted and destroyed:
#        guest.create-K   `xl create CFG` until it returns (domain built, its xenstore nodes
#                         written by libxl, unpaused: `xl list` shows it running)
#        guest.boot-K     from the start of `xl create` until dom0's watch on
#                         /local/domain/ID/data/booted fires: the guest's kernel booted and
#                         its user space wrote through its own ring (the end point of
#                         "running", well defined for both xenstores)
#        guest.destroy-K  `xl destroy ID` until it returns
#      and the medians over the guests that booted (guest.create-med, ...).
#      While the first guest that booted runs (idle: its init sleeps), IDLE_SECONDS (20) of
#      nothing, measuring the CPU used meanwhile, ms of CPU per second: idle1.xenstore (the
#      stub domain's time in `xl list`; C: xenstored's utime+stime), idle1.guest,
#      idle1.dom0.
#  (c) MULTI_GUESTS (default 4) guests created one after another and kept, then destroyed
#      one by one: multi.create-K (with K-1 guests there), multi.create-total,
#      multi.destroy-K, multi.destroy-total; between the two, the idle measurement with them
#      (idle.*). By default they are created paused (`xl create -p`): the toolstack's and
#      the xenstore's work with K-1 domains introduced, without booting guests competing for
#      the CPU (under TCG on a busy host a fourth booting Linux took from 48 s to 300 s,
#      with either xenstore). MULTI_BOOT=1: started and booted one after another (each
#      booted before the next is created), with multi.boot-K as in (b).
#  idle0.xenstore, idle0.dom0: the idle measurement right after the start, no guest.
#  Each idle measurement also prints, as INFO lines, where dom0's time went in it: the
#  /proc/stat split (user, system, softirq, steal, ...) and its busiest tasks.
#  cpu.tx, cpu.guests, cpu.multi: the xenstore's CPU time (as for idle.xenstore) during
#  (a), (b) and (c), ms (those of (b) and (c) include their idle measurement).
#  CPU times of domains have 0.1 s steps: over 20 s, 4.9 ms/s is one step.
# A guest that dies while booting of an emulation fault (the rare TCG flakes, see README:
# Xen's `dNvM Triple fault` line for that domain, or the GS-base oops) is created once more
# (up to BOOT_RETRIES times, default 2; a `RETRY` line each); the figures are those of the attempt that
# booted. One that dies otherwise, vanishes without that line or hangs fails (step
# NAME-boot, with its console's tail and its `xl dmesg` lines). A failed `xl create` is not
# retried: its step fails, and a domain it left behind is destroyed.
# Times in dom0 come from /proc/uptime (10 ms resolution); CPU times of domains from
# `xl list` (0.1 s).
#
# Output: one `BENCH <name> <value> <unit>` line per figure, and the whole list again,
# indented, at the end between `BENCH-RESULTS BEGIN` and `BENCH-RESULTS END` (a line mangled
# on the serial console by another writer still has its copy).
# Run: tests/xen-in-qemu/run.sh bench [--xenstore c|stub] [--set MULTI_GUESTS=6] ...
# Variables (run.sh --set NAME=VALUE): TX_RUNS (7), TX_ITER (50), RANDOM_SECONDS (10),
# GUESTS (3), MULTI_GUESTS (4; each guest has GUEST_MEMORY MiB, default 128, and the host
# ~950 MiB free), MULTI_BOOT (0), IDLE_SECONDS (20), GUEST_BOOT_TIMEOUT (300),
# BOOT_RETRIES (2), STUB_MEMORY, STUB_PARAM, PLACE (commands run in dom0 once the xenstore
# serves, before any measurement: a CPU placement such as `xl vcpu-pin 0 all 0`).
#
# harness-needs: xenstore linux-vmlinux guest:xsclient
# harness-expect: xenstore xen-init-dom0 xenconsoled bench-tx-list bench-tx bench-txring
# harness-expect: bench-idle0 bench-tx-all bench-tx-random bench-idle1 bench-guests bench-multi
# harness-expect: bench-idle bench-multi-destroy
# harness-timeout: 2400
set -u

TX_RUNS=${TX_RUNS:-7}
TX_ITER=${TX_ITER:-50}
RANDOM_SECONDS=${RANDOM_SECONDS:-10}
GUESTS=${GUESTS:-3}
MULTI_GUESTS=${MULTI_GUESTS:-4}
IDLE_SECONDS=${IDLE_SECONDS:-20}
MULTI_BOOT=${MULTI_BOOT:-0}
GUEST_MEMORY=${GUEST_MEMORY:-128}
GUEST_BOOT_TIMEOUT=${GUEST_BOOT_TIMEOUT:-300}
export XS_TIMEOUT="${XS_TIMEOUT:-20}"
TX=$TEST_XENSTORE
RESULTS=/tmp/bench.results
: >"$RESULTS"
t_start=$(date +%s)

# now_ms: NOW = milliseconds since boot (/proc/uptime, 10 ms steps; no process started).
now_ms() {
    read -r _up _rest </proc/uptime
    _cs=${_up#*.}
    _cs=${_cs#0}
    NOW=$((${_up%.*} * 1000 + ${_cs:-0} * 10))
}
# bench NAME VALUE UNIT: one result line (and kept for the recap at the end).
bench() {
    echo "BENCH $1 $2 $3"
    echo "BENCH $1 $2 $3" >>"$RESULTS"
}
# median VALUE...: the middle value (the lower one of the two middles for an even count).
median() {
    printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'
}
# xenstore_cpu_ms: CPU time used so far by the xenstore, ms: the stub domain's time in
# `xl list` (0.1 s steps), or the C daemon's utime + stime (USER_HZ = 100 on x86).
xenstore_cpu_ms() {
    if [ "${XENSTORE:-stub}" = c ]; then
        awk '{print ($14 + $15) * 10}' "/proc/$(cat /run/xenstored.pid 2>/dev/null)/stat" 2>/dev/null
    else
        xl list 2>/dev/null | awk '$1 == "Xenstore" {printf "%d\n", $NF * 1000}'
    fi
}
# cpu_delta NAME BEFORE: a figure NAME = xenstore CPU ms since BEFORE (nothing if unknown).
cpu_delta() {
    _c1=$(xenstore_cpu_ms)
    if [ -n "$2" ] && [ -n "$_c1" ]; then bench "$1" $((_c1 - $2)) ms; else echo "INFO: bench: no CPU time for $1"; fi
}

# idle_measure GROUP STEP IDS: nothing happens for IDLE_SECONDS; the CPU used meanwhile, in
# ms per second: GROUP.xenstore, GROUP.guest (per guest, when IDS names guests), GROUP.dom0.
# domain_times FILE: "NAME MS" per domain from `xl list`.
domain_times() { xl list 2>/dev/null | awk 'NR > 1 {printf "%s %d\n", $1, $NF * 1000}' >"$1"; }
# dom0_ticks FILE: where dom0's own CPU time goes, in clock ticks: "cpu:FIELD N" from
# /proc/stat, "task:PID:COMM N" (utime+stime) per process and kernel thread.
dom0_ticks() {
    {
        awk '$1 == "cpu" {split("user nice system idle iowait irq softirq steal", f, " ");
            for (i = 1; i <= 8; i++) print "cpu:" f[i], $(i + 1)}' /proc/stat
        # One pass over every /proc/PID/stat (tasks may vanish meanwhile: cat goes on). The
        # command name is in parentheses and may hold spaces and ')': the fields after it
        # start after the last ')'; utime and stime are the 12th and 13th of those.
        cat /proc/[0-9]*/stat 2>/dev/null | awk '{
            open_at = index($0, "("); match($0, /\)[^)]*$/)
            comm = substr($0, open_at + 1, RSTART - open_at - 1); gsub(/[ :]/, "_", comm)
            n = split(substr($0, RSTART + 2), f, " ")
            if (n >= 13) print "task:" substr($0, 1, open_at - 2) ":" comm, f[12] + f[13]}'
    } >"$1"
}
# dom0_ticks_report BEFORE AFTER: the /proc/stat split and the busiest tasks in between.
dom0_ticks_report() {
    awk 'FNR == NR {a[$1] = $2; next} ($1 in a) && $2 > a[$1] {print $2 - a[$1], $1}' "$1" "$2" |
        sort -rn | awk -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" '
        $2 ~ /^cpu:/ {cpu = cpu sprintf(" %s %d ms", substr($2, 5), $1 * 1000 / hz); next}
        n < 6 {sub(/^task:/, "", $2); top = top sprintf(" %s %d ms", $2, $1 * 1000 / hz); n++}
        END {print "INFO: bench: dom0 /proc/stat:" cpu; print "INFO: bench: dom0 busiest tasks:" (top == "" ? " none" : top)}'
}
# idle_xenstore_ms FILE: the xenstore's CPU ms; the stub's from FILE (domain_times), not
# from one more `xl list`: an `xl list` inside the window costs dom0 ~5 ms/s of it.
idle_xenstore_ms() {
    if [ "${XENSTORE:-stub}" = c ]; then xenstore_cpu_ms; else awk '$1 == "Xenstore" {print $2}' "$1"; fi
}
idle_measure() {
    # The snapshots of dom0's ticks stay outside the measured window: under TCG they cost
    # dom0 tens of ms.
    dom0_ticks /tmp/idle.t0
    domain_times /tmp/idle.0
    _x0=$(idle_xenstore_ms /tmp/idle.0)
    now_ms
    _i0=$NOW
    sleep "$IDLE_SECONDS"
    domain_times /tmp/idle.1
    _x1=$(idle_xenstore_ms /tmp/idle.1)
    now_ms
    _secs=$((NOW - _i0))
    dom0_ticks /tmp/idle.t1
    sed 's/^/    before idle: /' /tmp/idle.0
    sed 's/^/    after idle:  /' /tmp/idle.1
    dom0_ticks_report /tmp/idle.t0 /tmp/idle.t1
    _guests=$(awk 'FNR == NR {a[$1] = $2; next} $1 ~ /^bench-/ && ($1 in a) {s += $2 - a[$1]; n++} END {if (n) printf "%d %d\n", s, n}' /tmp/idle.0 /tmp/idle.1)
    _dom0=$(awk 'FNR == NR {a[$1] = $2; next} $1 == "Domain-0" && ($1 in a) {print $2 - a[$1]}' /tmp/idle.0 /tmp/idle.1)
    _bad=""
    if [ -n "$_x0" ] && [ -n "$_x1" ]; then bench "$1.xenstore" "$(per_s $((_x1 - _x0)))" ms/s; else _bad="$_bad xenstore"; fi
    if [ -n "$3" ]; then
        if [ -n "$_guests" ]; then
            bench "$1.guest" "$(per_s $((${_guests% *} / ${_guests#* })))" ms/s
        else
            _bad="$_bad guests"
        fi
    fi
    if [ -n "$_dom0" ]; then bench "$1.dom0" "$(per_s "$_dom0")" ms/s; else _bad="$_bad dom0"; fi
    if [ -z "$_bad" ]; then
        pass "$2" "$_secs ms idle, running guest domains: ${3:-none}; CPU of the xenstore $((_x1 - _x0)) ms, of the guests ${_guests% *} ms in all, of dom0 $_dom0 ms"
    else
        fail "$2" "no CPU time for:$_bad"
    fi
}
# per_s MS: MS of CPU over _secs ms, in ms per second (one decimal).
per_s() { awk -v v="$1" -v t="$_secs" 'BEGIN {printf "%.1f\n", v * 1000 / t}'; }

_v=""
case $MULTI_BOOT in 0 | 1) ;; *) fail bench-config "MULTI_BOOT must be 0 or 1, got '$MULTI_BOOT'"; exit 1 ;; esac
for v in TX_RUNS TX_ITER RANDOM_SECONDS GUESTS MULTI_GUESTS IDLE_SECONDS GUEST_MEMORY GUEST_BOOT_TIMEOUT; do
    eval "_v=\$$v"
    case $_v in '' | *[!0-9]* | 0) fail bench-config "$v must be a positive whole number, got '$_v'"; exit 1 ;; esac
done
echo "INFO: bench: xenstore=${XENSTORE:-stub} TX_RUNS=$TX_RUNS TX_ITER=$TX_ITER GUESTS=$GUESTS MULTI_GUESTS=$MULTI_GUESTS IDLE_SECONDS=$IDLE_SECONDS MULTI_BOOT=$MULTI_BOOT GUEST_MEMORY=$GUEST_MEMORY"

start_xenstore || exit 1
# e.g. bench/xen-in-qemu.sh --one-cpu: dom0's vCPUs and the stub on CPU 0.
apply_placement
banner "bench: $IDLE_SECONDS s idle, no guest"
idle_measure idle0 bench-idle0 ""

# --------------------------------------------------------------------------------------
banner "bench (a): test-xenstore: each test once, $TX_RUNS rounds, two paths; then -i $TX_ITER"
cpu0=$(xenstore_cpu_ms)
test_xenstore_list bench-tx-list
n_tests=$(wc -l </tmp/tx-names)
# dom0's own ring: the kernel's xenbus device (xenfs's /proc/xen/xenbus when the kernel has
# no /dev/xen/xenbus).
ring_dev=/dev/xen/xenbus
[ -e "$ring_dev" ] || ring_dev=/proc/xen/xenbus

# tx_once PREFIX TEST: one `test-xenstore -t TEST` (PREFIX txring: through $ring_dev); its
# time (ns) is appended to /tmp/txv/PREFIX.<slug>, a failure to /tmp/txv/PREFIX.failed.
tx_once() {
    _slug=$(echo "$2" | tr ' ' '-')
    _out=/tmp/txv/last.out
    _rc=0
    if [ "$1" = txring ]; then
        XENSTORED_PATH=$ring_dev XS_TIMEOUT=120 xs "$TX" -t "$2" >"$_out" 2>&1 || _rc=$?
    else
        XS_TIMEOUT=120 xs "$TX" -t "$2" >"$_out" 2>&1 || _rc=$?
    fi
    # "read 1    : 939262 ns", "write 2000: 1084772 ns"
    _ns=$(sed -n 's/^.*: *\([0-9][0-9]*\) ns$/\1/p' "$_out" | head -n 1)
    if [ "$_rc" = 0 ] && [ -n "$_ns" ] && ! grep -qi 'fail' "$_out"; then
        echo "$_ns" >>"/tmp/txv/$1.$_slug"
    else
        show "$_out" "$1: test-xenstore -t '$2' (exit status $_rc)"
        echo "'$2'" >>"/tmp/txv/$1.failed"
    fi
}
rm -rf /tmp/txv
mkdir -p /tmp/txv
r=1
while [ "$r" -le "$TX_RUNS" ]; do
    while IFS= read -r t; do
        tx_once tx "$t"
        tx_once txring "$t"
    done </tmp/tx-names
    echo "INFO: bench: test-xenstore round $r of $TX_RUNS done"
    r=$((r + 1))
done
for prefix in tx txring; do
    while IFS= read -r t; do
        slug=$(echo "$t" | tr ' ' '-')
        [ -s "/tmp/txv/$prefix.$slug" ] || continue
        # shellcheck disable=SC2046 # one number per line
        m=$(median $(cat "/tmp/txv/$prefix.$slug"))
        echo "    $prefix $t: median $m ns of: $(tr '\n' ' ' <"/tmp/txv/$prefix.$slug")"
        bench "$prefix.$slug" "$m" ns
    done </tmp/tx-names
    step_name=bench-$prefix
    if [ ! -s "/tmp/txv/$prefix.failed" ] && [ "$n_tests" -ge 5 ]; then
        pass "$step_name" "$n_tests tests x $TX_RUNS runs$([ "$prefix" = txring ] && echo " through $ring_dev")"
    else
        fail "$step_name" "failed runs: $(sort /tmp/txv/$prefix.failed 2>/dev/null | uniq -c | tr -s ' \n' '  ')"
    fi
done

# The repetition runs: every test, TX_ITER iterations, wall time.
all_bad=""
for prefix in tx txring; do
    now_ms
    t0=$NOW
    rc=0
    if [ "$prefix" = txring ]; then
        XENSTORED_PATH=$ring_dev XS_TIMEOUT=1200 xs "$TX" -i "$TX_ITER" >"/tmp/$prefix-all.out" 2>&1 || rc=$?
    else
        XS_TIMEOUT=1200 xs "$TX" -i "$TX_ITER" >"/tmp/$prefix-all.out" 2>&1 || rc=$?
    fi
    now_ms
    sed "s/^/    $prefix-all: /" "/tmp/$prefix-all.out" | tr -s ' '
    # "read 1    : avg: 123 ns (100 ns .. 200 ns)" ("read 1    : 123 ns" with -i 1)
    n_avg=$(grep -c ' ns' "/tmp/$prefix-all.out")
    if [ "$rc" = 0 ] && ! grep -qi 'fail' "/tmp/$prefix-all.out" && [ "$n_avg" = "$n_tests" ]; then
        bench "$prefix.all-wall" $((NOW - t0)) ms
        # Each test's own average over the TX_ITER iterations: a steadier figure than the
        # single runs above when the host is quiet, a noisier one when it stalls.
        sed -n 's/^\([^:]*[^ :]\) *: *avg: *\([0-9][0-9]*\) ns.*/\1:\2/p' "/tmp/$prefix-all.out" |
            while IFS=: read -r t ns; do
                bench "${prefix}loop.$(echo "$t" | tr ' ' '-')" "$ns" ns
            done
    else
        all_bad="$all_bad $prefix(exit status $rc, $n_avg of $n_tests timings, $(grep -i 'fail' "/tmp/$prefix-all.out" | head -n 1))"
    fi
done
if [ -z "$all_bad" ]; then
    pass bench-tx-all "test-xenstore -i $TX_ITER (all $n_tests tests), default path and $ring_dev"
else
    fail bench-tx-all "failed:$all_bad"
fi

rc=0
XS_TIMEOUT=$((RANDOM_SECONDS + 120)) xs "$TX" -r "$RANDOM_SECONDS" >/tmp/tx-random.out 2>&1 || rc=$?
if [ "$rc" = 0 ] && ! grep -qi 'fail' /tmp/tx-random.out; then
    pass bench-tx-random "test-xenstore -r $RANDOM_SECONDS: no failure (a fixed-time run, no figure)"
else
    show /tmp/tx-random.out "test-xenstore -r $RANDOM_SECONDS"
    fail bench-tx-random "test-xenstore -r $RANDOM_SECONDS: exit status $rc"
fi
cpu_delta cpu.tx "$cpu0"

# --------------------------------------------------------------------------------------
# stamp: prefix each line read with NOW (ms).
stamp() {
    while IFS= read -r _line; do
        now_ms
        echo "$NOW $_line"
    done
}

# domain_gone ID: status 0 when `xl list` answered and the domain is not in it or has
# crashed or shut down; 1 when it is there (or xl list did not answer: unknown).
domain_gone() {
    _ll=$(xl list 2>&1) || { echo "INFO: bench: xl list failed: $(echo "$_ll" | tail -n 1)"; return 1; }
    _st=$(echo "$_ll" | awk -v d="$1" 'NR > 1 && $2 == d {print $5}')
    [ -z "$_st" ] && return 0
    case $_st in *c* | *s*) return 0 ;; esac
    return 1
}

# timed_create NAME [-p]: `xl create [-p]` of guest NAME, timed. Sets G_ID, G_CREATE (ms)
# and G_T0 (its start). Returns 0, 1 if xl create failed, 2 if the domain vanished (G_DEAD:
# its id from xl's log, or empty).
timed_create() {
    G_ID="" G_CREATE="" G_BOOT="" G_DEAD=""
    _prev=$(last_domid "$1")
    guest_cfg "$1" xsclient boot >/dev/null
    now_ms
    G_T0=$NOW
    if ! xl create -q ${2:+"$2"} "/tmp/$1.cfg" >"/tmp/create-$1.out" 2>&1; then
        show "/tmp/create-$1.out" "xl create ${2:+$2 }/tmp/$1.cfg"
        # A domain the failed xl left behind would distort everything after it.
        _left=$(xl domid "$1" 2>/dev/null)
        if [ -n "$_left" ]; then
            echo "INFO: bench: xl create of $1 failed but left domain $_left: destroying it"
            xl destroy "$_left" >/dev/null 2>&1 || echo "INFO: bench: xl destroy $_left failed too"
        fi
        return 1
    fi
    now_ms
    G_CREATE=$((NOW - G_T0))
    G_ID=$(xl domid "$1" 2>/dev/null)
    if [ -z "$G_ID" ]; then
        G_DEAD=$(last_domid "$1")
        [ "$G_DEAD" != "$_prev" ] || G_DEAD=""
        echo "INFO: bench: guest $1 (domain ${G_DEAD:-id unknown}) vanished right after xl create"
        return 2
    fi
}

# timed_boot NAME: timed_create NAME, then wait for its data/booted. Sets G_ID, G_CREATE,
# G_BOOT (ms, xl create start to data/booted). Returns 0 when booted, 1 if xl create
# failed, 2 if the domain died or vanished, 3 on time-out.
timed_boot() {
    timed_create "$1" || return $?
    # The first event of xenstore-watch is the initial one (registered); the second is
    # the guest's write. Its lines are stamped as they arrive.
    _node=/local/domain/$G_ID/data/booted
    rm -f /tmp/boot.fifo /tmp/boot.events
    mkfifo /tmp/boot.fifo
    timeout "$GUEST_BOOT_TIMEOUT" xenstore-watch -n 2 "$_node" >/tmp/boot.fifo 2>/dev/null &
    _wpid=$!
    stamp </tmp/boot.fifo >/tmp/boot.events &
    _spid=$!
    _w=0 _r=0
    while kill -0 "$_spid" 2>/dev/null; do
        sleep 1
        _w=$((_w + 1))
        if [ "$_w" = 2 ] && [ "$(wc -l </tmp/boot.events)" = 1 ] && xs xenstore-exists "$_node"; then
            # Written before the watch was registered (not seen so far: the guest boots for
            # seconds): the time it was seen is all there is.
            now_ms
            echo "$NOW $_node (seen after the watch was registered)" >>/tmp/boot.events
            kill "$_wpid" 2>/dev/null
            break
        fi
        if [ $((_w % 5)) = 0 ] && domain_gone "$G_ID"; then
            echo "INFO: bench: domain $G_ID ($1) died while booting: $(timeout 10 xl dmesg 2>/dev/null | grep -E "d$G_ID(v[0-9]+)? " | grep -v -e ' save: ' -e ' restore: ' | tail -n 2 | tr '\n' ' ')"
            _r=2
            break
        fi
    done
    kill "$_wpid" 2>/dev/null
    wait "$_spid" 2>/dev/null
    rm -f /tmp/boot.fifo
    [ "$_r" = 0 ] || return "$_r"
    _at=$(sed -n '2s/ .*//p' /tmp/boot.events)
    if [ -z "$_at" ]; then
        echo "INFO: bench: domain $G_ID ($1) did not write data/booted within ${GUEST_BOOT_TIMEOUT}s"
        return 3
    fi
    G_BOOT=$((_at - G_T0))
    return 0
}

# guest_lost NAME STATUS: reports a guest that timed_create/timed_boot did not bring up
# (STATUS 2: died or vanished; 3: did not boot in time) as a failed step NAME-boot with what
# was seen (guest_failed); nothing for 0 and 1 (a failed xl create, shown already).
guest_lost() {
    case $2 in
    2) guest_failed "$1-boot" "${G_ID:-$G_DEAD}" "$1" "died or vanished before it wrote data/booted" ;;
    3) guest_failed "$1-boot" "$G_ID" "$1" "did not write data/booted within ${GUEST_BOOT_TIMEOUT}s" ;;
    esac
}

# boot_guest NAME: timed_boot, once more (BOOT_RETRIES) when the guest died while booting
# of an emulation fault (retry_guest: a `RETRY NAME: ...` line); any other failure to boot is
# reported by guest_lost.
boot_guest() {
    _tries=0
    while :; do
        _br=0
        timed_boot "$1" || _br=$?
        if [ "$_br" != 2 ] || [ "$_tries" -ge "${BOOT_RETRIES:-2}" ] || ! retry_guest "$1" "${G_ID:-$G_DEAD}"; then
            guest_lost "$1" "$_br"
            return "$_br"
        fi
        _tries=$((_tries + 1))
        echo "INFO: bench: creating $1 again (attempt $((_tries + 1)))"
        if [ -n "$G_ID" ]; then
            xl destroy "$G_ID" >/dev/null 2>&1
            wait_domain_gone "$G_ID" 30 >/dev/null 2>&1
        fi
    done
}

# timed_destroy ID: `xl destroy ID`, timed (G_DESTROY, ms); the domain must then be gone.
timed_destroy() {
    G_DESTROY=""
    now_ms
    _t0=$NOW
    xl destroy "$1" >"/tmp/destroy-$1.out" 2>&1 || { show "/tmp/destroy-$1.out" "xl destroy $1"; return 1; }
    now_ms
    G_DESTROY=$((NOW - _t0))
    wait_domain_gone "$1" 30 || { echo "INFO: bench: domain $1 still listed 30 s after xl destroy"; return 1; }
}

# --------------------------------------------------------------------------------------
banner "bench (b): $GUESTS guests, one at a time: xl create, boot, xl destroy"
cpu0=$(xenstore_cpu_ms)
creates="" boots="" destroys="" bad="" idle1_done=""
k=1
while [ "$k" -le "$GUESTS" ]; do
    name=bench-g$k
    G_DESTROY=""
    r=0
    boot_guest "$name" || r=$?
    if [ "$r" = 0 ]; then
        bench "guest.create-$k" "$G_CREATE" ms
        bench "guest.boot-$k" "$G_BOOT" ms
        creates="$creates $G_CREATE" boots="$boots $G_BOOT"
        if [ -z "$idle1_done" ]; then
            # One booted guest that does nothing (its init sleeps): who uses the CPU?
            idle_measure idle1 bench-idle1 "$G_ID"
            idle1_done=1
        fi
    else
        bad="$bad $name(boot status $r)"
    fi
    if [ -n "$G_ID" ]; then
        if timed_destroy "$G_ID"; then
            bench "guest.destroy-$k" "$G_DESTROY" ms
            destroys="$destroys $G_DESTROY"
        else
            bad="$bad $name(destroy)"
        fi
    fi
    echo "INFO: bench: guest $k (domain ${G_ID:-?}): create ${G_CREATE:-?} ms, boot ${G_BOOT:-?} ms, destroy ${G_DESTROY:-?} ms"
    k=$((k + 1))
done
# shellcheck disable=SC2086 # word lists on purpose
{
    [ -z "$creates" ] || bench guest.create-med "$(median $creates)" ms
    [ -z "$boots" ] || bench guest.boot-med "$(median $boots)" ms
    [ -z "$destroys" ] || bench guest.destroy-med "$(median $destroys)" ms
}
if [ -z "$bad" ]; then
    pass bench-guests "$GUESTS guests: create$creates ms; boot$boots ms; destroy$destroys ms"
else
    fail bench-guests "failed:$bad (medians over the others)"
fi
[ -n "$idle1_done" ] || fail bench-idle1 "no guest booted"
cpu_delta cpu.guests "$cpu0"

# --------------------------------------------------------------------------------------
if [ "$MULTI_BOOT" = 1 ]; then
    banner "bench (c): $MULTI_GUESTS guests started and booted one after another, then destroyed"
else
    banner "bench (c): $MULTI_GUESTS guests created (paused) one after another, then destroyed"
fi
cpu0=$(xenstore_cpu_ms)
ids="" bad="" create_total=0
k=1
while [ "$k" -le "$MULTI_GUESTS" ]; do
    name=bench-m$k
    r=0
    if [ "$MULTI_BOOT" = 1 ]; then
        boot_guest "$name" || r=$?
    else
        timed_create "$name" -p || r=$?
        guest_lost "$name" "$r"
    fi
    if [ "$r" = 0 ]; then
        bench "multi.create-$k" "$G_CREATE" ms
        [ "$MULTI_BOOT" != 1 ] || bench "multi.boot-$k" "$G_BOOT" ms
        create_total=$((create_total + G_CREATE))
    else
        bad="$bad $name(boot status $r)"
    fi
    [ -z "$G_ID" ] || ids="$ids $G_ID"
    echo "INFO: bench: guest $k of $MULTI_GUESTS (domain ${G_ID:-?}): create ${G_CREATE:-?} ms$([ "$MULTI_BOOT" = 1 ] && echo ", boot ${G_BOOT:-?} ms")"
    k=$((k + 1))
done
if [ -z "$bad" ]; then
    bench multi.create-total "$create_total" ms
    pass bench-multi "$MULTI_GUESTS guests $([ "$MULTI_BOOT" = 1 ] && echo running || echo created paused); xl create took $create_total ms in all"
else
    fail bench-multi "failed:$bad"
fi

if [ "$MULTI_BOOT" = 1 ]; then idle_measure idle bench-idle "${ids# }"; else idle_measure idle bench-idle ""; fi
k=1 bad="" destroy_total=0
for id in $ids; do
    if timed_destroy "$id"; then
        bench "multi.destroy-$k" "$G_DESTROY" ms
        destroy_total=$((destroy_total + G_DESTROY))
    else
        bad="$bad $id"
    fi
    k=$((k + 1))
done
if [ -z "$bad" ] && [ -n "$ids" ]; then
    bench multi.destroy-total "$destroy_total" ms
    pass bench-multi-destroy "domains$ids destroyed in $destroy_total ms in all"
else
    fail bench-multi-destroy "domains not destroyed:${bad:- none started}"
fi
cpu_delta cpu.multi "$cpu0"

# --------------------------------------------------------------------------------------
echo "BENCH-RESULTS BEGIN xenstore=${XENSTORE:-stub}"
sed 's/^/    /' "$RESULTS"
echo "BENCH-RESULTS END"
echo "INFO: bench: scenario time $(($(date +%s) - t_start))s"
