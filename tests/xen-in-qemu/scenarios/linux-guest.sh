# Scenario `linux-guest`: the harness's own check, and the basis of later guest tests.
# dom0 runs Debian's C xenstored, xen-init-dom0 and xenconsoled, then `xl create`s a PVH
# Linux guest (Debian's dom0 kernel with the tiny busybox initramfs guests/hello/) and checks
# that the guest's console log (written by xenconsoled) holds the marker the guest prints,
# that the guest ran as PVH, and that the domain is gone after it powered off (reason
# poweroff in xl's log).
# Run: tests/xen-in-qemu/run.sh linux-guest      (sourced by dom0's /init; busybox sh)
#
# harness-needs: linux-kernel guest:hello
# harness-expect: dom0-setup xenstored xen-init-dom0 xenconsoled xl-create domain-gone guest-poweroff guest-console guest-type
# harness-timeout: 420
set -eu

GUEST_TIMEOUT=${GUEST_TIMEOUT:-300}
name=hello-pvh

start_c_xenstore_stack

cat >/tmp/$name.cfg <<CFG
name = "$name"
type = "pvh"
kernel = "$GUEST_KERNEL"
ramdisk = "$GUEST_DIR/hello.cpio.gz"
extra = "console=hvc0 quiet"
memory = 256
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "preserve"
CFG

create_domain xl-create /tmp/$name.cfg
xl unpause "$DOMID"
started=$(date +%s)

result=0
domain_gone_step domain-gone "$DOMID" "$GUEST_TIMEOUT" "the Linux guest" || result=$?
if [ "$result" != 0 ]; then
    xl list || true
    xl dmesg | tail -n 30 | sed 's/^/    xen: /' || true
    xl destroy "$DOMID" || true
fi
reason=$(shutdown_reason "$name")
case $reason in
poweroff) pass guest-poweroff "the guest shut down with reason poweroff" ;;
*) show "/var/log/xen/xl-$name.log" "xl's log of the domain"
   fail guest-poweroff "shutdown reason '${reason:-none recorded}', expected poweroff" ;;
esac

log=$(console_log "$name")
show "$log" "guest console ($log)"
if marker=$(grep -m1 'GUEST: hello from PVH guest' "$log"); then
    pass guest-console "$marker"
else
    fail guest-console "marker 'GUEST: hello from PVH guest' not in $log"
fi
if line=$(grep -m1 'GUEST: guest_type=' "$log"); then
    case $line in
    *guest_type=PVH*) pass guest-type "$line" ;;
    *) fail guest-type "$line" ;;
    esac
else
    fail guest-type "no guest_type line in $log"
fi
echo "linux-guest: guest lifetime $(( $(date +%s) - started ))s"
