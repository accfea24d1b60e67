# Scenario `stub-xenstore`: dom0 boots with the chosen xenstore (XENSTORE=stub, the default:
# `init-xenstore-domain --kernel <stub> --memory 8`; XENSTORE=c: Debian's C xenstored) and
# dom0's clients use it: every xenstore-* client with its common options, xenstore-control
# (help, quota, memreport, check, print) and all of Xen's test-xenstore (each test of `-l`
# on its own, then `-r` random mode; 4.17's test-xenstore always exits 0, so its output is
# parsed). With the stub, `xl list` must show the stub domain (init-xenstore-domain's
# default name `Xenstore`) and /tool/xenstored/domid must name it.
# Run: tests/xen-in-qemu/run.sh stub-xenstore [--xenstore c|stub] [--kernel IMAGE]
# Variables (run.sh --set NAME=VALUE): RANDOM_SECONDS (test-xenstore -r, default 10),
# XS_TIMEOUT (bound of each client call, default 20), STUB_MEMORY, STUB_PARAM.
#
# harness-needs: xenstore
# harness-expect: xenstore xen-init-dom0 xenconsoled xenstore-domain
# harness-expect: xs-write xs-read xs-read-missing xs-exists xs-list xs-ls xs-ls-f xs-ls-p
# harness-expect: xs-chmod xs-watch xs-rm xs-rm-t xs-multi
# harness-expect: ctl-help ctl-quota ctl-memreport ctl-check ctl-print
# harness-expect: test-xenstore-list test-xenstore-all test-xenstore-random
# harness-timeout: 420
set -u

RANDOM_SECONDS=${RANDOM_SECONDS:-10}
export XS_TIMEOUT=${XS_TIMEOUT:-20}

start_xenstore || exit 1

# --------------------------------------------------------------------------------------
banner "the xenstore domain"
xl list | sed 's/^/    xl list: /'
if [ "${XENSTORE:-stub}" = stub ]; then
    id=$(xl list | awk 'NR > 1 && $1 == "Xenstore" {print $2}')
    tool=$(xs xenstore-read /tool/xenstored/domid 2>/dev/null || true)
    if [ -n "$id" ] && [ "$id" != 0 ]; then
        pass xenstore-domain "xl list shows Xenstore as domain $id; /tool/xenstored/domid = ${tool:-missing}"
    else
        fail xenstore-domain "no domain named Xenstore in xl list"
    fi
else
    skip xenstore-domain "XENSTORE=c: xenstored is a dom0 process (pid $(cat /run/xenstored.pid 2>/dev/null))"
fi

# --------------------------------------------------------------------------------------
banner "xenstore-* clients"
T=/stub-xenstore-test
xs xenstore-rm "$T" >/dev/null 2>&1 || true

# check NAME EXPECTED-OUTPUT COMMAND...: the command must succeed and print exactly EXPECTED.
check() {
    _name=$1 _want=$2
    shift 2
    if _out=$(xs "$@" 2>&1); then
        if [ "$_out" = "$_want" ]; then
            pass "$_name" "$* -> $(echo "$_out" | tr '\n' '|')"
            return 0
        fi
        fail "$_name" "$*: printed '$(echo "$_out" | tr '\n' '|')', expected '$(echo "$_want" | tr '\n' '|')'"
        return 1
    fi
    fail "$_name" "$*: exit status $? ($(echo "$_out" | tr '\n' '|'))"
    return 1
}
# refuse NAME COMMAND...: the command must fail (and not time out: status 143).
refuse() {
    _name=$1
    shift
    _out=$(xs "$@" 2>&1)
    _rc=$?
    case $_rc in
    0) fail "$_name" "$*: succeeded, expected a failure ($_out)" ;;
    143) fail "$_name" "$*: timed out after ${XS_TIMEOUT}s" ;;
    *) pass "$_name" "$*: refused as expected ($_out)" ;;
    esac
}

run_step xs-write xs xenstore-write "$T/a" "value a" "$T/b/c" "value c" "$T/empty" ""
check xs-read "value a" xenstore-read "$T/a"
refuse xs-read-missing xenstore-read "$T/no-such-node"
if xs xenstore-exists "$T/b/c" && ! xs xenstore-exists "$T/nope"; then
    pass xs-exists "xenstore-exists: $T/b/c yes, $T/nope no"
else
    fail xs-exists "xenstore-exists gave the wrong answer"
fi
check xs-list "$(printf 'a\nb\nempty')" xenstore-list "$T"
xs xenstore-ls "$T" >/tmp/ls.out 2>&1
if grep -q '^a = "value a"' /tmp/ls.out && grep -q '^ c = "value c"' /tmp/ls.out; then
    pass xs-ls "xenstore-ls $T: $(tr '\n' '|' </tmp/ls.out)"
else
    show /tmp/ls.out; fail xs-ls "unexpected xenstore-ls output"
fi
xs xenstore-ls -f >/tmp/ls-f.out 2>&1
if grep -q "^$T/b/c = \"value c\"" /tmp/ls-f.out && grep -q '^/local/domain/0/name = "Domain-0"' /tmp/ls-f.out; then
    pass xs-ls-f "xenstore-ls -f: $(wc -l </tmp/ls-f.out) nodes, holds $T/b/c and /local/domain/0/name"
else
    show /tmp/ls-f.out; fail xs-ls-f "unexpected xenstore-ls -f output"
fi
xs xenstore-ls -f -p "$T" >/tmp/ls-p.out 2>&1
if grep -q "^$T/a = \"value a\".*(n0)" /tmp/ls-p.out; then
    pass xs-ls-p "xenstore-ls -f -p $T: $(head -n 1 /tmp/ls-p.out)"
else
    show /tmp/ls-p.out; fail xs-ls-p "no '(n0)' permissions on $T/a"
fi
xs xenstore-chmod "$T/a" n0 r5 w6 >/tmp/chmod.out 2>&1
rc=$?
xs xenstore-ls -p "$T" >/tmp/chmod-ls.out 2>&1
if [ "$rc" = 0 ] && grep -q '^a = "value a".*(n0,r5,w6)' /tmp/chmod-ls.out; then
    pass xs-chmod "xenstore-chmod $T/a n0 r5 w6; xenstore-ls -p shows (n0,r5,w6)"
else
    show /tmp/chmod.out "xenstore-chmod output"; show /tmp/chmod-ls.out "xenstore-ls -p $T"
    fail xs-chmod "xenstore-chmod exit status $rc; permissions (n0,r5,w6) expected on $T/a"
fi

# xenstore-watch: -n 1 returns after the initial event; -n 2 after one change.
check xs-watch-initial "$T/a" xenstore-watch -n 1 "$T/a" || true
rm -f /tmp/watch.out
timeout 30 xenstore-watch -n 2 "$T/b" >/tmp/watch.out 2>&1 &
wpid=$!
wait_lines /tmp/watch.out 1 15 || true
xs xenstore-write "$T/b/new" x
wait "$wpid"
if [ "$(cat /tmp/watch.out)" = "$(printf '%s\n%s' "$T/b" "$T/b/new")" ]; then
    pass xs-watch "xenstore-watch -n 2 $T/b: initial event, then $T/b/new"
else
    show /tmp/watch.out; fail xs-watch "expected events $T/b and $T/b/new"
fi

run_step xs-rm xs xenstore-rm "$T/a"
refuse xs-rm-gone xenstore-read "$T/a"
# -t: also remove the parents left empty ($T/b/new is removed first, so $T/b and then...).
xs xenstore-rm "$T/b/new"
if xs xenstore-rm -t "$T/b/c" && ! xs xenstore-exists "$T/b"; then
    pass xs-rm-t "xenstore-rm -t $T/b/c removed the emptied parent $T/b"
else
    fail xs-rm-t "$T/b still exists after xenstore-rm -t $T/b/c"
fi
# The multi-call binary `xenstore`, and a value of 2000 bytes.
big=$(head -c 1500 /dev/zero | tr '\0' 'x')
if xs xenstore write "$T/big" "$big" && [ "$(xs xenstore read "$T/big")" = "$big" ] &&
    xs xenstore rm "$T"; then
    pass xs-multi "xenstore write/read/rm with a 1500-byte value"
else
    fail xs-multi "xenstore write/read/rm of a 1500-byte value"
fi

# --------------------------------------------------------------------------------------
banner "xenstore-control"
ctl() {
    _name=$1
    shift
    if xs xenstore-control "$@" >"/tmp/$_name.out" 2>&1; then
        sed 's/^/    | /' "/tmp/$_name.out" | head -n "${CTL_LINES:-25}"
        pass "$_name" "xenstore-control $* ($(wc -l <"/tmp/$_name.out") lines)"
    else
        _rc=$?
        show "/tmp/$_name.out" "xenstore-control $*"
        fail "$_name" "xenstore-control $*: exit status $_rc"
    fi
}
ctl ctl-help help
ctl ctl-quota quota
ctl ctl-quota-dom0 quota 0
if [ "${XENSTORE:-stub}" = c ]; then
    ctl ctl-memreport memreport /tmp/memreport.c
    if [ -s /tmp/memreport.c ]; then
        echo "    (C xenstored wrote $(wc -l </tmp/memreport.c) lines to /tmp/memreport.c; first lines:)"
        head -n 5 /tmp/memreport.c | sed 's/^/    | /'
    fi
else
    ctl ctl-memreport memreport
fi
ctl ctl-check check
ctl ctl-print print "stub-xenstore scenario says hello"

# --------------------------------------------------------------------------------------
banner "test-xenstore (Xen's own client test)"
TX=$TEST_XENSTORE
test_xenstore_list test-xenstore-list
sed 's/^/    | /' /tmp/tx-list.out
n=$(wc -l </tmp/tx-names)
# test_result NAME FILE RC: a test passed when it exited 0, printed no "failed" and printed
# its timing line ("NAME: <n> ns" or "... avg: ...").
failed_tests=""
while IFS= read -r t; do
    out=/tmp/tx-$(echo "$t" | tr ' ' '_').out
    XS_TIMEOUT=60 xs "$TX" -t "$t" >"$out" 2>&1
    rc=$?
    sname=tx-$(echo "$t" | tr ' ' '-')
    if [ "$rc" = 0 ] && ! grep -qi 'fail' "$out" && grep -q ' ns' "$out"; then
        pass "$sname" "test-xenstore -t '$t': $(grep ' ns' "$out" | head -n 1 | tr -s ' ')"
    else
        show "$out" "test-xenstore -t '$t'"
        fail "$sname" "test-xenstore -t '$t': exit status $rc, $(grep -i 'fail' "$out" | head -n 1)"
        failed_tests="$failed_tests '$t'"
    fi
done </tmp/tx-names
if [ -z "$failed_tests" ] && [ "$n" -ge 5 ]; then
    pass test-xenstore-all "all $n tests passed"
else
    fail test-xenstore-all "failed:$failed_tests"
fi
XS_TIMEOUT=$((RANDOM_SECONDS + 60)) xs "$TX" -r "$RANDOM_SECONDS" >/tmp/tx-random.out 2>&1
rc=$?
tail -n 15 /tmp/tx-random.out | sed 's/^/    | /'
if [ "$rc" = 0 ] && ! grep -qi 'fail' /tmp/tx-random.out; then
    pass test-xenstore-random "test-xenstore -r $RANDOM_SECONDS: $(wc -l </tmp/tx-random.out) lines, no failure"
else
    fail test-xenstore-random "test-xenstore -r $RANDOM_SECONDS: exit status $rc, $(grep -i 'fail' /tmp/tx-random.out | head -n 1)"
fi
# The store still answers and test-xenstore cleaned up after itself.
left=$(xs xenstore-ls -f 2>/dev/null | grep -c 'xenstore-test' || true)
echo "stub-xenstore: nodes left under xenstore-test: $left"
xs xenstore-ls -f 2>/dev/null | grep 'xenstore-test' | head -n 10 | sed 's/^/    left: /'
