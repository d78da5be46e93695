"""Tests of the machine layer (lmi_mount.linux) beyond the shared kernel contract."""
