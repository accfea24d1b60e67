#!/usr/bin/env bash
# The benchmark on real Xen: Debian's Xen 4.17 + Linux dom0 in QEMU (TCG), the same workload
# (tests/xen-in-qemu/scenarios/bench.sh) once with Debian's C xenstored in dom0 and once with
# this stub domain as the host's xenstore; prints both figures of every measurement and the
# ratio stub/C (lower = the stub is faster), and writes target/bench/xen-results.csv.
# Under TCG absolute times mean little: compare the ratios.
#
# Usage: bench/xen-in-qemu.sh [options]
#   --repeat R         run each side R times, alternating the order (C first in odd rounds),
#                      and compare the medians (default 1)
#   --set NAME=VALUE   a scenario variable for both runs (repeatable): TX_ITER (100),
#                      RANDOM_SECONDS (10), GUESTS (3), MULTI_GUESTS (4), GUEST_MEMORY (128)...
#   --kernel IMAGE     the stub image (default: built with cargo as tests/xen-in-qemu/run.sh
#                      does, honouring CARGO_TARGET_DIR, and copied once so every round runs
#                      the same image)
#   --timeout SECONDS  time limit of each QEMU run (default: the scenario's, 1500)
#   --one-cpu          pin dom0's vCPUs and the stub domain's to CPU 0 (xl vcpu-pin) before
#                      measuring, in both runs: a wake-up of the other side is then a
#                      context switch, not a cross-CPU interrupt (guests still use both CPUs)
#
# What is measured (details in the scenario's header), all in dom0:
#   tx.NAME       Xen's test-xenstore, each test once (-t NAME), TX_RUNS (7) times: the
#                 median ns, through the client's default path (C: its Unix socket; stub:
#                 dom0's ring, there is no socket)
#   txring.NAME   the same through dom0's kernel ring for both (XENSTORED_PATH=/dev/xen/xenbus)
#   tx.all-wall, txring.all-wall   wall time of one whole `test-xenstore -i TX_ITER` (50)
#   txloop.NAME, txringloop.NAME   each test's average ns in that run
#   guest.*       GUESTS PVH Linux guests one at a time: `xl create` until it returns
#                 (create), from `xl create` until the guest wrote data/booted through its
#                 ring (boot), `xl destroy` (destroy); and their medians (*-med)
#   multi.*       MULTI_GUESTS guests started one after another and kept running (create-K
#                 and boot-K with K-1 running), then destroyed one by one; totals
#   idle0.*, idle.*   CPU used (ms per s) during IDLE_SECONDS of nothing, without guests and
#                 with MULTI_GUESTS guests: by the xenstore (the stub domain / xenstored),
#                 per guest, by dom0
#   cpu.*         CPU time of the xenstore during each part (tx, guests, multi)
# Output: the table on stdout and in target/bench/xen-results.txt; target/bench/xen-results.csv
# (measurement,unit,c,stub,ratio_stub_c; medians when --repeat > 1);
# target/bench/xen-results-runs.csv (every figure of every run); the serial logs
# target/bench/xen-in-qemu-bench-{c,stub}-ROUND.log.
# Exit status: 0 when every run passed; 1 when one failed (the message names it: C or stub,
# round, failed steps; the table still shows what was measured); 2 on usage errors.
# A full run (one round, defaults) takes about 6 minutes on 2 idle cores (QEMU alone on
# them), 25-35 minutes when other jobs keep the host busy; --repeat R multiplies that by R.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/tests/lib/setup.sh" || { echo "xen-in-qemu.sh: set-up failed (tests/lib/setup.sh)" >&2; exit 1; }
out=$repo/target/bench
run_sh=$repo/tests/xen-in-qemu/run.sh
started=$SECONDS

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
die() { echo "xen-in-qemu.sh: error: $*" >&2; exit 1; }

repeat=1 kernel="" timeout="" sets=()
while [ $# -gt 0 ]; do
    case $1 in
    --repeat) [ $# -ge 2 ] || usage; repeat=$2; shift 2 ;;
    --repeat=*) repeat=${1#*=}; shift ;;
    --set) [ $# -ge 2 ] || usage; sets+=(--set "$2"); shift 2 ;;
    --set=*) sets+=(--set "${1#*=}"); shift ;;
    --kernel) [ $# -ge 2 ] || usage; kernel=$2; shift 2 ;;
    --kernel=*) kernel=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --one-cpu) sets+=(--set "PLACE=xl vcpu-pin 0 all 0; if xl domid Xenstore >/dev/null 2>&1; then xl vcpu-pin Xenstore all 0; fi"); shift ;;
    -h | --help) usage ;;
    *) echo "xen-in-qemu.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || { echo "xen-in-qemu.sh: --repeat wants a positive number, got '$repeat'" >&2; exit 2; }
if [ -n "$timeout" ] && ! [[ $timeout =~ ^[0-9]+$ ]]; then
    echo "xen-in-qemu.sh: --timeout wants whole seconds, got '$timeout'" >&2
    exit 2
fi
mkdir -p "$out"

# The stub image: the same cargo build as run.sh, copied so that every round runs it even if
# the tree changes meanwhile.
if [ -n "$kernel" ]; then
    [ -f "$kernel" ] || die "--kernel $kernel: no such file"
    stub=$kernel
else
    command -v cargo >/dev/null || die "cargo not found: build the stub or pass --kernel IMAGE"
    echo "xen-in-qemu.sh: building the stub (cargo build --release --target x86_64-unknown-none -p xenstore-stubdom)" >&2
    if ! (cd "$repo" && cargo build --release --target x86_64-unknown-none -p xenstore-stubdom); then
        die "the stub run cannot start: the stub image does not build (fix it or pass --kernel IMAGE); nothing was run"
    fi
    target_dir=$(cd "$repo" && cargo metadata --no-deps --format-version 1 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
        target_dir=${CARGO_TARGET_DIR:-$repo/target}
    case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac
    [ -f "$target_dir/x86_64-unknown-none/release/xenstore-stubdom" ] ||
        die "cargo succeeded but $target_dir/x86_64-unknown-none/release/xenstore-stubdom does not exist"
    stub=$out/xen-bench-xenstore-stubdom
    cp "$target_dir/x86_64-unknown-none/release/xenstore-stubdom" "$stub"
fi
echo "xen-in-qemu.sh: stub image $stub ($(stat -c %s "$stub") bytes, sha256 $(sha256sum "$stub" | cut -c1-16))" >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/xen-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

side_name() { if [ "$1" = c ]; then echo "C xenstored"; else echo "stub"; fi; }

# extract LOG OUT: the BENCH figures of a serial log as "name value unit" lines, one per
# name; the last copy wins (the scenario repeats them, indented, at the end).
extract() {
    awk '
        match($0, /(^|[^A-Za-z0-9_-])BENCH [A-Za-z0-9_.-]+ [0-9]+(\.[0-9]+)? [A-Za-z%\/]+[ \t]*$/) {
            s = substr($0, RSTART, RLENGTH); sub(/^[^B]*BENCH /, "", s)
            split(s, f, /[ \t]+/)
            if (!(f[1] in value)) order[++n] = f[1]
            value[f[1]] = f[2]; unit[f[1]] = f[3]
        }
        END { for (i = 1; i <= n; i++) print order[i], value[order[i]], unit[order[i]] }
    ' "$1" >"$2"
}

failures=() loads=()
runs_csv=$out/xen-results-runs.csv
echo "side,round,measurement,value,unit" >"$runs_csv"
for round in $(seq 1 "$repeat"); do
    if [ $((round % 2)) = 1 ]; then sides=(c stub); else sides=(stub c); fi
    for side in "${sides[@]}"; do
        log=$out/xen-in-qemu-bench-$side-$round.log
        args=(bench --xenstore "$side" --log "$log" "${sets[@]}")
        [ "$side" = stub ] && args+=(--kernel "$stub")
        [ -n "$timeout" ] && args+=(--timeout "$timeout")
        echo >&2
        echo "xen-in-qemu.sh: round $round/$repeat, $(side_name "$side"): tests/xen-in-qemu/run.sh ${args[*]}" >&2
        t0=$SECONDS
        read -r load0 _ </proc/loadavg
        status=0
        "$run_sh" "${args[@]}" || status=$?
        read -r load1 _ </proc/loadavg
        loads+=("$side-$round: $load0 -> $load1 ($((SECONDS - t0)) s)")
        echo "xen-in-qemu.sh: round $round, $(side_name "$side"): exit status $status after $((SECONDS - t0)) s" >&2
        vals=$work/$side-$round.vals
        if [ -f "$log" ]; then extract "$log" "$vals"; else : >"$vals"; fi
        awk -v s="$side" -v r="$round" '{print s "," r "," $1 "," $2 "," $3}' "$vals" >>"$runs_csv"
        if [ "$status" != 0 ] || [ ! -s "$vals" ]; then
            why="run.sh exit status $status"
            [ -s "$vals" ] || why="$why, no BENCH lines"
            if [ -f "$log" ]; then
                bad=$(grep -o 'STEP [A-Za-z0-9_.:/-]*: FAIL' "$log" | sed 's/^STEP //; s/: FAIL$//' | sort -u | tr '\n' ' ' | sed 's/ $//')
                [ -z "$bad" ] || why="$why, failed steps: $bad"
                grep -q 'SCENARIO DONE' "$log" || why="$why, the scenario did not finish"
            fi
            failures+=("the $(side_name "$side") run (round $round) FAILED: $why; serial log $log")
        fi
    done
done

# Medians per side over the rounds, then the table: name unit c stub ratio.
for side in c stub; do
    cat "$work/$side"-*.vals | awk '
        { if (!($1 in n)) order[++k] = $1; n[$1]++; v[$1, n[$1]] = $2; unit[$1] = $3 }
        END {
            for (i = 1; i <= k; i++) {
                name = order[i]; m = n[name]
                for (a = 1; a <= m; a++) x[a] = v[name, a] + 0
                for (a = 2; a <= m; a++) { t = x[a]; b = a - 1; while (b >= 1 && x[b] > t) { x[b + 1] = x[b]; b-- } x[b + 1] = t }
                med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
                # Whole numbers stay whole (awk would print a mean of two ns figures as
                # 1.03423e+06); others keep two decimals.
                print name, (med == int(med) || med >= 1000 ? sprintf("%.0f", med) : sprintf("%.2f", med) + 0), unit[name]
            }
        }' >"$work/$side.med"
done
csv=$out/xen-results.csv
awk -v csv="$csv" '
    FILENAME == ARGV[1] { if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } c[$1] = $2; unit[$1] = $3 }
    FILENAME == ARGV[2] { if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } s[$1] = $2; unit[$1] = $3 }
    END {
        print "measurement,unit,c,stub,ratio_stub_c" > csv
        for (i = 1; i <= k; i++) {
            name = order[i]
            cv = (name in c) ? c[name] : ""; sv = (name in s) ? s[name] : ""
            r = (cv != "" && sv != "" && cv > 0) ? sprintf("%.2f", sv / cv) : ""
            print name "," unit[name] "," cv "," sv "," r > csv
        }
    }' "$work/c.med" "$work/stub.med"

table=$out/xen-results.txt
{
    echo "Xen 4.17 in QEMU (TCG): the same workload with C xenstored (dom0) and with the stub domain"
    [ "$repeat" = 1 ] || echo "(medians of $repeat runs per side)"
    [ ${#sets[@]} = 0 ] || echo "scenario settings:$(printf ' %s' "${sets[@]}" | sed 's/ --set / /g')"
    echo "host: $(nproc) CPUs; 1-min load average before -> after each run: ${loads[*]/%/;}"
    echo
    awk -F, '
        NR == 1 { next }
        {
            name[++k] = $1; unit[k] = $2; c[k] = $3; s[k] = $4; r[k] = $5
            if (length($1) > w) w = length($1)
            if ($5 != "" && $5 > 0) {
                g = $1; sub(/\..*/, "", g); if (!(g in gn)) gorder[++gk] = g; gn[g]++; gl[g] += log($5)
                if ($2 != "ms/s" && g != "cpu") { an++; al += log($5) }
            }
        }
        END {
            fmt = "%-" w "s  %-5s %12s %12s %8s\n"
            printf fmt, "measurement", "unit", "C", "stub", "stub/C"
            for (i = 1; i <= k; i++)
                printf fmt, name[i], unit[i], (c[i] == "" ? "n/a" : c[i]), (s[i] == "" ? "n/a" : s[i]), (r[i] == "" ? "n/a" : r[i])
            print ""
            print "Geometric mean of stub/C per group (lower = stub faster):"
            for (i = 1; i <= gk; i++) printf "  %-9s %6.2f  (n=%d)\n", gorder[i], exp(gl[gorder[i]] / gn[gorder[i]]), gn[gorder[i]]
            if (an) printf "  %-9s %6.2f  (n=%d; every time, not the CPU figures)\n", "times", exp(al / an), an
        }' "$csv"
} >"$table"
echo
cat "$table"
echo
echo "CSV: $csv (every run: $runs_csv); serial logs: $out/xen-in-qemu-bench-*.log"
elapsed=$((SECONDS - started))
echo "wall time: $((elapsed / 60)) min $((elapsed % 60)) s"
if [ ${#failures[@]} -gt 0 ]; then
    for f in "${failures[@]}"; do echo "xen-in-qemu.sh: $f" >&2; done
    exit 1
fi
