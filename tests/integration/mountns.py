# Private mount namespaces for tests that mount over parts of the machine
# (an overlay of /, a read-only or full maildrop/): nothing they mount may
# show outside, also when the suite runs in a chroot (CI), where "/" is no
# mount point and `unshare --propagation private` fails.
import subprocess


def mount_points():
    """Mount points this process sees (/proc/self/mountinfo field 5)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            path = line.split()[4]
            out.append(path.encode().decode("unicode_escape"))
    return out


def propagation():
    """What unshare can set: "private" when / is a mount point here; in a
    chroot it is not, and only "unchanged" works (see anchor())."""
    return "private" if "/" in mount_points() else "unchanged"


def anchor(path):
    """Shell commands, run first inside the new namespace, that make `path`
    a private mount point: whatever is mounted on or under it afterwards
    stays in the namespace even when the parent mount is shared with the
    machine. The bind itself may have propagated out; release() removes
    that copy."""
    return "mount --bind {p} {p} && mount --make-private {p}".format(p=path)


def release(path):
    """Unmounts the copy of anchor()'s bind that propagated to this
    namespace, if it did (a shared parent mount)."""
    if path in mount_points():
        subprocess.run(["umount", path], check=True, timeout=60)


def unshare_argv(path, setup):
    """argv prefix: a private mount namespace with `path` anchored, then
    the shell commands `setup`, then exec of the command that follows."""
    return ["unshare", "-m", "--propagation", propagation(), "sh", "-c",
            "%s && %s && exec \"$@\"" % (anchor(path), setup), "sh"]
