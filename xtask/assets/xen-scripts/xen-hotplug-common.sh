# /etc/xen/scripts/xen-hotplug-common.sh: what the hotplug scripts share. The toolstack (xm, like libxl with
# run_hotplug_scripts=1) runs each script with the action as its argument and Xen's environment:
#   XENBUS_PATH   the device's backend directory, relative to dom0's home (backend/vbd/DOMID/DEVID)
#   XENBUS_TYPE   vbd or vif
#   vif           (vifs) the backend's network interface, vifDOMID.DEVID
# A script reports success by writing hotplug-status = connected in the backend directory, and a failure by
# writing hotplug-error (the reason, which xm prints) and hotplug-status = error, and exiting non-zero.

xs_read() { xenstore-read "$1" 2>/dev/null; }
xs_write() { xenstore-write "$1" "$2"; }

# log MESSAGE: to /var/log/xen/xen-hotplug.log.
log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') ${0##*/} $command $XENBUS_PATH: $*" >>/var/log/xen/xen-hotplug.log 2>/dev/null
}

success() {
    xs_write "$XENBUS_PATH/hotplug-status" connected
    log "connected"
}

fatal() {
    xs_write "$XENBUS_PATH/hotplug-error" "$*"
    xs_write "$XENBUS_PATH/hotplug-status" error
    log "error: $*"
    echo "${0##*/}: $*" >&2
    exit 1
}

# lock NAME / unlock NAME: one script at a time in a critical section (busybox has no flock; mkdir is atomic).
lock() {
    n=0
    while ! mkdir "/run/xen-hotplug-$1.lock" 2>/dev/null; do
        n=$((n + 1))
        [ $n -gt 200 ] && fatal "timed out waiting for the $1 lock"
        sleep 0.05
    done
}
unlock() { rmdir "/run/xen-hotplug-$1.lock" 2>/dev/null; }

[ -n "$XENBUS_PATH" ] || {
    echo "${0##*/}: XENBUS_PATH is not set: this script is run by the toolstack" >&2
    exit 1
}
command=$1
