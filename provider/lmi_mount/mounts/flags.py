"""The kernel's mount(2) and umount2(2) flag values, as plain integers.

Owns: the numeric MS_* / MNT_* constants (from <linux/mount.h> and <sys/mount.h>)
so that the pure option tables (``options``) and the machine layer (``linux``)
share one definition. Must not know: how flags are applied or parsed.
"""

from typing import Final

MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_NOEXEC: Final = 0x8
MS_SYNCHRONOUS: Final = 0x10
MS_REMOUNT: Final = 0x20
MS_MANDLOCK: Final = 0x40
MS_DIRSYNC: Final = 0x80
MS_NOSYMFOLLOW: Final = 0x100
MS_NOATIME: Final = 0x400
MS_NODIRATIME: Final = 0x800
MS_BIND: Final = 0x1000
MS_MOVE: Final = 0x2000
MS_REC: Final = 0x4000
MS_SILENT: Final = 0x8000
MS_UNBINDABLE: Final = 1 << 17
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_SHARED: Final = 1 << 20
MS_RELATIME: Final = 1 << 21
MS_I_VERSION: Final = 1 << 23
MS_STRICTATIME: Final = 1 << 24
MS_LAZYTIME: Final = 1 << 25

# The superblock flags a remount may change (include/linux/fs.h MS_RMT_MASK, without
# MS_I_VERSION, which nobody asks for): mount(2) ignores the others on a remount,
# and fsconfig(2) refuses a reconfiguration that names one (dirsync: EINVAL).
MS_RMT_MASK: Final = MS_RDONLY | MS_SYNCHRONOUS | MS_MANDLOCK | MS_LAZYTIME

# Flags that belong to the mount (VFS) rather than the superblock: on a remount
# they change with MS_REMOUNT|MS_BIND alone, without touching the file system
# (mount(2), "Remounting an existing mount"; kernel commit 2e4b7fcd9260).
PER_MOUNT_FLAGS: Final = (
    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME
    | MS_RELATIME | MS_STRICTATIME | MS_NOSYMFOLLOW
)

# umount2(2) flags.
MNT_FORCE: Final = 0x1
MNT_DETACH: Final = 0x2
MNT_EXPIRE: Final = 0x4
UMOUNT_NOFOLLOW: Final = 0x8


# mount(8) option names of the flags above, as (flag, name when set, name when
# clear). One table for the option parser (``options``) and for the helper path
# of the machine layer, which must spell flags as mount(8) arguments.
FLAG_OPTION_NAMES: Final[tuple[tuple[int, str, str], ...]] = (
    (MS_RDONLY, "ro", "rw"),
    (MS_NOSUID, "nosuid", "suid"),
    (MS_NODEV, "nodev", "dev"),
    (MS_NOEXEC, "noexec", "exec"),
    (MS_SYNCHRONOUS, "sync", "async"),
    (MS_DIRSYNC, "dirsync", ""),
    (MS_MANDLOCK, "mand", "nomand"),
    (MS_NOATIME, "noatime", "atime"),
    (MS_NODIRATIME, "nodiratime", "diratime"),
    (MS_RELATIME, "relatime", "norelatime"),
    (MS_STRICTATIME, "strictatime", "nostrictatime"),
    (MS_LAZYTIME, "lazytime", "nolazytime"),
    (MS_NOSYMFOLLOW, "nosymfollow", "symfollow"),
    (MS_SILENT, "silent", "loud"),
)


def flag_option_names(flags: int) -> list[str]:
    """Spell the option flags set in ``flags`` as mount(8) names, table order.

    Only set flags are named: a clear flag is the kernel default and needs no word.
    Operation flags (MS_BIND, MS_REMOUNT, MS_REC, propagation) are not options
    and are ignored here.
    """
    return [name for flag, name, _ in FLAG_OPTION_NAMES if flags & flag]
