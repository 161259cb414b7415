"""A real VM for `bg rehearse --vagrant` and the `vm` test tier: Debian 12 under QEMU.

* :mod:`bluegreen.vm.box`: the Debian box built from Debian's packages (vm/build-box.sh),
  added to Vagrant once per build;
* :mod:`bluegreen.vm.accel`: KVM when a probe shows a kernel boots under it, else TCG;
* :mod:`bluegreen.vm.netns`: the network namespace the VM, libvirt's network, bg and the load
  live in (the guest is never reachable from this machine's own namespace);
* :mod:`bluegreen.vm.libvirtd`: libvirtd and virtlogd started in that namespace when no service
  manager runs them, and everything of libvirt's made there removed afterwards;
* :mod:`bluegreen.vm.session`: all of the above around `vagrant up` and `vagrant destroy`.
"""
