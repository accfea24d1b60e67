# Scenario xenstore-toolstack: what Xen 4.21+'s toolstack asks of the xenstore, with the
# answers and effects C xenstored 4.22 gives (each expectation below was read off a run with
# `--xen 4.22 --xenstore c`; CI runs this scenario on both, so the two are compared through
# the same expectations):
#   1. `xl xenstore-quota-get -g` lists the global quotas, names and values as C's;
#      `xl xenstore-quota-set -g nodes=2000` changes one, an unknown name is refused.
#   2. `xl create` of a guest whose configuration has `xenstore_quota=["nodes=NODES",
#      "watches=7"]` and `xenstore_feature_mask=0x5`: its quotas are those, the others the
#      global ones; XS_GET_FEATURE for the domain (dom0, raw through /dev/xen/xenbus) answers
#      4 (C supports 14 = 0xe; 14 & 0x5); `xl xenstore-quota-set DOMID nodes=...` changes it; a domain that does not exist has
#      no quotas (`xl xenstore-quota-get 77` fails).
#   3. The quota holds: the guest (guests/xsclient, xsmode=hog) writes values until the store
#      refuses; it must stop with the quota error after exactly as many values as with C.
# Xen 4.22 only (`xl xenstore-quota-*` and the xl.cfg keys are 4.21's):
#   tests/xen-in-qemu/run.sh xenstore-toolstack --xen 4.22 [--xenstore c|stub]
#
# harness-needs: xenstore linux-vmlinux guest:xsclient
# harness-expect: xenstore xen-init-dom0 xenconsoled quota-global quota-set-global
# harness-expect: quota-set-unknown-name guest-create quota-domain feature-domain
# harness-expect: quota-set-domain quota-unknown-domain hog-boot hog-stopped destroy
# harness-timeout: 400

NODES=${NODES:-20}
start_xenstore || exit 1
case $XEN_VERSION in
4.1[0-9] | 4.20) fail toolstack-version "Xen $XEN_VERSION has no xenstore quota commands: run with --xen 4.22"; exit 1 ;;
esac

# quota_table LINES: `name value` pairs of `xl xenstore-quota-get`, one line.
quota_table() { sed -n 's/^\([a-z-]*\) *\([0-9][0-9]*\)$/\1=\2/p' | tr '\n' ' ' | sed 's/ $//'; }
# expect_step STEP WANT GOT: PASS when equal.
expect_step() {
    if [ "$2" = "$3" ]; then pass "$1" "$3"; else fail "$1" "want '$2', got '$3'"; fi
}
# raw_request TYPE PAYLOAD: one request through dom0's /dev/xen/xenbus (the kernel's
# xenbus device, our ring for both xenstores); prints the reply's payload. The payload's
# words are NUL-separated, with a final NUL.
raw_request() {
    _payload=$(printf '%s' "$2" | tr ' ' '\0' | wc -c)
    _len=$((_payload + 1))
    exec 3<>/dev/xen/xenbus
    # shellcheck disable=SC2059 # the header is printf escapes on purpose
    printf "$(le32 "$1")$(le32 7)$(le32 0)$(le32 "$_len")%s\\000" "$(printf '%s' "$2" | tr ' ' '\0')" >&3
    timeout 5 dd bs=4096 count=1 2>/dev/null <&3 | tail -c +17 | tr '\0' ' ' | sed 's/ *$//'
    exec 3<&-
}
le32() { printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }

DEFAULTS="nodes=1000 watches=128 outstanding=20 memory=2621440 soft-memory=2097152 transactions=10"
DEFAULTS="$DEFAULTS transaction-nodes=1024 node-permissions=5 path-max=2048 node-size=2048"

banner "1. global quotas"
expect_step quota-global "$DEFAULTS" "$(xl xenstore-quota-get -g 2>&1 | quota_table)"
xl xenstore-quota-set -g nodes=2000 >/tmp/qs.log 2>&1
expect_step quota-set-global "${DEFAULTS%% *} -> nodes=2000 ${DEFAULTS#* }" \
    "${DEFAULTS%% *} -> $(xl xenstore-quota-get -g 2>&1 | quota_table)"
if xl xenstore-quota-set -g bogus=3 >/tmp/qs.log 2>&1; then
    fail quota-set-unknown-name "xl xenstore-quota-set -g bogus=3 succeeded"
else
    pass quota-set-unknown-name "refused: $(tr '\n' ' ' </tmp/qs.log)"
fi

banner "2. a guest with xenstore_quota and xenstore_feature_mask"
cfg=$(guest_cfg qhog xsclient hog "xshog=200" "xshogvalue=10")
cat >>"$cfg" <<CFG
xenstore_quota = ["nodes=$NODES", "watches=7"]
xenstore_feature_mask = 0x5
CFG
if ! create_domain guest-create "$cfg"; then
    exit 1
fi
expect_step quota-domain "nodes=$NODES watches=7 ${DEFAULTS#* watches=128 }" \
    "$(xl xenstore-quota-get "$DOMID" 2>&1 | quota_table)"
expect_step feature-domain "4" "$(raw_request 23 "$DOMID")"
xl xenstore-quota-set "$DOMID" nodes=$((NODES + 1)) >/tmp/qs.log 2>&1
xl xenstore-quota-set "$DOMID" nodes="$NODES" >>/tmp/qs.log 2>&1
expect_step quota-set-domain "nodes=$NODES" "$(xl xenstore-quota-get "$DOMID" 2>&1 | quota_table | cut -d' ' -f1)"
if out=$(xl xenstore-quota-get 77 2>&1); then
    fail quota-unknown-domain "xl xenstore-quota-get 77 succeeded: $(echo "$out" | quota_table)"
else
    pass quota-unknown-domain "refused: $out"
fi

banner "3. the guest runs into its node quota"
xl unpause "$DOMID"
if boot_wait "$DOMID" "/local/domain/$DOMID/data/booted" 120; then
    pass hog-boot "domain $DOMID booted"
else
    fail hog-boot "domain $DOMID did not write data/booted"
fi
xs xenstore-write "/local/domain/$DOMID/data/go" 1
hog_reported() { grep -q "GUEST-STEP stored:" "$(console_log qhog)"; }
wait_for 90 hog_reported
report=$(tr -d '\r' <"$(console_log qhog)" 2>/dev/null | sed -n 's/^GUEST-STEP stored: //p' | tail -n 1)
# The nodes the toolstack wrote for the guest (its home, device and control entries) count
# against its quota, so of NODES=20 the hog gets 3 values (and their folders data/qhog,
# d00) with C xenstored 4.22 before ENOSPC: the stub must count the same.
HOG_WANT=${HOG_WANT:-values=3 folders=1}
case $report in
"PASS $HOG_WANT "*stop=ENOSPC* | "PASS $HOG_WANT "*stop=EQUOTA*) pass hog-stopped "$report" ;;
*) fail hog-stopped "want 'PASS $HOG_WANT ... stop=<quota error>', got '${report:-no report}'" ;;
esac
run_step destroy xl destroy "$DOMID"
