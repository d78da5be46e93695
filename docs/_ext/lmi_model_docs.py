"""Sphinx extension: the lmi-mount model page, generated from the compiled MOF.

Owns: turning the classes of ``lmi_mount.cim.model`` into reStructuredText at
build time, so the page cannot drift from the MOF:

``.. lmi-model-diagram::``
    a class diagram (``sphinx.ext.graphviz``): every LMI class that is not an
    association, its DMTF parent, the classes the associations refer to,
    inheritance as arrows with a hollow head, and each LMI association as a
    dashed edge between the classes its two references name;

``.. lmi-model-classes::``
    one section per LMI class: superclass, keys, the properties and methods the
    class declares or overrides (type, key, direction, description), the
    ValueMap/Values of enumerations and return codes.

Must not know: how the MOF is found or compiled (``lmi_mount.cim.model``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from pywbem import CIMClass, CIMMethod, CIMParameter, CIMProperty
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from lmi_mount.cim.model import Model, load_model

# Characters that start inline markup in RST; a backslash makes them literal.
_RST_SPECIAL = re.compile(r"([\\`*_|])")


def escape(text: str) -> str:
    return _RST_SPECIAL.sub(r"\\\1", text)


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def label(classname: str) -> str:
    return f"model-{classname.lower()}"


def class_ref(model: Model, classname: str) -> str:
    """A link to the class's section when it is an LMI class, else its plain name."""
    if classname in model.lmi_classnames:
        return f":ref:`{classname} <{label(classname)}>`"
    return escape(classname)


def is_association(cls: CIMClass) -> bool:
    qual = cls.qualifiers.get("Association")
    return bool(qual is not None and qual.value)


def qualifier(element: Any, name: str) -> Any:
    qual = element.qualifiers.get(name)
    return None if qual is None else qual.value


def type_text(model: Model, element: CIMProperty | CIMParameter) -> str:
    if element.type == "reference":
        text = f"REF {class_ref(model, element.reference_class)}"
    else:
        text = element.type + ("[]" if element.is_array else "")
    embedded = qualifier(element, "EmbeddedInstance")
    if embedded:
        text += f" (embedded {class_ref(model, embedded)})"
    return text


def direction(param: CIMParameter) -> str:
    """IN/OUT as the In and Out qualifiers say, with DMTF's defaults (In true, Out false)."""
    inp = qualifier(param, "In")
    out = qualifier(param, "Out")
    sides = [side for side, on in (("IN", inp is None or inp), ("OUT", bool(out))) if on]
    return ", ".join(sides)


def enumeration(element: Any) -> str | None:
    """``ValueMap``/``Values`` as one line: ``0`` Mode 0; ``1`` Mode 1; ..."""
    valuemap = qualifier(element, "ValueMap")
    values = qualifier(element, "Values")
    if not valuemap or not values:
        return None
    return "; ".join(
        f"``{v}`` {escape(meaning)}" for v, meaning in zip(valuemap, values, strict=True)
    )


def description_lines(element: Any, *extra: str | None) -> list[str]:
    """The Description as an RST line block (its line breaks kept), plus extra lines."""
    text = qualifier(element, "Description") or ""
    lines = [escape(line) for line in text.splitlines() if line.strip()]
    lines += [line for line in extra if line]
    return [f"| {line}" for line in lines] or ["|"]


def list_table(
    title: str, header: list[str], widths: list[int], rows: Iterable[list[list[str]]]
) -> Iterator[str]:
    """A list-table; each cell is a list of RST lines."""
    yield f".. list-table:: {title}"
    yield "   :header-rows: 1"
    yield f"   :widths: {' '.join(str(w) for w in widths)}"
    yield ""
    for row in [[[h] for h in header], *rows]:
        for n, cell in enumerate(row):
            bullet = "   * - " if n == 0 else "     - "
            yield bullet + cell[0]
            yield from (f"       {line}" for line in cell[1:])
    yield ""


def class_section(model: Model, classname: str) -> Iterator[str]:
    cls = model.get_class(classname)
    kind = "association" if is_association(cls) else "class"
    title = escape(classname)
    yield f".. _{label(classname)}:"
    yield ""
    yield title
    yield "~" * len(title)
    yield ""
    yield f"{kind.capitalize()}, subclass of {class_ref(model, cls.superclass)}, "
    yield f"version {escape(qualifier(cls, 'Version') or 'unversioned')}."
    keys = [name for name, prop in cls.properties.items() if qualifier(prop, "Key")]
    yield f"Keys: {', '.join(f'``{k}``' for k in keys)}."
    yield ""
    yield from description_lines(cls)
    yield ""

    own_properties = model.own_properties(classname)
    if own_properties:
        rows = [
            [
                [f"``{name}``"],
                [type_text(model, prop)],
                ["yes" if qualifier(prop, "Key") else ""],
                description_lines(
                    prop,
                    (f"Values: {enumeration(prop)}" if enumeration(prop) else None),
                    (f"Default: ``{prop.value}``" if prop.value is not None else None),
                ),
            ]
            for name, prop in own_properties.items()
        ]
        yield from list_table(
            "Properties declared or overridden here",
            ["Property", "Type", "Key", "Description"],
            [22, 22, 6, 50],
            rows,
        )

    for name, method in model.own_methods(classname).items():
        yield from method_section(model, name, method)

    inherited_p = len(cls.properties) - len(own_properties)
    inherited_m = len(cls.methods) - len(model.own_methods(classname))
    yield f"Inherited from {class_ref(model, cls.superclass)} and its ancestors: "
    yield f"{plural(inherited_p, 'more property', 'more properties')} and "
    yield f"{plural(inherited_m, 'more method', 'more methods')} (see the DMTF CIM Schema 2.49)."
    yield ""


def method_section(model: Model, name: str, method: CIMMethod) -> Iterator[str]:
    params = ", ".join(f"{direction(p)} {p.name}" for p in method.parameters.values())
    yield f".. rubric:: {method.return_type} {escape(name)}({escape(params)})"
    yield ""
    yield from description_lines(method)
    yield ""
    rows = [
        [
            [f"``{pname}``"],
            [direction(param)],
            [type_text(model, param)],
            description_lines(
                param, (f"Values: {enumeration(param)}" if enumeration(param) else None)
            ),
        ]
        for pname, param in method.parameters.items()
    ]
    if rows:
        yield from list_table(
            f"Parameters of {escape(name)}",
            ["Parameter", "Direction", "Type", "Description"],
            [20, 10, 22, 48],
            rows,
        )
    codes = enumeration(method)
    if codes:
        yield f"Return values: {codes}."
        yield ""


def diagram(model: Model) -> Iterator[str]:
    """The dot source of the class diagram (see the module docstring)."""
    lmi = [model.get_class(name) for name in model.lmi_classnames]
    classes = [c for c in lmi if not is_association(c)]
    associations = [c for c in lmi if is_association(c)]
    ends = {
        assoc.classname: [
            p.reference_class
            for p in model.own_properties(assoc.classname).values()
            if p.type == "reference"
        ]
        for assoc in associations
    }
    shown: list[str] = []
    for name in [
        *(c.classname for c in classes),
        *(c.superclass for c in classes),
        *(end for pair in ends.values() for end in pair),
    ]:
        if name not in shown:
            shown.append(name)

    yield "digraph lmi_mount_model {"
    yield '   graph [rankdir=BT, fontname="Helvetica", fontsize=10, nodesep=0.35, ranksep=0.5];'
    yield '   node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];'
    yield '   edge [fontname="Helvetica", fontsize=8];'
    for name in shown:
        fill = "#cfe2f3" if name.startswith("LMI_") else "#eeeeee"
        yield f'   "{name}" [fillcolor="{fill}"];'
    for name in shown:
        direct = model.get_class(name).superclass
        # The nearest ancestor on the diagram; dotted when DMTF classes that
        # are not shown lie between.
        parent = next((a for a in ancestors(model, name) if a in shown), None)
        if parent is not None:
            style = "" if parent == direct else ", style=dotted"
            yield f'   "{name}" -> "{parent}" [arrowhead=empty{style}];'
    for assoc in associations:
        first, second = ends[assoc.classname]
        # An association between a class and one of its ancestors (the job and
        # CIM_ManagedElement) would pull the ancestor below its descendants:
        # keep such an edge out of the ranking.
        related = first in ancestors(model, second) or second in ancestors(model, first)
        yield (
            f'   "{first}" -> "{second}" [label="{assoc.classname}", style=dashed, '
            'color="#3d85c6", fontcolor="#3d85c6", arrowhead=none'
            + (", constraint=false" if related else "")
            + "];"
        )
    yield "}"


def ancestors(model: Model, classname: str) -> list[str]:
    chain = []
    parent = model.get_class(classname).superclass
    while parent is not None:
        chain.append(parent)
        parent = model.get_class(parent).superclass
    return chain


def diagram_directive(model: Model) -> Iterator[str]:
    yield ".. graphviz::"
    yield (
        "   :caption: The LMI classes (blue), their DMTF parents (grey), inheritance "
        "(hollow arrows; dotted through DMTF classes not shown) and the LMI associations "
        "(dashed, by name)."
    )
    yield "   :alt: Class diagram of the lmi-mount model"
    yield ""
    yield from (f"   {line}" for line in diagram(model))
    yield ""


def classes_directive(model: Model) -> Iterator[str]:
    for classname in model.lmi_classnames:
        yield from class_section(model, classname)


def model_directive(generate: Callable[[Model], Iterable[str]]) -> type[SphinxDirective]:
    """A directive without arguments whose body is the RST that ``generate`` yields."""

    class ModelDirective(SphinxDirective):
        has_content = False

        def run(self) -> list[nodes.Node]:
            model = load_model()
            # Rebuild the page whenever a MOF file changes.
            for path in sorted(model.mof_dir.rglob("*.mof")):
                self.env.note_dependency(str(path))
            source = self.get_source_info()[0] or "<lmi-model>"
            content = StringList(list(generate(model)), source=source)
            container = nodes.section()
            nested_parse_with_titles(self.state, content, container)
            return list(container.children)

    return ModelDirective


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.graphviz")
    app.add_directive("lmi-model-diagram", model_directive(diagram_directive))
    app.add_directive("lmi-model-classes", model_directive(classes_directive))
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
