# Scenario `memory-exhaustion` (issue 15, "the stub never dies"): guests that each stay
# inside their quotas fill the store together, and the xenstore must survive it and keep
# serving dom0.
#  1. On the chosen xenstore (XENSTORE=stub, the default, `init-xenstore-domain --memory
#     STUB_MEMORY` (8), plus `--maxmem STUB_MAXMEM` when set; or c): memreport and quotas;
#     dom0's `xenstore-write` latency on an idle store (median of LAT_WRITES (20) writes,
#     timed with the kernel's monotonic clock from /proc/timer_list: busybox `date` has no
#     %N); a calibration burst: dom0 stores CAL_NODES (100) values of HOG_VALUE_BYTES
#     (2000), then removes them.
#  2. HOGS (4) guests (guests/xsclient, xsmode=hog, GUEST_MEMORY MiB each) boot, then all
#     start at once (dom0 writes their data/go): each stores 2000-byte values under its home
#     (data/hogN/dDD/kKK, raw XS_WRITEs) until the store refuses for good, and reports how
#     many it stored and why it stopped (ENOMEM, or a quota's ENOSPC/E2BIG/EQUOTA; a write
#     left without a reply for 20 s fails it, and dom0 shows its ring's indices, read with
#     tools/ringpoke while the hog keeps quiet). Meanwhile dom0's writes must succeed (latency again); once all have stopped (the store
#     full as far as guests may fill it): memreport, dom0's latency at full, and `xl create`
#     (paused) + `xl destroy` of one more guest.
#  3. Verdict (step hogs-stopped): on the stub at its fixed size, at least one hog must have
#     been stopped by ENOMEM while below its own quotas, i.e. by the store's memory (if none
#     is, the hogs did not ask for more than the stub has: raise HOGS). With STUB_MAXMEM (the
#     stub grows its memory up to the domain's maximum) and with C, every hog must have got
#     all its quotas allow: stopped by a quota, none by ENOMEM; with STUB_MAXMEM the heap
#     must have grown (heap-grew).
#  4. The hogs are destroyed; the store must be back where it was (store-recovered: the same
#     nodes as before the hogs, but for the toolstack's /libxl and /vm that the first `xl
#     create` makes; on the stub heap in use back to what it was, give or take the larger of
#     RECOVER_SLACK_KIB (512) KiB and RECOVER_PERCENT (10) % of what the hogs added), and
#     dom0 must store the calibration burst again.
#  A hog that dies of an emulation fault (README, "Known limits") is created again, with a
#  RETRY line: while booting, and once more while writing (it then starts anew: its nodes
#  went with its old domain; it is told to go before it runs, since in a full store its
#  own write of data/booted fails); one that dies that way a second time while writing is
#  left out of the verdict (a RETRY line too).
#  A summary block prints what each guest stored, the heap and the latencies. The stub's
#  panic fails the run whatever the steps say (tests/harness/xen_qemu.py, step stub-panic); a xenstore
#  that stops answering ends the scenario early (step xenstore-alive).
# Run: tests/xen-in-qemu/run.sh memory-exhaustion [--set HOGS=5] [--set STUB_MAXMEM=64]
#
# harness-needs: xenstore linux-vmlinux guest:xsclient ringpoke
# harness-expect: xenstore xen-init-dom0 xenconsoled memreport-start dom0-latency-idle
# harness-expect: dom0-calibration hogs-booted dom0-writes-while-hogging hogs-reported
# harness-expect: xenstore-alive memreport-full dom0-writes-at-full extra-guest-create
# harness-expect: extra-guest-destroy hogs-stopped hogs-destroyed store-recovered
# harness-expect: dom0-calibration-again
# harness-timeout: 1200
set -u

HOGS=${HOGS:-4}
GUEST_MEMORY=${GUEST_MEMORY:-96}
HOG_VALUE_BYTES=${HOG_VALUE_BYTES:-2000}
HOG_MAX=${HOG_MAX:-3000}
HOG_TIMEOUT=${HOG_TIMEOUT:-420}
GUEST_BOOT_TIMEOUT=${GUEST_BOOT_TIMEOUT:-180}
CAL_NODES=${CAL_NODES:-100}
LAT_WRITES=${LAT_WRITES:-20}
RECOVER_SLACK_KIB=${RECOVER_SLACK_KIB:-512}
RECOVER_PERCENT=${RECOVER_PERCENT:-10}
STUB_MAXMEM=${STUB_MAXMEM:-}
export XS_TIMEOUT="${XS_TIMEOUT:-20}"
t_start=$(date +%s)
store=${XENSTORE:-stub}
# What the hogs must run into: the store's memory (the stub at its fixed size) or their
# quotas (the stub allowed to grow, or C xenstored in dom0's plentiful memory).
if [ "$store" = stub ] && [ -z "$STUB_MAXMEM" ]; then expect=memory; else expect=quota; fi

start_xenstore || exit 1

# ---------------------------------------------------------------------------------------
# Helpers

# now_ns: the kernel's monotonic clock in nanoseconds (/proc/timer_list's first `now at`);
# /proc/uptime (10 ms steps) when that is missing.
now_ns() {
    _ns=$(sed -n '/^now at /{s/^now at \([0-9]*\) nsecs.*/\1/p;q;}' /proc/timer_list 2>/dev/null)
    [ -n "$_ns" ] || _ns=$(awk '{printf "%d", $1 * 1000000000}' /proc/uptime)
    echo "$_ns"
}
# write_latencies N FILE: N dom0 `xenstore-write`s of one small node, one after the
# other; writes each one's time in microseconds to FILE (a line `fail` for a failed write).
# Three writes first are not timed: early after boot, TCG still translates the programs'
# code on their first runs (idle medians of 0.6 s against 0.1-0.16 s later were seen).
write_latencies() {
    : >"$2"
    for _i in 1 2 3; do xs xenstore-write /memtest/latency "warm-up $_i" >/dev/null 2>&1; done
    _i=1
    while [ "$_i" -le "$1" ]; do
        _t0=$(now_ns)
        if xs xenstore-write /memtest/latency "$_i" >/dev/null 2>&1; then
            echo $((($(now_ns) - _t0) / 1000)) >>"$2"
        else
            echo fail >>"$2"
        fi
        _i=$((_i + 1))
    done
}
# median FILE: the median of FILE's numeric lines (the mean of the middle two for an even
# count); empty when there are none.
median() {
    grep -E '^[0-9]+$' "$1" | sort -n |
        awk '{a[NR] = $1} END {if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}
# latency_step STEP FILE: PASS when every write of FILE succeeded; sets LAT_MEDIAN (µs).
latency_step() {
    _n=$(wc -l <"$2")
    _failed=$(grep -c fail "$2")
    LAT_MEDIAN=$(median "$2")
    _detail="median ${LAT_MEDIAN:-?} us over $_n writes (min $(grep -E '^[0-9]+$' "$2" | sort -n | head -n 1), max $(grep -E '^[0-9]+$' "$2" | sort -n | tail -n 1))"
    if [ "$_failed" = 0 ] && [ "$_n" -gt 0 ]; then
        pass "$1" "$_detail"
    else
        fail "$1" "$_failed of $_n dom0 writes failed; $_detail"
    fi
}
# xenstore_alive: dom0 still gets answers (bounded by 10 s).
xenstore_alive() { timeout 10 xenstore-read /local/domain/0/name >/dev/null 2>&1; }
# give_up WHY: the xenstore stopped answering: every later call would only time out, so
# show what the stub domain printed and end the scenario (its missing steps fail the run).
give_up() {
    fail xenstore-alive "$1"
    if [ "$store" = stub ]; then
        echo "---- Xen console lines of guests (the stub domain's port 0xE9 output), last 40:"
        timeout 10 xl dmesg 2>/dev/null | grep '(d[1-9][0-9]*)' | tail -n 40 | sed 's/^/    | /'
        echo "----"
    fi
    echo "memory-exhaustion: scenario time $(($(date +%s) - t_start))s"
    exit 1
}
# memreport FILE LABEL: the report into FILE, printed. Sets HEAP (`now max used available`,
# bytes) from the stub's `heap:` line (empty without one) and NODES (from `nodes: N`).
memreport() {
    xs_memreport "$1" || echo "memory-exhaustion: xenstore-control memreport failed"
    echo "---- xenstore-control memreport: $2"
    head -n "${MEMREPORT_LINES:-30}" "$1" | sed 's/^/    | /'
    echo "----"
    HEAP=$(sed -n 's/^ *heap: *\([0-9]*\) bytes now, \([0-9]*\) bytes at most, \([0-9]*\) bytes used, \([0-9]*\) bytes available.*/\1 \2 \3 \4/p' "$1" | head -n 1)
    NODES=$(sed -n 's/^ *nodes: *\([0-9]*\).*/\1/p' "$1" | head -n 1)
}
heap_field() { echo "$1" | awk -v i="$2" '{print $i}'; }
mib() { [ -n "$1" ] && awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }
# domain_usage FILE DOMID: `NODES MEMORY` of the domain from a stub memreport.
domain_usage() {
    sed -n "s/^ *domain $2: *nodes \([0-9]*\) .*memory \([0-9]*\) bytes.*/\1 \2/p" "$1" | head -n 1
}
# quota NAME: the xenstore's quota (`xenstore-control quota`: `name : value description`).
quota() {
    xs xenstore-control quota 2>/dev/null | awk -F: -v n="$1" '{k = $1; gsub(/ /, "", k)} k == n {split($2, v, " "); print v[1]; exit}'
}
# store_paths FILE: every node's path, sorted, into FILE; prints how many. Bounded by 120 s,
# not XS_TIMEOUT: listing a full store of ~3000 nodes took over 20 s on a loaded host.
store_paths() {
    XS_TIMEOUT=120 xs xenstore-ls -f 2>/dev/null | sed 's/ = .*//' | sort >"$1"
    wc -l <"$1"
}
# calibration STEP: dom0 stores CAL_NODES values of HOG_VALUE_BYTES under /memtest/cal (20
# per xenstore-write, each call one transaction), checks they are all there, removes them.
calibration() {
    _step=$1
    _v=$(head -c "$HOG_VALUE_BYTES" /dev/zero | tr '\0' c)
    _i=1 _bad=0
    while [ "$_i" -le "$CAL_NODES" ]; do
        set --
        _j=0
        while [ "$_j" -lt 20 ] && [ "$_i" -le "$CAL_NODES" ]; do
            set -- "$@" "/memtest/cal/k$_i" "$_v"
            _i=$((_i + 1)) _j=$((_j + 1))
        done
        xs xenstore-write "$@" >/dev/null 2>&1 || _bad=$((_bad + _j))
    done
    _have=$(xs xenstore-list /memtest/cal 2>/dev/null | wc -l)
    xs xenstore-rm /memtest/cal >/dev/null 2>&1
    # (set -- above replaced the arguments: the step's name is in _step.)
    if [ "$_bad" = 0 ] && [ "$_have" = "$CAL_NODES" ]; then
        pass "$_step" "dom0 stored $CAL_NODES values of $HOG_VALUE_BYTES bytes ($((CAL_NODES * HOG_VALUE_BYTES)) bytes) and removed them"
    else
        fail "$_step" "dom0 stored $_have of $CAL_NODES values of $HOG_VALUE_BYTES bytes ($_bad refused)"
    fi
}
# hog_cfg NAME: xl configuration of a hog guest.
hog_cfg() {
    cat >"/tmp/$1.cfg" <<CFG
name = "$1"
type = "pvh"
kernel = "$GUEST_KERNEL"
ramdisk = "$GUEST_DIR/xsclient.cpio.gz"
extra = "console=hvc0 quiet xsmode=hog xsname=$1 xshog=$HOG_MAX xshogvalue=$HOG_VALUE_BYTES"
memory = $GUEST_MEMORY
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "preserve"
CFG
    echo "/tmp/$1.cfg"
}
# ring_state DOMID: the indices of the domain's xenstore ring (tools/ringpoke). After a
# write that got no reply they tell a request the server never took (req_cons behind
# req_prod) from a reply the guest never took (rsp_cons behind rsp_prod) from both sides
# being done.
ring_state() {
    [ -n "${RINGPOKE:-}" ] || { echo "(no tools/ringpoke)"; return; }
    _gfn=$(xs xenstore-read "/local/domain/$1/store/ring-ref" 2>/dev/null)
    echo "gfn ${_gfn:-?}: $("$RINGPOKE" "$1" "${_gfn:-0}" show 2>&1 | tr '\n' ' ')"
}
# hog_report NAME: the guest's `GUEST-STEP stored: ...` line, without the prefix.
hog_report() {
    tr -d '\r' <"$(console_log "$1")" 2>/dev/null | sed -n 's/^GUEST-STEP stored: //p' | tail -n 1
}
# field NAME TEXT: the value of NAME=VALUE in TEXT.
field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }

# ---------------------------------------------------------------------------------------
banner "1. the store before the hogs ($store${STUB_MAXMEM:+, STUB_MAXMEM=$STUB_MAXMEM MiB})"
quota_nodes=$(quota nodes)
quota_memory=$(quota memory)
echo "INFO: quotas: nodes ${quota_nodes:-?}, memory ${quota_memory:-?} bytes per domain; the hogs should stop at the $expect"
memreport /tmp/memreport-start "at start"
heap_start=$HEAP
if [ "$store" = c ]; then
    pass memreport-start "C xenstored: talloc's report (no heap line to read)"
elif [ -n "$heap_start" ]; then
    pass memreport-start "heap $(heap_field "$heap_start" 1) bytes now, $(heap_field "$heap_start" 2) at most, $(heap_field "$heap_start" 3) used, $(heap_field "$heap_start" 4) available; $NODES nodes"
else
    fail memreport-start "the stub's memreport has no 'heap: A bytes now, B bytes at most, C bytes used, D bytes available' line"
fi
if [ "$store" = stub ] && [ -n "$STUB_MAXMEM" ]; then
    # --maxmem reaches the stub through start_xenstore; its report says how far it may grow.
    at_most=$(heap_field "$heap_start" 2)
    if [ -n "$at_most" ] && [ "$at_most" -gt $(((${STUB_MEMORY:-8}) * 1048576)) ]; then
        pass maxmem "the heap may grow to $at_most bytes ($(mib "$at_most"), domain maximum $STUB_MAXMEM MiB)"
    else
        fail maxmem "STUB_MAXMEM=$STUB_MAXMEM but the heap may grow to ${at_most:-?} bytes only (--maxmem not passed, or not used)"
    fi
fi
write_latencies "$LAT_WRITES" /tmp/lat-idle
latency_step dom0-latency-idle /tmp/lat-idle
lat_idle=$LAT_MEDIAN
calibration dom0-calibration
memreport /tmp/memreport-base "before the hogs (after the calibration burst was removed)"
heap_base=$HEAP
nodes_base=$(store_paths /tmp/paths-base)
echo "INFO: the store holds $nodes_base nodes before the hogs"
if [ "$store" = stub ] && [ -n "$heap_base" ] && [ -n "$quota_nodes" ]; then
    # What the hogs will ask for at most: every node their quota allows, at ~2 KiB each.
    ask=$((HOGS * quota_nodes * (HOG_VALUE_BYTES + 48)))
    echo "INFO: $HOGS hogs may ask for about $ask bytes together ($(mib "$ask")); the stub has $(heap_field "$heap_base" 4) bytes available ($(mib "$(heap_field "$heap_base" 4)"))"
fi

# ---------------------------------------------------------------------------------------
banner "2. $HOGS hogs: boot, then fill the store at once"
# relaunch_hog NAME OLD_DOMID: a hog that died of an emulation fault (README,
# "Known limits"; retry_guest prints the RETRY line) before it started to write is created
# once more, alone; sets DOMID. A hog that died otherwise fails NAME-boot (guest_failed).
relaunch_hog() {
    if ! retry_guest "$1" "$2"; then
        guest_failed "$1-boot" "$2" "$1" "died before it started writing"
        DOMID=$2
        return 2
    fi
    xl destroy "$2" >/dev/null 2>&1
    launch_guest "$1-create-again" "/tmp/$1.cfg" data/booted "$GUEST_BOOT_TIMEOUT"
}
# relaunch_writing_hog NAME OLD_DOMID: a hog that died of an emulation fault while writing
# (retry_guest prints the RETRY line) is created once more (once per hog: `relaunched`
# lists them), told to go before it runs and started; sets DOMID. It is not waited for:
# in a store already full its own write of data/booted fails (ENOMEM, the guests' reserve:
# a clean-clone CI run showed it); its report is waited for, as every hog's. Returns
# non-zero when it died so before (it is then left out of the verdict, after a RETRY line)
# or cannot be created.
relaunched=""
relaunch_writing_hog() {
    case " $relaunched " in *" $1 "*)
        retry_guest "$1-left-out" "$2"
        return 1
        ;;
    esac
    relaunched="$relaunched $1"
    retry_guest "$1-writing" "$2" || return 1
    xl destroy "$2" >/dev/null 2>&1
    create_domain "$1-recreate" "/tmp/$1.cfg" || return 1
    xs xenstore-write "/local/domain/$DOMID/data/go" 1
    xl unpause "$DOMID"
}
# All are created paused, then started together: they boot side by side on the two CPUs.
created=""
i=1
while [ "$i" -le "$HOGS" ]; do
    create_domain "hog$i-create" "$(hog_cfg "hog$i")" && created="$created hog$i:$DOMID"
    i=$((i + 1))
done
for entry in $created; do xl unpause "${entry#*:}"; done
hog_ids=""
for entry in $created; do
    name=${entry%%:*} id=${entry#*:}
    r=0
    boot_wait "$id" "/local/domain/$id/data/booted" "$GUEST_BOOT_TIMEOUT" || r=$?
    if [ "$r" = 2 ]; then
        r=0
        relaunch_hog "$name" "$id" || r=$?
        id=$DOMID
    elif [ "$r" != 0 ]; then
        guest_failed "$name-boot" "$id" "$name" "did not write data/booted within ${GUEST_BOOT_TIMEOUT}s"
    fi
    if [ "$r" = 0 ]; then
        hog_ids="$hog_ids $name:$id"
    else
        xl destroy "$id" >/dev/null 2>&1
    fi
done
# One that booted and then died while it waited (the triple fault seen while another
# domain was being built) is replaced too.
alive_ids=""
for entry in $hog_ids; do
    name=${entry%%:*} id=${entry#*:}
    if domain_dead "$id"; then
        relaunch_hog "$name" "$id" || continue
        id=$DOMID
    fi
    alive_ids="$alive_ids $name:$id"
done
hog_ids=$alive_ids
booted=$(echo "$hog_ids" | wc -w)
if [ "$booted" = "$HOGS" ]; then
    pass hogs-booted "$HOGS hogs booted:$hog_ids"
else
    fail hogs-booted "$booted of $HOGS hogs booted:$hog_ids"
fi
[ "$booted" -gt 0 ] || give_up "no hog booted"

t_go=$(date +%s)
for entry in $hog_ids; do
    xs xenstore-write "/local/domain/${entry#*:}/data/go" 1 || echo "memory-exhaustion: could not write data/go of ${entry%%:*}"
done
# Let them get going, then time dom0's writes while they write.
sleep 5
write_latencies "$LAT_WRITES" /tmp/lat-hog
still=0
for entry in $hog_ids; do [ -n "$(hog_report "${entry%%:*}")" ] || still=$((still + 1)); done
latency_step dom0-writes-while-hogging /tmp/lat-hog
lat_hog=$LAT_MEDIAN
echo "INFO: $still of $booted hogs were still writing when dom0's timed writes ended"

# Wait until every hog reported; check now and then that the xenstore still answers, and
# stop waiting for a hog whose domain is gone (an emulation fault, README).
last_info=$(date +%s)
dead="" flaked="" inspected=""
while :; do
    waiting=""
    for entry in $hog_ids; do
        case " $dead $flaked " in *" ${entry%%:*} "*) continue ;; esac
        [ -n "$(hog_report "${entry%%:*}")" ] || waiting="$waiting ${entry%%:*}"
    done
    [ -z "$waiting" ] && break
    now=$(date +%s)
    [ $((now - t_go)) -ge "$HOG_TIMEOUT" ] && break
    # A hog whose write got no reply keeps quiet for 20 s: the ring's indices now show
    # where the reply is stuck (see ring_state).
    for entry in $hog_ids; do
        case " $inspected " in *" ${entry%%:*} "*) continue ;; esac
        if tr -d '\r' <"$(console_log "${entry%%:*}")" 2>/dev/null | grep -q "^GUEST: hog .*: no reply within"; then
            inspected="$inspected ${entry%%:*}"
            echo "INFO: ${entry%%:*} got no reply; its ring now: $(ring_state "${entry#*:}")"
        fi
    done
    if [ $((now - last_info)) -ge 30 ]; then
        last_info=$now
        xenstore_alive || give_up "dom0 gets no answer from the xenstore $((now - t_go))s after the hogs started"
        for entry in $hog_ids; do
            case " $dead $flaked " in *" ${entry%%:*} "*) continue ;; esac
            _l=$(domain_line "${entry#*:}")
            if [ -z "$_l" ] || echo "$_l" | awk '{print $5}' | grep -q '[cs]'; then
                # An emulation fault (README, "Known limits"): that hog is created again
                # and starts writing anew (its old nodes went with its domain), once per
                # hog; a second one leaves it out of the verdict (a RETRY line each). Any
                # other end of a hog fails the run.
                if died_of_emulation_fault "${entry#*:}"; then
                    if relaunch_writing_hog "${entry%%:*}" "${entry#*:}"; then
                        hog_ids=$(echo " $hog_ids " | sed "s/ ${entry} / ${entry%%:*}:$DOMID /" | xargs)
                        continue
                    fi
                    flaked="$flaked ${entry%%:*}"
                    echo "INFO: ${entry%%:*} (domain ${entry#*:}) died of an emulation fault while writing; left out of the verdict"
                else
                    dead="$dead ${entry%%:*}"
                    guest_failed "${entry%%:*}-alive" "${entry#*:}" "${entry%%:*}" "died while writing"
                fi
            fi
        done
        progress=""
        for entry in $hog_ids; do
            progress="$progress ${entry%%:*}:$(tr -d '\r' <"$(console_log "${entry%%:*}")" 2>/dev/null | sed -n 's/^GUEST: hog progress \([0-9]*\).*/\1/p' | tail -n 1)"
        done
        echo "INFO: $((now - t_go))s: values stored so far (every 100):$progress; waiting for:$waiting"
    fi
    sleep 2
done
t_hog=$(($(date +%s) - t_go))
# The hogs whose reports count: all but those the emulation killed.
reported_ids=""
for entry in $hog_ids; do
    case " $flaked " in *" ${entry%%:*} "*) ;; *) reported_ids="$reported_ids $entry" ;; esac
done
if [ -z "$waiting" ] && [ -z "$dead" ] && [ -n "$reported_ids" ]; then
    pass hogs-reported "$(echo "$reported_ids" | wc -w) hogs stopped and reported within ${t_hog}s${flaked:+ (left out, died of an emulation fault:$flaked)}"
else
    fail hogs-reported "no report after ${t_hog}s from:$waiting${dead:+; died:$dead}${flaked:+; emulation fault:$flaked}"
fi
xenstore_alive || give_up "dom0 gets no answer from the xenstore after the hogs stopped"
pass xenstore-alive "dom0 still gets answers after the hogs filled the store"
for entry in $hog_ids; do
    show "$(console_log "${entry%%:*}")" "console of ${entry%%:*}"
    guest_steps "${entry%%:*}" "${entry%%:*}-"
    domain_dead "${entry#*:}" || echo "    ring of ${entry%%:*}: $(ring_state "${entry#*:}")"
done

# ---------------------------------------------------------------------------------------
banner "3. the store as full as the hogs could make it"
memreport /tmp/memreport-full "with the hogs stopped"
heap_full=$HEAP
nodes_full=$(store_paths /tmp/paths-full)
if [ "$store" = c ] || [ -n "$heap_full" ]; then
    pass memreport-full "${heap_full:+heap $(heap_field "$heap_full" 1) bytes now, $(heap_field "$heap_full" 3) used, $(heap_field "$heap_full" 4) available; }$nodes_full nodes in the store"
else
    fail memreport-full "no heap line in the stub's memreport; $nodes_full nodes in the store"
fi
write_latencies "$LAT_WRITES" /tmp/lat-full
latency_step dom0-writes-at-full /tmp/lat-full
lat_full=$LAT_MEDIAN

# The toolstack must still work while guests cannot grow the store any more.
sed -e 's/^name = .*/name = "extra"/' -e 's/xsmode=hog/xsmode=boot/' "/tmp/hog1.cfg" >/tmp/extra.cfg
extra_id=""
if create_domain extra-guest-create /tmp/extra.cfg; then
    extra_id=$DOMID
    if xl destroy "$extra_id" && wait_domain_gone "$extra_id" 30 && ! xs xenstore-exists "/local/domain/$extra_id"; then
        pass extra-guest-destroy "xl destroy $extra_id: the domain and /local/domain/$extra_id are gone"
    else
        fail extra-guest-destroy "xl destroy $extra_id failed, or the domain or its nodes remain"
    fi
else
    fail extra-guest-destroy "no domain to destroy (xl create failed)"
fi

# ---------------------------------------------------------------------------------------
banner "4. verdict: what stopped each hog (expected: the $expect)"
# For each hog: its report, its usage in the store (stub), and why it stopped:
#   memory: ENOMEM while below its quotas (the store's memory)
#   memory-quota: ENOMEM with its memory within two values of the memory quota
#   quota: ENOSPC, E2BIG or EQUOTA;  limit: HOG_MAX values stored;  error: anything else
by_memory=0 by_quota=0 by_other=0 total_values=0 total_bytes=0 total_nodes=0 rows=""
nreported=$(echo "$reported_ids" | wc -w)
for entry in $reported_ids; do
    name=${entry%%:*} id=${entry#*:}
    rep=$(hog_report "$name")
    values=$(field values "$rep") bytes=$(field value-bytes "$rep") stop=$(field stop "$rep")
    usage=$(domain_usage /tmp/memreport-full "$id")
    dnodes=$(echo "$usage" | awk '{print $1}') dmem=$(echo "$usage" | awk '{print $2}')
    case $stop in
    ENOMEM)
        if [ -n "$dmem" ] && [ -n "$quota_memory" ] && [ "$quota_memory" -gt 0 ] &&
            [ $((dmem + 2 * HOG_VALUE_BYTES)) -ge "$quota_memory" ]; then
            why=memory-quota
            by_quota=$((by_quota + 1))
        else
            why=memory
            by_memory=$((by_memory + 1))
        fi
        ;;
    ENOSPC | E2BIG | EQUOTA) why=quota by_quota=$((by_quota + 1)) ;;
    limit) why=limit by_other=$((by_other + 1)) ;;
    *) why=error by_other=$((by_other + 1)) ;;
    esac
    total_values=$((total_values + ${values:-0}))
    total_bytes=$((total_bytes + ${bytes:-0}))
    total_nodes=$((total_nodes + ${dnodes:-0}))
    row="$name (domain $id): ${values:-?} values, ${bytes:-?} value bytes, stopped by ${stop:-nothing reported} ($why)${dnodes:+; the store charges it $dnodes nodes, $dmem bytes}"
    rows="$rows|$row"
    echo "    $row"
done
counts="$by_memory by the store's memory, $by_quota by a quota, $by_other otherwise, of $nreported"
if [ "$nreported" = 0 ]; then
    fail hogs-stopped "no hog ran"
elif [ "$expect" = memory ]; then
    if [ "$by_memory" -ge 1 ] && [ "$by_other" = 0 ]; then
        pass hogs-stopped "$counts: the store refused guests before its memory ran out"
    elif [ "$by_memory" = 0 ]; then
        fail hogs-stopped "$counts: no hog ran into the store's memory (they asked for less than the stub has: raise HOGS)"
    else
        fail hogs-stopped "$counts"
    fi
else
    if [ "$by_quota" = "$nreported" ]; then
        pass hogs-stopped "$counts: every hog got all its quotas allow"
    else
        fail hogs-stopped "$counts: every hog should have been stopped by a quota only"
    fi
fi
if [ "$store" = stub ] && [ -n "$STUB_MAXMEM" ]; then
    now_start=$(heap_field "$heap_start" 1) now_full=$(heap_field "$heap_full" 1)
    if [ -n "$now_start" ] && [ -n "$now_full" ] && [ "$now_full" -gt "$now_start" ]; then
        pass heap-grew "the heap grew from $now_start to $now_full bytes ($(mib "$now_start") -> $(mib "$now_full"))"
    else
        fail heap-grew "the heap did not grow: ${now_start:-?} bytes at start, ${now_full:-?} with the hogs stopped"
    fi
fi

# ---------------------------------------------------------------------------------------
banner "5. the hogs destroyed: the store as before"
gone_bad=""
for entry in $hog_ids; do
    id=${entry#*:}
    # A hog the emulation killed is gone already; its nodes must be gone all the same.
    if ! { { [ -z "$(domain_line "$id")" ] || { xl destroy "$id" && wait_domain_gone "$id" 30; }; } &&
        ! xs xenstore-exists "/local/domain/$id"; }; then
        gone_bad="$gone_bad ${entry%%:*}:$id"
    fi
done
if [ -z "$gone_bad" ]; then
    pass hogs-destroyed "every hog domain and its /local/domain/ID are gone"
else
    fail hogs-destroyed "left behind:$gone_bad"
fi
memreport /tmp/memreport-end "after the hogs were destroyed"
heap_end=$HEAP
nodes_end=$(store_paths /tmp/paths-end)
used_base=$(heap_field "$heap_base" 3) used_end=$(heap_field "$heap_end" 3)
recover="nodes in the store: $nodes_base before the hogs, $nodes_full with them, $nodes_end after"
# Nodes that came or went. The first `xl create` makes /libxl and /vm, which stay (empty)
# after the last domain is gone, as with C xenstored: those two are expected.
added=$(grep -vxF -f /tmp/paths-base /tmp/paths-end | grep -vx -e /libxl -e /vm | tr '\n' ' ')
removed=$(grep -vxF -f /tmp/paths-end /tmp/paths-base | tr '\n' ' ')
if [ -n "$added$removed" ]; then
    fail store-recovered "$recover; nodes added: ${added:-none}; nodes gone: ${removed:-none}"
elif [ "$store" = c ]; then
    pass store-recovered "$recover"
elif [ -z "$used_base" ] || [ -z "$used_end" ]; then
    fail store-recovered "$recover; no heap figures to compare"
else
    # What the store may keep of what the hogs made it use: tables sized for the peak's
    # node count (the node index does not shrink; 222 KiB were kept after ~3000 nodes,
    # 444 KiB after ~4200), a few percent of it. Values or nodes not given back would be
    # far more: 2 KiB per value stored.
    used_full=$(heap_field "$heap_full" 3)
    slack=$((RECOVER_SLACK_KIB * 1024))
    [ -z "$used_full" ] || [ $(((used_full - used_base) * RECOVER_PERCENT / 100)) -le "$slack" ] ||
        slack=$(((used_full - used_base) * RECOVER_PERCENT / 100))
    kept="heap used $used_base bytes before the hogs, ${used_full:-?} with them, $used_end after ($((used_end - used_base)) bytes kept; allowed: $slack, the larger of $RECOVER_SLACK_KIB KiB and $RECOVER_PERCENT% of what the hogs added)"
    if [ "$used_end" -le $((used_base + slack)) ]; then
        pass store-recovered "$recover; $kept"
    else
        fail store-recovered "$recover; $kept"
    fi
fi
calibration dom0-calibration-again
xs xenstore-rm /memtest >/dev/null 2>&1

# ---------------------------------------------------------------------------------------
banner "memory-exhaustion summary"
heap_line() { [ -n "$1" ] && echo "$(heap_field "$1" 1) bytes now, $(heap_field "$1" 2) at most, $(heap_field "$1" 3) used, $(heap_field "$1" 4) available"; }
echo "INFO: xenstore $store, $( [ "$store" = stub ] && echo "--memory ${STUB_MEMORY:-8} MiB${STUB_MAXMEM:+, --maxmem $STUB_MAXMEM MiB}, ")$HOGS hogs of $GUEST_MEMORY MiB, values of $HOG_VALUE_BYTES bytes"
echo "$rows" | tr '|' '\n' | sed -n 's/^./INFO: stored: &/p'
echo "INFO: stored in all: $total_values values, $total_bytes value bytes$( [ "$total_nodes" -gt 0 ] && echo ", $total_nodes nodes charged to the hogs") in ${t_hog}s; $counts"
[ "$store" = stub ] && echo "INFO: heap at start: $(heap_line "$heap_start" || echo '?')"
[ "$store" = stub ] && echo "INFO: heap with the store full: $(heap_line "$heap_full" || echo '?')"
[ "$store" = stub ] && echo "INFO: heap at the end: $(heap_line "$heap_end" || echo '?')"
echo "INFO: dom0 xenstore-write latency (median of $LAT_WRITES): idle ${lat_idle:-?} us, while hogging ${lat_hog:-?} us, store full ${lat_full:-?} us"
echo "memory-exhaustion: scenario time $(($(date +%s) - t_start))s"
