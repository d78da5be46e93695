"""``lmi-mount edit-fstab``: the vipw(8) / visudo(8) of fstab, safe beside a running service.

Owns: the editing session. It takes the lock lmi-mountd's writers take (so
neither side loses the other's lines), opens ``$VISUAL``/``$EDITOR`` on a
private copy, checks the result as lmi-mountd checks the lines it writes
(libmount's grammar, the boot checks, ``findmnt --verify`` where it is
installed), shows what is wrong and asks again, and replaces the file
atomically (keeping its owner, mode, extended attributes and a backup).
Must not know: CIM, the engine's plans.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from lmi_mount.linux import files
from lmi_mount.linux.filesystems import check_fstype
from lmi_mount.mounts.fstab import FstabDocument, boot_problem

#: What runs when neither VISUAL nor EDITOR is set (as vipw and visudo do).
DEFAULT_EDITOR = "vi"


@dataclass
class Review:
    """What is wrong with an edited fstab: ``problems`` ask again, ``warnings`` do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def review(text: str, *, findmnt: str | None = None) -> Review:
    """Check ``text`` as the lines lmi-mountd writes are checked.

    Problems: a line libmount cannot read, a mount point on two lines, a
    field mount(8) would misread, a type nothing here knows, and what
    ``findmnt --verify`` calls an error other than a source or mount point
    that is absent now. Warnings: a known network or FUSE type whose helper
    is not installed, and the absent sources and mount points.
    """
    found = Review()
    document = FstabDocument.parse(text)
    found.problems.extend(str(problem) for problem in document.problems())
    for line in document.entries():
        entry = line.entry
        problem = boot_problem(entry) if entry.spec and entry.target else (
            "an escape makes a field empty")
        if problem is not None:
            found.problems.append(f"fstab line {line.number}: {problem}")
        if entry.fstype:
            check = check_fstype(entry.fstype)
            if check.problem is not None:
                found.problems.append(f"fstab line {line.number}: {check.problem}")
            if check.warning is not None:
                found.warnings.append(f"fstab line {line.number}: {check.warning}")
    findmnt = findmnt if findmnt is not None else shutil.which("findmnt")
    if findmnt:
        verdict = _findmnt_verify(findmnt, text)
        found.problems.extend(verdict.problems)
        found.warnings.extend(verdict.warnings)
    # A line's problem may be the document's and a boot check's alike: said once.
    found.problems = list(dict.fromkeys(found.problems))
    found.warnings = list(dict.fromkeys(found.warnings))
    return found


def _findmnt_verify(findmnt: str, text: str) -> Review:
    found = Review()
    with tempfile.NamedTemporaryFile("wb", prefix="fstab-verify-") as scratch:
        scratch.write(text.encode(files.ENCODING, files.ENCODING_ERRORS))
        scratch.flush()
        result = subprocess.run([findmnt, "--verify", "--tab-file", scratch.name],
                                capture_output=True, text=True, errors="replace",
                                check=False, stdin=subprocess.DEVNULL)
    where = ""
    for raw in result.stdout.splitlines():
        line = raw.strip()
        if not raw.startswith(" "):
            where = line
        elif line.startswith("[E]"):
            message = f"findmnt --verify, {where}: {line[3:].strip()}"
            (found.warnings if "unreachable" in line else found.problems).append(message)
        elif line.startswith("[W]"):
            found.warnings.append(f"findmnt --verify, {where}: {line[3:].strip()}")
    return found


def edit_fstab(
    path: str,
    *,
    editor: str | None = None,
    ask: Callable[[str], str] = input,
    out: TextIO,
    backups: int = files.DEFAULT_BACKUPS,
    lock_timeout: float = files.LOCK_TIMEOUT,
) -> int:
    """Edit the fstab at ``path`` in ``editor`` under its lock; returns an exit status.

    0: written, or nothing changed; 1: quit without writing, or the file
    could not be written (the message says why); the editor's own failure
    leaves the file as it was.
    """
    command = shlex.split(editor or os.environ.get("VISUAL") or os.environ.get("EDITOR")
                          or DEFAULT_EDITOR)
    real = os.path.realpath(path)
    with files.exclusive(real, timeout=lock_timeout) as fstab:
        text, version = fstab.read()
        # A private copy (mode 0600 in $TMPDIR): the editor never writes fstab itself.
        fd, scratch = tempfile.mkstemp(prefix="fstab.", suffix=".edit")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(text.encode(files.ENCODING, files.ENCODING_ERRORS))
            while True:
                status = subprocess.run([*command, scratch], check=False).returncode
                if status != 0:
                    out.write(f"lmi-mount: the editor exited with status {status}; "
                              f"{real} is unchanged\n")
                    return 1
                with open(scratch, "rb") as stream:
                    edited = stream.read().decode(files.ENCODING, files.ENCODING_ERRORS)
                if edited == text:
                    out.write(f"{real}: no changes\n")
                    return 0
                found = review(edited)
                for warning in found.warnings:
                    out.write(f"warning: {warning}\n")
                if not found.problems:
                    break
                for problem in found.problems:
                    out.write(f"problem: {problem}\n")
                try:
                    answer = ask("What now? (e)dit again, (w)rite anyway, (q)uit "
                                 "without saving [e]: ").strip().lower()
                except EOFError:
                    answer = "q"  # no terminal to answer: never write a broken file
                if answer.startswith("q"):
                    out.write(f"{real} is unchanged\n")
                    return 1
                if answer.startswith("w"):
                    break
            try:
                _, backup = fstab.replace(edited, version, backups=backups)
            except files.FileError as exc:
                # Changed by a writer that does not lock: the edit is kept to redo.
                kept = f"{real}.lmi-edit-{os.getpid()}"
                shutil.copyfile(scratch, kept)
                out.write(f"lmi-mount: {exc}\nyour edit is kept in {kept}\n")
                return 1
            out.write(f"{real} written" + (f" (the old one is {backup})" if backup else "")
                      + "\n")
            return 0
        finally:
            os.unlink(scratch)
