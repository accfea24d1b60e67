# Helpers for scenario scripts of the Xen-in-QEMU harness (tests/xen-in-qemu/run.sh).
# Installed in dom0 as /harness/lib.sh and sourced (busybox sh) before every scenario, so a
# scenario can simply call these functions. Not meant for the host.
#
# Output convention read by the host side (tests/harness/xen_qemu.py):
#   STEP <name>: PASS [detail]      STEP <name>: FAIL [detail]
# dom0's /init prints the final `SCENARIO DONE` after the scenario script returns.
#
# Variables set by /harness/config (written by run.sh, tests/harness/xen_in_qemu.py):
#   SCENARIO      scenario name            INTERACTIVE  1 under --interactive, else 0
#   STUB_KERNEL   stub image path in dom0 (empty unless the scenario declared `stub`)
#   TEST_STUB_KERNEL  the stub's test image (test modes), empty unless declared `test-stub`
#   STUB_KERNEL_STRIPPED, TEST_STUB_KERNEL_STRIPPED  both images without debug sections
#                 (objcopy --strip-debug on the host), empty unless declared `stub-images`
#   REPO_XEN_CFG  the repository's xen.cfg in dom0 (empty if the repository has none)
#   GUEST_KERNEL  Debian's Linux kernel for guests (empty unless declared `linux-kernel`)
#   GUEST_DIR     folder holding guest initramfs images <name>.cpio.gz (`guest:<name>`)
#   FILES_DIR     the scenario's extra files (scenarios/<name>.files/), if any
#   XENSTORE      stub or c for scenarios declaring `harness-needs: xenstore` (run.sh
#                 --xenstore), else empty
#   HOSTILE_GUEST_KERNEL  a ring-scribbling PVH image (run.sh --hostile-kernel), or empty
#   XEN_VERSION   the Xen booted (run.sh --xen): 4.17, 4.20 or 4.22
#   XEN_TOOLS_PATH  that version's tool folders, first on PATH (dom0's /init puts them there)
#   XL_PROGRAM    that version's xl (the xl function below bounds its calls)
#   TEST_XENSTORE that version's test-xenstore
#   plus any NAME=VALUE given with run.sh --set

# step NAME PASS|FAIL [DETAIL...]
step() {
    _name=$1 _result=$2
    shift 2
    echo "STEP $_name: $_result${*:+ $*}"
}
pass() { _n=$1; shift; step "$_n" PASS "$@"; }
fail() { _n=$1; shift; step "$_n" FAIL "$@"; }
skip() { _n=$1; shift; step "$_n" SKIP "$@"; }

# banner TEXT...: a line a human watching the console can spot.
banner() {
    echo ""
    echo "==================== $* ===================="
}

# xs COMMAND...: run a command that talks to xenstore, bounded by XS_TIMEOUT seconds
# (default 20): with a broken xenstore, clients block for ever.
xs() { timeout "${XS_TIMEOUT:-20}" "$@"; }

# show FILE [LABEL]: print a file indented, for context in the serial log.
show() {
    echo "---- ${2:-$1}"
    if [ -f "$1" ]; then sed 's/^/    | /' "$1"; else echo "    (missing: $1)"; fi
    echo "----"
}

# run_step NAME COMMAND...: run COMMAND (output kept in /tmp/steps/NAME.log, shown on
# failure) and report the step; returns COMMAND's status.
run_step() {
    _name=$1
    shift
    mkdir -p /tmp/steps
    if "$@" >"/tmp/steps/$_name.log" 2>&1; then
        pass "$_name" "$*"
        return 0
    else
        _rc=$?
        show "/tmp/steps/$_name.log" "output of: $*"
        fail "$_name" "exit status $_rc: $*"
        return "$_rc"
    fi
}

# wait_for SECONDS COMMAND...: retry COMMAND once a second until it succeeds.
wait_for() {
    _limit=$1
    shift
    _t=0
    while ! "$@" >/dev/null 2>&1; do
        _t=$((_t + 1))
        [ "$_t" -ge "$_limit" ] && return 1
        sleep 1
    done
    return 0
}

# start_xenstored: Debian's C xenstored + xen-init-dom0 (steps `xenstored`, `xen-init-dom0`).
start_xenstored() {
    run_step xenstored xenstored_and_wait --pid-file /run/xenstored.pid
    run_step xen-init-dom0 xen-init-dom0
}
# xenstored_and_wait ARGS...: start the C xenstored (it daemonizes) and wait until it answers.
xenstored_and_wait() {
    xenstored "$@" || return 1
    wait_for 20 xenstore-ls / || { echo "xenstored does not answer (xenstore-ls /)"; return 1; }
}

# start_xenconsoled: xenconsoled logging every guest console to
# /var/log/xen/console/guest-<name>.log (step `xenconsoled`).
start_xenconsoled() {
    run_step xenconsoled xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file=/run/xenconsoled.pid
}

# start_stub_xenstore MEMORY_MIB [PARAM]: make the stub image ($STUB_KERNEL) the host's
# xenstore instead of the C daemon: `init-xenstore-domain --kernel $STUB_KERNEL --memory
# MEMORY_MIB [--maxmem $STUB_MAXMEM] [--param PARAM]` (--maxmem when STUB_MAXMEM is set,
# e.g. run.sh --set STUB_MAXMEM=64: the stub's heap may then grow to that many MiB, as with
# xencommons' XENSTORE_MAX_DOMAIN_SIZE) (step init-xenstore-domain; it blocks until the stub
# serves dom0, so it is bounded by STUB_START_TIMEOUT seconds, default 60), then xen-init-dom0 and
# xenconsoled. Use instead of start_c_xenstore_stack. If the stub does not answer, dom0's
# xenbus still points at it and every xenstore client (xl list, xenstore-ls, ...) then blocks
# for good: bound such calls with `timeout N` after a failure. (Checked with the harness's
# fake stub: the PVH domain is built and runs, init-xenstore-domain then times out.)
start_stub_xenstore() {
    if [ -z "$STUB_KERNEL" ]; then
        fail init-xenstore-domain "no stub image (declare 'harness-needs: stub')"
        return 1
    fi
    run_step init-xenstore-domain timeout "${STUB_START_TIMEOUT:-60}" \
        init-xenstore-domain --kernel "$STUB_KERNEL" --memory "$1" \
        ${STUB_MAXMEM:+--maxmem "$STUB_MAXMEM"} ${2:+--param "$2"} || return 1
    run_step xen-init-dom0 xen-init-dom0 || return 1
    start_xenconsoled
}

# start_c_xenstore_stack: the three above, the usual start of a scenario.
start_c_xenstore_stack() {
    start_xenstored
    start_xenconsoled
}

# start_xenstore: the xenstore chosen by $XENSTORE (run.sh --xenstore; scenarios declaring
# `harness-needs: xenstore`): `stub` (default) = start_stub_xenstore with STUB_MEMORY MiB
# (default 8), STUB_MAXMEM (--maxmem, unset by default) and STUB_PARAM; `c` =
# start_c_xenstore_stack. Then checks that dom0's clients get answers (step `xenstore`). Returns non-zero if anything failed; the stub's
# lines on Xen's console (port 0xE9) are then printed, and the scenario should stop (every
# later xenstore call would only time out).
start_xenstore() {
    case ${XENSTORE:-stub} in
    c)
        banner "xenstore: Debian's C xenstored in dom0"
        _v=""
        start_c_xenstore_stack
        ;;
    stub)
        banner "xenstore: stub domain $STUB_KERNEL (init-xenstore-domain --memory ${STUB_MEMORY:-8}${STUB_MAXMEM:+ --maxmem $STUB_MAXMEM}${STUB_PARAM:+ --param $STUB_PARAM})"
        _v="init-xenstore-domain did not complete"
        start_stub_xenstore "${STUB_MEMORY:-8}" "${STUB_PARAM:-}" && _v=""
        ;;
    *) fail xenstore "XENSTORE must be stub or c, not '$XENSTORE'"; return 1 ;;
    esac
    if [ -z "${_v:-}" ] && _v=$(xs xenstore-read /local/domain/0/name 2>&1) && [ -n "$_v" ]; then
        pass xenstore "${XENSTORE:-stub}: dom0 reads /local/domain/0/name = $_v"
        [ "${XENSTORE:-stub}" != stub ] || domain_state_path
        return 0
    fi
    fail xenstore "${XENSTORE:-stub}: no working xenstore (${_v:-empty answer})"
    if [ "${XENSTORE:-stub}" = stub ]; then
        echo "---- Xen console lines of guests (the stub domain's port 0xE9 output), last 60:"
        timeout 10 xl dmesg 2>/dev/null | grep '(d[1-9][0-9]*)' | tail -n 60 | sed 's/^/    | /'
        echo "----"
    fi
    return 1
}

# domain_state_path: the way the stub learns of domains that shut down or died
# (docs/xen-interface.md, "Domain deaths"): Xen 4.21 and later must be followed through
# XEN_DOMCTL_get_domain_state, older Xen through getdomaininfo; the stub says which at start
# (step `domain-state-path`). dom0's /init checks after the scenario that the stub never fell
# back (step `domain-state-path-kept`).
domain_state_path() {
    _line=$(timeout 10 "$XL_PROGRAM" dmesg 2>/dev/null | grep -o 'xenstore-stubdom: domain states: .*' | tail -n 1)
    case $XEN_VERSION in
    4.1[0-9] | 4.20) _want=getdomaininfo ;;
    *) _want=XEN_DOMCTL_get_domain_state ;;
    esac
    case $_line in
    *"$_want"*) pass domain-state-path "Xen $XEN_VERSION: ${_line#xenstore-stubdom: }" ;;
    *) fail domain-state-path "Xen $XEN_VERSION wants $_want; the stub said: ${_line:-nothing}" ;;
    esac
    touch /tmp/domain-state-path-checked
}
domain_state_path_kept() {
    [ -e /tmp/domain-state-path-checked ] || return 0
    _fallback=$(timeout 10 "$XL_PROGRAM" dmesg 2>/dev/null | grep 'falling back to getdomaininfo' | tail -n 1)
    if [ -n "$_fallback" ]; then
        fail domain-state-path-kept "the stub fell back: $_fallback"
    else
        pass domain-state-path-kept "no fallback to getdomaininfo on Xen $XEN_VERSION"
    fi
}

# xl: every xl call of a scenario is bounded by XL_TIMEOUT seconds (default 120): libxl
# blocks for ever when xenstore does not answer.
xl() { timeout "${XL_TIMEOUT:-120}" "$XL_PROGRAM" "$@"; }

# apply_placement: runs the scenario variable PLACE (commands for dom0's shell, e.g. `xl
# vcpu-pin 0 all 0`), if set, and shows the vCPUs' placement afterwards. Scenarios that
# measure (bench, xentrace-profile) call it once the xenstore serves.
apply_placement() {
    [ -n "${PLACE:-}" ] || return 0
    echo "INFO: placement: $PLACE"
    sh -c "$PLACE"
    xl vcpu-list
}

# xs_wait SECONDS PATH: wait until PATH exists (each try bounded); prints its value.
xs_wait() {
    _limit=$1 _t=0
    while :; do
        if _v=$(timeout 5 xenstore-read "$2" 2>/dev/null); then
            echo "$_v"
            return 0
        fi
        _t=$((_t + 1))
        [ "$_t" -ge "$_limit" ] && return 1
        sleep 1
    done
}

# boot_wait DOMID PATH SECONDS: wait until PATH exists (status 0), the time is up (1), or
# the domain is gone, shut down or crashed first (2; Xen's last lines about it are shown).
# A Linux PVH guest under TCG occasionally dies with a triple fault early in its boot.
boot_wait() {
    _t=0
    _bn=$(timeout 10 "$XL_PROGRAM" domname "$1" 2>/dev/null)
    while :; do
        timeout 5 xenstore-exists "$2" 2>/dev/null && return 0
        _l=$(domain_line "$1")
        if [ -z "$_l" ] || echo "$_l" | awk '{print $5}' | grep -q '[cs]'; then
            echo "INFO: domain $1 died before it wrote $2 (state '$(echo "$_l" | awk '{print $5}')'):"
            timeout 10 xl dmesg 2>/dev/null | grep -E "d$1(v[0-9]+)? " | grep -v -e ' save: ' -e ' restore: ' |
                tail -n 4 | sed 's/^/    /'
            if [ -n "$_bn" ]; then
                echo "    last lines of its console ($(console_log "$_bn")):"
                tr -d '\r' <"$(console_log "$_bn")" 2>/dev/null | tail -n 25 | sed 's/^/    | /'
            fi
            return 2
        fi
        _t=$((_t + 1))
        if [ "$_t" -ge "$3" ]; then
            boot_stall_report "$1" "$_bn"
            return 1
        fi
        sleep 1
    done
}

# boot_stall_report DOMID NAME: what a guest that neither booted nor died was doing, to
# tell a xenstore stall (xenconsoled never connected, so the guest's console ring filled
# and its kernel spins in its console write) from a guest stuck on its own.
boot_stall_report() {
    echo "INFO: domain $1 is alive but did not boot in time:"
    echo "    $(domain_line "$1")"
    timeout 10 xl dmesg 2>/dev/null | grep -E "d$1(v[0-9]+)?[: ]" | grep -v -e ' save: ' -e ' restore: ' |
        tail -n 4 | sed 's/^/    /'
    echo "    xenconsoled: $(pidof xenconsoled >/dev/null && echo running || echo 'NOT running')"
    echo "    console nodes: $(timeout 5 xenstore-ls "/local/domain/$1/console" 2>&1 | tr '\n' ' ' | cut -c1-300)"
    if [ -n "$2" ]; then
        echo "    console log $(console_log "$2"): $(wc -c <"$(console_log "$2")" 2>/dev/null || echo missing) bytes; last lines:"
        tr -d '\r' <"$(console_log "$2")" 2>/dev/null | tail -n 10 | sed 's/^/    | /'
    fi
}

# guest_cfg NAME GUEST MODE [WORD...]: writes /tmp/NAME.cfg, the xl configuration of a PVH
# Linux guest named NAME ($GUEST_KERNEL) booting guests/GUEST ($GUEST_DIR/GUEST.cpio.gz, the
# scenario's `harness-needs: guest:GUEST`), and prints its path. The guest's init reads
# `xsmode=MODE xsname=NAME` and any further WORDs from its kernel command line (e.g.
# guests/xsclient: boot, stay, poweroff, echo, hog, counter, txhold). GUEST_MEMORY MiB
# (default 128), one vCPU. A crashed guest is preserved, so that `xl dmesg`, `xl list` and
# its console can tell a triple fault (the only death that allows a retry) from anything
# else.
guest_cfg() {
    _gc_name=$1 _gc_guest=$2 _gc_words="xsmode=$3 xsname=$1"
    shift 3
    [ $# = 0 ] || _gc_words="$_gc_words $*"
    cat >"/tmp/$_gc_name.cfg" <<CFG
name = "$_gc_name"
type = "pvh"
kernel = "$GUEST_KERNEL"
ramdisk = "$GUEST_DIR/$_gc_guest.cpio.gz"
extra = "console=hvc0 quiet $_gc_words"
memory = ${GUEST_MEMORY:-128}
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "preserve"
CFG
    echo "/tmp/$_gc_name.cfg"
}

# launch_guest STEP CONFIG NODE SECONDS [HOOK]: create_domain STEP CONFIG (sets DOMID),
# eval HOOK (e.g. start a watch), unpause, then boot_wait for /local/domain/DOMID/NODE. A
# domain that dies before writing NODE is created again (up to BOOT_RETRIES times, default 2) only
# when Xen logged its triple fault (retry_guest: a `RETRY STEP: ...` line); one that dies
# otherwise, hangs, or dies of a triple fault with no retry left, fails step STEP-boot with
# what was seen (guest_failed). Returns boot_wait's status (3 if xl create failed).
launch_guest() {
    _tries=0
    while :; do
        create_domain "$1" "$2" || return 3
        _lg=$(timeout 10 "$XL_PROGRAM" domname "$DOMID" 2>/dev/null)
        [ -z "${5:-}" ] || eval "$5"
        xl unpause "$DOMID"
        _r=0
        boot_wait "$DOMID" "/local/domain/$DOMID/$3" "$4" || _r=$?
        [ "$_r" = 0 ] && return 0
        if [ "$_r" = 2 ] && [ "$_tries" -lt "${BOOT_RETRIES:-2}" ] && retry_guest "$1" "$DOMID"; then
            _tries=$((_tries + 1))
            xl destroy "$DOMID" >/dev/null 2>&1
            continue
        fi
        if [ "$_r" = 2 ]; then
            guest_failed "$1-boot" "$DOMID" "$_lg" "died before it wrote $3"
        else
            guest_failed "$1-boot" "$DOMID" "$_lg" "did not write $3 within $4s"
        fi
        return "$_r"
    done
}

# wait_lines FILE N SECONDS: wait until FILE has at least N lines.
wait_lines() { wait_for "$3" has_lines "$1" "$2"; }
has_lines() { [ "$(wc -l <"$1" 2>/dev/null || echo 0)" -ge "$2" ]; }

# release_watch_start: a dom0 watch on @releaseDomain (`xenstore-watch -n 2`: the initial
# event and one more), registered (initial event seen), its lines in /tmp/release.out and
# its pid in RWPID.
release_watch_start() {
    rm -f /tmp/release.out
    timeout 600 xenstore-watch -n 2 @releaseDomain >/tmp/release.out 2>&1 &
    RWPID=$!
    wait_lines /tmp/release.out 1 20 || echo "$SCENARIO: @releaseDomain watch did not register"
}
# release_watch_check STEP [WHAT]: the watch saw an event after the initial one within 30 s
# (WHAT says after what); the watch is stopped.
release_watch_check() {
    wait_lines /tmp/release.out 2 30
    if [ "$(wc -l </tmp/release.out)" -ge 2 ]; then
        pass "$1" "dom0 xenstore-watch @releaseDomain fired${2:+ after $2}: $(tr '\n' ' ' </tmp/release.out)"
    else
        fail "$1" "no @releaseDomain event within 30s${2:+ of $2} ($(tr '\n' ' ' </tmp/release.out))"
    fi
    kill "$RWPID" 2>/dev/null
    RWPID=
}

# domain_gone_step STEP DOMID SECONDS LABEL: wait_domain_gone, reported as STEP; returns its
# status (0 gone, 1 still there, 2 crashed).
domain_gone_step() {
    _dg=0
    wait_domain_gone "$2" "$3" || _dg=$?
    case $_dg in
    0) pass "$1" "domain $2 ($4) went away after ${WAITED}s" ;;
    1) fail "$1" "domain $2 ($4) still present after ${3}s (state $DOMAIN_STATE)" ;;
    2) fail "$1" "domain $2 ($4) crashed after ${WAITED}s (state $DOMAIN_STATE)" ;;
    esac
    return "$_dg"
}

# test_xenstore_list STEP: the tests `test-xenstore -l` lists (the version's test-xenstore),
# one name a line in /tmp/tx-names; STEP passes with at least 5.
test_xenstore_list() {
    if ! xs "$TEST_XENSTORE" -l >/tmp/tx-list.out 2>&1; then
        show /tmp/tx-list.out "test-xenstore -l"
        fail "$1" "test-xenstore -l failed"
    fi
    # Lines look like "read 1    : Read node with 1 byte data": the name precedes " *:".
    sed -n 's/^\([^:]*[^ :]\) *:.*/\1/p' /tmp/tx-list.out >/tmp/tx-names
    _n=$(wc -l </tmp/tx-names)
    if [ "$_n" -ge 5 ]; then
        pass "$1" "$_n tests: $(tr '\n' ',' </tmp/tx-names)"
    else
        fail "$1" "only $_n test names in test-xenstore -l"
    fi
}

# guest_steps NAME [PREFIX]: re-emit the guest's `GUEST-STEP <step>: PASS|FAIL|SKIP ...`
# console lines (xenconsoled's log of domain NAME) as `STEP PREFIX<step>: ...`.
guest_steps() {
    _log=$(console_log "$1")
    tr -d '\r' <"$_log" 2>/dev/null | sed -n "s/^GUEST-STEP \([A-Za-z0-9_.:/-]*\): /STEP ${2:-guest-}\1: /p"
}

# xs_memreport FILE: `xenstore-control memreport` into FILE. The stub prints its report
# on stdout; the C daemon writes talloc's report to a file named in the request.
xs_memreport() {
    if [ "${XENSTORE:-stub}" = c ]; then
        rm -f /tmp/memreport.c
        xs xenstore-control memreport /tmp/memreport.c >/dev/null 2>&1 && cat /tmp/memreport.c >"$1"
    else
        xs xenstore-control memreport >"$1" 2>&1
    fi
}

# domain_line DOMID: the `xl list` line of a domain (empty if there is none).
domain_line() { xl list 2>/dev/null | awk -v d="$1" 'NR > 1 && $2 == d'; }

# domid_of NAME: the domain id of a running domain, or nothing.
domid_of() { xl domid "$1" 2>/dev/null; }

# wait_domain_gone DOMID SECONDS: wait until `xl list` no longer shows DOMID.
# Returns 0 when gone, 1 on time-out, 2 if the domain crashed (state flag c; needs
# on_crash="preserve" to be seen). Sets WAITED (seconds) and DOMAIN_STATE (last state).
wait_domain_gone() {
    WAITED=0
    DOMAIN_STATE=
    while :; do
        _line=$(domain_line "$1")
        [ -z "$_line" ] && return 0
        DOMAIN_STATE=$(echo "$_line" | awk '{print $5}')
        case $DOMAIN_STATE in *c*) return 2 ;; esac
        [ "$WAITED" -ge "$2" ] && return 1
        sleep 1
        WAITED=$((WAITED + 1))
    done
}

# triple_fault_line DOMID: Xen's line about the triple fault of domain DOMID in `xl dmesg`
# (`dNvM Triple fault - invoking HVM shutdown action ...`), the emulation flake of QEMU's
# nested SVM (tests/xen-in-qemu/README.md, "Known limits"); status 1 when there is none.
# Domain ids are not reused, so the line is this domain's.
triple_fault_line() {
    [ -n "${1:-}" ] || return 1
    _tfl=$(xl dmesg 2>/dev/null | tr -d '\r' | grep -m1 -E " d$1v[0-9]+ Triple fault") || return 1
    echo "$_tfl"
}

# domain_dead DOMID: the domain is no longer running: not in `xl list`, or shut down or
# crashed (state s or c, e.g. kept by on_crash="preserve").
domain_dead() {
    _dl=$(domain_line "$1")
    [ -z "$_dl" ] && return 0
    case $(echo "$_dl" | awk '{print $5}') in *[sc]*) return 0 ;; esac
    return 1
}

# linux_gs_base_fault FILE: the one line of evidence, when the Linux console log FILE shows
# the other emulation fault of tests/xen-in-qemu/README.md, "Known limits": the guest's
# kernel ran with a GS base of 0. Linux reaches its per-CPU data through %gs; its page-fault
# handler (Debian's 6.1 guest kernel) reads CR2 into %rax and %rbp (`0f 20 d0 0f 1f 00
# 48 89 c5`) and then loads `current` with `mov %gs:DISP,%rax` (`65 48 8b 04 25 DISP`).
# When an oops shows that handler stopped at that load (the `<65>` marks it in the Code
# line) and its %rax, the address of the fault it was handling, equals DISP itself, then a
# %gs: access in kernel mode went to address DISP: the GS base was 0. Only the CPU and the
# hypervisor set a vCPU's GS base; the xenstore has no way to touch another domain's
# registers. Status 1 when FILE shows no such oops.
linux_gs_base_fault() {
    tr -d '\r' <"$1" 2>/dev/null | awk '
        / Code: / && / 0f 20 d0 0f 1f 00 48 89 c5 <65> 48 8b 04 25 / {
            d = $0
            sub(/.* <65> 48 8b 04 25 /, "", d)
            split(d, b, " ")
            disp = "00000000" b[4] b[3] b[2] b[1]
            next
        }
        / BUG: / && bug == "" { bug = $0; sub(/.*\] /, "", bug) }
        disp != "" && / RAX: / {
            rax = $0
            sub(/.* RAX: /, "", rax)
            if (substr(rax, 1, 16) == disp) {
                sub(/^0+/, "", disp)
                print "its Linux handled a page fault at 0x" disp ", the displacement of its own %gs:0x" disp " load (GS base 0 in kernel mode)" (bug == "" ? "" : "; first: " bug)
                found = 1
                exit
            }
            disp = ""
        }
        END { exit !found }'
}

# emulation_fault_line DOMID: the evidence that domain DOMID died of one of the emulation
# faults of tests/xen-in-qemu/README.md, "Known limits": Xen's line about its triple fault
# (triple_fault_line), or, for a domain that crashed and was kept (on_crash="preserve": its
# name is still in `xl list`), the GS-base fault in its console log (linux_gs_base_fault).
# Status 1 when there is neither.
emulation_fault_line() {
    if _efl=$(triple_fault_line "${1:-}"); then
        echo "died of a triple fault: $_efl"
        return 0
    fi
    _efn=$(domain_line "${1:-none}" | awk '$5 ~ /c/ {print $1}')
    [ -n "$_efn" ] || return 1
    _efl=$(linux_gs_base_fault "$(console_log "$_efn")") || return 1
    echo "crashed, $_efl"
}

# died_of_emulation_fault DOMID: the domain is dead (domain_dead) and emulation_fault_line
# has the evidence. The only thing that allows booting a guest again.
died_of_emulation_fault() {
    domain_dead "$1" && emulation_fault_line "$1" >/dev/null
}

# retry_guest WHAT DOMID: when domain DOMID died of an emulation fault
# (died_of_emulation_fault), prints the one line the harness collects for its summary,
#   RETRY WHAT: domain N died of a triple fault: <its xl dmesg line>
#   RETRY WHAT: domain N crashed, its Linux handled a page fault at 0x... (GS base 0 ...)
# and returns 0: the caller may then boot the guest again. Returns 1 otherwise (no retry:
# the caller reports the guest with guest_failed). WHAT: a step or guest name, no spaces.
retry_guest() {
    domain_dead "$2" && _rg=$(emulation_fault_line "$2") || return 1
    echo "RETRY $1: domain $2 $_rg"
}

# guest_failed STEP DOMID NAME WHAT: a guest (domain DOMID, console log of NAME; either may
# be empty) died, hung or vanished and is not booted again: prints what was seen (its
# `xl list` line, its lines in `xl dmesg`, the tail of its console log) and fails STEP with
# the gist of it (WHAT, e.g. "died before it wrote data/booted").
guest_failed() {
    _gl=$(domain_line "${2:-none}")
    if [ -n "${2:-}" ]; then
        _gd=$(xl dmesg 2>/dev/null | tr -d '\r' | grep -E "[ (]d$2(v[0-9]+)?[ :)]" |
            grep -v -e ' save: ' -e ' restore: ' | tail -n 12)
    else
        _gd=$(xl dmesg 2>/dev/null | tr -d '\r' | tail -n 12)
    fi
    _gc=""
    [ -z "${3:-}" ] || _gc=$(tr -d '\r' 2>/dev/null <"$(console_log "$3")" | tail -n 25)
    if _gt=$(emulation_fault_line "${2:-}"); then
        _why="$_gt; no retry left"
    else
        _why="no emulation fault of domain ${2:-?} (no triple fault in xl dmesg, no GS-base fault on its console), so no retry"
    fi
    echo "---- guest ${3:-?} (domain ${2:-?}) $4; $_why"
    echo "    xl list: ${_gl:-(not listed)}"
    echo "    xl dmesg, its last lines${2:+ (d$2)}:"
    echo "${_gd:-(none)}" | sed 's/^/    | /'
    echo "    console${3:+ $(console_log "$3")}, last lines:"
    echo "${_gc:-(empty or missing)}" | sed 's/^/    | /'
    echo "----"
    fail "$1" "guest ${3:-?} (domain ${2:-?}) $4; $_why; xl list: ${_gl:-not listed}; last xl dmesg line: $(echo "$_gd" | tail -n 1); last console line: $(echo "$_gc" | grep . | tail -n 1)"
}

# last_domid NAME: the domain id that xl's monitor of domain NAME logged last
# (/var/log/xen/xl-NAME.log: "Waiting for domain NAME (domid N) to die", "Domain N has
# shut down"): the id of a guest that vanished right after `xl create` returned.
last_domid() {
    sed -n -e 's/.*(domid \([0-9]*\)).*/\1/p' -e 's/^Domain \([0-9]*\) has shut down.*/\1/p' \
        "/var/log/xen/xl-$1.log" 2>/dev/null | tail -n 1
}

# xen_guest_log DOMID: what the domain wrote to Xen's console (I/O port 0xE9 with
# guest_loglvl=all, or console_io), from `xl dmesg`, with the `(dN) ` prefix removed.
xen_guest_log() { xl dmesg 2>/dev/null | sed -n "s/^.*(d$1) //p"; }

# shutdown_reason NAME: how the domain last shut down, from the log of xl's per-domain
# monitor (/var/log/xen/xl-NAME.log: "Domain N has shut down, reason code R ..."): prints
# poweroff, reboot (also what Xen does on a PVH triple fault), suspend, crash, watchdog,
# soft_reset, or nothing when the log says nothing.
shutdown_reason() {
    _code=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' "/var/log/xen/xl-$1.log" 2>/dev/null | tail -n 1)
    case $_code in
    0) echo poweroff ;; 1) echo reboot ;; 2) echo suspend ;; 3) echo crash ;;
    4) echo watchdog ;; 5) echo soft_reset ;; "") ;; *) echo "code $_code" ;;
    esac
}

# console_log NAME: path of the guest's console log written by xenconsoled (CONSOLE_LOG_DIR:
# only for the harness's own check of the retry evidence on the host, qemu-check).
console_log() { echo "${CONSOLE_LOG_DIR:-/var/log/xen/console}/guest-$1.log"; }

# create_domain STEP CONFIG [KEY=VALUE...]: `xl create -p` (paused) and report STEP; sets
# DOMID to the new domain's id. The caller then starts it with `xl unpause "$DOMID"`.
create_domain() {
    _step=$1
    shift
    mkdir -p /tmp/steps
    DOMID=
    _before=$(xl list 2>/dev/null | awk 'NR > 1 {print $2}' | sort -n | tr '\n' ' ')
    if xl create -p "$@" >"/tmp/steps/$_step.log" 2>&1; then
        for _id in $(xl list 2>/dev/null | awk 'NR > 1 {print $2}'); do
            case " $_before " in *" $_id "*) ;; *) DOMID=$_id ;; esac
        done
        if [ -z "$DOMID" ]; then
            # Not found by comparing `xl list` before and after: ask by name, and show why.
            echo "create_domain: no new domain in \`xl list\` (status/output below); asking xl domid"
            xl list 2>&1 | sed 's/^/    xl list: /'
            _cname=$(sed -n 's/^ *name *= *"\(.*\)".*/\1/p' "$1" | head -n 1)
            for _a in "$@"; do case $_a in name=*) _cname=$(echo "${_a#name=}" | tr -d '"') ;; esac; done
            [ -n "$_cname" ] && DOMID=$(xl domid "$_cname" 2>/dev/null)
        fi
        if [ -z "$DOMID" ]; then
            fail "$_step" "xl create -p $* succeeded but the new domain's id is unknown"
            return 1
        fi
        pass "$_step" "domain $DOMID: xl create -p $*"
        return 0
    else
        _rc=$?
        show "/tmp/steps/$_step.log" "output of: xl create -p $*"
        fail "$_step" "exit status $_rc: xl create -p $*"
        return 1
    fi
}
