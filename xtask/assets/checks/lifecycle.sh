# /etc/keel/checks.d/lifecycle.sh (xtask/assets/checks/lifecycle.sh), sourced by S99keel in keel.init=checks mode:
# xm's lifecycle commands where no domU exists yet: what Xen refuses for dom0, unknown domains, and `shutdown -a`
# (which leaves dom0 alone). Lines are tagged KEEL-LIFE; tests/tests/linux.rs asserts them.
life_out=$(xm destroy 0 2>&1)
echo "KEEL-LIFE: destroy-0 rc=$? $life_out"
life_out=$(xm pause nosuch 2>&1)
echo "KEEL-LIFE: pause-nosuch rc=$? $life_out"
life_out=$(xm sysrq 77 s 2>&1)
echo "KEEL-LIFE: sysrq-77 rc=$? $life_out"
life_out=$(xm vcpu-set 0 9 2>&1)
echo "KEEL-LIFE: vcpu-set-0-9 rc=$? $life_out"
life_out=$(xm shutdown -a -w 2>&1)
echo "KEEL-LIFE: shutdown-all rc=$? $life_out"
echo "KEEL-LIFE: done"
