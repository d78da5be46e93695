"""``lmi-mount``: local administration on the host, on the same engine as the service.

Owns: the ``status`` table (mounts, holders, fstab state, drift, fstab
problems and backups) and ``plan`` (the dry run of a CreateMount /
ModifyMount / DeleteMount in a given Mode), for which it opens the engine as
a read-only observer: it never takes the running service's state lock and
never changes a mount, a line or a reference. ``edit-fstab`` is the one verb
that writes: fstab, by hand, under the lock the service's writers take
(``lmi_mount.fstab_editor``). ``watch`` prints the changes the service's
indications describe (``cim.events``) as they happen. ``--sandbox DIR`` does all of it for the
sandbox of ``lmi-mountd --sandbox DIR``, in its daemon's mount namespace.

Must not know: CIM transport. Modes are read from the service's one table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from lmi_mount import sandbox
from lmi_mount.cim.broker import Broker
from lmi_mount.cim.events import (
    INST_CREATION,
    INST_DELETION,
    INST_MODIFICATION,
    FstabUnreadable,
    IndicationFactory,
    ModelReader,
    changes,
)
from lmi_mount.cim.providers.service import MODES, no_effect
from lmi_mount.engine import MountManager, MountStatus
from lmi_mount.fstab_editor import edit_fstab
from lmi_mount.linux import files, watch
from lmi_mount.linux.journal import JOURNAL_NAMES
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.errors import MountError
from lmi_mount.mounts.escaping import escape_controls
from lmi_mount.mounts.holders import shown_holders
from lmi_mount.mounts.options import DEFAULTS, OptionError, parse_options, render_options
from lmi_mount.mounts.plan import MountSpec

DEFAULT_FSTAB = "/etc/fstab"
DEFAULT_STATE_DIR = "/run/lmi-mount"
#: ``watch`` reads the model at least this often (holder changes of a service
#: in another process show in its journal, which is watched too).
WATCH_RESYNC_SECONDS = 5.0
#: Changes within this long of each other are one: a request's mount, fstab
#: line and holders (the service itself waits for its requests to end).
WATCH_SETTLE_SECONDS = 0.05


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lmi-mount",
        description="Show lmi-mount's view of the host's mounts, plan a change without "
        "making it, or edit fstab safely beside a running lmi-mountd.",
    )
    top.add_argument("--sandbox", type=_sandbox_dir, metavar="DIR",
                     help="act on the sandbox of 'lmi-mountd --sandbox DIR': its mount "
                     "namespace, DIR/fstab and DIR/state (as root)")
    top.add_argument("--fstab", help=f"fstab path (default {DEFAULT_FSTAB}, or DIR/fstab)")
    top.add_argument(
        "--state-dir",
        help=f"the service's state directory (default {DEFAULT_STATE_DIR}, or DIR/state)",
    )
    commands = top.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="mounts, holders, fstab state and drift")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="one JSON document: mounts, fstab problems, fstab backups")
    output.add_argument("--json-lines", action="store_true",
                        help="one JSON object per line: each mount, then each fstab problem")
    plan = commands.add_parser("plan", help="the steps a request would take (dry run)")
    plan.add_argument("method", choices=("create", "modify", "delete"))
    plan.add_argument(
        "--mode",
        type=int,
        required=True,
        choices=sorted(MODES),
        help="the draft's Mode (1, 2, 4, 5, 32768, 32769)",
    )
    plan.add_argument("--target", required=True, help="the mount point")
    plan.add_argument("--spec", help="the file system spec (device, image, directory, 'tmpfs')")
    plan.add_argument("--type", dest="fstype", help="file system type (omit for a bind mount)")
    plan.add_argument("--options", default="defaults", help="mount(8) options")
    plan.add_argument("--holder", help="the holder (a DeleteMount naming one is a "
                      "release, as the service's is; default root)")
    plan.add_argument("--force", action="store_true")
    watch_verb = commands.add_parser(
        "watch", help="the changes of mounts, fstab lines and holders as they happen "
        "(the service's indications, on the terminal)")
    watch_verb.add_argument("--json", action="store_true", help="one JSON object per change")
    watch_verb.add_argument("--count", type=int, metavar="N",
                            help="stop after N changes (default: until interrupted)")
    watch_verb.add_argument("--seconds", type=float, metavar="S",
                            help="stop after S seconds")
    edit = commands.add_parser(
        "edit-fstab", help="edit fstab in $VISUAL/$EDITOR under lmi-mountd's lock, checked "
        "before it is written (as vipw and visudo)")
    edit.add_argument("--backups", type=int, default=3,
                      help="earlier versions to keep beside it (default %(default)s)")
    return top


def _sandbox_dir(text: str) -> Path:
    """DIR of ``--sandbox``, resolved now: entering the sandbox's namespace moves
    the working directory to its root, where a relative DIR names another one."""
    if not text:
        raise argparse.ArgumentTypeError("the sandbox directory must not be empty")
    return Path(os.path.realpath(text))


def main(
    argv: Sequence[str] | None = None,
    *,
    engine: MountManager | None = None,
    out: TextIO = sys.stdout,
) -> int:
    args = parser().parse_args(argv)
    fstab, state_dir = Path(DEFAULT_FSTAB), Path(DEFAULT_STATE_DIR)
    if args.sandbox is not None:
        fstab, state_dir = sandbox.fstab_of(args.sandbox), sandbox.state_dir_of(args.sandbox)
    fstab = Path(args.fstab) if args.fstab else fstab
    state_dir = Path(args.state_dir) if args.state_dir else state_dir
    if args.command == "edit-fstab":
        return edit_fstab(str(fstab), out=out, backups=args.backups)
    if args.sandbox is not None and engine is None:
        # The sandbox's mounts live in its daemon's namespace: read them there.
        try:
            sandbox.enter_daemon_namespace(args.sandbox)
        except (sandbox.NoSandboxDaemon, OSError) as exc:
            print(f"lmi-mount: {exc}", file=sys.stderr)
            return 1
    manager = engine or MountManager(
        LinuxKernel(), fstab_path=fstab, state_dir=state_dir, observer=True
    )
    manager.start()
    try:
        if args.command == "status":
            state = manager.state()
            mounts = [_as_json(status) for status in state.statuses]
            problems = [{"fstab_line": problem.line, "problem": problem.kind,
                         "detail": problem.detail, "text": problem.text}
                        for problem in state.fstab_problems]
            backups = files.backups_of(manager.fstab_path)
            if args.json:
                json.dump({"mounts": mounts, "fstab_problems": problems,
                           "fstab_backups": backups}, out, indent=2)
                out.write("\n")
            elif args.json_lines:
                out.write("".join(json.dumps(row) + "\n" for row in mounts + problems))
            else:
                out.write(status_table(state.statuses))
                out.write("".join(f"{escape_controls(str(problem))}\n"
                                  for problem in state.fstab_problems))
                if backups:
                    out.write(f"fstab backups: {', '.join(backups)}\n")
            return 0
        if args.command == "watch":
            return _watch(manager, state_dir, args, out)
        return _plan(manager, args, out)
    except (MountError, OptionError) as exc:
        print(f"lmi-mount: {exc}", file=sys.stderr)
        return 1
    finally:
        manager.close()


def _watch(manager: MountManager, state_dir: Path, args: argparse.Namespace,
           out: TextIO) -> int:
    """Print each change as the service's indications say it, until ``--count``
    changes or ``--seconds`` (or Ctrl-C).

    The observer reads the service's journal once, when it starts: a change
    of the journal (holders taken or released by the service) opens a new
    observer, so that its holders are the service's again.
    """
    journal = watch.FileChanges(state_dir / JOURNAL_NAMES[0], JOURNAL_NAMES[1:]) \
        if state_dir.is_dir() else None
    sources: list[watch.Source] = [watch.MountinfoPoll(), watch.FileChanges(manager.fstab_path)]
    sources += [journal] if journal is not None else []
    broker = Broker(manager, host=socket.getfqdn())
    factory = IndicationFactory(broker.model, broker.context.projector)
    reader = ModelReader(broker.context)
    deadline = time.monotonic() + args.seconds if args.seconds is not None else None
    seen = 0
    opened: MountManager | None = None  # the observer of the latest journal (ours to close)
    try:
        previous = reader.read()
    except FstabUnreadable as exc:
        print(f"lmi-mount: cannot watch: {exc}", file=sys.stderr)
        return 1
    waiting = False
    try:
        while args.count is None or seen < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            woken = watch.wait(sources, WATCH_RESYNC_SECONDS if remaining is None
                               else min(remaining, WATCH_RESYNC_SECONDS))
            time.sleep(WATCH_SETTLE_SECONDS)  # a request's mount, line and holders
            woken += watch.wait(sources, 0)
            if journal in woken or not woken:
                broker.close()
                if opened is not None:
                    opened.close()
                opened = MountManager(LinuxKernel(), fstab_path=manager.fstab_path,
                                      state_dir=state_dir, observer=True).start()
                broker = Broker(opened, host=socket.getfqdn(), model=broker.model)
                reader = ModelReader(broker.context)
            try:
                current = reader.read()
            except FstabUnreadable as exc:
                # Its lines are not known to be gone: told once it can be read.
                if not waiting:
                    print(f"lmi-mount: waiting for fstab: {exc}", file=sys.stderr)
                waiting = True
                continue
            waiting = False
            # One read may hold several changes (a mount and its setting):
            # --count stops after the Nth, not after the read that holds it.
            for indication in itertools.islice(changes(previous, current, factory),
                                               None if args.count is None
                                               else args.count - seen):
                row = event_row(indication)
                out.write(json.dumps(row) + "\n" if args.json else event_line(row) + "\n")
                out.flush()
                seen += 1
            previous = current
    except KeyboardInterrupt:
        pass
    finally:
        for source in sources:
            source.close()
        broker.close()
        if opened is not None:
            opened.close()
    return 0


_KINDS = {INST_CREATION: "created", INST_DELETION: "deleted", INST_MODIFICATION: "changed"}


def event_row(indication: Any) -> dict[str, Any]:
    """One change as JSON-ready values: what, which instance, what changed."""
    time_text = str(indication["IndicationTime"].datetime.isoformat(timespec="seconds"))
    source = indication.get("SourceInstance")
    if source is None:  # an alert
        return {"time": time_text, "event": "alert", "message_id": indication["MessageID"],
                "message": indication["Message"]}
    row: dict[str, Any] = {"time": time_text, "event": _KINDS[indication.classname],
                           "class": source.classname,
                           "path": indication["SourceInstanceModelPath"],
                           "mount_point": source.get("MountPointPath") or source.get(
                               "ElementName")}
    previous = indication.get("PreviousInstance")
    if previous is not None:
        row["changed"] = {name: [_plain(previous.get(name)), _plain(source.get(name))]
                          for name in indication["ChangedPropertyNames"] or ()}
    return row


def event_line(row: dict[str, Any]) -> str:
    what = "setting of" if row.get("class") == "LMI_MountedFileSystemSetting" else "mount"
    if row["event"] == "alert":
        text = f"{row['time']} alert {row['message_id']}: {row['message']}"
    else:
        text = f"{row['time']} {row['event']} {what} {row['mount_point']}"
        if row.get("changed"):
            text += ": " + ", ".join(f"{name} {old} -> {new}"
                                     for name, (old, new) in row["changed"].items())
    return escape_controls(text)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    return str(value)


def _plan(manager: MountManager, args: argparse.Namespace, out: TextIO) -> int:
    effect = MODES[args.mode]
    options = parse_options(args.options)
    if args.method == "create":
        if effect.current is not True and effect.persist is not True:
            out.write(no_effect(args.mode, "CreateMount") + "\n")
            return 0
        if args.spec is None:
            raise OptionError("create needs --spec", value=None)
        spec = MountSpec(
            args.spec,
            args.target,
            args.fstype,
            # What the service does with a Goal of NULL: the draft's defaults
            # for a file system; for a bind, none, as ``mount --bind``.
            options if args.options != "defaults" or args.fstype is None else DEFAULTS,
        )
        outcome = manager.create(
            spec,
            current=effect.current is True,
            persist=effect.persist is True,
            holder=args.holder or "root",
            dry_run=True,
        )
    elif args.method == "modify":
        if effect.current is not True and effect.persist is not True:
            out.write(no_effect(args.mode, "ModifyMount") + "\n")
            return 0
        outcome = manager.modify(
            args.target,
            options,
            spec_name=args.spec,
            current=effect.current is True,
            persist=effect.persist is True,
            dry_run=True,
        )
    else:
        if effect.current is not False and effect.persist is not False:
            out.write(no_effect(args.mode, "DeleteMount") + "\n")
            return 0
        outcome = manager.delete(
            args.target,
            spec_name=args.spec,
            current=effect.current is False,
            persist=effect.persist is False,
            holder=args.holder or "root",
            force=args.force,
            dry_run=True,
            release_only=args.holder is not None,
        )
    steps = outcome.plan.describe()
    out.write("".join(f"{n}. {step}\n" for n, step in enumerate(steps, 1)) or "nothing to do\n")
    return 0


def _as_json(status: MountStatus) -> dict[str, Any]:
    held = status.held
    return {
        "target": status.target,
        "spec": status.spec,
        "fstype": status.fstype,
        "mounted": status.live is not None,
        "options": render_options(status.live_options) if status.live_options else None,
        "fstab": status.fstab.options if status.fstab else None,
        "references": held.refcount if held else 0,
        "holders": list(held.holders) if held else [],
        "made_by_lmi_mount": held.made_by_us if held else False,
        "covers_holders": list(status.covers.holders) if status.covers else None,
        "drift": [str(d) for d in status.drift],
    }


def _covered_note(status: MountStatus) -> str:
    """The HOLDERS cell of a mount nobody holds: who holds a mount it covers."""
    if status.covers is None:
        return "-"
    return f"- (covers {shown_holders(status.covers.holders) or 'a timed mount'}'s)"


def status_table(statuses: Sequence[MountStatus]) -> str:
    """A fixed-width table, one mount per line, as ``findmnt`` prints its list."""
    header = ("MOUNT POINT", "SPEC", "TYPE", "LIVE", "FSTAB", "REFS", "HOLDERS", "DRIFT")
    rows: list[tuple[str, ...]] = [header]
    for status in sorted(statuses, key=lambda s: s.target):
        held = status.held
        rows.append(tuple(escape_controls(cell) for cell in (
            status.target,
            status.spec,
            status.fstype or "-",
            "yes" if status.live is not None else "no",
            "yes" if status.fstab is not None else "no",
            str(held.refcount if held else 0),
            shown_holders(held.holders) if held and held.holders else _covered_note(status),
            "; ".join(str(d) for d in status.drift) or "-",
        )))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "".join(
        " ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + " "
        + row[-1]
        + "\n"
        for row in rows
    )
