#!/usr/bin/env python3
"""Extract the DMTF CIM Schema classes that the lmi-mount model derives from.

Owns: reading the DMTF schema archive (the zip, or pywbem's source
distribution that ships it under ``tests/schema/``), finding the classes the
model in ``mof/lmi/`` needs (superclasses, REF targets and EmbeddedInstance
classes, transitively), the qualifier declaration files they use, and writing
them unchanged under ``mof/dmtf/`` with their schema-relative paths
(``Core/...``, ``System/...``), plus ``LICENSE`` (the schema's DMTF notice) and
``dmtf.mof``, which includes them in dependency order.

Must not know: pywbem or any CIM repository. Dependencies are read from the MOF
text with a small tokenizer, so that the result does not depend on how one
compiler resolves missing classes (pywbem's searches its ``search_paths`` by
file name, which would hide a wrong include order).

Usage::

    python mof/dmtf/extract.py pywbem-1.9.1.tar.gz
    python mof/dmtf/extract.py cim_schema_2.49.0Final-MOFs.zip

The sdist comes from ``pip download --no-binary :all: --no-deps pywbem==1.9.1``.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = HERE.parent / "lmi"

# The DMTF schema archive inside pywbem's sdist: tests/schema/cim_schema_<v>Final-MOFs.zip.
SDIST_ZIP_RE = re.compile(r"(^|/)tests/schema/cim_schema_[0-9.]+Final-MOFs\.zip$")
# The schema's entry file, cim_schema_<major>.<minor>.<update>.mof, lists every
# class file in an order that compiles; we reuse that order to break ties.
SCHEMA_FILE_RE = re.compile(r"^cim_schema_(\d+\.\d+\.\d+)\.mof$")
INCLUDE_RE = re.compile(r'^#pragma\s+include\s*\(\s*"([^"]+)"\s*\)', re.MULTILINE)
QUALIFIER_FILES = ("qualifiers.mof", "qualifiers_optional.mof")

# MOF lexical elements (DSP0221 section 7): comments, string and char literals,
# identifiers; everything else is one punctuation character at a time.
TOKEN_RE = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<char>'(?:[^'\\]|\\.)*')
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>[0-9][A-Za-z0-9.]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class ExtractError(Exception):
    """The archive or the model cannot give a consistent set of DMTF files."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str


@dataclass(slots=True)
class ClassDecl:
    """What a class declaration depends on, read from its MOF text."""

    name: str
    path: str
    superclass: str | None = None
    references: set[str] = field(default_factory=set)
    embedded: set[str] = field(default_factory=set)
    qualifiers: set[str] = field(default_factory=set)

    def dependencies(self) -> set[str]:
        """Classes that must exist before this one compiles (lower-case names)."""
        deps = {name.lower() for name in self.references | self.embedded}
        if self.superclass:
            deps.add(self.superclass.lower())
        deps.discard(self.name.lower())
        return deps


def tokenize(text: str) -> Iterator[Token]:
    for match in TOKEN_RE.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            yield Token(kind, match.group())


def unquote(literal: str) -> str:
    return literal[1:-1]


def parse_classes(text: str, path: str) -> list[ClassDecl]:
    """Class declarations of a MOF file with their superclass, REF and EmbeddedInstance classes.

    Qualifier names are collected from every qualifier list (``[Name (...), ...]``),
    those in front of the class as well as those of its properties, methods and
    parameters; they are attributed to the class that follows or encloses them.
    """
    tokens = list(tokenize(text))
    classes: list[ClassDecl] = []
    pending_qualifiers: set[str] = set()
    current: ClassDecl | None = None
    brace_depth = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.text == "[" and nxt is not None and nxt.text != "]":
            i = _read_qualifier_list(tokens, i, pending_qualifiers)
            continue
        if (
            tok.kind == "ident"
            and tok.text.lower() == "class"
            and brace_depth == 0
            and nxt is not None
            and nxt.kind == "ident"
        ):
            current = ClassDecl(name=nxt.text, path=path)
            if i + 3 < len(tokens) and tokens[i + 2].text == ":":
                current.superclass = tokens[i + 3].text
            classes.append(current)
            i += 2
            continue
        if tok.text == "{":
            brace_depth += 1
        elif tok.text == "}":
            brace_depth -= 1
        elif tok.kind == "ident" and tok.text.lower() == "ref" and i > 0:
            if current is None:
                raise ExtractError(f"{path}: REF outside a class declaration")
            current.references.add(tokens[i - 1].text)
        if current is not None:
            current.qualifiers |= pending_qualifiers
            pending_qualifiers = set()
        i += 1
    return classes


def _read_qualifier_list(tokens: list[Token], start: int, names: set[str]) -> int:
    """Collect the qualifier names of the list opening at ``start``; return the index after it.

    A qualifier name is an identifier right after ``[`` or after a ``,`` outside
    any parenthesis or brace (so values such as ``Values {"a", "b"}`` and
    flavors after ``:`` are not taken for names). ``EmbeddedInstance ("X")``
    is recorded as ``EmbeddedInstance=X`` so the caller can pick the class.
    """
    depth = 0
    expect_name = True
    i = start + 1
    while i < len(tokens):
        tok = tokens[i]
        if depth == 0 and tok.text == "]":
            return i + 1
        if tok.text in "({":
            depth += 1
        elif tok.text in ")}":
            depth -= 1
        elif depth == 0 and tok.text == ",":
            expect_name = True
            i += 1
            continue
        elif depth == 0 and expect_name and tok.kind == "ident":
            names.add(tok.text)
            if (
                tok.text.lower() == "embeddedinstance"
                and i + 3 < len(tokens)
                and tokens[i + 1].text == "("
                and tokens[i + 2].kind == "string"
            ):
                names.add(f"EmbeddedInstance={unquote(tokens[i + 2].text)}")
        expect_name = False
        i += 1
    raise ExtractError("unterminated qualifier list")


def finish_embedded(decl: ClassDecl) -> ClassDecl:
    """Move the ``EmbeddedInstance=X`` markers of the qualifier scan into ``embedded``."""
    for name in list(decl.qualifiers):
        if name.startswith("EmbeddedInstance="):
            decl.qualifiers.discard(name)
            decl.embedded.add(name.split("=", 1)[1])
    return decl


def parse_qualifier_names(text: str) -> set[str]:
    """Names declared by ``Qualifier Name : type ...;`` statements."""
    tokens = list(tokenize(text))
    return {
        tokens[i + 1].text
        for i, tok in enumerate(tokens[:-1])
        if tok.kind == "ident"
        and tok.text.lower() == "qualifier"
        and tokens[i + 1].kind == "ident"
    }


@dataclass(slots=True)
class Schema:
    """The MOF files of a DMTF schema archive, by schema-relative path."""

    source: str
    version: str
    entry: str
    files: dict[str, bytes]

    def text(self, path: str) -> str:
        return self.files[path].decode("utf-8")

    def include_order(self) -> list[str]:
        return INCLUDE_RE.findall(self.text(self.entry))

    def notice(self) -> list[str]:
        """The DMTF copyright and notice: the comment lines heading the entry file."""
        lines = []
        for line in self.text(self.entry).splitlines():
            if not line.startswith("//"):
                break
            lines.append(line[2:].removeprefix(" ").rstrip())
        if not lines or "DMTF" not in lines[0]:
            raise ExtractError(f"{self.entry}: no DMTF notice at its top")
        return lines


def open_schema(archive: Path) -> Schema:
    """Read the .mof members of the schema zip, given directly or inside pywbem's sdist."""
    if zipfile.is_zipfile(archive):
        data = archive.read_bytes()
        source = archive.name
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if SDIST_ZIP_RE.search(m.name)]
            if len(members) != 1:
                raise ExtractError(
                    f"{archive}: expected one tests/schema/cim_schema_*Final-MOFs.zip, "
                    f"found {len(members)}"
                )
            extracted = tar.extractfile(members[0])
            if extracted is None:
                raise ExtractError(f"{archive}: {members[0].name} is not a regular file")
            data = extracted.read()
            source = f"{archive.name}:{members[0].name}"
    else:
        raise ExtractError(f"{archive}: neither a zip nor a tar archive")

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {
            info.filename: zf.read(info)
            for info in zf.infolist()
            if info.filename.endswith(".mof") and not info.is_dir()
        }
    entries = [(p, m.group(1)) for p in files if (m := SCHEMA_FILE_RE.match(p))]
    if len(entries) != 1:
        raise ExtractError(f"{source}: expected one cim_schema_<version>.mof, found {entries}")
    entry, version = entries[0]
    return Schema(source=source, version=version, entry=entry, files=files)


def index_schema(schema: Schema) -> dict[str, ClassDecl]:
    """Every class of the schema by lower-case name, in the entry file's include order."""
    index: dict[str, ClassDecl] = {}
    for path in schema.include_order():
        if path in QUALIFIER_FILES:
            continue
        if path not in schema.files:
            raise ExtractError(f"{schema.entry} includes {path}, which the archive lacks")
        for decl in parse_classes(schema.text(path), path):
            index[decl.name.lower()] = finish_embedded(decl)
    return index


def read_model(model_dir: Path) -> list[ClassDecl]:
    decls: list[ClassDecl] = []
    for path in sorted(model_dir.glob("*.mof")):
        text = path.read_text(encoding="utf-8")
        decls.extend(finish_embedded(d) for d in parse_classes(text, path.name))
    if not decls:
        raise ExtractError(f"{model_dir}: no class declarations in *.mof")
    return decls


def closure(seeds: Iterable[str], index: Mapping[str, ClassDecl], why: str) -> set[str]:
    """Lower-case names of the seeds and every class they depend on, transitively."""
    needed: set[str] = set()
    todo = [(name.lower(), why) for name in seeds]
    while todo:
        name, wanted_by = todo.pop()
        if name in needed:
            continue
        if name not in index:
            raise ExtractError(f"class {name!r} (needed by {wanted_by}) is not in the schema")
        needed.add(name)
        todo.extend((dep, index[name].name) for dep in index[name].dependencies())
    return needed


def dependency_order(names: set[str], index: Mapping[str, ClassDecl]) -> list[ClassDecl]:
    """Depth-first order in which every class follows the classes it depends on.

    Ties are broken by the schema's own include order, so the result reads like
    a subset of cim_schema_<version>.mof.
    """
    rank = {name: n for n, name in enumerate(index)}
    ordered: list[ClassDecl] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(index[n].name for n in (*chain, name))
            raise ExtractError(f"dependency cycle: {cycle}")
        state[name] = "visiting"
        for dep in sorted(index[name].dependencies(), key=rank.__getitem__):
            visit(dep, (*chain, name))
        state[name] = "done"
        ordered.append(index[name])

    for name in sorted(names, key=rank.__getitem__):
        visit(name, ())
    return ordered


def qualifier_files(schema: Schema, used: set[str]) -> list[str]:
    """The qualifier declaration files needed to declare every qualifier in ``used``."""
    declared = {path: parse_qualifier_names(schema.text(path)) for path in QUALIFIER_FILES}
    chosen = [QUALIFIER_FILES[0]]
    missing = {q.lower() for q in used} - {q.lower() for q in declared[QUALIFIER_FILES[0]]}
    optional = {q.lower() for q in declared[QUALIFIER_FILES[1]]}
    if missing & optional:
        chosen.append(QUALIFIER_FILES[1])
        missing -= optional
    if missing:
        raise ExtractError(f"qualifiers used but declared nowhere: {sorted(missing)}")
    return chosen


def render_dmtf_mof(schema: Schema, includes: list[str], archive_name: str) -> str:
    lines = [
        f"// The DMTF CIM Schema {schema.version} qualifier declarations and classes that",
        "// the lmi-mount model (../lmi/) derives from, in dependency order.",
        "//",
        f"// GENERATED by extract.py from {archive_name}; do not edit,",
        "// run instead:  python mof/dmtf/extract.py pywbem-1.9.1.tar.gz",
        "// The included files are the schema's own, unchanged. Their notice (LICENSE):",
        "//",
        *(f"// {line}".rstrip() for line in schema.notice()),
        '#pragma locale ("en_US")',
        *(f'#pragma include ("{path}")' for path in includes),
    ]
    return "\n".join(lines) + "\n"


def render_license(schema: Schema) -> str:
    title = f"DMTF CIM Schema {schema.version}: copyright and notice"
    intro = (
        "The .mof files in this directory, except dmtf.mof, are copied unchanged "
        f"by extract.py from the DMTF CIM Schema {schema.version} ({schema.source}). "
        'Each keeps its own "Copyright (c) <year> DMTF" line. The notice below is '
        f"the header of the schema's {schema.entry}, reproduced as it asks."
    )
    lines = [
        title,
        "=" * len(title),
        "",
        *textwrap.wrap(intro, width=72, break_long_words=False, break_on_hyphens=False),
        "",
        *schema.notice(),
    ]
    return "\n".join(lines) + "\n"


#: Classes the service uses without the model deriving from them: the
#: indications it sends (DSP1054 lifecycle indications, alerts).
EXTRA_SEEDS = ("CIM_InstCreation", "CIM_InstDeletion", "CIM_InstModification",
               "CIM_AlertIndication")


def extract(archive: Path, model_dir: Path, out_dir: Path,
            extra: tuple[str, ...] = EXTRA_SEEDS) -> list[str]:
    """Write the needed DMTF files, LICENSE and dmtf.mof; return the included paths.

    ``extra`` are classes needed besides the model's parents (EXTRA_SEEDS)."""
    schema = open_schema(archive)
    index = index_schema(schema)
    model = read_model(model_dir)
    defined = {d.name.lower() for d in model}
    seeds: dict[str, str] = {name.lower(): "lmi-mountd's indications" for name in extra}
    for decl in model:
        for dep in decl.dependencies() - defined:
            seeds.setdefault(dep, decl.name)
    needed: set[str] = set()
    for seed, wanted_by in sorted(seeds.items()):
        needed |= closure([seed], index, wanted_by)
    classes = dependency_order(needed, index)

    used_qualifiers = set().union(*(d.qualifiers for d in (*classes, *model)))
    includes = qualifier_files(schema, used_qualifiers) + [d.path for d in classes]

    stale = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.mof")}
    stale -= {*includes, "dmtf.mof"}
    for rel in sorted(stale):
        (out_dir / rel).unlink()
    for path in includes:
        target = out_dir / PurePosixPath(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(schema.files[path])
    for rel in sorted(stale):
        parent = (out_dir / rel).parent
        if parent != out_dir and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
    (out_dir / "LICENSE").write_text(render_license(schema), encoding="utf-8")
    (out_dir / "dmtf.mof").write_text(
        render_dmtf_mof(schema, includes, archive.name), encoding="utf-8"
    )
    return includes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "archive",
        type=Path,
        help="cim_schema_<version>Final-MOFs.zip, or pywbem's sdist that holds it",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="directory of the model's *.mof files (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="directory to write the DMTF files to (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        includes = extract(args.archive, args.model, args.out)
    except (ExtractError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        print(f"extract.py: {exc}", file=sys.stderr)
        return 1
    classes = [p for p in includes if p not in QUALIFIER_FILES]
    print(
        f"{len(classes)} classes and {len(includes) - len(classes)} qualifier files "
        f"written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
