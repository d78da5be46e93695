"""Files the daemon trusts: its configuration, users, TLS key, state and sandbox.

The first build took a users file by its mode alone (a 0600 file owned by
nobody was accepted, and nobody made himself admin), resolved symlinks in
the sandbox directory and reused a key planted there. Each is now refused at
start in one line that names the file and the fix.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lmi_mount import daemon
from lmi_mount.linux import files
from lmi_mount.server.app import tls_context
from lmi_mount.server.config import ConfigError
from tests.support.skips import requires_root

NOBODY = 65534


def settings_of(*argv: str) -> daemon.Settings:
    return daemon.settings(daemon.parser().parse_args(list(argv)))


def nobodys_link(tmp_path: Path, name: str, target: Path) -> Path:
    """A symbolic link to ``target`` that nobody made in a sticky directory, as in /tmp."""
    public = tmp_path / "public"
    public.mkdir(exist_ok=True)
    public.chmod(0o1777)
    link = public / name
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    return link


@requires_root
def test_a_configuration_someone_else_owns_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "lmi-mountd.conf"
    config.write_text("[server]\nhttp_port = 5988\n")
    os.chown(config, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"configuration {config} is owned by uid 65534"):
        settings_of("--config", str(config))


def test_a_configuration_others_may_write_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "lmi-mountd.conf"
    config.write_text("[server]\nhttp_port = 5988\n")
    config.chmod(0o666)
    with pytest.raises(ConfigError, match=f"chmod go-w {config}"):
        settings_of("--config", str(config))


def test_a_sandbox_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "sandbox").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"sandbox directory .* is a symbolic link"):
        daemon._sandbox_root(tmp_path / "sandbox")


def test_a_sandbox_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sandbox").mkdir(mode=0o777)
    (tmp_path / "sandbox").chmod(0o777)
    with pytest.raises(ConfigError, match="others could change it"):
        daemon._sandbox_root(tmp_path / "sandbox")


def test_sandbox_without_a_directory_makes_a_private_one() -> None:
    args = daemon.parser().parse_args(["--sandbox"])
    assert args.sandbox == daemon.NEW_SANDBOX
    root = daemon._sandbox_root(args.sandbox)
    try:
        assert stat.S_IMODE(root.stat().st_mode) == 0o700 and not root.is_symlink()
        assert daemon._sandbox_root(args.sandbox) != root, "a new one each time"
    finally:
        for made in root.parent.glob("lmi-mount-sandbox-*"):
            if made.is_dir() and not any(made.iterdir()):
                made.rmdir()


def test_a_tls_key_others_may_read_is_refused(tmp_path: Path) -> None:
    key, cert = tmp_path / "server.key", tmp_path / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True,
                   capture_output=True)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=f"TLS key {key} has mode 644: others could read it"):
        tls_context(cert, key)
    key.chmod(0o600)
    tls_context(cert, key)


@requires_root
def test_a_sandbox_in_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    # That user could rename the sandbox away and plant a symlink as its fstab.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="which uid 65534 may change"):
        daemon._sandbox_root(theirs / "sandbox")


@requires_root
def test_a_sandbox_reached_through_another_user_s_symlink_is_refused(tmp_path: Path) -> None:
    # /tmp is sticky, so nobody may swap his own link there for another between
    # the check and every later use of the path: root would then write where
    # nobody points (a review made root write cache entries into nobody's
    # directory this way).
    (tmp_path / "root-only").mkdir(mode=0o700)
    link = nobodys_link(tmp_path, "link", tmp_path / "root-only")
    with pytest.raises(ConfigError, match=f"{link} is a symbolic link owned by uid 65534"):
        daemon._sandbox_root(link / "sandbox")


def test_a_root_owned_symlink_above_is_followed_and_its_target_checked(tmp_path: Path) -> None:
    # As /var/run -> /run: only root could change it. What it leads to is checked.
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "alias").symlink_to(tmp_path / "open")
    with pytest.raises(ConfigError, match=f"is in {tmp_path / 'open'}, which"):
        daemon._sandbox_root(tmp_path / "alias" / "sandbox")
    (tmp_path / "open").chmod(0o755)
    assert daemon._sandbox_root(tmp_path / "alias" / "sandbox") == tmp_path / "alias" / "sandbox"


@requires_root
@pytest.mark.parametrize("how", ["through a link in a sticky directory",
                                 "into a directory another user owns"])
def test_a_link_met_while_resolving_is_checked_like_one_in_the_path(
        tmp_path: Path, how: str) -> None:
    # A root link written in the path, leading through what nobody controls:
    # the path as spelled and its resolved parents looked fine, and nobody
    # swapped his link between the check and the read (an outside review
    # got a users file of his own read this way in 157 tries).
    (tmp_path / "etc").mkdir(mode=0o755)
    (tmp_path / "etc" / "users").write_text("")
    if how == "through a link in a sticky directory":
        hop = nobodys_link(tmp_path, "nb", tmp_path / "etc")
        expected = f"{hop} is a symbolic link owned by uid 65534"
    else:
        public = tmp_path / "public"
        public.mkdir()
        os.chown(public, NOBODY, NOBODY)
        hop = public / "rootlink"
        hop.symlink_to(tmp_path / "etc")
        expected = f"is in {public}, which uid 65534"
    (tmp_path / "conf").mkdir(mode=0o755)
    (tmp_path / "conf" / "lmi").symlink_to(hop)
    with pytest.raises(files.UntrustedFile, match=expected):
        files.check_trusted(tmp_path / "conf" / "lmi" / "users", "users file")


def test_dot_dot_is_resolved_as_the_kernel_resolves_it(tmp_path: Path) -> None:
    # After a link, ".." is the parent of where the link leads, not of the link.
    (tmp_path / "deep" / "inside").mkdir(parents=True, mode=0o755)
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "open" / "users").write_text("")
    (tmp_path / "deep" / "users").write_text("")
    (tmp_path / "open" / "hop").symlink_to(tmp_path / "deep" / "inside")
    files.check_trusted(tmp_path / "deep" / "inside" / ".." / "users", "users file")
    with pytest.raises(files.UntrustedFile, match=f"is in {tmp_path / 'open'}, which"):
        files.check_trusted(tmp_path / "open" / "hop" / ".." / "users", "users file")


@requires_root
@pytest.mark.parametrize("ending", ["/", "/.", "//"])
def test_a_trailing_slash_does_not_hide_a_link_as_the_last_component(
        tmp_path: Path, ending: str) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    link = nobodys_link(tmp_path, "state", tmp_path / "state")
    with pytest.raises(files.UntrustedFile, match="symbolic link"):
        files.check_trusted(f"{link}{ending}", "state directory")


def test_only_a_file_or_a_directory_is_trusted(tmp_path: Path) -> None:
    # A FIFO as the users file would hang the reader that trusts it.
    fifo = tmp_path / "users"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(files.UntrustedFile, match=f"users file {fifo} is a FIFO"):
        files.check_trusted(fifo, "users file", secret=True)


@requires_root
def test_a_magic_link_is_judged_by_where_the_kernel_goes(tmp_path: Path) -> None:
    # A process whose working directory is nobody's, hidden since under a
    # root tmpfs: /proc/PID/cwd reads as the tmpfs, the kernel goes to the
    # hidden directory. Neither the text nor which procfs it is on proves
    # anything (a second procfs passed a check of /proc's device).
    script = f"""
set -e
mount --make-rprivate /
mkdir -p {tmp_path}/nb {tmp_path}/proc2
chown 65534 {tmp_path}/nb && chmod 0777 {tmp_path}/nb
echo nobody > {tmp_path}/nb/conf
cd {tmp_path}/nb
mount -t tmpfs -o mode=0755 tmpfs {tmp_path}/nb
echo root > {tmp_path}/nb/conf
mount -t proc proc {tmp_path}/proc2
exec {sys.executable} -c '
import os
from lmi_mount.linux import files
for proc in ("/proc", "{tmp_path}/proc2"):
    try:
        files.check_trusted(f"{{proc}}/{{os.getpid()}}/cwd/conf", "configuration")
        print("accepted", open(f"{{proc}}/{{os.getpid()}}/cwd/conf").read().strip())
    except files.UntrustedFile as exc:
        print("refused:", exc)
'
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("refused:" in line and "leads elsewhere" in line
                                   for line in lines), done.stdout


def test_a_proc_that_is_not_mounted_leaves_ordinary_links_alone(tmp_path: Path) -> None:
    # A chroot or a container without /proc: /lib -> usr/lib is still a link
    # root owns on the root file system, and is followed.
    (tmp_path / "usr" / "lib").mkdir(parents=True, mode=0o755)
    (tmp_path / "usr" / "lib" / "users").write_text("")
    (tmp_path / "lib").symlink_to("usr/lib")
    files.check_trusted(tmp_path / "lib" / "users", "users file")


def acl_xattr(*entries: tuple[int, int, int]) -> bytes:
    """The ``system.posix_acl_*`` value of (tag, permission, id) entries."""
    return b"\x02\x00\x00\x00" + b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + ident.to_bytes(4, "little")
        for tag, perm, ident in entries)


ANY = 0xFFFFFFFF


def test_a_secret_that_an_acl_lets_someone_read_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("admin:$6$hash:admin\n")
    users.chmod(0o600)
    # u::rw-, u:65534:r--, g::---, m::r--, o::--- (the xattr setfacl writes).
    acl = acl_xattr((1, 6, ANY), (2, 4, NOBODY), (4, 0, ANY), (0x10, 4, ANY), (0x20, 0, ANY))
    try:
        os.setxattr(users, "system.posix_acl_access", acl)
    except OSError as error:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {error}")
    assert stat.S_IMODE(users.stat().st_mode) == 0o640  # the mask shows as group bits
    with pytest.raises(files.UntrustedFile, match=r"an ACL lets uid 65534 use it; setfacl -b"):
        files.check_trusted(users, "users file", secret=True)
    files.check_trusted(users, "configuration")  # read by others is no matter there


def test_acl_entries_count_as_the_mask_lets_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    try:
        # u::rwx, u:65534:--x, g::---, m::--x, o::---: nobody may enter it.
        os.setxattr(state, "system.posix_acl_access", acl_xattr(
            (1, 7, ANY), (2, 1, NOBODY), (4, 0, ANY), (0x10, 1, ANY), (0x20, 0, ANY)))
    except OSError as error:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {error}")
    with pytest.raises(files.UntrustedFile, match="an ACL lets uid 65534 use it; setfacl -b"):
        files.check_trusted(state, "state directory", secret=True)
    # The same entry, masked out: nobody gets nothing.
    os.setxattr(state, "system.posix_acl_access", acl_xattr(
        (1, 7, ANY), (2, 1, NOBODY), (4, 0, ANY), (0x10, 0, ANY), (0x20, 0, ANY)))
    files.check_trusted(state, "state directory", secret=True)
    # A default ACL hands its entries to every file made in it later: write
    # reaches what is made with a mode that lets the group write (the umask
    # does not apply under a default ACL), whatever the directory is for.
    os.removexattr(state, "system.posix_acl_access")
    os.setxattr(state, "system.posix_acl_default", acl_xattr(
        (1, 7, ANY), (2, 7, NOBODY), (4, 0, ANY), (0x10, 7, ANY), (0x20, 0, ANY)))
    for secret in (True, False):
        with pytest.raises(files.UntrustedFile, match="a default ACL lets uid 65534 write "
                           "what is made in it; setfacl -k"):
            files.check_trusted(state, "sandbox directory", secret=secret)
    # Read only, as systemd-tmpfiles' "a+" lines give: what the daemon makes
    # there is 0600 or 0700, whose mask leaves the entry nothing.
    os.setxattr(state, "system.posix_acl_default", acl_xattr(
        (1, 7, ANY), (4, 0, ANY), (8, 5, NOBODY), (0x10, 5, ANY), (0x20, 0, ANY)))
    files.check_trusted(state, "state directory", secret=True)


def test_a_file_root_replaces_meanwhile_is_not_refused(tmp_path: Path) -> None:
    # An editor or a renewal tool renaming a new file into place between the
    # walk and the kernel's own look: the same path, two inodes, both root's.
    users = tmp_path / "users"
    users.write_text("")
    users.chmod(0o600)
    stop = threading.Event()

    def replace() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            new = tmp_path / f"users.{number}"
            new.write_text("")
            new.chmod(0o600)
            os.replace(new, users)

    swapper = threading.Thread(target=replace)
    swapper.start()
    try:
        for _ in range(3000):
            files.check_trusted(users, "users file", secret=True)
    finally:
        stop.set()
        swapper.join()


@requires_root
def test_a_directory_is_told_to_be_chowned_not_replaced(tmp_path: Path) -> None:
    theirs = tmp_path / "state"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(files.UntrustedFile,
                       match=f"chown root {theirs} and chmod go-w {theirs}, then check"):
        files.check_trusted(theirs, "state directory")


def test_the_certificate_must_be_a_file_and_may_be_a_link(tmp_path: Path) -> None:
    # A FIFO planted as the certificate held the start up for ever; certbot's
    # live/fullchain.pem is a link into archive/ (the certificate is public).
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(tmp_path / "archive.pem"), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    key.chmod(0o600)
    os.mkfifo(cert, 0o644)
    with pytest.raises(ConfigError, match=f"TLS certificate {cert} is a FIFO, not a file"):
        tls_context(cert, key)
    cert.unlink()
    cert.symlink_to(tmp_path / "archive.pem")
    tls_context(cert, key)


def test_a_group_writable_directory_is_named_as_such(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    with pytest.raises(files.UntrustedFile,
                       match=f"{shared}, which has mode 775: others may change it; "
                             f"chmod go-w {shared}"):
        files.check_trusted(shared / "users", "users file")


def test_a_relative_path_from_a_removed_directory_is_a_refusal(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    os.chdir(gone)
    try:
        gone.rmdir()
        with pytest.raises(files.UntrustedFile, match="working directory"):
            files.check_trusted("users", "users file")
    finally:
        os.chdir(here)
