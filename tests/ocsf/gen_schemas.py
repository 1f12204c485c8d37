#!/usr/bin/env python3
"""Generate schemas/ocsf/<class>.schema.json: the JSON Schema (draft 2020-12) of the subset of
each OCSF 1.5.0 class that m365-forwarder emits.

Which attributes: every attribute path that appears in the golden outputs
(tests/golden/*.ocsf.ndjson) for that class. What each one is: from the OCSF 1.5.0 schema that
pydantic-ocsf ships (type, caption, requirement, enum; objects resolved through `extends`; the
host profile's `actor` and `device`). Objects are closed (`additionalProperties: false`) except
the free-form ones (`unmapped`, `json_t` such as `data`). Required: OCSF's required attributes
plus the base attributes the normalizer always writes (BASE_ALWAYS below).

Run from the repository root with the validator's virtual environment (see tests/ocsf/README.md):
    target/tmp/ocsf-venv/bin/python tests/ocsf/gen_schemas.py [OUT_DIR]
then review the diff; tests/ocsf_schemas.rs checks every golden event against these files.
"""

import glob
import json
import os
import re
import sys

from ocsf import get_schema_loader
from ocsf._utils import extract_observable_type_ids

OCSF_VERSION = "1.5.0"
S = get_schema_loader().load_schema(OCSF_VERSION)
DICT = S["dictionary"]["attributes"]
TYPES = S["dictionary"]["types"]["attributes"]
CATEGORIES = S["categories_meta"]["attributes"]

CLASSES = {
    0: "base_event",
    2004: "detection_finding",
    2005: "incident_finding",
    3001: "account_change",
    3002: "authentication",
    3004: "entity_management",
    6003: "api_activity",
}
HOST_PROFILE = {"actor": {"requirement": "optional"}, "device": {"requirement": "recommended"}}
PRIMITIVE = {
    "string_t": "string",
    "integer_t": "integer",
    "long_t": "integer",
    "float_t": "number",
    "boolean_t": "boolean",
}
# Written by the normalizer on every event (src/normalize/ocsf.rs `Draft::into_ocsf`, mod.rs).
# `metadata.processed_time` is always written too, but the golden files leave it out (wall clock).
BASE_ALWAYS = {
    "": [
        "activity_id", "activity_name", "category_name", "category_uid", "class_name", "class_uid",
        "metadata", "raw_data_size", "severity", "severity_id", "time", "timezone_offset",
        "type_name", "type_uid",
    ],
    "metadata": ["log_name", "log_provider", "product", "uid", "version"],
    "metadata.product": ["name", "vendor_name"],
}


def resolved(table, name):
    """Attributes of an event/object with everything it extends (the child's definition wins)."""
    chain = []
    seen = set()
    while name and name in table and name not in seen:
        seen.add(name)
        chain.append(table[name])
        name = table[name].get("extends")
    attrs = {}
    for spec in reversed(chain):
        for k, v in spec.get("attributes", {}).items():
            if k.startswith("$") or not isinstance(v, dict):
                continue
            attrs[k] = merge_spec(attrs.get(k, {}), {x: y for x, y in v.items() if y is not None})
    return attrs


def merge_spec(base, override):
    """An attribute definition refined by a child: fields replaced, enum values added (OCSF
    classes add activity ids to the base event's 0 Unknown / 99 Other)."""
    out = {**base, **override}
    if isinstance(base.get("enum"), dict) and isinstance(override.get("enum"), dict):
        out["enum"] = {**base["enum"], **override["enum"]}
    return out


def full_spec(attrs, key):
    return merge_spec(DICT.get(key, {}), attrs.get(key, {}))


def base_type(t):
    seen = set()
    while t in TYPES and t not in PRIMITIVE and t not in seen:
        seen.add(t)
        t = TYPES[t].get("type", t)
    return t


def plain(text):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text or "")).strip()


def merge(tree, value):
    """Merge an observed value into a tree: dict -> {"props": {k: tree}}, list -> {"items"}."""
    if isinstance(value, dict):
        props = tree.setdefault("props", {})
        for k, v in value.items():
            merge(props.setdefault(k, {}), v)
    elif isinstance(value, list):
        for item in value:
            merge(tree.setdefault("items", {}), item)
    return tree


def observable_type_ids():
    """Observable type_id values of OCSF 1.5.0 as its compiler derives them (0, 99, and every
    type, object and attribute that declares an `observable` id), as pydantic-ocsf computes them."""
    return sorted(extract_observable_type_ids(S))


def schema_for(spec, tree, path, required_extra):
    t = spec.get("type")
    out = {}
    if spec.get("caption"):
        out["title"] = spec["caption"]
    if spec.get("requirement"):
        out["x-ocsf-requirement"] = spec["requirement"]
    if t in S["objects"]:
        inner = object_schema(t, tree.get("items", tree) if spec.get("is_array") else tree, path, required_extra)
    elif base_type(t) in PRIMITIVE:
        inner = {"type": PRIMITIVE[base_type(t)]}
        enum = spec.get("enum")
        if path.endswith("observables.type_id"):
            enum = {str(i): {} for i in observable_type_ids()}
        if enum:
            keys = list(enum)
            inner["enum"] = sorted(int(k) for k in keys) if inner["type"] == "integer" else sorted(keys)
    elif base_type(t) == "json_t":
        inner = {}
        out["description"] = "Free-form (OCSF json_t)."
    else:
        raise SystemExit(f"{path}: unknown OCSF type {t!r}")
    if spec.get("is_array"):
        out.update({"type": "array", "items": inner})
    else:
        out.update(inner)
    return out


def object_schema(name, tree, path, required_extra):
    if name == "object":  # `unmapped`: source fields under their source names
        return {"type": "object", "description": "Free-form: source fields without an OCSF home."}
    attrs = resolved(S["objects"], name)
    return properties_schema(attrs, tree, path, required_extra, f"OCSF object `{name}`")


def properties_schema(attrs, tree, path, required_extra, what):
    props = {}
    for key in sorted(tree.get("props", {})):
        if key not in attrs:
            raise SystemExit(f"{path}.{key}: not an attribute of {what} in OCSF {OCSF_VERSION}")
        sub = f"{path}.{key}" if path else key
        props[key] = schema_for(full_spec(attrs, key), tree["props"][key], sub, required_extra)
    required = sorted(
        {k for k, v in attrs.items() if full_spec(attrs, k).get("requirement") == "required" and k in props}
        | set(required_extra.get(path, []))
    )
    missing_ocsf = [k for k, v in attrs.items() if full_spec(attrs, k).get("requirement") == "required" and k not in props]
    if missing_ocsf and tree.get("props"):
        raise SystemExit(f"{path or 'event'}: OCSF requires {missing_ocsf} but the golden outputs never have them")
    out = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def class_schema(class_uid, events):
    name = CLASSES[class_uid]
    attrs = resolved(S["events"], name)
    attrs.update({k: {**v, **attrs.get(k, {})} for k, v in HOST_PROFILE.items()})
    tree = {}
    for e in events:
        merge(tree, e)
    body = properties_schema(attrs, tree, "", BASE_ALWAYS, f"class `{name}`")
    spec = S["events"][name]
    cat = None
    n = name
    while n and not cat:
        cat = S["events"][n].get("category")
        n = S["events"][n].get("extends")
    cat_uid = CATEGORIES.get(cat, {}).get("uid", 0) if cat != "other" else 0
    activities = sorted(int(k) for k in full_spec(attrs, "activity_id").get("enum", {}))
    p = body["properties"]
    # The raw schema leaves these enums to the OCSF compiler: give the compiled values.
    for k in ("class_uid", "category_uid"):
        p[k].pop("enum", None)
    p["class_uid"]["const"] = class_uid
    p["class_name"]["const"] = spec["caption"]
    p["category_uid"]["const"] = cat_uid
    p["type_uid"]["enum"] = [class_uid * 100 + a for a in activities]
    p["metadata"]["properties"]["version"]["const"] = OCSF_VERSION
    p["metadata"]["properties"]["uid"]["pattern"] = "^[0-9a-f]{32}$"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://m365-forwarder.invalid/schemas/ocsf/{OCSF_VERSION}/{name}.schema.json",
        "title": f"{spec['caption']} ({class_uid}), OCSF {OCSF_VERSION}: the subset m365-forwarder emits",
        "description": (
            "Generated by tests/ocsf/gen_schemas.py from the OCSF 1.5.0 schema (pydantic-ocsf) and the "
            "attributes present in tests/golden. Closed objects: an attribute not listed here is not emitted."
        ),
        "x-ocsf-version": OCSF_VERSION,
        "x-ocsf-class-uid": class_uid,
        **body,
    }


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    by_class = {}
    for f in sorted(glob.glob(os.path.join(root, "tests/golden/*.ocsf.ndjson"))):
        for line in open(f, encoding="utf-8"):
            e = json.loads(line)
            by_class.setdefault(e["class_uid"], []).append(e)
    unknown = set(by_class) - set(CLASSES)
    if unknown:
        raise SystemExit(f"classes without a schema name: {unknown}")
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "schemas/ocsf")
    os.makedirs(out_dir, exist_ok=True)
    for class_uid, events in sorted(by_class.items()):
        path = os.path.join(out_dir, f"{CLASSES[class_uid]}.schema.json")
        with open(path, "w", encoding="utf-8") as fh:
            text = json.dumps(class_schema(class_uid, events), indent=2, ensure_ascii=False)
            # Lists of scalars (enums, required) on one line.
            text = re.sub(
                r"\[\s*\n\s*((?:[^\[\]{}\n]+,\s*\n\s*)*[^\[\]{}\n]+?)\s*\n\s*\]",
                lambda m: "[" + re.sub(r",\s*\n\s*", ", ", m.group(1)) + "]",
                text,
            )
            fh.write(text + "\n")
        print(f"{path}: {len(events)} golden events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
