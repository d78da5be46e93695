"""Provider of LMI_MountedFileSystemCapabilities and its CreateSetting method.

Owns: making goal settings with the draft's defaults (rw, suid, dev, exec,
async; auto and nouser are fstab defaults that need no word) or with the
options a caller spells (the lmi-mount extension ``Options``), and their cap.
Must not know: mounts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from pywbem import (
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_PARAMETER,
    CIMError,
    CIMInstance,
    CIMInstanceName,
)

from lmi_mount.cim import names
from lmi_mount.cim.errors import RV_SUCCESS
from lmi_mount.cim.projection import GOAL_PREFIX, GoalSetting
from lmi_mount.cim.providers.base import Caller, Provider, View
from lmi_mount.mounts.options import DEFAULTS, MountOptions, OptionError, parse_options


class CapabilitiesProvider(Provider):
    classnames = (names.MOUNTED_FILE_SYSTEM_CAPABILITIES,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        yield view.projector.capabilities()

    def invoke(
        self,
        view: View,
        path: CIMInstanceName,
        method: str,
        params: Mapping[str, Any],
        caller: Caller,
    ) -> tuple[Any, dict[str, Any]]:
        if method.lower() != "createsetting":
            return super().invoke(view, path, method, params, caller)
        args = {key.lower(): value for key, value in params.items()}
        unknown = sorted(key for key in params if key.lower() != "options")
        if unknown:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER,
                f"CreateSetting has no input parameter {unknown[0]!r} (only Options)",
            )
        options = _options(args.get("options"))
        context = view.context
        with context.goals_lock:
            if len(context.goals) >= context.max_goal_settings:
                raise CIMError(
                    CIM_ERR_FAILED,
                    f"{context.max_goal_settings} goal settings exist already (the limit): "
                    "delete unused ones with DeleteInstance",
                )
            goal = GoalSetting(GOAL_PREFIX + uuid.uuid4().hex, options)
            context.set_goal(goal)
        return RV_SUCCESS, {"MountSetting": view.projector.goal_setting(goal).path}


def _options(value: Any) -> MountOptions:
    """The goal's options: the draft's defaults, or exactly what ``Options`` spells.

    Spelled options leave every field they do not name unset, so that the
    fstab line says what the caller wrote and the file system's own defaults
    apply, as they do for the same words given to mount(8).
    """
    if value is None:
        return DEFAULTS
    if not isinstance(value, str):
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Options must be a string, not {value!r}")
    try:
        return parse_options(value)
    except OptionError as exc:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Options {value!r}: {exc}") from exc
