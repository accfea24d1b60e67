# Scenario `shell`: starts Debian's C xenstored, xen-init-dom0 and xenconsoled and lists the
# domains; meant for `tests/xen-in-qemu/run.sh --interactive` (the default scenario there),
# which then leaves a dom0 shell on the serial console for trying things by hand.
# harness-expect: xenstored xen-init-dom0 xenconsoled xl-list
# harness-timeout: 300
set -eu
start_c_xenstore_stack
run_step xl-list xl list
cat /tmp/steps/xl-list.log
[ -z "$STUB_KERNEL" ] || echo "shell: stub image at $STUB_KERNEL"
[ -z "$GUEST_KERNEL" ] || echo "shell: Linux guest kernel at $GUEST_KERNEL"
