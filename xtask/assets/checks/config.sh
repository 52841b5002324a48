# /etc/keel/checks.d/config.sh (xtask/assets/checks/config.sh), sourced by S99keel in keel.init=checks mode:
# `xm create -n` reads the sample /etc/xen/example-pvh (by its bare name, as xm looks it up) and prints it with its
# defaults filled in; a bad command-line setting fails naming the key. Lines are tagged KEEL-CFG; tests/tests/linux.rs
# asserts them.
xm create -n example-pvh vcpus=1 2>&1 | sed 's/^/KEEL-CFG-DRY: /'
cfg_out=$(xm create -n example-pvh memory=lots 2>&1)
echo "KEEL-CFG: bad-memory rc=$? $cfg_out"
echo "KEEL-CFG: done"
