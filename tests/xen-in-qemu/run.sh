#!/usr/bin/env bash
# Xen-in-QEMU test harness: boots Debian bookworm's Xen 4.17 with a Linux 6.1 PV dom0 inside
# QEMU (TCG, no KVM needed) and runs one test scenario in dom0.
#
# Usage: tests/xen-in-qemu/run.sh SCENARIO [options]
#        tests/xen-in-qemu/run.sh --interactive [SCENARIO]      (default scenario: shell)
#   SCENARIO          a name from tests/xen-in-qemu/scenarios/ (main, stub-xenstore,
#                     guest-lifecycle, hostile-ring, self-test, linux-guest, shell,
#                     bench: see bench/xen-in-qemu.sh)
#                     or the path of a scenario file
#   --timeout SECONDS time limit for the boot-to-power-off run (default: the scenario's
#                     `harness-timeout:`, else 600)
#   --kernel IMAGE    stub image copied into dom0 (/harness/stub/xenstore-stubdom); default
#                     for scenarios that need it: the product image, built with
#                     tests/lib/kernel-image.sh product (`cargo kernel`)
#   --test-kernel IMAGE  the stub's test image, with the test modes --self-test and
#                     --hostile-ring (/harness/stub/xenstore-stubdom-test); default for
#                     scenarios that need it (self-test, hostile-ring): built with
#                     tests/lib/kernel-image.sh test (`cargo kernel-test`)
#   --interactive     run the scenario, then leave a dom0 shell on the serial console
#                     (Ctrl-A x quits QEMU); no pass/fail summary
#   --keep            keep the work folder (initramfs, configuration)
#   --log FILE        serial console log (default /tmp/xen-in-qemu-SCENARIO.log)
#   --verbose         echo the whole serial console, not just milestones and steps
#   --xenstore c|stub which xenstore scenarios declaring `harness-needs: xenstore` run on
#                     (default: $XENSTORE, else stub): stub = init-xenstore-domain with the
#                     stub image (built or --kernel), c = Debian's C xenstored in dom0
#   --set NAME=VALUE  extra scenario variable (repeatable), e.g. --set ROUNDS=5
#   --hostile-kernel IMAGE  (or $HOSTILE_GUEST_KERNEL) a PVH image that scribbles on its
#                     xenstore ring, copied to dom0 for the hostile-ring scenario (default
#                     there: the test image in --hostile-ring mode)
#   --tcg-thread single|multi  QEMU's TCG threading (default: $XEN_QEMU_TCG_THREAD, else
#                     multi, one host thread per vCPU); single runs both vCPUs on one
#                     host thread
#
# What it does: runs tests/lib/setup.sh (kernel target, QEMU), fetches the Debian packages
# with tests/lib/debian-packages.sh (nothing Xen-related is installed on the host), builds a
# dom0 initramfs (busybox, Xen tools and their libraries, the Xen kernel modules), caches
# that under ${XENSTORE_CACHE_DIR:-~/.cache/xenstore-stubdom}/xen-in-qemu (rebuilt whenever
# missing or when a package version changes), adds the scenario and its files, boots QEMU
# and hands the serial console to lib/harness.py, which enforces the time limit and prints a
# summary. Exit status: 0 only if every step passed, no expected step is missing and the
# scenario finished; 1 on test failure; 2 on usage errors.
#
# A stalled emulated machine is booted once more: when one of QEMU's vCPU threads has not
# run at all for XEN_QEMU_STALL_SECONDS (default 60; 0 turns the watch off), lib/harness.py
# stops QEMU, and the scenario runs again from a fresh boot (the stalled run's log is kept
# as LOG.stalled). Seen under TCG: Xen idle on a vCPU whose emulated global interrupt flag
# (SVM's GIF) stayed clear, so nothing could wake it; see `harness.py --help`.
# XEN_QEMU_STALL_RETRIES (default 1) is how many fresh boots are tried.
#
# Scenario files (scenarios/NAME.sh, run by dom0's /init under busybox sh, with
# lib/dom0-lib.sh sourced) print `STEP <name>: PASS|FAIL [detail]`; /init prints
# `SCENARIO DONE` afterwards and powers off. Header lines a scenario may carry:
#   # harness-expect: STEP...      steps that must appear (a missing one fails the run)
#   # harness-needs: WORD...       stub          the stub image (see --kernel)
#                                  test-stub     the stub's test image, $TEST_STUB_KERNEL
#                                                (see --test-kernel)
#                                  xenstore      runs on the xenstore chosen by --xenstore
#                                                (the stub image too when that is stub)
#                                  linux-kernel  Debian's kernel as $GUEST_KERNEL (PVH guests)
#                                  linux-vmlinux the same, decompressed (ELF vmlinux): much
#                                                faster `xl create` under TCG
#                                  ringpoke      tools/ringpoke.c built with cc, $RINGPOKE
#                                  guest:NAME    guests/NAME/ + busybox as an initramfs,
#                                                $GUEST_DIR/NAME.cpio.gz
#   # harness-timeout: SECONDS     default time limit
# A folder scenarios/NAME.files/ is copied into dom0 as $FILES_DIR (/harness/files).
# See tests/xen-in-qemu/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${XENSTORE_CACHE_DIR:-$HOME/.cache/xenstore-stubdom}
cache_dir=$cache_root/xen-in-qemu
# Bump when the layout of the cached base initramfs changes.
base_format=2

t0=$(date +%s%N)
say() {
    local ms=$((($(date +%s%N) - t0) / 1000000))
    printf '[run.sh %4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2
}
die() { echo "run.sh: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }

scenario="" timeout="" kernel="" test_kernel="" interactive=0 keep=0 log="" verbose=0
xenstore=${XENSTORE:-stub} hostile=${HOSTILE_GUEST_KERNEL:-} sets=()
tcg_thread=${XEN_QEMU_TCG_THREAD:-multi}
# XEN_QEMU_CPU: QEMU's -cpu value, for experiments (default: the model that works,
#               docs/xen-interface.md, "Xen in QEMU").
# XEN_QEMU_ACCEL: QEMU's -accel value (default tcg,thread=--tcg-thread's). For a host whose
#                 KVM exposes nested AMD-V/VT-x: XEN_QEMU_ACCEL=kvm XEN_QEMU_CPU=host. Not
#                 tried here (the development machines have no working KVM); the stall
#                 watch then sees no `CPU K/TCG` thread and watches nothing.
# XEN_EXTRA_ARGS: words added to Xen's command line, for experiments.
# XEN_QEMU_EXTRA: words added to QEMU's command line, for diagnostics (e.g. `-d exec,nochain
#                 -dfilter 0x100000+0x80000 -D /tmp/exec.log`: the stub's executed blocks).
while [ $# -gt 0 ]; do
    case $1 in
    --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --kernel) [ $# -ge 2 ] || usage; kernel=$2; shift 2 ;;
    --kernel=*) kernel=${1#*=}; shift ;;
    --test-kernel) [ $# -ge 2 ] || usage; test_kernel=$2; shift 2 ;;
    --test-kernel=*) test_kernel=${1#*=}; shift ;;
    --log) [ $# -ge 2 ] || usage; log=$2; shift 2 ;;
    --log=*) log=${1#*=}; shift ;;
    --interactive) interactive=1; shift ;;
    --keep) keep=1; shift ;;
    --verbose | -v) verbose=1; shift ;;
    --xenstore) [ $# -ge 2 ] || usage; xenstore=$2; shift 2 ;;
    --xenstore=*) xenstore=${1#*=}; shift ;;
    --set) [ $# -ge 2 ] || usage; sets+=("$2"); shift 2 ;;
    --set=*) sets+=("${1#*=}"); shift ;;
    --tcg-thread) [ $# -ge 2 ] || usage; tcg_thread=$2; shift 2 ;;
    --tcg-thread=*) tcg_thread=${1#*=}; shift ;;
    --hostile-kernel) [ $# -ge 2 ] || usage; hostile=$2; shift 2 ;;
    --hostile-kernel=*) hostile=${1#*=}; shift ;;
    -h | --help) usage ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$scenario" ] || usage; scenario=$1; shift ;;
    esac
done
if [ -z "$scenario" ]; then
    [ "$interactive" = 1 ] || usage
    scenario=shell
fi
if [ -f "$scenario" ]; then
    scenario_file=$(cd "$(dirname "$scenario")" && pwd)/$(basename "$scenario")
else
    scenario_file=$here/scenarios/$scenario.sh
    [ -f "$scenario_file" ] || die "no scenario '$scenario' (available: $(cd "$here/scenarios" && find . -maxdepth 1 -name '*.sh' | sed 's|^\./||; s/\.sh$//' | sort | tr '\n' ' '))"
fi
scenario=$(basename "$scenario_file" .sh)
if [ -n "$timeout" ] && ! [[ $timeout =~ ^[0-9]+$ ]]; then die "--timeout wants whole seconds, got '$timeout'"; fi
if [ -n "$kernel" ]; then
    [ -f "$kernel" ] || die "--kernel $kernel: no such file"
    kernel=$(cd "$(dirname "$kernel")" && pwd)/$(basename "$kernel")
fi
if [ -n "$test_kernel" ]; then
    [ -f "$test_kernel" ] || die "--test-kernel $test_kernel: no such file"
    test_kernel=$(cd "$(dirname "$test_kernel")" && pwd)/$(basename "$test_kernel")
fi

case $xenstore in c | stub) ;; *) die "--xenstore (or XENSTORE) must be c or stub, got '$xenstore'" ;; esac
case $tcg_thread in single | multi) ;; *) die "--tcg-thread must be single or multi, got '$tcg_thread'" ;; esac
for kv in "${sets[@]}"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || die "--set wants NAME=VALUE, got '$kv'"
done
if [ -n "$hostile" ]; then
    [ -f "$hostile" ] || die "hostile guest kernel $hostile: no such file"
    hostile=$(cd "$(dirname "$hostile")" && pwd)/$(basename "$hostile")
fi

# Scenario header directives.
directive() { sed -n "s/^# *harness-$1: *//p" "$scenario_file" | tr '\n' ' '; }
needs=$(directive needs)
expect=$(directive expect)
case " $expect " in *" dom0-setup "*) ;; *) expect="dom0-setup $expect" ;; esac
expect=$(echo "$expect" | xargs)
[ -n "$timeout" ] || timeout=$(directive timeout | awk '{print $1}')
[ -n "$timeout" ] || timeout=600
needs_word() { case " $needs " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if needs_word xenstore; then
    [ -n "$log" ] || log=/tmp/xen-in-qemu-$scenario-$xenstore.log
else
    xenstore=""   # the scenario picks its xenstore itself
fi
[ -n "$log" ] || log=/tmp/xen-in-qemu-$scenario.log

# ---------------------------------------------------------------------------------------
# Host prerequisites: the shared set-up and current package lists.
# apt-get update runs at most once per run, and is skipped when this harness already ran it
# in the last 6 hours (stamp in the cache) or the caller sets XENSTORE_APT_UPDATED=1.
apt_updated=${XENSTORE_APT_UPDATED:-0}
apt_stamp=$cache_dir/apt-updated
if [ -n "$(find "$apt_stamp" -mmin -360 2>/dev/null)" ]; then apt_updated=1; fi
[ "$apt_updated" = 1 ] && export XENSTORE_APT_UPDATED=1
apt_update() {
    [ "$apt_updated" = 1 ] && return 0
    say "apt-get update"
    if ! apt-get update -qq >/dev/null 2>"/tmp/xen-in-qemu-apt.$$"; then
        cat "/tmp/xen-in-qemu-apt.$$" >&2
        say "warning: apt-get update failed; continuing with the package lists already present"
    else
        mkdir -p "$cache_dir" && touch "$apt_stamp"
    fi
    rm -f "/tmp/xen-in-qemu-apt.$$"
    apt_updated=1
    export XENSTORE_APT_UPDATED=1
}
# The shared set-up (tests/lib/setup.sh): the kernel target the stub build needs, QEMU and
# the host tools; on a fresh machine this is what makes the README's first command work.
"$repo/tests/lib/setup.sh" || die "set-up failed (tests/lib/setup.sh)"
for tool in python3 gzip apt-get apt-cache dpkg ldd; do
    command -v "$tool" >/dev/null || die "'$tool' is required on the host"
done
apt_update

# ---------------------------------------------------------------------------------------
# The base: Xen, the dom0 kernel and the dom0 initramfs without the scenario. Cached under a
# key made of every package's candidate version, the host's glibc and the base format.
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
[ -n "$kernel_pkg" ] || die "cannot resolve the kernel package that linux-image-amd64 depends on (apt-cache depends linux-image-amd64); is the bookworm package list available?"
kver=${kernel_pkg#linux-image-}
packages=(xen-hypervisor-4.17-amd64 "$kernel_pkg" busybox-static xen-utils-4.17 xen-utils-common
    xenstore-utils libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1
    libxengnttab1 libxenhypfs1 libxenmisc4.17 libxenstore4 libxentoolcore1 libxentoollog1 libyajl2)
versions=""
# One apt-cache call for all packages ("NAME:" lines, then "  Candidate: VERSION").
policy=$(apt-cache policy "${packages[@]}" 2>/dev/null |
    awk '/^[^ ].*:$/ {name = substr($0, 1, length($0) - 1)} /^  Candidate: / {print name, $2}')
for p in "${packages[@]}"; do
    v=$(awk -v p="$p" '$1 == p {print $2}' <<<"$policy")
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then die "package $p has no installable version in the apt lists (apt-cache policy $p)"; fi
    versions+="$p=$v "
done
host_libs=$(dpkg-query -W -f '${Package}=${Version} ' libc6 libgcc-s1 zlib1g liblzma5 libzstd1 libuuid1 libbz2-1.0 2>/dev/null || true)
key=$(echo "format=$base_format $versions $host_libs" | sha256sum | cut -c1-16)
base=$cache_dir/base-$key

work=$(mktemp -d "${TMPDIR:-/tmp}/xen-in-qemu.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ "$keep" = 1 ]; then say "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# copy_libs ROOT: copy into ROOT every shared library its ELF programs need that ROOT does
# not hold yet, from the host (the host is bookworm too, so versions match).
copy_libs() {
    local root=$1 f lib missing=""
    local libpath=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu
    while IFS= read -r -d '' f; do
        [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
        # ldd: "libfoo.so.1 => /path (0x...)", "libbar.so => not found", "/lib64/ld-linux... (0x...)".
        while read -r name arrow path _; do
            if [ "$arrow" = "=>" ] && [ "$path" = "not" ]; then
                missing+=" $name (needed by ${f#"$root"})"
            elif [ "$arrow" = "=>" ] && [ "${path#/}" != "$path" ]; then
                case $path in "$root"/*) continue ;; esac
                [ -e "$root$path" ] || { mkdir -p "$root$(dirname "$path")"; cp -L "$path" "$root$path"; }
            fi
        done < <(LD_LIBRARY_PATH=$libpath ldd "$f" 2>/dev/null || true)
    done < <(find "$root" -type f -perm -u+x -print0)
    [ -z "$missing" ] || die "shared libraries not found on the host or in the packages:$missing"
    # The dynamic loader, and libgcc_s which glibc loads at run time for pthread_cancel.
    mkdir -p "$root/lib64" "$root/lib/x86_64-linux-gnu"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
    for lib in libgcc_s.so.1 libnss_files.so.2; do
        if [ -e "/lib/x86_64-linux-gnu/$lib" ] && [ ! -e "$root/lib/x86_64-linux-gnu/$lib" ]; then
            cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/x86_64-linux-gnu/"
        fi
    done
}

build_base() {
    local stage=$work/stage root=$work/base-root out=$cache_dir/.tmp-$key-$$
    say "fetching and unpacking ${#packages[@]} Debian packages (cache: $cache_root/debs)"
    "$repo/tests/lib/debian-packages.sh" "$stage" "${packages[@]}" ||
        die "could not fetch the Debian packages (${packages[*]}); see the apt message above"
    say "building the dom0 base initramfs"
    mkdir -p "$root"/{bin,sbin,dev,etc,proc,sys,run,tmp,root,usr/bin,usr/sbin,var/lib/xen,var/log/xen}
    mkdir -p "$root/usr/lib/xen-4.17" "$root/usr/lib/x86_64-linux-gnu"
    cp -a "$stage/usr/lib/xen-4.17/bin" "$root/usr/lib/xen-4.17/"
    cp -a "$stage"/usr/bin/xenstore* "$root/usr/bin/"
    # xenalyze (xen-utils-common) summarises xentrace records in dom0 (scenario xentrace-profile).
    [ ! -f "$stage/usr/bin/xenalyze" ] || cp -a "$stage/usr/bin/xenalyze" "$root/usr/bin/"
    cp -a "$stage"/usr/lib/x86_64-linux-gnu/lib{xen,xl,yajl}* "$root/usr/lib/x86_64-linux-gnu/"
    cp -a "$stage/etc/xen" "$root/etc/"
    cp -a "$stage/bin/busybox" "$root/bin/busybox"
    local moddir=lib/modules/$kver/kernel/drivers/xen m
    mkdir -p "$root/$moddir/xenfs"
    for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs/xenfs; do
        [ -f "$stage/$moddir/$m.ko" ] || die "kernel module $moddir/$m.ko missing from $kernel_pkg"
        cp "$stage/$moddir/$m.ko" "$root/$moddir/$m.ko"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
    copy_libs "$root"
    rm -rf "$out"
    mkdir -p "$out"
    python3 "$here/lib/harness.py" cpio "$out/base.cpio.gz" "$root" --device dev/console:c:5:1
    gzip -dc "$stage/boot/xen-4.17-amd64.gz" >"$out/xen"
    cp "$stage/boot/vmlinuz-$kver" "$out/vmlinuz"
    cp "$stage/bin/busybox" "$out/busybox"
    echo "$versions" | tr ' ' '\n' >"$out/versions"
    rm -rf "$stage" "$root"
    # Only the current base is kept (a parallel run may have just put the same one in place).
    local d
    for d in "$cache_dir"/base-*; do [ "$d" = "$base" ] || rm -rf "$d"; done
    mv -T "$out" "$base" 2>/dev/null || rm -rf "$out"
}

mkdir -p "$cache_dir"
if [ -f "$base/base.cpio.gz" ] && [ -f "$base/xen" ] && [ -f "$base/vmlinuz" ] && [ -f "$base/busybox" ]; then
    say "using cached base $base"
else
    build_base
    say "base ready: $base ($(du -sh "$base/base.cpio.gz" | cut -f1) initramfs)"
fi
case "$base$work" in *,* | *" "*) die "paths must not contain commas or spaces (QEMU -initrd syntax): $base, $work" ;; esac

# ---------------------------------------------------------------------------------------
# The stub images: the product (what init-xenstore-domain boots) and the test image (the
# same kernel with its test modes, for the self-test and the hostile guest).
stub=""
if [ -n "$kernel" ]; then
    stub=$kernel
elif needs_word stub || { needs_word xenstore && [ "$xenstore" = stub ]; }; then
    say "building the stub's product image (tests/lib/kernel-image.sh product)"
    stub=$("$repo/tests/lib/kernel-image.sh" product) ||
        die "the stub image does not build (cargo kernel); fix it or pass --kernel IMAGE"
fi
test_stub=""
if [ -n "$test_kernel" ]; then
    test_stub=$test_kernel
elif needs_word test-stub; then
    say "building the stub's test image (tests/lib/kernel-image.sh test)"
    test_stub=$("$repo/tests/lib/kernel-image.sh" test) ||
        die "the stub's test image does not build (cargo kernel-test); fix it or pass --test-kernel IMAGE"
fi
for image in "$stub" "$test_stub"; do
    [ -n "$image" ] || continue
    [ "$(head -c 4 "$image" | od -An -c | tr -d ' ')" = '177ELF' ] || say "warning: $image is not an ELF file"
    say "stub image: $image ($(stat -c %s "$image") bytes)"
done

# ---------------------------------------------------------------------------------------
# The per-run overlay: /init, the scenario, its files and guests; appended to the base
# (the kernel unpacks concatenated gzip'ed cpio archives in order).
overlay=$work/overlay
mkdir -p "$overlay/harness"
install -m 0755 "$here/lib/dom0-init" "$overlay/init"
install -m 0644 "$here/lib/dom0-lib.sh" "$overlay/harness/lib.sh"
install -m 0644 "$scenario_file" "$overlay/harness/scenario.sh"
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
    echo "SCENARIO=$(q "$scenario")"
    echo "INTERACTIVE=$interactive"
    echo "STUB_KERNEL=${stub:+/harness/stub/xenstore-stubdom}"
    echo "TEST_STUB_KERNEL=${test_stub:+/harness/stub/xenstore-stubdom-test}"
    echo "REPO_XEN_CFG="
    echo "GUEST_KERNEL="
    echo "GUEST_DIR=/harness/guests"
    echo "FILES_DIR="
    echo "XENSTORE=$xenstore"
    echo "HOSTILE_GUEST_KERNEL=${hostile:+/harness/hostile/kernel}"
    echo "RINGPOKE="
    echo "export SCENARIO INTERACTIVE STUB_KERNEL TEST_STUB_KERNEL REPO_XEN_CFG GUEST_KERNEL GUEST_DIR FILES_DIR XENSTORE HOSTILE_GUEST_KERNEL RINGPOKE"
    for kv in "${sets[@]}"; do
        echo "${kv%%=*}=$(q "${kv#*=}")"
        echo "export ${kv%%=*}"
    done
} >"$overlay/harness/config"
setvar() { sed -i "s|^$1=.*|$1=$2|" "$overlay/harness/config"; }
if [ -n "$stub" ]; then
    mkdir -p "$overlay/harness/stub"
    cp "$stub" "$overlay/harness/stub/xenstore-stubdom"
fi
if [ -n "$test_stub" ]; then
    mkdir -p "$overlay/harness/stub"
    cp "$test_stub" "$overlay/harness/stub/xenstore-stubdom-test"
fi
if [ -n "$hostile" ]; then
    mkdir -p "$overlay/harness/hostile"
    cp "$hostile" "$overlay/harness/hostile/kernel"
fi
if [ -f "$repo/xen.cfg" ]; then
    mkdir -p "$overlay/harness/repo"
    cp "$repo/xen.cfg" "$overlay/harness/repo/xen.cfg"
    setvar REPO_XEN_CFG /harness/repo/xen.cfg
fi
if [ -d "$here/scenarios/$scenario.files" ]; then
    cp -a "$here/scenarios/$scenario.files" "$overlay/harness/files"
    setvar FILES_DIR /harness/files
fi
for word in $needs; do
    case $word in
    stub | test-stub | xenstore) ;;
    linux-kernel)
        mkdir -p "$overlay/harness/guest"
        cp "$base/vmlinuz" "$overlay/harness/guest/vmlinuz"
        setvar GUEST_KERNEL /harness/guest/vmlinuz
        ;;
    ringpoke)
        # tools/ringpoke.c, built with the host's C compiler (dom0 runs the host's glibc).
        if command -v cc >/dev/null; then
            mkdir -p "$overlay/harness/bin"
            cc -O2 -o "$overlay/harness/bin/ringpoke" "$here/tools/ringpoke.c" -ldl ||
                die "cannot build tools/ringpoke.c"
            setvar RINGPOKE /harness/bin/ringpoke
        else
            say "warning: no C compiler (cc): steps that need tools/ringpoke.c will be skipped"
        fi
        ;;
    linux-vmlinux)
        # The same kernel, decompressed on the host (the xz payload of the bzImage): xl then
        # only copies an ELF, instead of inflating 8 MB of xz in dom0 under TCG per guest.
        if [ ! -s "$base/vmlinux" ]; then
            if ! python3 "$here/lib/harness.py" vmlinux "$base/vmlinuz" "$base/vmlinux.tmp.$$"; then
                die "cannot extract vmlinux from $base/vmlinuz"
            fi
            mv "$base/vmlinux.tmp.$$" "$base/vmlinux"
        fi
        mkdir -p "$overlay/harness/guest"
        cp "$base/vmlinux" "$overlay/harness/guest/vmlinux"
        setvar GUEST_KERNEL /harness/guest/vmlinux
        ;;
    guest:*)
        g=${word#guest:}
        [ -d "$here/guests/$g" ] || die "scenario needs guest '$g' but $here/guests/$g/ does not exist"
        groot=$work/guest-$g
        mkdir -p "$groot"/{bin,dev,proc,sys,tmp} "$overlay/harness/guests"
        cp -a "$here/guests/$g/." "$groot/"
        cp "$base/busybox" "$groot/bin/busybox"
        # guests/NAME/harness-packages: Debian packages unpacked into the guest (e.g. the
        # xenstore clients), plus the host libraries their programs need.
        if [ -f "$groot/harness-packages" ]; then
            read -r -a gpkgs < <(sed 's/#.*//' "$groot/harness-packages" | tr '\n' ' ')  || true
            rm -f "$groot/harness-packages"
            if [ "${#gpkgs[@]}" -gt 0 ]; then
                "$repo/tests/lib/debian-packages.sh" "$work/gstage-$g" "${gpkgs[@]}" ||
                    die "guest $g: could not fetch ${gpkgs[*]}"
                for d in bin sbin usr/bin usr/sbin usr/lib lib; do
                    [ -d "$work/gstage-$g/$d" ] && mkdir -p "$groot/$d" && cp -a "$work/gstage-$g/$d/." "$groot/$d/"
                done
                # Dangling wrapper symlinks (xen-utils-wrapper) and documentation are not needed.
                find "$groot" -xtype l -delete
                copy_libs "$groot"
            fi
        fi
        python3 "$here/lib/harness.py" cpio "$overlay/harness/guests/$g.cpio.gz" "$groot" --device dev/console:c:5:1
        ;;
    *) die "scenario $scenario: unknown harness-needs word '$word'" ;;
    esac
done
python3 "$here/lib/harness.py" cpio "$work/overlay.cpio.gz" "$overlay"
cat "$base/base.cpio.gz" "$work/overlay.cpio.gz" >"$work/dom0.cpio.gz"
say "dom0 initramfs: $(du -sh "$work/dom0.cpio.gz" | cut -f1) (base + $(du -sh "$work/overlay.cpio.gz" | cut -f1) for scenario $scenario)"

# ---------------------------------------------------------------------------------------
# Boot. The command line follows docs/xen-interface.md, "Xen in QEMU"; conring_size
# lets `xl dmesg` in dom0 still see early guest lines after Xen's boot messages.
# spec-ctrl=eager-fpu: on the AMD CPU that TCG emulates, Xen switches FPU state lazily by
# default (CR0.TS and #NM), and under QEMU's TCG that corrupted user space in dom0 and in
# guests whenever domains shared a CPU: programs died of SIGSEGV or aborted (xl create,
# status 134, failed a CI run). Eager switching, what Xen does on affected Intel CPUs,
# made it stop (scenario emulation-stress: 2-7 killed programs per run before, 0 after).
# XEN_EXTRA_ARGS: more words for Xen's command line (e.g. spec-ctrl=no-eager-fpu).
xen_args="console=com1 com1=115200 dom0_mem=1024M,max:1024M loglvl=all guest_loglvl=all noreboot conring_size=1M"
xen_args="$xen_args spec-ctrl=eager-fpu${XEN_EXTRA_ARGS:+ $XEN_EXTRA_ARGS}"
# shellcheck disable=SC2054 # the commas belong to QEMU's -cpu syntax
# debug-threads names the vCPU threads `CPU K/TCG`, which the harness's stall watch needs.
qemu=(qemu-system-x86_64 -name xen-in-qemu,debug-threads=on -machine q35 -accel "${XEN_QEMU_ACCEL:-tcg,thread=$tcg_thread}" -cpu "${XEN_QEMU_CPU:-max,-pku,-smap,-smep,-la57,-rdtscp}"
    -smp 2 -m 2048 -no-reboot -display none
    -kernel "$base/xen" -append "$xen_args"
    -initrd "$base/vmlinuz console=hvc0 quiet,$work/dom0.cpio.gz")
# shellcheck disable=SC2206 # XEN_QEMU_EXTRA is a list of words on purpose
[ -n "${XEN_QEMU_EXTRA:-}" ] && qemu+=($XEN_QEMU_EXTRA)
mkdir -p "$(dirname "$log")"

if [ "$interactive" = 1 ]; then
    say "booting interactively; serial console log: $log (Ctrl-A x quits QEMU, Ctrl-A c: QEMU monitor)"
    status=0
    "${qemu[@]}" -chardev "stdio,id=con,mux=on,signal=off,logfile=$log" -serial chardev:con \
        -mon chardev=con,mode=readline || status=$?
    say "QEMU exited with status $status"
    exit "$status"
fi

extra=(--stall-seconds "${XEN_QEMU_STALL_SECONDS:-60}")
[ "$verbose" = 1 ] && extra+=(--verbose)
retries=${XEN_QEMU_STALL_RETRIES:-1}
# The retries of a boot that stalled (its guests' RETRY lines and the stall itself), which
# harness.py writes here and lists in the summary of the next boot.
extra+=(--retries-file "$work/retries")
stalls=0
while :; do
    say "booting scenario '$scenario' (time limit ${timeout}s; expected steps: $expect)"
    # Where the console of this boot is kept if it stalls: LOG.stalled, LOG.stalled-2, ...
    stalled_log=$log.stalled
    [ "$stalls" = 0 ] || stalled_log=$log.stalled-$((stalls + 1))
    status=0
    python3 "$here/lib/harness.py" run --name "$scenario" --log "$log" --timeout "$timeout" \
        --expect "$expect" "${extra[@]}" --stalled-log "$stalled_log" -- "${qemu[@]}" -monitor none -serial stdio || status=$?
    # 3: the emulated machine stalled and no step had failed (harness.py; a stall after a
    # FAIL or the stub's panic is status 1: a fresh boot must not hide it); any other
    # status is the run's result.
    [ "$status" = 3 ] || break
    mv -f "$log" "$stalled_log"
    stalls=$((stalls + 1))
    if [ "$retries" -le 0 ]; then
        say "the emulated machine stalled (log: $stalled_log); no retries left"
        status=1
        break
    fi
    retries=$((retries - 1))
    say "the emulated machine stalled (log: $stalled_log); booting it again (a retry, listed in the next summary)"
done
say "total wall time (including preparation); result: $([ "$status" = 0 ] && echo PASS || echo FAIL)"
exit "$status"
