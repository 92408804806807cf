#!/bin/busybox sh
# /init of the guest kit's initramfs: a real Linux guest for the nested-VM tests, booted by
# Cairn's VMM. Every step reports on the console with a "cairn-guest:" line the tests look for,
# then the guest reboots (reboot=k: an i8042 reset, which ends the VM).
#
# Not `set -e`: a failed step must still print its line and reach "done" and the reboot (PID 1
# exiting would panic the kernel instead). `set -u` and pipefail still catch mistakes here.
set -uo pipefail

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "cairn-guest: $*"; }
# The boot id tells this boot's lines from an earlier boot's in a console log that is kept.
boot=$(cat /proc/sys/kernel/random/boot_id)
say "init reached (boot $boot)"

# Keys of the kernel command line. The VMM announces its virtio-mmio devices as
# virtio_mmio.device=<size>@<base>:<irq> entries; with insmod (no modprobe reading
# /proc/cmdline) they must be passed to the module explicitly as device=… parameters.
mmio_args=""
ip=""
peer=""
stay=""
for w in $(cat /proc/cmdline); do
  case "$w" in
    virtio_mmio.device=*) mmio_args="$mmio_args device=${w#virtio_mmio.device=}" ;;
    cairn.ip=*) ip=${w#cairn.ip=} ;;
    cairn.peer=*) peer=${w#cairn.peer=} ;;
    cairn.stay) stay=1 ;;
  esac
done

# Dependencies first (the kit builder resolved the order). The module named in mmio-module
# takes the device parameters: virtio_mmio itself when the kernel has
# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, else the kit's cairn_mmio, which registers the same
# platform devices for virtio_mmio to bind.
rel=$(uname -r)
mmio_module=$(cat /etc/cairn-guest/mmio-module)
while read -r m; do
  name=${m##*/}
  name=${name%.ko}
  args=""
  [ "$name" = "$mmio_module" ] && args=$mmio_args
  # shellcheck disable=SC2086 # args are separate device=… words
  insmod "/lib/modules/$rel/$m" $args || say "insmod $name failed"
done < /etc/cairn-guest/modules
say "virtio-mmio devices:$mmio_args"

# Wait up to 5 s for a path (device probing and devtmpfs nodes are asynchronous).
wait_for() {
  i=0
  while [ ! -e "$1" ] && [ "$i" -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  [ -e "$1" ]
}

mkdir -p /mnt
if wait_for /dev/vda && mount -t ext4 /dev/vda /mnt; then
  say "disk says $(cat /mnt/hello.txt)"
  umount /mnt
else
  say "disk failed (no /dev/vda or it does not mount as ext4)"
fi

if [ -z "$ip" ] || [ -z "$peer" ]; then
  say "ping failed (cairn.ip= and cairn.peer= are not both on the command line)"
elif ! wait_for /sys/class/net/eth0; then
  say "ping failed (no eth0)"
else
  ip link set lo up
  ip link set eth0 up
  ip addr add "$ip" dev eth0
  if ping -c 3 -W 2 "$peer"; then
    say "ping ok"
  else
    say "ping failed"
  fi
fi

say "done (boot $boot)"
sync
# cairn.stay (the README's walkthrough): the guest keeps running with a shell on its console
# (`cairnctl vm console`) instead of resetting; a shell that exits is started again.
if [ -n "$stay" ]; then
  say "staying up: a shell on this console"
  while :; do
    sh </dev/console >/dev/console 2>&1
  done
fi
reboot -f
# Should reboot -f return, make the kernel reset the machine.
sleep 5
echo b > /proc/sysrq-trigger
