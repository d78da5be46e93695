"""CIM names of the lmi-mount model: namespaces and class names, in one place.

Owns: the spelling of every namespace and LMI class name that code refers to,
so that a rename is one edit here and one in ``mof/``. Must not know: how
instances are built or keyed, the engine, the kernel.
"""

from typing import Final

#: The namespace of the model (ARCHITECTURE "Model decisions").
NAMESPACE: Final = "root/cimv2"
#: The namespace of the interop classes (CIM_ObjectManager, CIM_Namespace).
INTEROP_NAMESPACE: Final = "root/interop"

# Classes of the OpenLMI Mounting Model draft.
MOUNTED_FILE_SYSTEM_SETTING: Final = "LMI_MountedFileSystemSetting"
MOUNTED_FILE_SYSTEM: Final = "LMI_MountedFileSystem"
MOUNTED_FILE_SYSTEM_CAPABILITIES: Final = "LMI_MountedFileSystemCapabilities"
MOUNT_CONFIGURATION_SERVICE: Final = "LMI_MountConfigurationService"
HOSTED_MOUNT: Final = "LMI_HostedMount"
MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA: Final = "LMI_MountedFileSystemElementSettingData"
MOUNT_ELEMENT_CAPABILITIES: Final = "LMI_MountElementCapabilities"
MOUNT_POINT: Final = "LMI_MountPoint"
ATTACHED_FILE_SYSTEM: Final = "LMI_AttachedFileSystem"

# Classes at the other ends of the associations.
COMPUTER_SYSTEM: Final = "LMI_ComputerSystem"
UNIX_DIRECTORY: Final = "LMI_UnixDirectory"
LOCAL_FILE_SYSTEM: Final = "LMI_LocalFileSystem"
HOSTED_MOUNT_SERVICE: Final = "LMI_HostedMountService"

#: The service's methods whose calls the server may keep parsed
#: (``server.cimxml.KeptCalls``): their parameters name mounts, holders and
#: references, never mount options, which a Goal setting carries by reference
#: (CreateSetting's Options may name a password).
KEPT_METHODS: Final = frozenset({"createmount", "modifymount", "deletemount"})

# Jobs of the service.
MOUNT_JOB: Final = "LMI_MountJob"
AFFECTED_MOUNT_JOB_ELEMENT: Final = "LMI_AffectedMountJobElement"
OWNING_MOUNT_JOB_ELEMENT: Final = "LMI_OwningMountJobElement"

#: Every LMI class of the model, in the include order of mof/lmi_mount.mof.
LMI_CLASSES: Final[tuple[str, ...]] = (
    MOUNTED_FILE_SYSTEM_SETTING,
    MOUNTED_FILE_SYSTEM,
    MOUNTED_FILE_SYSTEM_CAPABILITIES,
    MOUNT_CONFIGURATION_SERVICE,
    COMPUTER_SYSTEM,
    UNIX_DIRECTORY,
    LOCAL_FILE_SYSTEM,
    HOSTED_MOUNT,
    MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
    MOUNT_ELEMENT_CAPABILITIES,
    MOUNT_POINT,
    ATTACHED_FILE_SYSTEM,
    HOSTED_MOUNT_SERVICE,
    MOUNT_JOB,
    AFFECTED_MOUNT_JOB_ELEMENT,
    OWNING_MOUNT_JOB_ELEMENT,
)
