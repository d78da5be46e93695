"""Provider of LMI_MountedFileSystemSetting: live and fstab settings, and goal settings.

Owns: reading settings by InstanceID, and the goal-setting flow of OpenLMI's
lmishell (CreateSetting -> ModifyInstance -> pass as Goal -> DeleteInstance):
ModifyInstance and DeleteInstance of goal settings, with the values checked
as mount options. Settings of mounts change through ModifyMount, not here.

Must not know: how a goal becomes a mount (the service does that).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from pywbem import (
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMError,
    CIMInstance,
    CIMInstanceName,
)

from lmi_mount.cim import names
from lmi_mount.cim.projection import (
    CURRENT_PREFIX,
    GOAL_PREFIX,
    NEXT_PREFIX,
    PROPERTY_OF_FIELD,
    SETTING_FIELDS,
    SETTING_PREFIX,
    GoalSetting,
    parse_mount_local_id,
)
from lmi_mount.cim.providers.base import Provider, View
from lmi_mount.mounts.options import MountOptions, OptionError

# Properties a client may set on a goal setting (the rest are keys or fixed).
_WRITABLE = {cim.lower() for cim, _ in SETTING_FIELDS} | {
    "otheroptions",
    "dump",
    "filesystemcheckorder",
    "elementname",
}


class SettingProvider(Provider):
    classnames = (names.MOUNTED_FILE_SYSTEM_SETTING,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        for status in view.statuses:
            for setting, _, _ in view.projector.settings_of(status):
                yield setting
        for goal in view.goals():
            yield view.projector.goal_setting(goal)

    def get(self, view: View, path: CIMInstanceName) -> CIMInstance | None:
        instance_id = path.keybindings.get("InstanceID")
        if not isinstance(instance_id, str) or not instance_id.startswith(SETTING_PREFIX):
            return None
        if instance_id.startswith(GOAL_PREFIX):
            goal = view.context.goals.get(instance_id)
            return view.projector.goal_setting(goal) if goal is not None else None
        local = instance_id
        for prefix in (CURRENT_PREFIX, NEXT_PREFIX, SETTING_PREFIX):
            if local.startswith(prefix):
                local = local[len(prefix) :]
                break
        key = parse_mount_local_id(local)
        status = view.status(*key) if key is not None else None
        if status is None:
            return None
        return next(
            (
                s
                for s, _, _ in view.projector.settings_of(status)
                if s["InstanceID"] == instance_id
            ),
            None,
        )

    def modify(self, view: View, instance: CIMInstance, property_list: list[str] | None) -> None:
        instance_id = _instance_id(instance.path)
        context = view.context
        with context.goals_lock:
            goal = context.goals.get(instance_id)
            if goal is None:
                if self.get(view, instance.path) is not None:
                    raise CIMError(
                        CIM_ERR_NOT_SUPPORTED,
                        f"setting {instance_id!r} belongs to a mount: change it with "
                        "ModifyMount, or create a goal setting with CreateSetting",
                    )
                raise CIMError(CIM_ERR_NOT_FOUND, f"no setting {instance_id!r}")
            current = view.projector.goal_setting(goal)
            context.set_goal(updated_goal(goal, instance.properties, property_list, current))

    def delete(self, view: View, path: CIMInstanceName) -> None:
        instance_id = _instance_id(path)
        with view.context.goals_lock:
            if view.context.drop_goal(instance_id):
                return
        if self.get(view, path) is not None:
            raise CIMError(
                CIM_ERR_NOT_SUPPORTED,
                f"setting {instance_id!r} belongs to a mount: remove it with DeleteMount",
            )
        raise CIMError(CIM_ERR_NOT_FOUND, f"no setting {instance_id!r}")


def _instance_id(path: CIMInstanceName | None) -> str:
    value = path.keybindings.get("InstanceID") if path is not None else None
    if not isinstance(value, str):
        raise CIMError(CIM_ERR_INVALID_PARAMETER, "the setting's InstanceID key is missing")
    return value


def updated_goal(
    goal: GoalSetting,
    properties: Mapping[str, Any],
    property_list: list[str] | None,
    current: CIMInstance,
) -> GoalSetting:
    """``goal`` with the properties a ModifyInstance sets (DSP0200: only those in
    PropertyList when one is given), checked as mount options.

    Clients send back the whole instance they read (lmishell does), so a
    fixed property is refused only when its value changes.
    """
    wanted = {name.lower() for name in property_list} if property_list is not None else None
    values: dict[str, Any] = {}
    for prop in properties.values():
        lower = prop.name.lower()
        if wanted is not None and lower not in wanted:
            continue
        if lower == "instanceid":
            continue
        if lower not in _WRITABLE:
            if prop.name in current and current[prop.name] == prop.value:
                continue
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"property {prop.name!r} of a goal setting cannot be set",
            )
        values[lower] = prop.value
    fields = {field: getattr(goal.options, field) for _, field in SETTING_FIELDS}
    for cim, field in SETTING_FIELDS:
        if cim.lower() in values:
            value = values[cim.lower()]
            if value is not None and not isinstance(value, bool):
                raise CIMError(
                    CIM_ERR_INVALID_PARAMETER, f"{cim} must be a boolean, not {value!r}"
                )
            fields[field] = value
    others = values.get("otheroptions", list(goal.options.other_options))
    try:
        options = MountOptions.from_fields(**fields, other_options=others,
                                           spelled=PROPERTY_OF_FIELD.__getitem__)
    except OptionError as exc:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"OtherOptions: {exc}") from exc
    # Each value is checked against its property's type: one stored as another
    # type (uint32 70000 in a uint16) would fail every later read of the class.
    passno = values.get("filesystemcheckorder", goal.passno)
    if passno is not None and (isinstance(passno, bool) or not isinstance(passno, int)
                               or not 0 <= passno <= 0xFFFF):
        raise CIMError(CIM_ERR_INVALID_PARAMETER,
                       f"FileSystemCheckOrder must be a uint16 (0 to 65535), not {passno!r}")
    dump = values.get("dump", goal.dump)
    if dump is not None and not isinstance(dump, bool):
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Dump must be a boolean, not {dump!r}")
    element_name = values.get("elementname", goal.element_name)
    if element_name is not None and not isinstance(element_name, str):
        raise CIMError(CIM_ERR_INVALID_PARAMETER,
                       f"ElementName must be a string, not {element_name!r}")
    return replace(
        goal,
        options=options,
        dump=dump,
        passno=passno,
        element_name=element_name or "",
    )
