# Scenario `hostile-ring`: a guest that misbehaves on its xenstore connection must lose
# only its own xenstore service; the chosen xenstore (XENSTORE=stub, the default, or c) keeps
# serving dom0 and other guests, does not report the guest as released while it lives, and
# cleans up when it dies (T-38a and T-325 with a liveness check, docs/hostile-guests.md,
# "The advisory tests").
#  1. A bystander guest (guests/xsclient, xsmode=echo) copies data/ask to data/answer
#     through its own ring; `alive-*` steps check dom0 and that guest at each stage.
#  2. guests/hostile (stock parts only, see its init): raw malformed messages through
#     /dev/xen/xenbus (steps hostile-raw-*; XS_READ without NUL only with the stub: C
#     xenstored 4.17 stopped answering everyone after it); then dom0 appends a message
#     header with len 0xffffffff to its request ring (tools/ringpoke, a foreign mapping:
#     step ring-poke) and the guest's next request must go unanswered
#     (hostile-ring-ignored); the stub must have written XENSTORE_ERROR_PROTO (3) in the
#     ring's error word (ring-error-poke). dom0 then checks: xenstore still serves dom0 and the bystander, the hostile domain still
#     runs and no @releaseDomain fired (not-released); `xl destroy` fires @releaseDomain
#     and removes its nodes.
#  3. HOSTILE_GUEST_KERNEL (run.sh --hostile-kernel IMAGE; default: the stub's test image,
#     run.sh --test-kernel or built with the cargo feature test-modes, started with
#     HOSTILE_GUEST_CMDLINE, default `--hostile-ring`, its hostile test mode; the product
#     image that serves as xenstore does not have it): a PVH kernel that scribbles on its
#     own ring. Skipped (step hostile-kernel: SKIP) without an image, or with
#     HOSTILE_FROM_STUB=0. Contract: a PVH ELF (XEN_ELFNOTE_PHYS32_ENTRY) started by
#     `xl create` with type="pvh", memory=32, cmdline=HOSTILE_GUEST_CMDLINE,
#     on_crash="preserve"; it maps its ring (HVM_PARAM_STORE_PFN)
#     and event channel (HVM_PARAM_STORE_EVTCHN), corrupts it (e.g. req_prod = req_cons +
#     1025, rsp_cons = rsp_prod + 2000, a header with len > 4096, garbage bytes) notifying
#     after each, prints `hostile: <what>` lines and finally `hostile: done` to port 0xE9
#     (Xen shows `(dN) hostile: ...`), and then idles until destroyed. The scenario waits
#     for `hostile: done` (HOSTILE_WAIT seconds, default 60), then makes the same checks, and
#     that the error word was XENSTORE_ERROR_RINGIDX (2) after each abuse (ring-error-kernel).
#     Before the abuse the kernel also writes one request without notifying (step
#     unannounced-request): the stub must answer it within its 1 s ring sweep; C
#     xenstored answers only when some other event wakes it (SKIP with XENSTORE=c).
# Run: tests/xen-in-qemu/run.sh hostile-ring [--xenstore c|stub] [--hostile-kernel IMAGE]
#                                          [--test-kernel IMAGE]
#
# harness-needs: xenstore test-stub linux-vmlinux guest:xsclient guest:hostile ringpoke
# harness-expect: xenstore xen-init-dom0 xenconsoled bystander alive-before
# harness-expect: hostile-raw-unknown-type hostile-raw-read-no-nul hostile-raw-introduce
# harness-expect: hostile-raw-alive hostile-raw-is-introduced ring-poke hostile-ring-ignored
# harness-expect: alive-after-ring not-released destroy-hostile release-watch nodes-gone
# harness-expect: hostile-kernel ring-error-kernel unannounced-request alive-end ring-error-poke
# harness-timeout: 600
set -u

export XS_TIMEOUT=${XS_TIMEOUT:-20}
GUEST_MEMORY=${GUEST_MEMORY:-128}
HOSTILE_WAIT=${HOSTILE_WAIT:-60}
t_start=$(date +%s)

start_xenstore || exit 1

# (guest_cfg NAME GUEST MODE [WORD...]: lib/dom0-lib.sh)
# alive STEP: dom0 writes, reads and removes a node, and the bystander echoes a value.
ask=0
alive() {
    ask=$((ask + 1))
    _d=""
    if xs xenstore-write /hostile-test/alive "$ask" && [ "$(xs xenstore-read /hostile-test/alive)" = "$ask" ] &&
        xs xenstore-rm /hostile-test/alive; then
        _d="dom0 ok"
    else
        fail "$1" "dom0 cannot write/read/rm /hostile-test/alive"
        return 1
    fi
    if [ -n "${by_lost:-}" ]; then
        fail "$1" "$_d; the bystander died earlier without an emulation fault (step $by_lost)"
        return 1
    fi
    # Two rounds: the bystander may also die of an emulation fault while it is asked to echo.
    for _round in 1 2; do
        if [ -n "${byid:-}" ] && domain_dead "$byid"; then
            # Linux PVH guests under QEMU's TCG occasionally die of an emulation fault (a
            # triple fault, seen when another domain is being built, or the GS-base oops):
            # not the xenstore's doing; only then (retry_guest's evidence: a `RETRY` line) start a
            # new bystander. A bystander that died otherwise fails the step, with what was
            # seen.
            if ! retry_guest bystander "$byid"; then
                guest_failed "$1" "$byid" bystander "is no longer running (dom0 ok)"
                by_lost=$1
                return 1
            fi
            xl destroy "$byid" >/dev/null 2>&1
            if launch_guest xl-create-bystander "$(guest_cfg bystander xsclient echo)" data/booted 240; then
                byid=$DOMID
                # Its death fired @releaseDomain, as it should: a release watch started
                # before starts over, so that not-released counts only what came after.
                # (The watch may have ended already: `xenstore-watch -n 2` stops after
                # its first event and the death's, which is what not-released would see.)
                if [ -n "${RWPID:-}" ]; then
                    echo "INFO: restarting the @releaseDomain watch after the bystander's death"
                    kill "$RWPID" 2>/dev/null
                    release_watch_start
                fi
            else
                fail "$1" "$_d; a new bystander (domain $DOMID) did not boot"
                return 1
            fi
        fi
        [ -n "${byid:-}" ] || break
        xs xenstore-write "/local/domain/$byid/data/ask" "$ask"
        _n=0
        while [ "$(xs xenstore-read "/local/domain/$byid/data/answer" 2>/dev/null)" != "$ask" ]; do
            _n=$((_n + 1))
            # Dead meanwhile: the next round decides (a new bystander, or a failure).
            domain_dead "$byid" && break
            if [ "$_n" -ge 30 ]; then
                fail "$1" "$_d; the bystander (domain $byid) did not echo $ask within 30s"
                return 1
            fi
            sleep 1
        done
        if [ "$(xs xenstore-read "/local/domain/$byid/data/answer" 2>/dev/null)" = "$ask" ]; then
            _d="$_d; bystander domain $byid echoed $ask after ${_n}s"
            break
        fi
        if [ "$_round" = 2 ]; then
            fail "$1" "$_d; the new bystander (domain $byid) died too before it echoed $ask"
            return 1
        fi
    done
    pass "$1" "$_d"
}
leftovers() {
    xs xenstore-ls -f 2>/dev/null | sed 's/ = .*//' |
        grep -E "^/local/domain/$1(/|\$)|^/libxl/$1(/|\$)|/backend/[^/]*/$1(/|\$)${2:+|^$2(/|\$)}"
}
# hostile_end PREFIX DOMID VMPATH: the domain still runs and no @releaseDomain fired; then
# destroy it: @releaseDomain fires and no node names it any more.
hostile_end() {
    sleep 3
    if [ -n "$(domain_line "$2")" ] && [ "$(wc -l </tmp/release.out)" = 1 ]; then
        pass "${1}not-released" "domain $2 still runs and @releaseDomain did not fire ($(tr '\n' ' ' </tmp/release.out))"
    else
        fail "${1}not-released" "domain line '$(domain_line "$2")', @releaseDomain events: $(tr '\n' ' ' </tmp/release.out)"
    fi
    if xl destroy "$2" && wait_domain_gone "$2" 30; then
        pass "${1}destroy-hostile" "xl destroy $2"
    else
        fail "${1}destroy-hostile" "xl destroy $2 failed or the domain is still there"
    fi
    release_watch_check "${1}release-watch" "the destruction"
    _left=$(leftovers "$2" "$3")
    if [ -z "$_left" ]; then
        pass "${1}nodes-gone" "no node names domain $2"
    else
        echo "$_left" | sed 's/^/    left: /'
        fail "${1}nodes-gone" "$(echo "$_left" | wc -l) nodes of domain $2 remain"
    fi
}

# --------------------------------------------------------------------------------------
banner "a bystander guest and a hostile guest"
if launch_guest xl-create-bystander "$(guest_cfg bystander xsclient echo)" data/booted 240; then
    byid=$DOMID
    pass bystander "domain $byid is up and uses xenstore"
else
    fail bystander "domain $DOMID never wrote data/booted"
    show "$(console_log bystander)"
    byid=""
fi
alive alive-before
# XS_READ without NUL stopped Debian's C xenstored 4.17 altogether: sent only to the stub.
deadly=""
[ "${XENSTORE:-stub}" = stub ] && deadly=xsdeadly=1
t0=$(date +%s)
r=0
launch_guest xl-create-hostile "$(guest_cfg hostile hostile x $deadly)" data/poke-ready 240 release_watch_start || r=$?
hid=$DOMID
hvm=$(xs xenstore-read "/local/domain/$hid/vm" 2>/dev/null)
log=$(console_log hostile)
# B: once the guest is ready, append a header with len 0xffffffff to its request ring.
if [ "$r" = 0 ]; then
    gfn=$(xs xenstore-read "/local/domain/$hid/store/ring-ref")
    if [ -z "${RINGPOKE:-}" ]; then
        skip ring-poke "no tools/ringpoke (no C compiler on the host)"
        xs xenstore-write "/local/domain/$hid/data/no-poke" "no ringpoke tool"
    elif before=$("$RINGPOKE" "$hid" "$gfn" show 2>&1) && "$RINGPOKE" "$hid" "$gfn" header 2 0xffffffff 2>/tmp/poke.err; then
        pass ring-poke "domain $hid ring (gfn $gfn): appended a READ header with len 0xffffffff; before: $before"
    else
        fail ring-poke "ringpoke $hid $gfn: $before $(cat /tmp/poke.err)"
        xs xenstore-write "/local/domain/$hid/data/no-poke" "ringpoke failed"
    fi
else
    fail ring-poke "the hostile guest never wrote data/poke-ready"
fi
n=0
while ! grep -q 'GUEST: hostile done' "$log" 2>/dev/null && [ $n -lt 240 ]; do sleep 1; n=$((n + 1)); done
show "$log" "console of the hostile guest (domain $hid)"
guest_steps hostile hostile-
echo "hostile-ring: the hostile guest finished after $(($(date +%s) - t0))s"
if [ -n "${RINGPOKE:-}" ] && [ -n "${gfn:-}" ]; then
    ring_now=$("$RINGPOKE" "$hid" "$gfn" show 2>&1)
    echo "hostile-ring: ring of domain $hid now: $ring_now"
    # The ring's error word (xenstore-ring.txt): the header announcing 0xffffffff bytes is a
    # protocol error, XENSTORE_ERROR_PROTO (3), which the stub writes before ignoring the ring.
    # ringpoke cannot notify, and Linux's xb_write() notifies only when the server had read
    # everything before (the poked header was not), so the stub may not have looked at this
    # ring yet: its sweep covers recently served rings only. A watch event for the guest
    # makes it serve the ring: memory/target written back with its own value (the balloon
    # driver's watch fires; the target does not change).
    n=0
    while [ "$(echo "$ring_now" | sed -n 's/.* error=\([0-9]*\).*/\1/p')" = 0 ] && [ $n -lt 20 ]; do
        target=$(xs xenstore-read "/local/domain/$hid/memory/target" 2>/dev/null) &&
            xs xenstore-write "/local/domain/$hid/memory/target" "$target"
        sleep 1
        n=$((n + 1))
        ring_now=$("$RINGPOKE" "$hid" "$gfn" show 2>&1)
    done
    echo "hostile-ring: ring of domain $hid after $n watch events: $ring_now"
    ring_error=$(echo "$ring_now" | sed -n 's/.* error=\([0-9]*\).*/\1/p')
    if [ "${XENSTORE:-stub}" != stub ]; then
        skip ring-error-poke "error word $ring_error with C xenstored (the check is the stub's)"
    elif [ "$ring_error" = 3 ]; then
        pass ring-error-poke "error word 3 (XENSTORE_ERROR_PROTO) after the oversized header"
    else
        fail ring-error-poke "error word '${ring_error}' after the oversized header, expected 3 (XENSTORE_ERROR_PROTO)"
    fi
else
    fail ring-error-poke "no ring to read (ringpoke ${RINGPOKE:+present}, ring-ref '${gfn:-}')"
fi
alive alive-after-ring
hostile_end "" "$hid" "$hvm"

# --------------------------------------------------------------------------------------
banner "HOSTILE_GUEST_KERNEL"
if [ -z "${HOSTILE_GUEST_KERNEL:-}" ] && [ -n "${TEST_STUB_KERNEL:-}" ] && [ "${HOSTILE_FROM_STUB:-1}" = 1 ]; then
    HOSTILE_GUEST_KERNEL=$TEST_STUB_KERNEL
fi
if [ -z "${HOSTILE_GUEST_KERNEL:-}" ]; then
    skip hostile-kernel "no HOSTILE_GUEST_KERNEL image (run.sh --hostile-kernel IMAGE, or the stub's test image)"
else
    echo "hostile-ring: hostile kernel $HOSTILE_GUEST_KERNEL, cmdline '${HOSTILE_GUEST_CMDLINE---hostile-ring}'"
    cat >/tmp/hk.cfg <<CFG
name = "hostile-kernel"
type = "pvh"
kernel = "$HOSTILE_GUEST_KERNEL"
cmdline = "${HOSTILE_GUEST_CMDLINE---hostile-ring}"
memory = 32
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "preserve"
CFG
    if create_domain xl-create-hostile-kernel /tmp/hk.cfg; then
        kid=$DOMID
        kvm=$(xs xenstore-read "/local/domain/$kid/vm" 2>/dev/null)
        release_watch_start
        xl unpause "$kid"
        n=0
        while ! xen_guest_log "$kid" | grep -q 'hostile: done' && [ $n -lt "$HOSTILE_WAIT" ]; do sleep 1; n=$((n + 1)); done
        xen_guest_log "$kid" | sed 's/^/    hostile-kernel: /'
        if xen_guest_log "$kid" | grep -q 'hostile: done'; then
            pass hostile-kernel "domain $kid said 'hostile: done' after ${n}s"
        else
            fail hostile-kernel "no 'hostile: done' from domain $kid within ${HOSTILE_WAIT}s"
        fi
        # The error word after each abuse, as the kernel read it: the first abuse (a producer
        # index more than a ring ahead) is XENSTORE_ERROR_RINGIDX (2), and the stub then
        # ignores the ring, so the word stays 2 through the later abuses.
        words=$(xen_guest_log "$kid" | sed -n 's/.*hostile: .*error field now \([0-9]*\).*/\1/p' | tr '\n' ' ')
        if [ "${XENSTORE:-stub}" != stub ]; then
            skip ring-error-kernel "error words '$words' with C xenstored (the check is the stub's)"
        elif [ "$words" = "2 2 2 2 " ]; then
            pass ring-error-kernel "error word 2 (XENSTORE_ERROR_RINGIDX) after the first abuse and unchanged after the 3 others"
        else
            fail ring-error-kernel "error words after the 4 abuses: '$words', expected 2 2 2 2 (XENSTORE_ERROR_RINGIDX, then ignored)"
        fi
        # A request written without a notification (what a lost wake-up looks like) is
        # answered by the stub's periodic ring sweep, which reports it on the console.
        ua=$(xen_guest_log "$kid" | grep -m1 'hostile: unannounced read')
        reported=$(timeout 10 xl dmesg 2>/dev/null | grep -c "domain $kid: missed wake-up")
        case "$ua" in
        *"answered after"*)
            pass unannounced-request "${ua#hostile: }; '$kid: missed wake-up' on the console: ${reported}x" ;;
        *)
            if [ "${XENSTORE:-stub}" = stub ]; then
                fail unannounced-request "${ua:-no report from domain $kid}"
            else
                skip unannounced-request "C xenstored serves a ring only after an event: ${ua#hostile: }"
            fi ;;
        esac
        alive alive-after-kernel
        hostile_end kernel- "$kid" "$kvm"
    fi
fi
alive alive-end
echo "hostile-ring: scenario time $(($(date +%s) - t_start))s"
