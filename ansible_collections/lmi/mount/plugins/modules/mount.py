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
      - Absolute path of the mount point.
    type: path
    required: true
    aliases: [name]
  src:
    description:
      - What to mount, as fstab and mount(8) spell it. A device, C(UUID=...),
        an image file, a network share, a word such as C(tmpfs), or a
        directory for a bind mount.
      - Required for O(state=mounted), O(state=present) and O(state=ephemeral).
    type: path
  fstype:
    description:
      - The file system type.
      - C(none) with C(bind) in O(opts) is a bind mount of the directory O(src).
      - Required for O(state=mounted), O(state=present) and O(state=ephemeral).
    type: str
  opts:
    description:
      - Mount options as mount(8) spells them, for example C(ro,noexec,size=16m).
      - With O(state=remounted) and no O(opts), the options of the fstab
        line are applied.
    type: str
    default: defaults
  dump:
    description:
      - The fifth field of the fstab line (dump).
    type: str
    default: "0"
  passno:
    description:
      - The sixth field of the fstab line (the order of the boot-time fsck).
    type: str
    default: "0"
  state:
    description:
      - V(mounted) - mounted and in fstab. The live options are changed when
        they differ from O(opts).
      - V(present) - in fstab only; nothing is mounted or unmounted.
      - V(ephemeral) - mounted, fstab untouched.
      - V(unmounted) - this O(holder)'s reference released (the service
        unmounts with the last one); fstab untouched. A mount nobody holds
        (one made at boot or by hand) is unmounted.
      - V(absent) - as V(unmounted), and the fstab line removed.
      - V(remounted) - the live options made O(opts) (or the fstab line's);
        changed only when they were not already in effect.
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
        independently.
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
  - Check mode and diff mode are supported.
  - The source and type of an existing fstab line are not changed; remove
    the line (V(absent)) first. The service refuses the change with the line
    it found.
  - A mount that others hold with other options is In Use; the error names
    its holders.
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
  description: The holders of the mount after the change (empty when not mounted).
  returned: always
  type: list
  elements: str
mounted:
  description: Whether the mount point is mounted after the change.
  returned: always
  type: bool
in_fstab:
  description: Whether the mount point has an fstab line after the change.
  returned: always
  type: bool
"""

import contextlib
import os
import re
import time
import traceback

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

# The fstab steps of a Plan (lmi-mount's FstabChange.describe). Lines are
# escaped as fstab escapes them, so a line is six fields without spaces.
_LINE = r"([^ ]+(?: [^ ]+){5})"
_FSTAB_STEP = re.compile(
    rf"fstab: (?:(?P<action>add|remove) line '{_LINE}'|replace line '{_LINE}' with '{_LINE}')$"
)


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
        """Every LMI_MountedFileSystem of ``path``: a live mount, a line, or both."""
        literal = path.replace("\\", "\\\\").replace("'", "\\'")
        return self.conn.ExecQuery(
            "WQL", f"SELECT * FROM {MOUNT} WHERE MountPointPath = '{literal}'", NAMESPACE
        )

    def find(self, path, src=None):
        """The LMI_MountedFileSystem of ``path``: the live one where a live mount and
        a line of another source are two; else the one of ``src``; else None."""
        found = self.find_all(path)
        if len(found) > 1 and src is not None:
            found = [m for m in found if m["FileSystemSpec"] == src] or found
        for mount in found:
            if self.flags(mount)[0]:
                return mount
        return found[0] if found else None

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
        goal = self.conn.GetInstance(out["MountSetting"])
        goal["Dump"] = dump != 0
        goal["FileSystemCheckOrder"] = Uint16(passno)
        self.conn.ModifyInstance(goal, PropertyList=["Dump", "FileSystemCheckOrder"])
        return goal.path

    def drop(self, goal):
        # Goals are transient: one left behind is forgotten at the service's next start.
        with contextlib.suppress(PywbemError):
            self.conn.DeleteInstance(goal)

    # -- changing ------------------------------------------------------------

    def call(self, method, **params):
        """Invoke one service method (a dry run in check mode); return its OUT parameters.

        A call that outlasts the service's synchronous window becomes a job,
        which is waited for. A failure raises Failure with the service's
        CIM_Error message.
        """
        if self._service is None:
            [self._service] = self.conn.EnumerateInstanceNames(SERVICE, NAMESPACE)
        params = {k: v for k, v in params.items() if v is not None}
        if self.check_mode:
            params["DryRun"] = True
        try:
            rv, out = self.conn.InvokeMethod(method, self._service, **params)
            if rv == JOB_STARTED:
                rv, out = self._wait(method, out["Job"])
        except CIMError as exc:
            raise Failure(f"{method}: {exc.status_code_name}: {exc.status_description}") from exc
        if rv != 0:
            error = out.get("Error")
            detail = error["Message"] if error is not None else "no detail"
            name = RETURN_NAMES.get(int(rv), str(rv))
            raise Failure(f"{method} returned {int(rv)} ({name}): {detail}")
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
        return result["__ReturnValue"], out


class MountState:
    """One mount point's wanted state, reached with the fewest service calls."""

    def __init__(self, host, params):
        self.host = host
        self.path = params["path"]
        self.src = params["src"]
        self.holder = params["holder"]
        self.force = params["force"]
        self.fstype, self.opts = _bind_spelling(params["fstype"], params["opts"])
        if not params["boot"] and "noauto" not in self.opts.split(","):
            self.opts = "noauto" if self.opts == "defaults" else f"{self.opts},noauto"
        self.dump = _field_number("dump", params["dump"])
        self.passno = _field_number("passno", params["passno"])
        self.mount = host.find(self.path, self.src)
        self.mounted, self.in_fstab = host.flags(self.mount) if self.mount else (False, False)

    @property
    def ours(self):
        """How many references this holder has on the mount."""
        return list(self.mount["Holders"] or ()).count(self.holder) if self.mount else 0

    def mount_now(self, *, persist):
        """state mounted (``persist``) or ephemeral."""
        goal = self.host.goal(self.opts, self.dump, self.passno)
        try:
            if not self.mounted and persist and not self.in_fstab:
                self._create(MOUNT_AND_ADD, goal)  # both, or neither
                return
            if not self.mounted or not self.ours:
                # Mounts, or takes one more reference on the same mount; other
                # options on a mount that others hold are In Use.
                self._create(MOUNT_ONLY, goal)
            else:
                self._remount(self.host.goal(self.opts, self.dump, self.passno, live=True))
            if persist:
                self.keep_line(goal)
        finally:
            self.host.drop(goal)

    def present(self):
        goal = self.host.goal(self.opts, self.dump, self.passno)
        try:
            self.keep_line(goal)
        finally:
            self.host.drop(goal)

    def keep_line(self, goal):
        lines = [m for m in self.host.find_all(self.path) if self.host.flags(m)[1]]
        if not lines:
            self._create(ADD_LINE, goal)
            return
        spec = lines[0]["FileSystemSpec"]
        if spec.rstrip("/") != self.src.rstrip("/"):
            raise Failure(f"{self.path} has an fstab line for {spec!r}, not {self.src!r}: "
                          "remove it first (state: absent)")
        self.host.call("ModifyMount", Mode=Uint16(ADD_LINE), Mount=lines[0].path, Goal=goal)

    def remount(self):
        if not self.mounted:
            raise Failure(f"{self.path} is not mounted: nothing to remount")
        line = self.host.fstab_setting(self.mount)
        if self.opts == "defaults" and line is not None:
            self.host.call("ModifyMount", Mode=Uint16(MOUNT_ONLY), Mount=self.mount.path,
                           Goal=line, Force=self.force or None)
        else:
            self._remount(self.host.goal(self.opts, self.dump, self.passno, live=True))

    def _remount(self, goal):
        """Apply a live goal (the service remounts only if something differs); drop it."""
        try:
            self.host.call("ModifyMount", Mode=Uint16(MOUNT_ONLY), Mount=self.mount.path,
                           Goal=goal, Force=self.force or None)
        finally:
            self.host.drop(goal)

    def release(self, *, remove_line):
        """state unmounted, or absent (``remove_line``): this holder's references go."""
        line = remove_line and self.in_fstab
        if self.mounted:
            if self.force or not self.mount["Holders"]:
                # Force drops every holder; a mount nobody holds (from boot, by
                # hand) is unmounted, as ansible.posix.mount would.
                self._delete(UNMOUNT_AND_REMOVE if line else UNMOUNT_ONLY)
                return
            for _ in range(self.ours):
                self._delete(UNMOUNT_AND_REMOVE if line else UNMOUNT_ONLY)
                line = False  # the first release took the line with it
        if line:
            self._delete(REMOVE_LINE)  # the mount stays for its other holders

    def _create(self, mode, goal):
        self.host.call("CreateMount", Mode=Uint16(mode), MountPoint=self.path,
                       FileSystemSpec=self.src, FileSystemType=self.fstype, Goal=goal,
                       Holder=self.holder)

    def _delete(self, mode):
        self.host.call("DeleteMount", Mode=Uint16(mode), Mount=self.mount.path,
                       Holder=self.holder, Force=self.force or None)


def _bind_spelling(fstype, opts):
    """fstab's bind (type none, option bind) as the model has it (type NULL)."""
    words = [w for w in (opts or "defaults").split(",") if w]
    if "bind" in words and fstype in (None, "none"):
        words = [w for w in words if w != "bind"]
        return None, ",".join(words) or "defaults"
    return fstype, ",".join(words) or "defaults"


def _field_number(name, value):
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):
        raise Failure(f"{name} must be a number, not {value!r}")
    return int(text)


def fstab_diff(plan):
    """Ansible's diff of the fstab lines that the plan's steps add, replace or remove."""
    before, after = [], []
    for step in plan:
        found = _FSTAB_STEP.match(step)
        if found is None:
            continue
        if found["action"] == "add":
            after.append(found[2])
        elif found["action"] == "remove":
            before.append(found[2])
        else:
            before.append(found[3])
            after.append(found[4])
    return {"before": "".join(f"{line}\n" for line in before),
            "after": "".join(f"{line}\n" for line in after),
            "before_header": "fstab", "after_header": "fstab"}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True, aliases=["name"]),
            src=dict(type="path"),
            fstype=dict(type="str"),
            opts=dict(type="str", default="defaults"),
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
    if params["ca_certs"]:
        # requests lets these variables override the CA file pywbem hands it
        # (its session's verify), so a controller that sets them would check
        # the service against the system's CAs instead of ca_certs.
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            os.environ.pop(name, None)
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
    result = {"changed": False, "plan": host.plan}
    try:
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
        after = None if module.check_mode else host.find(params["path"], params["src"])
        if after is not None:
            result["mounted"], result["in_fstab"] = host.flags(after)
            result["holders"] = list(after["Holders"] or ())
        elif module.check_mode:
            result["mounted"], result["in_fstab"] = wanted.mounted, wanted.in_fstab
            result["holders"] = list(wanted.mount["Holders"] or ()) if wanted.mount else []
        else:
            result.update(mounted=False, in_fstab=False, holders=[])
        held = [h for h in result["holders"] if h != params["holder"]]
        if state in ("unmounted", "absent") and result["mounted"] and held:
            module.warn(f"{params['path']} stays mounted: {', '.join(sorted(set(held)))} "
                        "hold it too (force: true unmounts it anyway)")
    except Failure as exc:
        module.fail_json(msg=str(exc), **result)
    except PywbemError as exc:
        module.fail_json(msg=f"{params['url']}: {exc}", **result)
    finally:
        conn.close()
    if module._diff:
        result["diff"] = fstab_diff(host.plan)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
