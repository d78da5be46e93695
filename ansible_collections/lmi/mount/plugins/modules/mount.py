#!/usr/bin/python
# Copyright (C) 2026 The lmi-mount authors.
# SPDX-License-Identifier: LGPL-2.1-or-later
"""lmi.mount.mount: ansible.posix.mount's interface, carried out by lmi-mountd over CIM-XML."""

from __future__ import annotations

DOCUMENTATION = r"""
module: mount
short_description: Mount file systems and keep /etc/fstab through lmi-mountd
version_added: "0.1.0"
description:
  - Makes a mount point mounted, unmounted, present in or absent from
    C(/etc/fstab) on a host that runs lmi-mountd, the CIM/WBEM service of the
    OpenLMI Mounting Model. The module speaks CIM-XML through pywbem, so it
    can run on the controller for every host at once (with
    C(delegate_to=localhost), one connection per host, in parallel through
    the forks) or on the host itself against C(https://localhost:5989).
  - The parameters and states are those of M(ansible.posix.mount), plus
    O(holder). lmi-mountd counts references, so a mount that several
    holders (playbooks, jobs, users) need stays mounted until the last one
    lets it go; C(unmounted) and C(absent) release only this O(holder)'s
    reference unless O(force) is set.
  - Every change is one transaction on the host. The fstab line is edited in
    place, atomically, with every other line kept byte for byte. A mount that
    is both mounted and added to fstab is neither if either step fails.
  - In check mode the service plans each call (C(DryRun)) and changes nothing.
    The steps it would take are returned in RV(plan). In diff mode the fstab
    lines before and after are shown.
  - A second run with the same parameters changes nothing.
requirements:
  - pywbem >= 1.9 where the module runs
options:
  path:
    description:
      - Absolute path of the mount point, as the host knows it (C(//), C(/./)
        and a trailing C(/) are dropped). Name it without symbolic links - a
        new mount through one is refused with the path it leads to, and the
        other states find nothing there. The directory must exist.
    type: path
    required: true
    aliases: [name]
  src:
    description:
      - What to mount, as fstab and mount(8) spell it. A device, C(UUID=...),
        an image file, a network share, a word such as C(tmpfs), or a
        directory for a bind mount.
      - Required for O(state=mounted), O(state=present) and O(state=ephemeral).
    type: str
  fstype:
    description:
      - The file system type.
      - C(none) with C(bind) in O(opts) is a bind mount of the directory O(src);
        with C(rbind), a recursive bind, which brings the mounts below O(src)
        along, gives them its flags, and takes them away with it.
      - Required for O(state=mounted), O(state=present) and O(state=ephemeral).
    type: str
  opts:
    description:
      - Mount options as mount(8) spells them, for example C(ro,noexec,size=16m).
        The service writes them to fstab in its own order (the mount(8) flags
        first); the meaning is kept.
      - Not given, C(defaults); with O(state=remounted), the options the fstab
        line names (those it does not name stay as mounted; without a line
        nothing is remounted).
    type: str
  dump:
    description:
      - The fifth field of the fstab line, C(0) or C(1) (the model's Dump is a
        boolean).
    type: str
    default: "0"
  passno:
    description:
      - The sixth field of the fstab line (the order of the boot-time fsck),
        0 to 65535.
    type: str
    default: "0"
  state:
    description:
      - V(mounted) - mounted and in fstab. The live options are changed when
        they differ from O(opts) and no other holder holds the mount (then
        the task fails; V(remounted) changes them for all holders).
      - V(present) - in fstab only; nothing is mounted or unmounted.
      - V(ephemeral) - mounted, fstab untouched.
      - V(unmounted) - this O(holder)'s references released (the service
        unmounts with the last one, after its hold time if it has one); fstab
        untouched. A mount nobody holds (one made at boot or by hand) is
        unmounted.
      - V(absent) - as V(unmounted), and the fstab line removed.
      - V(remounted) - the live options made O(opts) (or the fstab line's);
        changed only when they were not already in effect, for every holder.
    type: str
    required: true
    choices: [absent, ephemeral, mounted, present, remounted, unmounted]
  boot:
    description:
      - Whether the file system is mounted at boot; V(false) adds C(noauto)
        to the fstab line's options.
    type: bool
    default: true
  holder:
    description:
      - Who holds the mount, the name this module's references are counted
        under. Use one name per purpose, so that purposes release
        independently. Not empty.
    type: str
    default: ansible
  force:
    description:
      - With V(unmounted) or V(absent), drop every holder's reference and
        unmount now. With V(remounted) and V(mounted), allow changing the
        options of a system mount that lmi-mount did not make (C(/),
        C(/proc), C(/sys), C(/dev), C(/run) and below).
    type: bool
    default: false
  url:
    description:
      - The lmi-mountd URL, C(https://host:5989) or C(http://host:5988).
      - The environment variable E(LMI_MOUNT_URL) is used when it is not set.
    type: str
    required: true
  username:
    description:
      - User name for HTTP Basic authentication (an lmi-mountd admin).
      - Default from E(LMI_MOUNT_USERNAME).
    type: str
  password:
    description:
      - Password of O(username). Default from E(LMI_MOUNT_PASSWORD).
    type: str
  ca_certs:
    description:
      - File or directory of CA certificates that verify the service's
        certificate.
    type: path
  validate_certs:
    description:
      - Whether the service's HTTPS certificate is verified.
    type: bool
    default: true
  timeout:
    description:
      - Seconds one call may take, and the longest wait for a job.
    type: int
    default: 120
notes:
  - Check mode and diff mode are supported. Check mode asks the service to
    plan (C(DryRun)), so the account must be an lmi-mountd admin, as for a
    real run. In check mode RV(mounted), RV(in_fstab) and RV(holders) are
    the state as it is.
  - Diff mode shows the fstab lines as fields with one space between; the
    file keeps its own spacing and comments where a line is edited in place.
  - The source and type of an existing fstab line or live mount are not
    changed; the task fails before changing anything and says to remove the
    line (V(absent)) or unmount (V(unmounted)) first.
  - A mount that others hold with other options is In Use; the error names
    its holders.
  - Unlike M(ansible.posix.mount), the mount point is not created or
    removed, and there are no C(fstab) or C(backup) parameters; the service
    edits the fstab it was configured with, atomically, and keeps backups
    itself.
seealso:
  - module: ansible.posix.mount
author:
  - The lmi-mount authors
"""

EXAMPLES = r"""
- name: Scratch space for the build, held by the build and kept in fstab
  lmi.mount.mount:
    url: "https://{{ inventory_hostname }}:5989"
    username: admin
    password: "{{ lmi_password }}"
    ca_certs: /etc/pki/lmi-mount/ca.pem
    path: /srv/scratch
    src: tmpfs
    fstype: tmpfs
    opts: size=512m,noexec
    state: mounted
    holder: build
  delegate_to: localhost

- name: A read-only bind of the data directory, only until the next boot
  lmi.mount.mount:
    url: https://localhost:5989
    path: /srv/export
    src: /srv/data
    fstype: none
    opts: bind,ro,nosuid,nodev,noexec
    state: ephemeral

- name: The build is done with it (the mount stays while others hold it)
  lmi.mount.mount:
    url: "https://{{ inventory_hostname }}:5989"
    path: /srv/scratch
    state: absent
    holder: build
  delegate_to: localhost
"""

RETURN = r"""
plan:
  description:
    - The steps the service took, or would take in check mode, in order.
  returned: always
  type: list
  elements: str
  sample:
    - mount tmpfs tmpfs on /srv/scratch (size=512m,noexec)
    - "holders: build acquires /srv/scratch (first holder)"
    - "fstab: add line 'tmpfs /srv/scratch tmpfs size=512m,noexec 0 0'"
holders:
  description: The holders of the mount after the change (in check mode, now); empty when
    not mounted.
  returned: success
  type: list
  elements: str
mounted:
  description: Whether the mount point is mounted after the change (in check mode, now).
  returned: success
  type: bool
in_fstab:
  description: Whether the mount point has an fstab line after the change (in check mode, now).
  returned: success
  type: bool
"""

import contextlib
import os
import posixpath
import re
import time
import traceback
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    from pywbem import CIMError, Uint16, WBEMConnection
    from pywbem import Error as PywbemError
except ImportError:  # reported by main() with the install hint
    PYWBEM_IMPORT_ERROR = traceback.format_exc()
else:
    PYWBEM_IMPORT_ERROR = None

NAMESPACE = "root/cimv2"
SERVICE = "LMI_MountConfigurationService"
CAPABILITIES = "LMI_MountedFileSystemCapabilities"
MOUNT = "LMI_MountedFileSystem"
SETTING_DATA = "LMI_MountedFileSystemElementSettingData"

# The draft's Modes: what a call does to fstab (IsNext) and the live mount (IsCurrent).
MOUNT_AND_ADD = 1
ADD_LINE = 2
UNMOUNT_AND_REMOVE = 4
REMOVE_LINE = 5
MOUNT_ONLY = 32768
UNMOUNT_ONLY = 32769

# The draft's default options, as mount(8) applies them to a mount whose options
# do not say otherwise (atime flags are kept by the kernel on a remount).
MOUNT8_DEFAULTS = "rw,suid,dev,exec,async"

JOB_STARTED = 4096
JOB_ENDED = (7, 8, 9, 10)  # Completed, Terminated, Killed, Exception
RETURN_NAMES = {1: "Not Supported", 2: "Unknown", 3: "Timeout", 4: "Failed",
                5: "Invalid Parameter", 6: "In Use"}

# The lines of a Plan's fstab step (lmi-mount's FstabChange.describe): escaped
# as fstab escapes them, so a line is six fields with one space between.
_QUOTED_LINE = re.compile(r"'([^ ]+(?: [^ ]+){5})'")
DUMP_VALUES = ("0", "1")  # the model's Dump is a boolean
MAX_PASSNO = 65535  # FileSystemCheckOrder is a uint16


class Failure(Exception):
    """A call the service refused or could not do; the message says which and why."""


class Host:
    """One lmi-mountd: the calls this module makes, each planned only in check mode."""

    def __init__(self, conn, check_mode, timeout):
        self.conn = conn
        self.check_mode = check_mode
        self.timeout = timeout
        self.plan = []
        self._service = None

    # -- reading -------------------------------------------------------------

    def find_all(self, path):
        """Every LMI_MountedFileSystem of ``path`` (a live mount, a line, or both),
        each with its (mounted, in_fstab)."""
        literal = path.replace("\\", "\\\\").replace("'", "\\'")
        found = self.conn.ExecQuery(
            "WQL", f"SELECT * FROM {MOUNT} WHERE MountPointPath = '{literal}'", NAMESPACE
        )
        return [(mount, self.flags(mount)) for mount in found]

    def flags(self, mount):
        """(mounted, in_fstab) of a mount, from its settings' IsCurrent and IsNext."""
        links = self.conn.References(mount.path, ResultClass=SETTING_DATA)
        return (any(link["IsCurrent"] == 1 for link in links),
                any(link["IsNext"] == 1 for link in links))

    def fstab_setting(self, mount):
        """The setting of the mount's fstab line (IsNext), or None."""
        for link in self.conn.References(mount.path, ResultClass=SETTING_DATA):
            if link["IsNext"] == 1:
                return link["SettingData"]
        return None

    # -- goals ---------------------------------------------------------------

    def goal(self, opts, dump, passno, *, live=False):
        """A goal setting for ``opts`` (the service parses them), with dump and passno.

        A ``live`` goal is what mount(8) makes of the options: the flags they
        do not name take the defaults, where a remount would keep what the
        mount has now (an option dropped from ``opts`` would stay in effect).
        """
        if live:
            opts = f"{MOUNT8_DEFAULTS},{opts}"  # a later word overrides an earlier one
        [capabilities] = self.conn.EnumerateInstanceNames(CAPABILITIES, NAMESPACE)
        _, out = self.conn.InvokeMethod("CreateSetting", capabilities, Options=opts)
        path = out["MountSetting"]
        try:
            goal = self.conn.GetInstance(path)
            goal["Dump"] = dump != 0
            goal["FileSystemCheckOrder"] = Uint16(passno)
            self.conn.ModifyInstance(goal, PropertyList=["Dump", "FileSystemCheckOrder"])
        except BaseException:
            self.drop(path)
            raise
        return path

    def drop(self, goal):
        # Goals are transient: one left behind is forgotten at the service's next start.
        with contextlib.suppress(PywbemError):
            self.conn.DeleteInstance(goal)

    # -- changing ------------------------------------------------------------

    def call(self, method, *, probe=False, **params):
        """Invoke one service method (a dry run in check mode, or as a ``probe``);
        return its OUT parameters.

        A call that outlasts the service's synchronous window becomes a job,
        which is waited for. A failure raises Failure with the service's
        message. A probe's steps are not the run's.
        """
        if self._service is None:
            [self._service] = self.conn.EnumerateInstanceNames(SERVICE, NAMESPACE)
        params = {k: v for k, v in params.items() if v is not None}
        if self.check_mode or probe:
            params["DryRun"] = True
        try:
            rv, out = self.conn.InvokeMethod(method, self._service, **params)
            if rv == JOB_STARTED:
                rv, out = self._wait(method, out["Job"])
        except CIMError as exc:
            raise Failure(f"{method}: {exc.status_code_name}: {exc.status_description}") from exc
        if rv != 0:
            error = out.get("Error")
            detail = error["Message"] if error is not None else out.get("ErrorDescription")
            name = RETURN_NAMES.get(int(rv), str(rv))
            raise Failure(f"{method} returned {int(rv)} ({name}): {detail or 'no detail'}")
        if not probe:
            self.plan.extend(out.get("Plan") or ())
        return out

    def _wait(self, method, job_path):
        deadline = time.monotonic() + self.timeout
        while True:
            job = self.conn.GetInstance(job_path)
            if job["JobState"] in JOB_ENDED:
                break
            if time.monotonic() > deadline:
                raise Failure(f"{method}: job {job_path.keybindings['InstanceID']} still "
                              f"running after {self.timeout} s; it carries on on the host")
            time.sleep(0.2)
        result = job["JobOutParameters"]
        if result is None:
            raise Failure(f"{method}: job ended in state {job['JobState']}: "
                          f"{job['ErrorDescription'] or 'no detail'}")
        out = {name: value for name, value in result.items() if name != "__ReturnValue"}
        # A job reports a refused request in ErrorDescription, not in Error.
        out.setdefault("ErrorDescription", job["ErrorDescription"])
        return result["__ReturnValue"], out


class MountState:
    """One mount point's wanted state, reached with the fewest service calls.

    Everything that would make the run fail is checked before the first change:
    a failed task leaves the host as it was.
    """

    def __init__(self, host, params):
        self.host = host
        self.path = _lexical(params["path"])
        self.src = _lexical(params["src"]) if params["src"] else params["src"]
        self.holder = params["holder"]
        if not self.holder or not self.holder.strip():
            raise Failure("holder must name someone, not be empty")
        self.force = params["force"]
        self.opts_given = params["opts"] is not None
        self.fstype, self.opts = _bind_spelling(params["fstype"], params["opts"] or "defaults")
        if not params["boot"] and "noauto" not in self.opts.split(","):
            self.opts = "noauto" if self.opts == "defaults" else f"{self.opts},noauto"
        if str(params["dump"]).strip() not in DUMP_VALUES:
            raise Failure(f"dump must be 0 or 1, not {params['dump']!r}")
        self.dump = int(str(params["dump"]).strip())
        self.passno = _field_number("passno", params["passno"])
        found = host.find_all(self.path)
        self.live = next((m for m, (mounted, _) in found if mounted), None)
        self.line = next((m for m, (_, in_fstab) in found if in_fstab), None)
        self.mounted, self.in_fstab = self.live is not None, self.line is not None

    @property
    def holders(self):
        return list(self.live["Holders"] or ()) if self.live is not None else []

    @property
    def ours(self):
        """How many references this holder has on the mount."""
        return self.holders.count(self.holder)

    # -- checks before any change ----------------------------------------------

    def check_line(self):
        """The fstab line, if any, is of this source and type (no call changes them)."""
        if self.line is None:
            return
        spec, fstype = self.line["FileSystemSpec"], self.line["FileSystemType"]
        if _lexical(spec) != self.src or (self.fstype is not None and fstype is not None
                                          and fstype != self.fstype):
            raise Failure(f"{self.path} has an fstab line for {spec!r} ({fstype or 'bind'}), "
                          f"not {self.src!r} ({self.fstype or 'bind'}): remove it first "
                          "(state: absent)")

    def check_live(self):
        """The live mount, if any, is of this source and type; a new one would be on
        ``path`` itself (not where a symbolic link on the host leads)."""
        if self.live is None:
            out = self.host.call("CreateMount", probe=True, **self._create_args(MOUNT_ONLY, None))
            mounted_at = out["Mount"]["MountPointPath"]
            if mounted_at != self.path:
                raise Failure(f"path {self.path} is {mounted_at} on the host (a symbolic "
                              f"link): use {mounted_at}")
            return
        spec, fstype = self.live["FileSystemSpec"], self.live["FileSystemType"]
        if _lexical(spec) != self.src or (self.fstype is not None and fstype is not None
                                          and fstype != self.fstype):
            raise Failure(f"{self.path} is mounted from {spec!r} ({fstype or 'bind'}), not "
                          f"{self.src!r} ({self.fstype or 'bind'}): unmount it first "
                          "(state: unmounted)")

    # -- the states -------------------------------------------------------------

    def mount_now(self, *, persist):
        """state mounted (``persist``) or ephemeral."""
        if persist:
            self.check_line()
        self.check_live()
        goal = self.host.goal(self.opts, self.dump, self.passno)
        try:
            if not self.mounted and persist and not self.in_fstab:
                self._create(MOUNT_AND_ADD, goal)  # both, or neither
                return
            if persist:
                self.keep_line(goal, probe=True)  # a line the service refuses: nothing done
            if self.mounted and not self.holders:
                # Nobody holds it (made at boot or by hand, or in its hold time):
                # its options are ours to set, then we take a reference.
                self._change_own(self.host.goal(self.opts, self.dump, self.passno, live=True))
            if not self.mounted or not self.ours:
                # Mounts, or takes one more reference on the same mount; other
                # options on a mount that others hold are In Use.
                self._create(MOUNT_ONLY, goal)
            else:
                self._change_own(self.host.goal(self.opts, self.dump, self.passno, live=True))
            if persist:
                self.keep_line(goal)
        finally:
            self.host.drop(goal)

    def _change_own(self, goal):
        """Our mount to ``goal``, unless others hold it and it would change for them."""
        try:
            others = sorted({h for h in self.holders if h != self.holder})
            if others:
                planned = self.host.call("ModifyMount", probe=True, **self._modify_args(goal))
                if any(step.startswith("remount") for step in planned.get("Plan") or ()):
                    raise Failure(f"{self.path} is held by {', '.join(others)} too: its "
                                  "options change for all of them only with state: remounted")
            self.host.call("ModifyMount", **self._modify_args(goal))
        finally:
            self.host.drop(goal)

    def present(self):
        self.check_line()
        goal = self.host.goal(self.opts, self.dump, self.passno)
        try:
            self.keep_line(goal)
        finally:
            self.host.drop(goal)

    def keep_line(self, goal, *, probe=False):
        if self.line is None:
            self.host.call("CreateMount", probe=probe, **self._create_args(ADD_LINE, goal))
        else:
            self.host.call("ModifyMount", probe=probe, Mode=Uint16(ADD_LINE),
                           Mount=self.line.path, Goal=goal)

    def remount(self):
        if not self.mounted:
            raise Failure(f"{self.path} is not mounted: nothing to remount")
        if self.opts_given:
            goal = self.host.goal(self.opts, self.dump, self.passno, live=True)
            try:
                self.host.call("ModifyMount", **self._modify_args(goal))
            finally:
                self.host.drop(goal)
            return
        line = self.host.fstab_setting(self.line) if self.line is not None else None
        if line is not None:
            # The options the line names; those it does not name stay as they are.
            self.host.call("ModifyMount", **self._modify_args(line))

    def release(self, *, remove_line):
        """state unmounted, or absent (``remove_line``): this holder's references go."""
        line = remove_line and self.in_fstab
        # One call takes the line with the release where mount and line are one.
        together = line and self.live is not None and self.line.path == self.live.path
        if self.mounted:
            if self.force or not self.holders:
                # Force drops every holder; a mount nobody holds is unmounted if it
                # was made outside lmi-mount (from boot, by hand), as
                # ansible.posix.mount would, and left to its hold time if not.
                # No Holder: the service refuses to unmount a mount nobody holds
                # in a holder's name (a release).
                self._delete(self.live, UNMOUNT_AND_REMOVE if together else UNMOUNT_ONLY,
                             release=False)
                line = line and not together
            else:
                # In check mode one release is planned, however many references.
                for _ in range(1 if self.host.check_mode else self.ours):
                    self._delete(self.live, UNMOUNT_AND_REMOVE if together else UNMOUNT_ONLY)
                    line = line and not together
                    together = False
                if not self.host.check_mode:
                    # A mount made outside lmi-mount that we held stays when
                    # released ("stop tracking"); unmounted, as asked, now that
                    # nobody holds it.
                    now = dict((m.path.keybindings["FileSystemSpec"], m) for m, (live, _)
                               in self.host.find_all(self.path) if live)
                    left = now.get(self.live.path.keybindings["FileSystemSpec"])
                    if left is not None and not left["Holders"]:
                        self._delete(left, UNMOUNT_ONLY, release=False)
        if line:
            self._delete(self.line, REMOVE_LINE)  # the mount stays for its other holders

    # -- calls ----------------------------------------------------------------

    def _create_args(self, mode, goal):
        return dict(Mode=Uint16(mode), MountPoint=self.path, FileSystemSpec=self.src,
                    FileSystemType=self.fstype, Goal=goal, Holder=self.holder)

    def _create(self, mode, goal):
        self.host.call("CreateMount", **self._create_args(mode, goal))

    def _modify_args(self, goal):
        return dict(Mode=Uint16(MOUNT_ONLY), Mount=self.live.path, Goal=goal,
                    Force=self.force or None)

    def _delete(self, mount, mode, *, release=True):
        """DeleteMount of ``mount``: a release of this holder's reference, or (not
        ``release``) an unmount of a mount nobody holds, or a forced one."""
        self.host.call("DeleteMount", Mode=Uint16(mode), Mount=mount.path,
                       Holder=self.holder if release else None, Force=self.force or None)


def _lexical(path):
    """A local ``path`` without ``//``, ``/./`` or a trailing ``/``, as the service
    keys it (symbolic links are the host's: the service resolves those). A
    network share (``//server/share``) is a name, not a path: kept as given."""
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        return path
    return posixpath.normpath(path)


def _bind_spelling(fstype, opts):
    """fstab's bind (type none, option bind) as the model has it (type NULL);
    ``rbind`` stays an option, which the service reads as a recursive bind."""
    words = [w for w in opts.split(",") if w]
    if "rbind" in words and fstype in (None, "none"):
        words = [w for w in words if w != "bind"]
        return None, ",".join(words)
    if "bind" in words and fstype in (None, "none"):
        words = [w for w in words if w != "bind"]
        return None, ",".join(words) or "defaults"
    return fstype, ",".join(words) or "defaults"


def _field_number(name, value):
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_PASSNO:
        raise Failure(f"{name} must be a number from 0 to {MAX_PASSNO}, not {value!r}")
    return int(text)


def fstab_diff(plan):
    """Ansible's diff of the fstab lines that the plan's steps add, replace or remove.

    The lines are fstab's fields, one space between: the file keeps its own
    spacing and comments where the service edits a line in place.
    """
    before, after = [], []
    for step in plan:
        lines = _QUOTED_LINE.findall(step)
        if step.startswith("fstab: add "):
            after += lines
        elif step.startswith("fstab: remove "):
            before += lines
        elif step.startswith("fstab: replace ") and len(lines) == 2:
            before.append(lines[0])
            after.append(lines[1])
    return {"before": "".join(f"{line}\n" for line in before),
            "after": "".join(f"{line}\n" for line in after),
            "before_header": "fstab", "after_header": "fstab"}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True, aliases=["name"]),
            src=dict(type="str"),
            fstype=dict(type="str"),
            opts=dict(type="str"),
            dump=dict(type="str", default="0"),
            passno=dict(type="str", default="0"),
            state=dict(type="str", required=True,
                       choices=["absent", "ephemeral", "mounted", "present", "remounted",
                                "unmounted"]),
            boot=dict(type="bool", default=True),
            holder=dict(type="str", default="ansible"),
            force=dict(type="bool", default=False),
            url=dict(type="str", required=True, fallback=(env_fallback, ["LMI_MOUNT_URL"])),
            username=dict(type="str", fallback=(env_fallback, ["LMI_MOUNT_USERNAME"])),
            password=dict(type="str", no_log=True,
                          fallback=(env_fallback, ["LMI_MOUNT_PASSWORD"])),
            ca_certs=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=120),
        ),
        required_if=[
            ("state", "mounted", ("src", "fstype")),
            ("state", "present", ("src", "fstype")),
            ("state", "ephemeral", ("src", "fstype")),
        ],
        supports_check_mode=True,
    )
    if PYWBEM_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("pywbem"), exception=PYWBEM_IMPORT_ERROR)
    params = module.params
    if not params["path"].startswith("/"):
        module.fail_json(msg=f"path must be absolute, not {params['path']!r}")
    try:
        scheme = urlsplit(params["url"]).scheme.lower()
    except ValueError as exc:
        module.fail_json(msg=f"url {params['url']!r} is no URL: {exc}")
    if scheme not in ("http", "https"):
        module.fail_json(msg=f"url must be http:// or https://, not {params['url']!r}")
    if params["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be a number of seconds above 0, "
                             f"not {params['timeout']}")
    if params["ca_certs"] or not params["validate_certs"]:
        # requests lets these variables override what pywbem hands it (its
        # session's verify), so a controller that sets them would check the
        # service against them instead of ca_certs, or at all.
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            os.environ.pop(name, None)
    result = {"changed": False, "plan": []}
    conn = None
    try:
        creds = (params["username"], params["password"] or "") if params["username"] else None
        conn = WBEMConnection(
            params["url"],
            creds,
            default_namespace=NAMESPACE,
            no_verification=not params["validate_certs"],
            ca_certs=params["ca_certs"],
            timeout=params["timeout"],
        )
        host = Host(conn, module.check_mode, params["timeout"])
        result["plan"] = host.plan
        wanted = MountState(host, params)
        state = params["state"]
        if state in ("mounted", "ephemeral"):
            wanted.mount_now(persist=state == "mounted")
        elif state == "present":
            wanted.present()
        elif state == "remounted":
            wanted.remount()
        else:
            wanted.release(remove_line=state == "absent")
        result["changed"] = bool(host.plan)
        if module.check_mode:
            # Nothing changed: the state as it is (the plan says what would change).
            result["mounted"], result["in_fstab"] = wanted.mounted, wanted.in_fstab
            result["holders"] = wanted.holders
        else:
            after = MountState(host, params)
            result["mounted"], result["in_fstab"] = after.mounted, after.in_fstab
            result["holders"] = after.holders
        held = [h for h in result["holders"] if h != params["holder"]]
        if (state in ("unmounted", "absent") and result["mounted"] and held
                and not params["force"] and not module.check_mode):
            module.warn(f"{wanted.path} stays mounted: {', '.join(sorted(set(held)))} "
                        "hold it too (force: true unmounts it anyway)")
    except Failure as exc:
        module.fail_json(msg=str(exc), **result)
    except (PywbemError, OSError, ValueError, TypeError) as exc:
        module.fail_json(msg=f"{params['url']}: {type(exc).__name__}: {exc}", **result)
    finally:
        if conn is not None:
            conn.close()
    if module._diff:
        result["diff"] = fstab_diff(result["plan"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
