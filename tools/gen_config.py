"""Write the A2CJob's training fields into the CRD and the Helm chart from a2c/config.py.

    python tools/gen_config.py           # regenerate
    python tools/gen_config.py --check   # exit 1 (with a diff) if a file is out of date

a2c/config.py declares every knob once: its type, default, --help text and choices, and, for the knobs an
A2CJob sets, its path under the job's spec (`crd` metadata, e.g. `algorithm.lr`) and the bounds the job
admits (`minimum`, `maximum`, `above` = exclusive minimum, `schema` = further JSON-schema keywords). From
those this tool writes:

- deploy/helm/files/a2cjob-crd.yaml: each such field's openAPIV3Schema node (type, enum, bounds, default,
  description = the --help text, with `--flag` written as the field's spec path), between the marker
  comments `# >>> generated ... spec.<block>` and `# <<< generated` inside that block's `properties`;
- deploy/helm/values.yaml: the chart's default job's value of each field (the config default, or
  CHART_VALUES below), between the same markers inside `job.<block>`;
- deploy/helm/values.schema.json: each field's node under job.<block> (draft-07: exclusiveMinimum is a
  number there); the block's other keys are kept if the CRD's hand-written part has them, dropped if not.

What only the A2CJob has (image, gpus, placement, volumes, TLS) stays hand-written outside the markers, and
a2c.controller.spec.defaults() reads the same metadata (spec.JOB_FIELDS), so an edit in config.py reaches the
CLI, the CRD, the chart and the controller at once. tests/test_config_sources.py runs `--check`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a2c.controller import spec as jobspec  # noqa: E402

CRD = ROOT / "deploy" / "helm" / "files" / "a2cjob-crd.yaml"
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
VALUES_SCHEMA = ROOT / "deploy" / "helm" / "values.schema.json"
BEGIN = re.compile(r"^(?P<indent> *)# >>> generated from a2c/config\.py by tools/gen_config\.py: spec\.(?P<block>\w+)")
END = re.compile(r"^ *# <<< generated")
# The chart's default job differs from an A2CJob's defaults here (value, why).
CHART_VALUES: dict[str, tuple[Any, str]] = {
    "players.replicasPerTrainer": (2, "the chart's job: 2 players per trainer (an A2CJob's default: 1)"),
}
Field = tuple[dataclasses.Field[Any], Any]


FIRST = ("replicas", "replicasPerTrainer", "id")  # keys that say what a block is, written first


def blocks() -> dict[str, dict[str, Field]]:
    """Spec block (`algorithm`) -> key (`lr`) -> (field, type), in config.py's order (FIRST first)."""
    out: dict[str, dict[str, Field]] = {}
    for path, job_field in sorted(jobspec.JOB_FIELDS.items(), key=lambda item: item[0].split(".")[1] not in FIRST):
        block, _, key = path.partition(".")
        if not key or "." in key:
            raise ValueError(f"crd path {path!r}: expected <block>.<key>")
        out.setdefault(block, {})[key] = job_field
    return dict(sorted(out.items(), key=lambda item: list(jobspec.defaults()).index(item[0])))


class Folded(str):
    """A description, written as a folded block (`>-`) like the CRD's hand-written ones."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Folded, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                                                             style=">" if len(text) > 60 else None))


def description(text: str) -> str:
    """--help text as the A2CJob's description: a sentence, and a flag of another job field named by its
    spec path (`--max-env-steps` -> `stop.maxEnvSteps`)."""
    paths = {"--" + f.name.replace("_", "-"): path for path, (f, _) in jobspec.JOB_FIELDS.items()}
    text = re.sub(r"--[a-z][a-z0-9-]*", lambda m: paths.get(m.group(0), m.group(0)), text)
    first = text.split(" ", 1)[0]
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return Folded(text if text.endswith(".") else text + ".")


def node(f: dataclasses.Field[Any], kind: Any, dialect: str) -> dict[str, Any]:
    """The schema of one field: `crd` (OpenAPI v3.0 as Kubernetes reads it: boolean exclusiveMinimum,
    default, description) or `values` (JSON schema draft-07, as Helm checks values)."""
    meta = f.metadata
    typ = jobspec.schema_type(f, kind)
    out: dict[str, Any] = {}
    if "choices" in meta:
        out = {"type": typ, "enum": list(meta["choices"])} if dialect == "crd" else {"enum": list(meta["choices"])}
    else:
        out["type"] = typ
    if meta.get("above") is not None:
        out.update({"exclusiveMinimum": True, "minimum": meta["above"]} if dialect == "crd"
                   else {"exclusiveMinimum": meta["above"]})
    for key in ("minimum", "maximum"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    out.update({k: v for k, v in (meta.get("schema") or {}).items() if k != "type"})
    if dialect == "crd":
        if typ == "object":
            out["x-kubernetes-preserve-unknown-fields"] = True
        out["default"] = jobspec.to_spec(f, kind, f.default)
        out["description"] = description(str(meta["help"]))
    return out


def _regions(text: str, path: Path, render: dict[str, list[str]]) -> str:
    """`text` with the lines between each pair of markers replaced by render[block] (indented as the
    marker); every block must have its markers, once."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        out.append(lines[i])
        m = BEGIN.match(lines[i])
        i += 1
        if not m:
            continue
        block, indent = m.group("block"), m.group("indent")
        if block not in render or block in seen:
            why = "repeated" if block in seen else "for no config field"
            raise SystemExit(f"{path}: markers of spec.{block} {why}")
        seen.add(block)
        while i < len(lines) and not END.match(lines[i]):
            i += 1
        if i == len(lines):
            raise SystemExit(f"{path}: spec.{block}'s '# >>> generated' marker has no '# <<< generated'")
        out.extend(indent + line + "\n" for line in render[block])
    missing = sorted(set(render) - seen)
    if missing:
        raise SystemExit(f"{path}: no '# >>> generated ...: spec.<block>' markers for {', '.join(missing)}; add them "
                         "(with '# <<< generated') inside each block where its generated fields belong")
    return "".join(out)


def crd_text(current: str) -> str:
    render = {}
    for block, fields in blocks().items():
        nodes = {key: node(f, kind, "crd") for key, (f, kind) in fields.items()}
        dumped = yaml.dump(nodes, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=92,
                           allow_unicode=True)
        render[block] = dumped.splitlines()
    return _regions(current, CRD, render)


def _scalar(value: Any) -> str:
    """A value as YAML writes it on one line (`1.0e-05`, `[64, 64]`, `{}`, `CartPole-v1`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("...").strip()


def values_text(current: str) -> str:
    render: dict[str, list[str]] = {}
    for block, fields in blocks().items():
        render[block] = []
        for key, (f, kind) in fields.items():
            value, why = CHART_VALUES.get(f"{block}.{key}", (jobspec.to_spec(f, kind, f.default), ""))
            render[block].append(f"{key}: {_scalar(value)}" + (f"  # {why}" if why else ""))
    return _regions(current, VALUES, render)


def values_schema_text(current: str, crd: str) -> str:
    """values.schema.json with job.<block>'s generated keys rewritten: the hand-written keys first (those the
    CRD's block has outside the markers, in this file's order), then config.py's, in its order."""
    schema = json.loads(current)
    doc = yaml.safe_load(crd)
    spec_props = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    job_props = schema["properties"]["job"]["properties"]
    for block, fields in blocks().items():
        hand = set(spec_props[block]["properties"]) - set(fields)
        target = job_props.setdefault(block, {"type": "object", "additionalProperties": False, "properties": {}})
        old = target.setdefault("properties", {})
        new = {key: sub for key, sub in old.items() if key in hand}
        new.update({key: node(f, kind, "values") for key, (f, kind) in fields.items()})
        target["properties"] = new
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[Path, str]:
    """Each file as this tool writes it."""
    crd = crd_text(CRD.read_text())
    return {CRD: crd, VALUES: values_text(VALUES.read_text()),
            VALUES_SCHEMA: values_schema_text(VALUES_SCHEMA.read_text(), crd)}


def stale(files: dict[Path, str]) -> list[str]:
    """A unified diff (committed -> generated) of every file that is out of date; empty when none is."""
    out: list[str] = []
    for path, text in files.items():
        old = path.read_text()
        if old != text:
            name = str(path.relative_to(ROOT))
            out.extend(difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"{name} (committed)", f"{name} (from a2c/config.py)"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1, with a diff, if a file is out of date")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        diff = stale(files)
        if diff:
            sys.stdout.writelines(diff)
            print("\nout of date with a2c/config.py: run python tools/gen_config.py", file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
