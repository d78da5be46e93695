"""Providers of the host and of LMI_MountConfigurationService with its three methods.

Owns: translating CreateMount / ModifyMount / DeleteMount into engine
requests, mode by mode exactly as the draft's table says (including its "no
effect" cells, which return 0 and change nothing), the lmi-mount extensions
(Holder, Force, DryRun/Plan, Error), and answering synchronously or with a job.

Must not know: how the engine decides (it only translates), XML, pywbem_mock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pywbem import (
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIMError,
    CIMInstance,
    CIMInstanceName,
)

from lmi_mount.cim import names
from lmi_mount.cim.errors import (
    RV_JOB_STARTED,
    RV_SUCCESS,
    cim_error_for,
    error_instance_for,
    return_value_for,
)
from lmi_mount.cim.jobs import Job, WorkResult
from lmi_mount.cim.projection import GOAL_PREFIX, PROPERTY_OF_FIELD, SETTING_FIELDS
from lmi_mount.cim.providers.base import Caller, Provider, View, shown
from lmi_mount.cim.providers.settings import SettingProvider
from lmi_mount.engine import Outcome
from lmi_mount.mounts.errors import MountError
from lmi_mount.mounts.fstab import normalize_target
from lmi_mount.mounts.holders import holder_problem
from lmi_mount.mounts.options import DEFAULTS, MountOptions, OptionError, atime_mode
from lmi_mount.mounts.plan import MountSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModeEffect:
    """What a Mode does to the live mount (IsCurrent) and to fstab (IsNext).

    True: set (mount / add or replace the line); False: clear (unmount /
    remove the line); None: not affected.
    """

    current: bool | None
    persist: bool | None


# The draft's table "On modes": Mode -> (IsCurrent, IsNext).
def no_effect(mode: int, method: str) -> str:
    """What a call in a "no effect" cell of the Mode table is told (Plan, log)."""
    return f"Mode {mode} has no effect on {method}"


MODES: Final = {
    1: ModeEffect(current=True, persist=True),
    2: ModeEffect(current=None, persist=True),
    4: ModeEffect(current=False, persist=False),
    5: ModeEffect(current=None, persist=False),
    32768: ModeEffect(current=True, persist=None),
    32769: ModeEffect(current=False, persist=None),
}

# Parameters each method accepts (lower case), so an unknown one is named.
_PARAMETERS: Final = {
    "createmount": {
        "filesystem",
        "mountpoint",
        "filesystemspec",
        "filesystemtype",
        "goal",
        "mode",
        "holder",
        "dryrun",
    },
    "modifymount": {"mount", "goal", "mode", "dryrun", "force"},
    "deletemount": {"mount", "mode", "holder", "force", "dryrun"},
}


class HostProvider(Provider):
    """LMI_ComputerSystem: the one host."""

    classnames = (names.COMPUTER_SYSTEM,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        yield view.projector.computer_system()


class ServiceProvider(Provider):
    classnames = (names.MOUNT_CONFIGURATION_SERVICE,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        # fstab alone says whether the service is degraded: no mount table read.
        yield view.projector.service(view.fstab_problems)

    def exists(self, view: View, path: CIMInstanceName) -> bool:
        return view.projector.is_service(path)

    def invoke(
        self,
        view: View,
        path: CIMInstanceName,
        method: str,
        params: Mapping[str, Any],
        caller: Caller,
    ) -> tuple[Any, dict[str, Any]]:
        name = method.lower()
        if name not in _PARAMETERS:
            return super().invoke(view, path, method, params, caller)
        args = {key.lower(): value for key, value in params.items()}
        unknown = set(args) - _PARAMETERS[name]
        if unknown:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"{method} has no input parameter {sorted(unknown)[0]!r}",
            )
        method_name = {
            "createmount": "CreateMount",
            "modifymount": "ModifyMount",
            "deletemount": "DeleteMount",
        }[name]
        effect = _mode(args.get("mode"), method_name)
        dry_run = _boolean(args, "dryrun")
        request = getattr(self, f"_{name}")(view, args, effect, caller, dry_run)
        if request is None:
            # A "no effect" cell of the draft's Mode table: 0, as the draft
            # says, but not in silence.
            note = no_effect(int(args["mode"]), method_name)
            log.info("%s: nothing done", note)
            return RV_SUCCESS, {"Plan": [note]}
        run, affected = request
        if dry_run:
            rv, out, _error = _outcome_result(run, view, method_name)
            return rv, out

        def started(job: Job) -> tuple[Any, dict[str, Any]]:
            return RV_JOB_STARTED, {"Job": view.projector.job_path(job.number)}

        job = view.context.jobs.run(
            method_name,
            lambda: _outcome_result(run, view, method_name),
            in_parameters={k: v for k, v in params.items()},
            affected=affected,
            owner=caller.user,
            started=started,
        )
        if not job.published:
            if job.cim_error is not None:
                raise job.cim_error
            return job.return_value, job.out_parameters
        return started(job)

    # -- the three methods: each returns (engine call, affected elements) or None ------

    def _createmount(
        self, view: View, args: dict[str, Any], effect: ModeEffect, caller: Caller, dry_run: bool
    ) -> tuple[Callable[[], tuple[Outcome, CIMInstanceName | None]], list[Any]] | None:
        if effect.current is not True and effect.persist is not True:
            return None
        target = _required_string(args, "mountpoint")
        fstype = _string(args, "filesystemtype")
        spec_name = _string(args, "filesystemspec")
        spec_name = self._file_system_spec(view, args.get("filesystem"), spec_name, fstype)
        if spec_name is None:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                "CreateMount needs FileSystemSpec (or a FileSystem reference)",
            )
        options, dump, passno = _goal(view, args.get("goal"))
        if args.get("goal") is None and fstype is None:
            # The defaults of a bind are its origin's per-mount flags, as for
            # ``mount --bind`` without options: rw,suid,dev,exec named would
            # lift the origin's restrictions (noexec, nodev) on the copy.
            options = MountOptions()
        holder, _ = _holder(view, args, caller, new=True)
        spec = MountSpec(spec_name, target, fstype, options, dump=dump or 0, passno=passno or 0)
        engine = view.context.engine
        try:
            engine.check_create(spec, holder=holder)
        except MountError as exc:
            raise cim_error_for(exc) or CIMError(CIM_ERR_INVALID_PARAMETER, str(exc)) from exc

        def run() -> tuple[Outcome, CIMInstanceName | None]:
            outcome = engine.create(
                spec,
                current=effect.current is True,
                persist=effect.persist is True,
                holder=holder,
                dry_run=dry_run,
            )
            mount = view.projector.mount_path_of(
                outcome.source or spec_name, outcome.target or target
            )
            return outcome, mount

        return run, [view.projector.mount_path_of(spec_name, target)]

    def _modifymount(
        self, view: View, args: dict[str, Any], effect: ModeEffect, caller: Caller, dry_run: bool
    ) -> tuple[Callable[[], tuple[Outcome, CIMInstanceName | None]], list[Any]] | None:
        # The references are checked first: a mode with no effect on a mount
        # that does not exist is NOT_FOUND, as the modes that act say.
        mount = _mount_ref(view, args.get("mount"))
        goal: MountOptions | None
        goal, dump, passno = _goal(view, args.get("goal"))
        if args.get("goal") is None:
            goal = None  # the defaults, which for a bind are its origin's (plan_modify)
        if effect.current is not True and effect.persist is not True:
            return None
        spec_name, target = (
            mount.keybindings["FileSystemSpec"],
            mount.keybindings["MountPointPath"],
        )
        engine = view.context.engine

        force = _boolean(args, "force")

        def run() -> tuple[Outcome, CIMInstanceName | None]:
            outcome = engine.modify(
                target,
                goal,
                spec_name=spec_name,
                current=effect.current is True,
                persist=effect.persist is True,
                dump=dump,
                passno=passno,
                dry_run=dry_run,
                force=force,
            )
            return outcome, mount

        return run, [mount]

    def _deletemount(
        self, view: View, args: dict[str, Any], effect: ModeEffect, caller: Caller, dry_run: bool
    ) -> tuple[Callable[[], tuple[Outcome, CIMInstanceName | None]], list[Any]] | None:
        mount = _mount_ref(view, args.get("mount"))  # first, as in _modifymount
        if effect.current is not False and effect.persist is not False:
            return None
        holder, named = _holder(view, args, caller, new=False)
        force = _boolean(args, "force")
        spec_name, target = (
            mount.keybindings["FileSystemSpec"],
            mount.keybindings["MountPointPath"],
        )
        engine = view.context.engine

        def run() -> tuple[Outcome, CIMInstanceName | None]:
            outcome = engine.delete(
                target,
                spec_name=spec_name,
                current=effect.current is False,
                persist=effect.persist is False,
                holder=holder,
                force=force,
                dry_run=dry_run,
                # A named Holder releases its reference: a mount nobody holds is
                # not unmounted in its name (a mount made there since, by hand).
                release_only=named,
            )
            return outcome, None

        return run, [mount]

    def _file_system_spec(
        self, view: View, ref: Any, spec_name: str | None, fstype: str | None
    ) -> str | None:
        """The spec a FileSystem REF names; it must agree with the other parameters."""
        if ref is None:
            return spec_name
        if not isinstance(ref, CIMInstanceName) or ref.classname.lower() not in (
            names.LOCAL_FILE_SYSTEM.lower(),
            "cim_filesystem",
            "cim_localfilesystem",
        ):
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"FileSystem must reference {names.LOCAL_FILE_SYSTEM}, not {shown(ref)}",
            )
        name = ref.keybindings.get("Name")
        whole = next((found for found in (view.file_system_of(s.live)
                                          for s in view.statuses if s.live is not None)
                      if found[0] == name), (None, None))[1]
        if whole is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no file system {name!r} (FileSystem reference)")
        if whole.major == 0:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"FileSystem {name!r} has no device (a {whole.fstype}): a mount of its source "
                "makes another file system; to show this one elsewhere, bind its mount point "
                f"{whole.target!r} (FileSystemType NULL)")
        if spec_name is not None and spec_name != name:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"FileSystemSpec {spec_name!r} disagrees with FileSystem {name!r}",
            )
        if fstype is not None and fstype != whole.fstype:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"FileSystemType {fstype!r} disagrees with the type of FileSystem "
                f"{name!r} ({whole.fstype!r})",
            )
        return str(name)


def _outcome_result(
    run: Callable[[], tuple[Outcome, CIMInstanceName | None]], view: View, method: str
) -> WorkResult:
    """Run one engine request and turn its outcome or error into (rv, OUT, Error)."""
    try:
        outcome, mount = run()
    except MountError as exc:
        request_error = cim_error_for(exc)
        if request_error is not None:
            raise request_error from exc
        error = error_instance_for(exc)
        return return_value_for(exc), {"Error": error}, error
    out: dict[str, Any] = {}
    if mount is not None:
        out["Mount"] = mount
    # The steps taken, or with DryRun the steps it would take (the MOF's Plan).
    out["Plan"] = outcome.plan.describe()
    return RV_SUCCESS, out, None


def _mode(value: Any, method: str) -> ModeEffect:
    if value is None:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{method} needs Mode")
    if isinstance(value, bool) or not isinstance(value, int):
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Mode must be a uint16, not {value!r}")
    effect = MODES.get(int(value))
    if effect is None:
        supported = ", ".join(str(m) for m in MODES)
        raise CIMError(
            CIM_ERR_INVALID_PARAMETER,
            f"Mode {int(value)} is not supported (supported: {supported})",
        )
    return effect


# The parameters' names as the model spells them, for messages.
_SPELLING: Final = {
    name.lower(): name
    for name in ("FileSystem", "MountPoint", "FileSystemSpec", "FileSystemType", "Goal",
                 "Mode", "Holder", "DryRun", "Mount", "Force")
}


def _string(args: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = args.get(key)
    name = _SPELLING.get(key, key)
    if value is None:
        if required:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"parameter {name!r} is required")
        return None
    if not isinstance(value, str):
        raise CIMError(
            CIM_ERR_INVALID_PARAMETER, f"parameter {name!r} must be a string, not {value!r}"
        )
    if required and not value:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"parameter {name!r} must not be empty")
    return value


def _holder(view: View, args: dict[str, Any], caller: Caller, *,
            new: bool) -> tuple[str, bool]:
    """The Holder a call names, else the authenticated user's name; and whether
    it was named. A ``new`` holder (a mount's) is checked here, before any job
    starts (4096 says the parameters were checked), by the engine's rule; a
    release only finds names held, but an empty one is no name at all."""
    named = _string(args, "holder")
    if named is None:
        return caller.user or view.context.default_holder, False
    problem = holder_problem(named) if new or not named else None
    if problem is not None:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"parameter 'Holder': {problem}: {named[:80]!r}")
    return named, True


def _required_string(args: dict[str, Any], name: str) -> str:
    value = _string(args, name, required=True)
    assert value is not None
    return value


def _boolean(args: dict[str, Any], key: str) -> bool:
    value = args.get(key)
    name = _SPELLING.get(key, key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise CIMError(
            CIM_ERR_INVALID_PARAMETER, f"parameter {name!r} must be a boolean, not {value!r}"
        )
    return value


def _mount_ref(view: View, ref: Any) -> CIMInstanceName:
    """Check a Mount REF: right class, both keys, and an existing mount."""
    if ref is None:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, "parameter 'Mount' is required")
    if (
        not isinstance(ref, CIMInstanceName)
        or ref.classname.lower() != names.MOUNTED_FILE_SYSTEM.lower()
    ):
        raise CIMError(
            CIM_ERR_INVALID_PARAMETER,
            f"Mount must reference {names.MOUNTED_FILE_SYSTEM}, not {shown(ref)}",
        )
    spec, target = ref.keybindings.get("FileSystemSpec"), ref.keybindings.get("MountPointPath")
    if not isinstance(spec, str) or not isinstance(target, str):
        raise CIMError(
            CIM_ERR_INVALID_PARAMETER,
            f"Mount reference {shown(ref)}: FileSystemSpec and MountPointPath must be "
            "strings",
        )
    # The holders' own name of a mount they hold needs no mount table (the
    # job's plan reads what is mounted there again, under the lock).
    held = view.context.engine.held_live(target)
    if (held is None or held.source != spec) and view.status(spec, target) is None:
        raise CIMError(CIM_ERR_NOT_FOUND, f"no mount {spec!r} on {target!r}")
    return view.projector.mount_path_of(spec, normalize_target(target))  # as View.status does


def _goal(view: View, ref: Any) -> tuple[MountOptions, int | None, int | None]:
    """The options, dump and pass number a Goal REF names; NULL means the defaults.
    A dump or pass number of None is one the Goal leaves unset (NULL): the
    line's own is kept.

    Its atime properties must name one kernel atime mode: fstab and the kernel
    have no spelling for the others (``atime_mode``)."""
    options, dump, passno = _goal_values(view, ref)
    try:
        atime_mode(options, PROPERTY_OF_FIELD.__getitem__)
    except OptionError as exc:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Goal {shown(ref)}: {exc}") from exc
    return options, dump, passno


def _goal_values(view: View, ref: Any) -> tuple[MountOptions, int | None, int | None]:
    if ref is None:
        # The default options; the numbers are the line's own (0 for a new one).
        return DEFAULTS, None, None
    if (
        not isinstance(ref, CIMInstanceName)
        or ref.classname.lower() != names.MOUNTED_FILE_SYSTEM_SETTING.lower()
    ):
        raise CIMError(
            CIM_ERR_INVALID_PARAMETER,
            f"Goal must reference {names.MOUNTED_FILE_SYSTEM_SETTING}, not {shown(ref)}",
        )
    instance_id = ref.keybindings.get("InstanceID")
    if isinstance(instance_id, str) and instance_id.startswith(GOAL_PREFIX):
        goal = view.context.goals.get(instance_id)
        if goal is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no goal setting {instance_id!r}")
        return goal.options, None if goal.dump is None else int(goal.dump), goal.passno
    setting = SettingProvider().get(view, ref)
    if setting is None:
        raise CIMError(CIM_ERR_NOT_FOUND, f"no setting {instance_id!r} (Goal reference)")
    # A NULL pass number is one the property cannot hold (-1, 70000): the
    # line's own, kept by a ModifyMount (None), 0 for a new line.
    dump, passno = setting["Dump"], setting["FileSystemCheckOrder"]
    return (
        _options_of(setting),
        None if dump is None else int(bool(dump)),
        None if passno is None else int(passno),
    )


def _options_of(setting: CIMInstance) -> MountOptions:
    fields = {field: setting[cim] for cim, field in SETTING_FIELDS}
    try:
        return MountOptions.from_fields(**fields, other_options=setting["OtherOptions"] or [],
                                        spelled=PROPERTY_OF_FIELD.__getitem__)
    except OptionError as exc:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Goal: {exc}") from exc
