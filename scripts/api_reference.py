#!/usr/bin/env python3
"""Renders the broker's OpenAPI 3.1 document as the book's HTTP API reference (Markdown).

Usage: api_reference.py openapi.json > docs/src/reference/api.md

The test `it::docs::the_api_reference_is_rendered_from_the_openapi_document` fetches
`/v1/openapi.json` from a live broker, runs this script and compares the output with the
committed page (`LATCH_BLESS=1` rewrites it). Operations are grouped by tag in path order;
schemas follow, with their properties. Server URLs are left out (they name the test's port).
"""

from __future__ import annotations

import json
import re
import sys

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


RUSTDOC_LINK = re.compile(r"\[([^\]]+)\]\((?!https?:|mailto:|#|\.|/)[^)\s]*\)")


def prose(text: object) -> str:
    """A description from a doc comment, with rustdoc's intra-doc links (`Self::as_str`, which
    mean nothing outside the code) reduced to their text."""
    return RUSTDOC_LINK.sub(r"\1", str(text)).strip()


def cell(text: object) -> str:
    """Text fit for one cell of a Markdown table."""
    return " ".join(prose(text).split()).replace("|", "\\|")


def anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def type_of(schema: dict | None) -> str:
    """A short human name of a schema: a link for a $ref, else its type."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{anchor(name)})"
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            return " or ".join(type_of(s) for s in schema[key])
    t = schema.get("type")
    if isinstance(t, list):
        parts = [x for x in t if x != "null"]
        base = " or ".join(parts) if parts else "null"
        inner = dict(schema, type=parts[0]) if len(parts) == 1 else None
        text = type_of(inner) if inner else base
        return text + (" (nullable)" if "null" in t else "")
    if t == "array":
        return f"array of {type_of(schema.get('items'))}"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    fmt = schema.get("format")
    return f"{t or 'object'}" + (f" ({fmt})" if fmt else "")


def operation(lines: list[str], method: str, path: str, op: dict, schemes: dict) -> None:
    summary = op.get("summary", "")
    lines.append(f"### `{method.upper()} {path}`")
    lines.append("")
    if summary:
        lines.append(f"**{summary.strip()}**")
        lines.append("")
    if op.get("description") and op["description"].strip() != summary.strip():
        lines.append(prose(op["description"]))
        lines.append("")
    security = op.get("security")
    if security is not None:
        names = sorted({n for req in security for n in req}) if security else []
        text = ", ".join(f"`{n}`" for n in names) if names else "none"
        lines.append(f"Authentication: {text}.")
        lines.append("")
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | required | type | description |", "|---|---|---|---|---|"]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p.get('in', '')} | {'yes' if p.get('required') else 'no'} | "
                f"{type_of(p.get('schema'))} | {cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for ctype, media in sorted(body.get("content", {}).items()):
            req = "required" if body.get("required") else "optional"
            lines.append(f"Request body ({req}, `{ctype}`): {type_of(media.get('schema'))}.")
        lines.append("")
    responses = op.get("responses", {})
    if responses:
        lines += ["| status | description | body |", "|---|---|---|"]
        for status in sorted(responses):
            r = responses[status]
            if "$ref" in r:
                r = schemes.get(r["$ref"].rsplit("/", 1)[-1], {})
            content = r.get("content", {})
            bodies = ", ".join(f"{type_of(m.get('schema'))} (`{c}`)" for c, m in sorted(content.items()))
            lines.append(f"| {status} | {cell(r.get('description', ''))} | {bodies or '—'} |")
        lines.append("")


def schema_section(lines: list[str], name: str, schema: dict) -> None:
    lines.append(f'### {name} <a id="{anchor(name)}"></a>')
    lines.append("")
    if schema.get("description"):
        lines.append(prose(schema["description"]))
        lines.append("")
    props = schema.get("properties")
    if props:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field in props:
            p = props[field]
            lines.append(
                f"| `{field}` | {type_of(p)} | {'yes' if field in required else 'no'} | "
                f"{cell(p.get('description', ''))} |"
            )
        lines.append("")
    else:
        lines.append(f"Type: {type_of(schema)}.")
        lines.append("")


def render(doc: dict) -> str:
    info = doc.get("info", {})
    lines = [
        "# HTTP API reference",
        "",
        "<!-- Generated from GET /v1/openapi.json by scripts/api_reference.py: do not edit;",
        "     `LATCH_BLESS=1 cargo test -p latch-cli --test it docs::` regenerates it. -->",
        "",
        f"{info.get('title', 'Latch')} {info.get('version', '')}, OpenAPI {doc.get('openapi', '')}. "
        "A running broker serves this document at `GET /v1/openapi.json`; "
        "[the API overview](../api-overview.md) explains the flows.",
        "",
    ]
    if info.get("description"):
        lines += [prose(info["description"]), ""]
    comps = doc.get("components", {})
    schemes = comps.get("securitySchemes", {})
    if schemes:
        lines += ["## Authentication", "", "| scheme | type | description |", "|---|---|---|"]
        for name in sorted(schemes):
            s = schemes[name]
            kind = s.get("scheme") or s.get("type", "")
            lines.append(f"| `{name}` | {cell(kind)} | {cell(s.get('description', ''))} |")
        lines.append("")
    by_tag: dict[str, list[tuple[str, str, dict]]] = {}
    for path in sorted(doc.get("paths", {})):
        item = doc["paths"][path]
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, op))
    tags = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    responses = comps.get("responses", {})
    for tag in sorted(by_tag):
        lines += [f"## {tag}", ""]
        if tags.get(tag):
            lines += [prose(tags[tag]), ""]
        for method, path, op in by_tag[tag]:
            operation(lines, method, path, op, responses)
    schemas = comps.get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name in sorted(schemas):
            schema_section(lines, name, schemas[name])
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    sys.stdout.write(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
