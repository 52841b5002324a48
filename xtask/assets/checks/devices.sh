# dom0's Xen devices against Keel (issue 11): gntalloc + gntdev (a page granted to dom0 itself, mapped again
# through gntdev), privcmd's MMAP_RESOURCE size query and MMAPBATCH_V2 per-page errors. keel-devcheck prints one
# `KEEL-CHECK:` line per fact; tests/tests/linux.rs asserts them.
if [ -x /usr/bin/keel-devcheck ]; then
    keel-devcheck 2>&1
else
    echo "KEEL-CHECK: devcheck missing"
fi
