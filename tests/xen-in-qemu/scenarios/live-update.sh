# Scenario `live-update`: the stub replaces itself with another image while it serves
# (Debian 4.17's unchanged `xenstore-control live-update [-F] [-t SECONDS] IMAGE`, which
# uploads IMAGE over XS_CONTROL in 2 KiB chunks), keeping every connection, node and watch.
#  1. The stub (the product image, $STUB_KERNEL) serves dom0 and two PVH Linux guests
#     (guests/xsclient): `xsmode=counter` writes data/counter = 1, 2, 3... once a second
#     and keeps one `xenstore-watch data/poke` for its whole life, copying each event's
#     value to data/poke-ack; `xsmode=txhold` copies data/ask to data/answer, and opens and
#     commits a transaction on dom0's request (raw messages on its /dev/xen/xenbus).
#     dom0 writes known nodes with permissions (/lu-test, and under the guests' homes).
#     Each image prints `xenstore-stubdom: image: product build` or `... test build` once
#     at start (step stub-image-line: the first one did).
#  2. A file that is not a PVH ELF image is uploaded (lu-garbage): xenstore-control must
#     fail with the stub's reason, and the old stub keeps serving (lu-garbage-serving: a
#     read and a write work, no `live update: restored` line was added). Then an image
#     padded to 8 MiB more than the stub's memory: `-b` is answered `Allocation failure.`
#     (lu-too-big), and the old stub keeps serving (lu-too-big-serving).
#  3. UPDATES (5) live updates in a row, alternating the stub's two builds (the test
#     image first, then the product image, ...; both stripped of debug sections by the
#     harness, need `stub-images`; LU_STRIPPED=0 uploads the full images). After the
#     k-th (steps lu-K-*): xenstore-control exited 0 (lu-K); the stub's console (xl dmesg)
#     holds k `live update: starting the new image` and k `live update: restored C
#     connections, N nodes, W watches, ...` lines (C >= 3: dom0 and the two guests; W >=
#     1: the counter guest's watch), and the `image:` line of the uploaded build once more
#     (lu-K-console); the whole store, `xenstore-ls -f -p /` sorted, is what it was just
#     before the update, but for data/counter (lu-K-nodes); the counter did not go back and
#     grows again, and the txhold guest answers a new data/ask (lu-K-guests); the counter
#     guest's watch, registered before the first update, fires on dom0's new write of
#     data/poke (lu-K-watch); a new guest boots and is destroyed (lu-K-new-guest) and
#     dom0's @releaseDomain watch fires (lu-K-release).
#  4. The txhold guest opens a transaction and writes data/tx-box in it; first a control
#     without an update: its commit must succeed (tx-control: the test's own traffic does
#     not conflict with it). Then again (tx-open): an update without -F (`-t 5`) must be
#     refused after its timeout with `Domains with long running transactions:`
#     (lu-tx-refused: nothing restored); `-F -t 5` must then go ahead at once, the
#     transaction being older than 5 s by then (C's rule; lu-tx-forced,
#     lu-tx-forced-console, lu-tx-forced-nodes), and the guest's commit of that transaction
#     must then fail with EAGAIN, its write never made (tx-commit-eagain). A guest holds
#     the transaction, as the issue asks.
#  5. An update while dom0 runs `test-xenstore -r LOAD_SECONDS` (60) in the background,
#     starting LOAD_LEAD (5) s before it (lu-load, lu-load-console, lu-load-nodes:
#     compared once test-xenstore ended); test-xenstore must report no failed request
#     (lu-load-requests; 4.17's always exits 0, so its output is read).
#  6. At the end (final-*): dom0's /lu-test nodes and the nodes it wrote in the guests'
#     homes are exactly as written before the first update, permissions included; the
#     counter grows and the watch fires; a new guest boots and is destroyed, and
#     @releaseDomain fires; the console holds one `restored` line per update that should
#     have happened (UPDATES + 2) and one `image:` line per image started.
#  Every xenstore call is bounded (XS_TIMEOUT, 20 s; each xenstore-control live-update by
#  LU_TIMEOUT, 300 s), so a hung stub fails steps instead of hanging the run; a stub that
#  stops answering ends the scenario (step xenstore-alive). The stub's `PANIC` fails the
#  run (the harness's step stub-panic). A guest is booted again only after an emulation
#  fault (README, "Known limits"; a RETRY line): a new guest while booting (launch_guest),
#  the counter or txhold guest when found dead before a stage (up to GUEST_RESTARTS (2)
#  times each; dom0's nodes are then written again for the new domain, and final-nodes
#  compares with that); any other death fails (NAME-alive) and ends the scenario.
#  Needs the stub (--xenstore stub, the default): with c it fails (step xenstore-is-stub).
# Run: tests/xen-in-qemu/run.sh live-update [--kernel IMAGE] [--test-kernel IMAGE]
# Variables (run.sh --set NAME=VALUE): UPDATES (5; fewer leaves expected lu-K-* steps
# missing), LU_STRIPPED (1), LU_TIMEOUT (300), LOAD_SECONDS (60),
# LOAD_LEAD (5), GUEST_BOOT_TIMEOUT (180), GUEST_MEMORY (128), GUEST_RESTARTS (2),
# XS_TIMEOUT (20), SNAPSHOT_TIMEOUT (120), STUB_MEMORY (8), STUB_PARAM.
#
# harness-needs: xenstore test-stub stub-images linux-vmlinux guest:xsclient
# harness-expect: init-xenstore-domain xen-init-dom0 xenconsoled xenstore domain-state-path
# harness-expect: xenstore-is-stub stub-image-line lu-images counter-guest txhold-guest
# harness-expect: nodes-setup guests-before watch-before lu-garbage lu-garbage-serving
# harness-expect: lu-too-big lu-too-big-serving
# harness-expect: lu-1 lu-1-console lu-1-nodes lu-1-guests lu-1-watch
# harness-expect: lu-1-new-guest-create lu-1-new-guest lu-1-release
# harness-expect: lu-2 lu-2-console lu-2-nodes lu-2-guests lu-2-watch
# harness-expect: lu-2-new-guest-create lu-2-new-guest lu-2-release
# harness-expect: lu-3 lu-3-console lu-3-nodes lu-3-guests lu-3-watch
# harness-expect: lu-3-new-guest-create lu-3-new-guest lu-3-release
# harness-expect: lu-4 lu-4-console lu-4-nodes lu-4-guests lu-4-watch
# harness-expect: lu-4-new-guest-create lu-4-new-guest lu-4-release
# harness-expect: lu-5 lu-5-console lu-5-nodes lu-5-guests lu-5-watch
# harness-expect: lu-5-new-guest-create lu-5-new-guest lu-5-release
# harness-expect: tx-control tx-open lu-tx-refused lu-tx-forced lu-tx-forced-console
# harness-expect: lu-tx-forced-nodes tx-commit-eagain lu-load lu-load-console lu-load-nodes
# harness-expect: lu-load-requests final-nodes final-guests final-watch
# harness-expect: final-new-guest-create final-new-guest final-release final-console
# harness-timeout: 2400
set -u

UPDATES=${UPDATES:-5}
LU_STRIPPED=${LU_STRIPPED:-1}
LU_TIMEOUT=${LU_TIMEOUT:-300}
LOAD_SECONDS=${LOAD_SECONDS:-60}
LOAD_LEAD=${LOAD_LEAD:-5}
SNAPSHOT_TIMEOUT=${SNAPSHOT_TIMEOUT:-120}
GUEST_BOOT_TIMEOUT=${GUEST_BOOT_TIMEOUT:-180}
GUEST_MEMORY=${GUEST_MEMORY:-128}
export XS_TIMEOUT="${XS_TIMEOUT:-20}"
t_start=$(date +%s)

start_xenstore || exit 1

# --------------------------------------------------------------------------------------
# Helpers.

# stub_lines PATTERN: how many of the stub's console lines (xl dmesg: `(dN) xenstore-stubdom:
# ...`) contain `xenstore-stubdom: PATTERN`.
stub_lines() { timeout 20 xl dmesg 2>/dev/null | tr -d '\r' | grep -c "xenstore-stubdom: $1"; }
# stub_last PATTERN: the last such line, from `xenstore-stubdom:` on.
stub_last() {
    timeout 20 xl dmesg 2>/dev/null | tr -d '\r' | grep "xenstore-stubdom: $1" | tail -n 1 |
        sed 's/.*\(xenstore-stubdom: \)/\1/'
}
# show_stub_tail N: the stub's last N console lines.
show_stub_tail() {
    echo "---- the stub's console (xl dmesg, lines of domain ${stubid:-?}), last $1:"
    timeout 20 xl dmesg 2>/dev/null | tr -d '\r' | grep "(d${stubid:-[1-9][0-9]*})" | tail -n "$1" | sed 's/^/    | /'
    echo "----"
}
# xenstore_alive: dom0 still gets answers (bounded by 10 s); else the scenario ends (every
# later call would only time out; the steps never reached fail the run as missing).
xenstore_alive() {
    timeout 10 xenstore-read /local/domain/0/name >/dev/null 2>&1 && return 0
    fail xenstore-alive "dom0 gets no answer from the xenstore $1"
    show_stub_tail 60
    echo "live-update: scenario time $(($(date +%s) - t_start))s"
    exit 1
}
# snapshot FILE: the whole store with permissions (`xenstore-ls -f -p /`), sorted (the
# order of children is not part of the contract), without the nodes that change on their
# own: the counter guest's data/counter, and test-xenstore's nodes. Status 1 when the
# listing failed. Bounded by SNAPSHOT_TIMEOUT (120 s): ~200 nodes are ~600 requests, which
# took over 20 s under TCG while another QEMU shared the host.
snapshot() {
    XS_TIMEOUT=$SNAPSHOT_TIMEOUT xs xenstore-ls -f -p / >"$1.raw" 2>&1 || { echo "live-update: xenstore-ls -f -p / failed: $(tail -n 1 "$1.raw")"; return 1; }
    grep -v -e '/data/counter = ' -e 'xenstore-test' "$1.raw" | sort >"$1"
}
# compare_step STEP BEFORE AFTER WHAT: the two snapshots must be equal.
compare_step() {
    if [ ! -s "$2" ] || [ ! -s "$3" ]; then
        fail "$1" "no snapshot of the store $4 (xenstore-ls -f -p / failed)"
    elif cmp -s "$2" "$3"; then
        pass "$1" "the store $4 is what it was ($(wc -l <"$3") nodes with their permissions, data/counter aside)"
    else
        echo "---- diff of xenstore-ls -f -p / (sorted), $4:"
        diff "$2" "$3" | head -n 40 | sed 's/^/    | /'
        echo "----"
        fail "$1" "the store $4 differs (counter guest $(domain_dead "$ida" && echo DEAD || echo alive), txhold guest $(domain_dead "$idb" && echo DEAD || echo alive)): $(diff "$2" "$3" | grep -c '^[-+][^-+]') lines changed, e.g. $(diff "$2" "$3" | grep '^[-+][^-+]' | head -n 2 | tr '\n' ' ' | cut -c1-300)"
    fi
}
# counter_value: the counter guest's data/counter (empty when unreadable).
counter_value() { xs xenstore-read "/local/domain/$ida/data/counter" 2>/dev/null; }
# counter_grows BASE SECONDS: wait until the counter is above BASE; prints the value.
counter_grows() {
    _cg=0
    while :; do
        _cv=$(counter_value)
        case $_cv in '' | *[!0-9]*) ;; *) [ "$_cv" -gt "$1" ] && { echo "$_cv"; return 0; } ;; esac
        _cg=$((_cg + 1))
        [ "$_cg" -ge "$2" ] && { echo "${_cv:-unreadable}"; return 1; }
        sleep 1
    done
}
# guests_check STEP BASE WHAT: the counter guest's counter is at least BASE and then grows
# (within 30 s), and the txhold guest answers a new data/ask (within 30 s).
guests_check() {
    _c1=$(counter_value)
    _detail="counter ${2:-?} before $3, ${_c1:-unreadable} after"
    _ok=1
    case $_c1 in
    '' | *[!0-9]*) _ok=0 ;;
    *) case $2 in '' | *[!0-9]*) ;; *) [ "$_c1" -ge "$2" ] || _ok=0 ;; esac ;;
    esac
    if _c2=$(counter_grows "${_c1:-0}" 30); then
        _detail="$_detail, then $_c2"
    else
        _detail="$_detail, then no growth within 30s (${_c2})"
        _ok=0
    fi
    _ask="$1-$(date +%s)"
    xs xenstore-write "/local/domain/$idb/data/ask" "$_ask"
    if _ans=$(wait_value 30 "/local/domain/$idb/data/answer" "$_ask"); then
        _detail="$_detail; txhold guest answered $_ask"
    else
        _detail="$_detail; txhold guest did not answer $_ask within 30s (data/answer '$_ans')"
        _ok=0
    fi
    if [ "$_ok" = 1 ]; then
        pass "$1" "$_detail"
    else
        guest_state "$ida" "$name_a"
        guest_state "$idb" "$name_b"
        fail "$1" "$_detail"
    fi
}
# wait_value SECONDS PATH VALUE: wait until PATH holds VALUE; prints the last value read.
wait_value() {
    _wv=0
    while :; do
        _v=$(timeout 5 xenstore-read "$2" 2>/dev/null)
        [ "$_v" = "$3" ] && { echo "$_v"; return 0; }
        _wv=$((_wv + 1))
        [ "$_wv" -ge "$1" ] && { echo "$_v"; return 1; }
        sleep 1
    done
}
# guest_state DOMID NAME: how a guest is (its xl list line, its last console lines).
guest_state() {
    echo "---- guest $2 (domain $1): $(domain_line "$1" | tr -s ' ')"
    tr -d '\r' <"$(console_log "$2")" 2>/dev/null | tail -n 8 | sed 's/^/    | /'
    if _gs=$(emulation_fault_line "$1"); then echo "    $_gs"; fi
    echo "----"
}
# watch_check STEP WHAT: dom0 writes the counter guest's data/poke; the guest's watch,
# registered before the first update, must copy it to data/poke-ack within 30 s.
watch_check() {
    _poke="$1-$(date +%s)"
    xs xenstore-write "/local/domain/$ida/data/poke" "$_poke"
    if _ack=$(wait_value 30 "/local/domain/$ida/data/poke-ack" "$_poke"); then
        pass "$1" "the counter guest's watch on data/poke fired $2: data/poke-ack = $_ack ($(xs xenstore-read "/local/domain/$ida/data/poke-events" 2>/dev/null) events so far)"
    else
        guest_state "$ida" "$name_a"
        fail "$1" "no watch event for data/poke = $_poke within 30s $2 (data/poke-ack '$_ack', watch-ended '$(xs xenstore-read "/local/domain/$ida/data/watch-ended" 2>/dev/null)')"
    fi
}
# new_guest STEP RELEASE-STEP NAME: a new guest boots (it writes data/booted) and is
# destroyed; it must leave, and dom0's @releaseDomain watch must fire.
new_guest() {
    _r=0
    launch_guest "$1-create" "$(guest_cfg "$3" xsclient boot)" data/booted "$GUEST_BOOT_TIMEOUT" || _r=$?
    _id=$DOMID
    if [ "$_r" != 0 ]; then
        fail "$1" "guest $3 did not boot (step $1-create-boot, status $_r)"
        [ -z "$_id" ] || xl destroy "$_id" >/dev/null 2>&1
        fail "$2" "no guest to destroy"
        return 1
    fi
    release_watch_start
    if xl destroy "$_id" && wait_domain_gone "$_id" 30; then
        pass "$1" "guest $3 (domain $_id) booted, wrote data/booted and was destroyed"
    else
        fail "$1" "xl destroy $_id failed or domain $_id is still there (state ${DOMAIN_STATE:-?})"
    fi
    release_watch_check "$2" "xl destroy $_id"
}

# Expected console counts: every image started prints its `image:` line once; every
# update that should happen prints one `starting the new image` and one `restored` line.
n_updates=0 n_product=1 n_test=0
# console_step STEP BUILD: the counts after an update that uploaded BUILD (test|product)
# and should have happened.
console_step() {
    _st=$(stub_lines 'live update: starting the new image')
    _rs=$(stub_lines 'live update: restored')
    _pr=$(stub_lines 'image: product build')
    _te=$(stub_lines 'image: test build')
    _last=$(stub_last 'live update: restored')
    _detail="'starting the new image' lines $_st (want $n_updates), 'restored' lines $_rs (want $n_updates), 'image: product build' $_pr (want $n_product), 'image: test build' $_te (want $n_test); last: ${_last:-none}"
    _ok=1
    [ "$_st" = "$n_updates" ] && [ "$_rs" = "$n_updates" ] && [ "$_pr" = "$n_product" ] && [ "$_te" = "$n_test" ] || _ok=0
    # restored C connections, N nodes, W watches, T transactions from N bytes of state
    _conns=$(echo "$_last" | sed -n 's/.*restored \([0-9]*\) connections.*/\1/p')
    _watches=$(echo "$_last" | sed -n 's/.* \([0-9]*\) watches.*/\1/p')
    if [ "$_ok" = 1 ]; then
        if [ -z "$_conns" ] || [ "$_conns" -lt 3 ] || [ -z "$_watches" ] || [ "$_watches" -lt 1 ]; then
            _ok=0
            _detail="$_detail; the last 'restored' line should count >= 3 connections (dom0, two guests) and >= 1 watch"
        fi
    fi
    if [ "$_ok" = 1 ]; then
        pass "$1" "uploaded the $2 build: $_detail"
    else
        show_stub_tail 25
        fail "$1" "uploaded the $2 build: $_detail"
    fi
}
# image_of J: the build the J-th update uploads: odd J the test build, even J the product
# build (the stub starts as the product build).
image_of() { if [ $(($1 % 2)) = 1 ]; then echo test; else echo product; fi; }
path_of() {
    if [ "$1" = test ]; then
        if [ "$LU_STRIPPED" = 1 ]; then echo "$TEST_STUB_KERNEL_STRIPPED"; else echo "$TEST_STUB_KERNEL"; fi
    else
        if [ "$LU_STRIPPED" = 1 ]; then echo "$STUB_KERNEL_STRIPPED"; else echo "$STUB_KERNEL"; fi
    fi
}
# live_update STEP OUT IMAGE [OPTION...]: `xenstore-control live-update OPTION... IMAGE`
# bounded by LU_TIMEOUT, its output in OUT; sets LU_RC and LU_SECONDS.
live_update() {
    _step=$1 _out=$2 _img=$3
    shift 3
    _t0=$(date +%s)
    echo "INFO: $_step: xenstore-control live-update ${*:+$* }$_img ($(wc -c <"$_img" 2>/dev/null || echo '?') bytes)"
    LU_RC=0
    timeout "$LU_TIMEOUT" xenstore-control live-update "$@" "$_img" >"$_out" 2>&1 || LU_RC=$?
    LU_SECONDS=$(($(date +%s) - _t0))
    sed 's/^/    | /' "$_out" | head -n 20
}
# update_step STEP BUILD MIN_SECONDS [OPTION...]: a live update to BUILD that must succeed,
# and not before MIN_SECONDS (give or take the clock's second); counts it.
update_step() {
    _us=$1 _b=$2 _min=$3
    shift 3
    live_update "$_us" "/tmp/$_us.out" "$(path_of "$_b")" "$@"
    n_updates=$((n_updates + 1))
    if [ "$_b" = test ]; then n_test=$((n_test + 1)); else n_product=$((n_product + 1)); fi
    if [ "$LU_RC" = 0 ] && [ "$LU_SECONDS" -lt $((_min - 1)) ]; then
        fail "$_us" "xenstore-control live-update ${*:+$* }<$_b build> exited 0 after ${LU_SECONDS}s, before the ${_min}s it had to wait"
    elif [ "$LU_RC" = 0 ]; then
        pass "$_us" "xenstore-control live-update ${*:+$* }<$_b build> exited 0 after ${LU_SECONDS}s: $(tr '\n' ' ' <"/tmp/$_us.out" | cut -c1-200)"
    else
        show_stub_tail 15
        fail "$_us" "xenstore-control live-update ${*:+$* }<$_b build>: exit status $LU_RC after ${LU_SECONDS}s$([ "$LU_RC" = 124 ] && echo " (killed at LU_TIMEOUT)"): $(tr '\n' ' ' <"/tmp/$_us.out" | cut -c1-300)"
    fi
}

# --------------------------------------------------------------------------------------
banner "the stub and its images"
stubid=$(xl list | awk 'NR > 1 && $1 == "Xenstore" {print $2}')
if [ "${XENSTORE:-stub}" = stub ] && [ -n "$stubid" ]; then
    pass xenstore-is-stub "the stub serves as domain $stubid"
else
    fail xenstore-is-stub "live update is the stub's: XENSTORE=${XENSTORE:-stub}, no Xenstore domain in xl list"
    exit 1
fi
n=$(stub_lines 'image: product build')
m=$(stub_lines 'image: test build')
if [ "$n" = 1 ] && [ "$m" = 0 ]; then
    pass stub-image-line "$(stub_last 'image: ')"
else
    show_stub_tail 20
    fail stub-image-line "want one 'xenstore-stubdom: image: product build' line and no test one; got $n and $m"
fi
images_ok=1
for f in "$(path_of product)" "$(path_of test)"; do
    [ -n "$f" ] && [ -s "$f" ] || images_ok=0
done
if [ "$images_ok" = 1 ]; then
    pass lu-images "LU_STRIPPED=$LU_STRIPPED: product $(path_of product) ($(wc -c <"$(path_of product)") bytes), test $(path_of test) ($(wc -c <"$(path_of test)") bytes)"
else
    fail lu-images "missing image to upload (LU_STRIPPED=$LU_STRIPPED): product '$(path_of product)', test '$(path_of test)'"
fi

# --------------------------------------------------------------------------------------
banner "two guests: a counter with a watch, and a transaction holder"
# dom0_nodes STEP: dom0's known nodes, with permissions naming the two guests: /lu-test and
# data/from-dom0 in each guest's home; their listing is the reference of final-nodes.
big=$(head -c 1500 /dev/zero | tr '\0' 'x')
dom0_nodes() {
    if xs xenstore-write /lu-test/a alpha /lu-test/b/c "value c" /lu-test/empty "" /lu-test/big "$big" \
        /lu-test/deep/1/2/3/4/5 deep /lu-test/odd "a b=c 'q' \"dq\" %s" &&
        xs xenstore-chmod /lu-test n0 &&
        xs xenstore-chmod /lu-test/a n0 "r$ida" &&
        xs xenstore-chmod /lu-test/b "b$idb" r0 &&
        xs xenstore-chmod /lu-test/b/c "w$ida" "r$idb" &&
        xs xenstore-chmod /lu-test/deep/1/2 n0 "r$ida" "w$idb" &&
        xs xenstore-write "/local/domain/$ida/data/from-dom0" "for $ida" "/local/domain/$idb/data/from-dom0" "for $idb" &&
        xs xenstore-chmod "/local/domain/$ida/data/from-dom0" n0 "r$ida" &&
        xs xenstore-chmod "/local/domain/$idb/data/from-dom0" "b$idb" "r$ida"; then
        { xs xenstore-ls -f -p /lu-test && xs xenstore-ls -f -p "/local/domain/$ida/data/from-dom0" &&
            xs xenstore-ls -f -p "/local/domain/$idb/data/from-dom0"; } >/tmp/lu-known-0 2>&1
        sed 's/^/    | /' /tmp/lu-known-0 | cut -c1-160
        pass "$1" "$(wc -l </tmp/lu-known-0) nodes under /lu-test and the guests' data/from-dom0, with permissions naming domains $ida and $idb"
    else
        fail "$1" "writing dom0's nodes or their permissions failed"
    fi
}
# restart_guest ID_VAR NAME_VAR RESTARTS_VAR BASE MODE: when the guest in $ID_VAR (named
# $NAME_VAR) died of an emulation fault (README, "Known limits"; retry_guest prints the
# RETRY line) and has been booted again fewer than GUEST_RESTARTS (2) times, boots a new
# guest in xsclient mode MODE named BASE<n>, sets the three variables to it and _remake=1;
# any other death ends the scenario (step NAME-alive).
restart_guest() {
    eval "_rs_id=\$$1 _rs_name=\$$2 _rs_count=\$$3"
    domain_dead "$_rs_id" || return 0
    if [ "$_rs_count" -lt "${GUEST_RESTARTS:-2}" ] && retry_guest "$_rs_name" "$_rs_id"; then
        _rs_count=$((_rs_count + 1))
        xl destroy "$_rs_id" >/dev/null 2>&1
        _rs_name=$4$_rs_count
        launch_guest "$5-guest-$_rs_count" "$(guest_cfg "$_rs_name" xsclient "$5")" data/booted "$GUEST_BOOT_TIMEOUT" || exit 1
        eval "$1=\$DOMID $2=\$_rs_name $3=\$_rs_count"
        _remake=1
    else
        guest_failed "$_rs_name-alive" "$_rs_id" "$_rs_name" "stopped running (it should run to the end)"
        exit 1
    fi
}
# ensure_guests: the counter and the txhold guest still run (restart_guest); after a
# restart dom0's nodes are written again for the new domain (the reference of final-nodes
# with them: its watch and nodes then span fewer updates).
restarts_a=0 restarts_b=0
ensure_guests() {
    _remake=0
    restart_guest ida name_a restarts_a lucounter counter
    restart_guest idb name_b restarts_b lutxhold txhold
    [ "$_remake" = 0 ] || dom0_nodes nodes-setup-again
}
ida="" idb="" name_a=lucounter name_b=lutxhold
launch_guest counter-guest "$(guest_cfg $name_a xsclient counter)" data/booted "$GUEST_BOOT_TIMEOUT" && ida=$DOMID
launch_guest txhold-guest "$(guest_cfg $name_b xsclient txhold)" data/booted "$GUEST_BOOT_TIMEOUT" && idb=$DOMID
if [ -z "$ida" ] || [ -z "$idb" ]; then
    echo "live-update: a guest did not boot (counter: ${ida:-no}, txhold: ${idb:-no}); the checks need both"
    exit 1
fi
dom0_nodes nodes-setup
guests_check guests-before "" "the first update"
watch_check watch-before "before any update"

# --------------------------------------------------------------------------------------
banner "an upload that is not a PVH ELF image"
yes "this file is not a PVH ELF image, and the stub must refuse to start it" | head -c 40000 >/tmp/garbage
rs0=$(stub_lines 'live update: restored')
live_update lu-garbage /tmp/lu-garbage.out /tmp/garbage
# The reason must be the stub's text (a CONTROL reply), not the strerror() of an XS_ERROR,
# which is what a stub that does not know the command at all gets.
reason=$(sed -n '2p' /tmp/lu-garbage.out)
case $reason in
'' | "Invalid argument" | "Permission denied" | "Function not implemented" | "No such file or directory" | \
    "Operation not permitted" | "Input/output error" | "Cannot allocate memory" | "No space left on device" | \
    "Argument list too long" | "Device or resource busy" | "Resource temporarily unavailable") reason_ok=0 ;;
*) reason_ok=1 ;;
esac
if [ "$LU_RC" != 0 ] && [ "$LU_RC" != 124 ] && grep -q '^Starting live update failed:' /tmp/lu-garbage.out &&
    [ "$reason_ok" = 1 ]; then
    pass lu-garbage "refused (exit status $LU_RC after ${LU_SECONDS}s): $(tr '\n' ' ' </tmp/lu-garbage.out | cut -c1-300)"
else
    fail lu-garbage "want a non-zero exit at the start step ('Starting live update failed:') with the stub's reason (a text, not a bare errno); exit status $LU_RC after ${LU_SECONDS}s: $(tr '\n' ' ' </tmp/lu-garbage.out | cut -c1-300)"
fi
xenstore_alive "after the upload of garbage"
v="garbage-$(date +%s)"
if xs xenstore-write /lu-check/after-garbage "$v" && [ "$(xs xenstore-read /lu-check/after-garbage)" = "$v" ] &&
    [ "$(xs xenstore-read /local/domain/0/name)" = Domain-0 ] &&
    [ "$(stub_lines 'live update: restored')" = "$rs0" ] && [ "$(stub_lines 'live update: starting the new image')" = 0 ]; then
    pass lu-garbage-serving "the old stub still serves: dom0 read its name, wrote and read back /lu-check/after-garbage; no update started or restored"
else
    show_stub_tail 15
    fail lu-garbage-serving "after the garbage: write/read of /lu-check/after-garbage, /local/domain/0/name, or the console ('restored' lines $(stub_lines 'live update: restored'), want $rs0; 'starting' lines $(stub_lines 'live update: starting the new image'), want 0)"
fi
xs xenstore-rm /lu-check

# --------------------------------------------------------------------------------------
banner "an image too big for the stub's memory"
# The stub's heap is at most a few MiB (STUB_MEMORY, 8 by default): an image padded to 8 MiB
# more cannot be received, and `-b` is answered as C answers it, before any data is sent.
cp "$(path_of test)" /tmp/too-big && dd if=/dev/zero bs=1048576 count=8 >>/tmp/too-big 2>/dev/null
live_update lu-too-big /tmp/lu-too-big.out /tmp/too-big
if [ "$LU_RC" != 0 ] && [ "$LU_RC" != 124 ] && grep -q '^Starting live update failed:' /tmp/lu-too-big.out &&
    grep -q '^Allocation failure\.$' /tmp/lu-too-big.out; then
    pass lu-too-big "refused (exit status $LU_RC after ${LU_SECONDS}s): $(tr '\n' ' ' </tmp/lu-too-big.out | cut -c1-300)"
else
    fail lu-too-big "want 'Starting live update failed:' and 'Allocation failure.' for $(wc -c </tmp/too-big) bytes; exit status $LU_RC after ${LU_SECONDS}s: $(tr '\n' ' ' </tmp/lu-too-big.out | cut -c1-300)"
fi
rm -f /tmp/too-big
xenstore_alive "after the image too big"
v="too-big-$(date +%s)"
if xs xenstore-write /lu-check/after-too-big "$v" && [ "$(xs xenstore-read /lu-check/after-too-big)" = "$v" ] &&
    [ "$(stub_lines 'live update: restored')" = "$rs0" ] && [ "$(stub_lines 'live update: starting the new image')" = 0 ]; then
    pass lu-too-big-serving "the old stub still serves: wrote and read back /lu-check/after-too-big; no update started or restored"
else
    show_stub_tail 15
    fail lu-too-big-serving "after the image too big: write/read of /lu-check/after-too-big, or the console ('restored' lines $(stub_lines 'live update: restored'), want $rs0)"
fi
xs xenstore-rm /lu-check

# --------------------------------------------------------------------------------------
k=1
while [ "$k" -le "$UPDATES" ]; do
    b=$(image_of "$k")
    banner "live update $k of $UPDATES: the $b build"
    ensure_guests
    snapshot /tmp/lu-before-$k
    c0=$(counter_value)
    update_step "lu-$k" "$b" 0
    xenstore_alive "after live update $k"
    snapshot /tmp/lu-after-$k
    console_step "lu-$k-console" "$b"
    compare_step "lu-$k-nodes" /tmp/lu-before-$k /tmp/lu-after-$k "after update $k"
    guests_check "lu-$k-guests" "$c0" "update $k"
    watch_check "lu-$k-watch" "after update $k"
    new_guest "lu-$k-new-guest" "lu-$k-release" "lunew$k"
    k=$((k + 1))
done

# --------------------------------------------------------------------------------------
banner "a guest holds a transaction open"
ensure_guests
j=$((UPDATES + 1))
b=$(image_of "$j")
# tx_open G: dom0 asks the txhold guest to open transaction G; prints data/tx-state
# ("G open ID REPLY" once the guest opened it and wrote data/tx-box = inside-G in it).
tx_open() {
    xs xenstore-write "/local/domain/$idb/data/tx-go" "$1"
    _n=0
    while :; do
        _s=$(xs xenstore-read "/local/domain/$idb/data/tx-state" 2>/dev/null)
        case $_s in "$1 open"* | "$1 failed"*) break ;; esac
        _n=$((_n + 1))
        [ "$_n" -ge 30 ] && break
        sleep 1
    done
    echo "$_s"
}
# tx_commit C: dom0 asks the txhold guest to commit its transaction; prints data/tx-result
# ("C REPLY box=VALUE").
tx_commit() {
    xs xenstore-write "/local/domain/$idb/data/tx-commit" "$1"
    _n=0
    while :; do
        _s=$(xs xenstore-read "/local/domain/$idb/data/tx-result" 2>/dev/null)
        case $_s in "$1 "*) break ;; esac
        _n=$((_n + 1))
        [ "$_n" -ge 60 ] && break
        sleep 1
    done
    echo "$_s"
}
# First without an update (tx-control): the same traffic (the guest's report of the open
# transaction, dom0's request to commit) must not make the commit conflict, so that an
# EAGAIN below comes from the update alone.
state=$(tx_open 1)
result=$(tx_commit 1)
if [ "$result" = "1 OK box=inside-1" ]; then
    pass tx-control "without an update the transaction commits: $state; $result"
else
    guest_state "$idb" "$name_b"
    fail tx-control "data/tx-state '$state', data/tx-result = '${result:-missing}' (want '1 OK box=inside-1')"
fi
state=$(tx_open 2)
box=$(xs xenstore-read "/local/domain/$idb/data/tx-box" 2>/dev/null)
case $state in
"2 open "*" OK")
    if [ "$box" = inside-1 ]; then
        pass tx-open "the txhold guest opened transaction ${state#2 open } (its write of data/tx-box = inside-2 answered OK; outside it still reads $box)"
    else
        fail tx-open "data/tx-box reads '$box' outside the open transaction (want inside-1; $state)"
    fi
    ;;
*)
    guest_state "$idb" "$name_b"
    fail tx-open "data/tx-state = '${state:-missing}' (want '2 open ID OK')"
    ;;
esac
rs0=$(stub_lines 'live update: restored')
live_update lu-tx-refused /tmp/lu-tx-refused.out "$(path_of "$b")" -t 5
xenstore_alive "after the refused live update"
rs1=$(stub_lines 'live update: restored')
if [ "$LU_RC" != 0 ] && [ "$LU_RC" != 124 ] && grep -q '^Domains with long running transactions:' /tmp/lu-tx-refused.out &&
    [ "$LU_SECONDS" -ge 4 ] && [ "$rs1" = "$rs0" ]; then
    pass lu-tx-refused "without -F, refused after ${LU_SECONDS}s (exit status $LU_RC): $(tr '\n' ' ' </tmp/lu-tx-refused.out | cut -c1-300)"
else
    fail lu-tx-refused "want a refusal after >= 5s (-t 5) naming 'Domains with long running transactions:' and no 'restored' line ($rs1, was $rs0); exit status $LU_RC after ${LU_SECONDS}s: $(tr '\n' ' ' </tmp/lu-tx-refused.out | cut -c1-300)"
fi
snapshot /tmp/lu-before-tx
# The transaction is older than 5 s by now (the refusal above waited that long): with -F,
# C's rule lets the update go at once (it waits only while a transaction is younger than
# the timeout; the engine's tests check that wait, engine/tests/live_update.rs).
update_step lu-tx-forced "$b" 0 -F -t 5
xenstore_alive "after the forced live update"
snapshot /tmp/lu-after-tx
console_step lu-tx-forced-console "$b"
compare_step lu-tx-forced-nodes /tmp/lu-before-tx /tmp/lu-after-tx "after the forced update"
result=$(tx_commit 2)
if [ "$result" = "2 EAGAIN box=inside-1" ]; then
    pass tx-commit-eagain "the guest's commit of the interrupted transaction: $result"
else
    guest_state "$idb" "$name_b"
    fail tx-commit-eagain "data/tx-result = '${result:-missing}' (want '2 EAGAIN box=inside-1': the commit fails with EAGAIN and its write of data/tx-box was never made)"
fi

# --------------------------------------------------------------------------------------
j=$((j + 1))
b=$(image_of "$j")
banner "a live update under load: test-xenstore -r $LOAD_SECONDS in dom0"
ensure_guests
snapshot /tmp/lu-before-load
tx_t0=$(date +%s)
XS_TIMEOUT=$((LOAD_SECONDS + LU_TIMEOUT + 60)) xs "$TEST_XENSTORE" -r "$LOAD_SECONDS" >/tmp/lu-load.txt 2>&1 &
load_pid=$!
sleep "$LOAD_LEAD"
load_t0=$(date +%s)
update_step lu-load "$b" 0
echo "INFO: the update under load ended $(($(date +%s) - load_t0))s after it started; waiting for test-xenstore"
wait "$load_pid"
load_rc=$?
tx_s=$(($(date +%s) - tx_t0))
xenstore_alive "after the live update under load"
console_step lu-load-console "$b"
snapshot /tmp/lu-after-load
compare_step lu-load-nodes /tmp/lu-before-load /tmp/lu-after-load "after the update under load and test-xenstore"
tail -n 15 /tmp/lu-load.txt | sed 's/^/    | /'
# 4.17's test-xenstore -r prints nothing when all goes well and `NAME: failed (ret = R,
# stage S)` for a failed test, and always exits 0: it must have run its whole time.
if [ "$load_rc" = 0 ] && ! grep -qi 'fail' /tmp/lu-load.txt && [ "$tx_s" -ge $((LOAD_SECONDS - 1)) ]; then
    pass lu-load-requests "test-xenstore -r $LOAD_SECONDS ran ${tx_s}s: $(wc -l </tmp/lu-load.txt) lines of output, no failure"
else
    fail lu-load-requests "test-xenstore -r $LOAD_SECONDS: exit status $load_rc after ${tx_s}s$([ "$load_rc" = 124 ] && echo ' (killed by its bound)'), $(grep -i 'fail' /tmp/lu-load.txt | head -n 2 | tr '\n' ' ')"
fi

# --------------------------------------------------------------------------------------
banner "after all the updates"
ensure_guests
{ xs xenstore-ls -f -p /lu-test && xs xenstore-ls -f -p "/local/domain/$ida/data/from-dom0" &&
    xs xenstore-ls -f -p "/local/domain/$idb/data/from-dom0"; } >/tmp/lu-known-1 2>&1
# xenstore-ls cuts long values: the long and the odd ones are read in full as well.
if cmp -s /tmp/lu-known-0 /tmp/lu-known-1 && [ -s /tmp/lu-known-0 ] &&
    [ "$(xs xenstore-read /lu-test/big)" = "$big" ] &&
    [ "$(xs xenstore-read /lu-test/odd)" = "a b=c 'q' \"dq\" %s" ]; then
    pass final-nodes "dom0's $(wc -l </tmp/lu-known-1) nodes under /lu-test and the guests' data/from-dom0 are as written before the first update, permissions included (the 1500-byte value read in full)"
else
    diff /tmp/lu-known-0 /tmp/lu-known-1 | head -n 30 | sed 's/^/    | /'
    fail final-nodes "dom0's nodes differ from what it wrote before the first update (or /lu-test/big, /lu-test/odd do not read back as written)"
fi
guests_check final-guests "" "the end"
watch_check final-watch "after all the updates"
new_guest final-new-guest final-release lunewfinal
all=$((UPDATES + 2))
st=$(stub_lines 'live update: starting the new image')
rs=$(stub_lines 'live update: restored')
pr=$(stub_lines 'image: product build')
te=$(stub_lines 'image: test build')
if [ "$st" = "$all" ] && [ "$rs" = "$all" ] && [ "$pr" = "$n_product" ] && [ "$te" = "$n_test" ]; then
    pass final-console "$all updates: $st 'starting' and $rs 'restored' lines; images started: $pr product, $te test"
else
    fail final-console "want $all 'starting' and 'restored' lines, $n_product 'image: product build' and $n_test 'image: test build'; got $st, $rs, $pr, $te"
fi
echo "---- the stub's live-update and image lines:"
timeout 20 xl dmesg 2>/dev/null | tr -d '\r' | grep -e 'xenstore-stubdom: live update' -e 'xenstore-stubdom: image:' | sed 's/^/    | /'
echo "----"
echo "INFO: the counter guest's console: its slow or failed writes and its watch events:"
tr -d '\r' <"$(console_log "$name_a")" 2>/dev/null | grep -e 'counter:' -e 'poke event' | tail -n 30 | sed 's/^/    | /'
echo "live-update: scenario time $(($(date +%s) - t_start))s"
