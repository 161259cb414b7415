#!/bin/sh
# Build a Debian 12 Vagrant box for libvirt from Debian's packages only, and print its path.
#
#   vm/build-box.sh            build (or reuse) the box; prints the .box file on stdout
#   vm/build-box.sh --key      print the cache key only (a hash of this script's inputs)
#
# The box: debootstrap minbase + Debian's kernel, systemd as PID 1, openssh-server, sudo,
# nginx-light, python3, procps, iproute2; the `vagrant` user with Vagrant's insecure key
# (Vagrant swaps it for a key of its own on the first `vagrant up`), passwordless sudo; no
# SSH host keys in the image (each VM makes its own at first boot) and an empty machine-id.
# Provisioning (nginx/provision.sh) then needs no network.
#
# Cached under $BG_VM_CACHE (default /var/cache/bluegreen/vm)/<key>/, the key being a hash
# of this script, the package list and the suite: a machine builds it once. Timings of each
# step go to timings.txt beside the box (measured on a 2-core machine: debootstrap ~3 min,
# image ~20 s, qcow2 ~10 s).
#
# Why by hand: the kernel this is built on may have no partition-table support (no loop
# partitions, so no grub-install). The ext4 file system is written straight into the disk
# image at a 1 MiB offset with `mkfs.ext4 -d` (no loop device, no mount) and GRUB's
# boot.img/core.img go into the MBR and the gap after it, which is what grub-install does.
set -eu

SUITE=bookworm
PACKAGES=linux-image-amd64,systemd,systemd-sysv,dbus,openssh-server,sudo,ifupdown,\
isc-dhcp-client,iproute2,procps,netbase,grub-pc-bin,nginx-light,python3
DISK_GIB=8
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${BG_VM_CACHE:-/var/cache/bluegreen/vm}

key() {
  { cat "$HERE/build-box.sh"; echo "$SUITE $PACKAGES $DISK_GIB"; } | sha256sum | cut -c1-16
}

if [ "${1:-}" = --key ]; then key; exit 0; fi

KEY=$(key)
OUT="$CACHE/$KEY"
if [ -s "$OUT/bookworm64.box" ]; then
  echo "$OUT/bookworm64.box"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-box.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap qemu-img parted mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "build-box.sh: $tool is missing (./dev vm-bootstrap)" >&2; exit 1; }
done
VAGRANT_KEY=${BG_VM_VAGRANT_PUBKEY:-$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n 1)}
[ -s "$VAGRANT_KEY" ] || { echo "build-box.sh: Vagrant's insecure public key not found (apt-get install vagrant, or set BG_VM_VAGRANT_PUBKEY)" >&2; exit 1; }
# The mirror apt already uses (a Debian registry this machine reaches), else Debian's.
MIRROR=${BG_VM_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/build-$KEY.XXXXXX")
ROOT="$WORK/rootfs"
cleanup() {
  for m in dev/pts dev proc sys; do umount "$ROOT/$m" 2>/dev/null || :; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
TIMINGS="$WORK/timings.txt"
step_began=0
step() { step_began=$(date +%s); echo "build-box: $1" >&2; LAST_STEP=$1; }
done_step() { echo "$LAST_STEP: $(( $(date +%s) - step_began )) s" >> "$TIMINGS"; }

step "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
  > "$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
done_step

step "configure the guest (vagrant user, sudo, sshd, network, boot loader files)"
UUID=$(cat /proc/sys/kernel/random/uuid)
echo bg-box > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 bg-box\n' > "$ROOT/etc/hosts"
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$UUID" > "$ROOT/etc/fstab"
# net.ifnames=0 below: the first NIC is eth0 whatever bus the provider puts it on.
cat > "$ROOT/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
allow-hotplug eth0
iface eth0 inet dhcp
EOF
# The mirror for a later `apt-get` in the guest (provisioning itself needs none).
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$ROOT/etc/apt/sources.list"
# A unique machine-id and unique SSH host keys per VM, made at its first boot.
: > "$ROOT/etc/machine-id"
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat > "$ROOT/etc/systemd/system/bg-ssh-host-keys.service" <<'EOF'
[Unit]
Description=SSH host keys of this VM (made at its first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
EOF
# sshd answers without a DNS look-up of the client (there is no DNS in the rehearsal).
echo 'UseDNS no' > "$ROOT/etc/ssh/sshd_config.d/bg-box.conf"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
install -m 0644 "$VAGRANT_KEY" "$ROOT/tmp/vagrant.pub"
chroot "$ROOT" /bin/sh -eu <<'EOF'
systemctl enable bg-ssh-host-keys.service >/dev/null 2>&1
useradd --create-home --shell /bin/bash vagrant
echo vagrant:vagrant | chpasswd
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
rm /tmp/vagrant.pub
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
echo 'root:vagrant' | chpasswd
apt-get clean
rm -rf /var/lib/apt/lists/*
# core.img: the modules to read the first partition; the rest load from /boot/grub.
mkdir -p /boot/grub
cp -r /usr/lib/grub/i386-pc /boot/grub/
grub-mkimage -O i386-pc -o /boot/grub/core.img -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal linux
EOF
for m in dev/pts dev proc sys; do umount "$ROOT/$m"; done
KERNEL=$(cd "$ROOT/boot" && ls vmlinuz-* | sort -V | tail -n 1)
INITRD=initrd.img-${KERNEL#vmlinuz-}
cat > "$ROOT/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
menuentry "Debian $SUITE (bluegreen box)" {
  linux /boot/$KERNEL root=UUID=$UUID ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0 quiet
  initrd /boot/$INITRD
}
EOF
mkdir -p "$WORK/out"
cp "$ROOT/boot/$KERNEL" "$WORK/out/vmlinuz"
cp "$ROOT/boot/$INITRD" "$WORK/out/initrd.img"
cp "$ROOT/boot/grub/core.img" "$WORK/core.img"
cp "$ROOT/usr/lib/grub/i386-pc/boot.img" "$WORK/boot.img"
done_step

step "disk image (msdos label, ext4 at 1 MiB written from the rootfs, GRUB in the MBR)"
DISK="$WORK/disk.raw"
truncate -s "${DISK_GIB}G" "$DISK"
parted -s "$DISK" mklabel msdos mkpart primary ext4 1MiB 100% set 1 boot on
mkfs.ext4 -q -F -U "$UUID" -L root -E offset=1048576 -d "$ROOT" "$DISK" \
  "$(( (DISK_GIB * 1024 - 1) * 1024 ))k"
# boot.img's first 440 bytes (the partition table after them stays); core.img at sector 1.
dd if="$WORK/boot.img" of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/core.img" of="$DISK" bs=512 seek=1 conv=notrunc status=none
[ "$(stat -c %s "$WORK/core.img")" -lt $(( 2047 * 512 )) ]
rm -rf "$ROOT"
done_step

step "box (qcow2 + metadata.json + Vagrantfile)"
qemu-img convert -O qcow2 "$DISK" "$WORK/out/box.img"
rm "$DISK"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$DISK_GIB" \
  > "$WORK/out/metadata.json"
printf '{"bg_box_key": "%s", "description": "Debian %s built by bluegreen vm/build-box.sh"}\n' \
  "$KEY" "$SUITE" > "$WORK/out/info.json"
# Emulation is the safe default for this box; the project's Vagrantfile picks KVM when a probe
# shows it boots.
cat > "$WORK/out/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
    libvirt.disk_bus = "virtio"
  end
end
EOF
tar -C "$WORK/out" -cf "$WORK/out/bookworm64.box" metadata.json info.json Vagrantfile box.img
rm "$WORK/out/box.img"
done_step

mv "$TIMINGS" "$WORK/out/timings.txt"
cat "$WORK/out/timings.txt" >&2
rm -rf "$OUT"
mv "$WORK/out" "$OUT"
echo "$OUT/bookworm64.box"
