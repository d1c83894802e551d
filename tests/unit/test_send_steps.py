"""The send pipeline as documented, and one vocabulary: the step table of models/gate/ is
`SEND_STEPS`, each reason of a send is decided in one module (`grep Reason.BURST_PACED` lands
there), and the decisions schema lists exactly the `Outcome` and `Reason` enums."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import sendgate.models.gate as gate_package
from sendgate.models.decisions import Outcome, Reason
from sendgate.models.gate import SEND_STEPS

MODELS = Path(gate_package.__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\w+) \| (.+) \| (\w+) \|$")


def table() -> list[tuple[str, str, str]]:
    return [m.groups() for line in gate_package.__doc__.splitlines() if (m := ROW.match(line)) and m.group(1) != "step"]


def test_the_documented_table_is_the_send_steps_in_order():
    documented = [(step, module) for step, _, module in table()]
    assert documented == [(f.__name__, f.__module__.rsplit(".", 1)[1]) for f in SEND_STEPS]


def decided(path: Path) -> set[str]:
    """The reasons a module gives (`Reason.X`), not those it compares a decision's reason with."""
    tree = ast.parse(path.read_text())
    compared = {id(node) for cmp in ast.walk(tree) if isinstance(cmp, ast.Compare) for node in ast.walk(cmp)}
    return {
        Reason[node.attr].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Reason"
        and id(node) not in compared
    }


def test_each_reason_of_a_send_is_decided_in_one_module():
    listed = [re.match(r"[\w, ]*", cell).group().strip(", ") for _, cell, _ in table()]
    reasons = {reason for names in listed if names for reason in names.split(", ")}
    assert {"burst_paced", "expired_before_slot", "no_conversation"} <= reasons <= set(Reason)
    # an opt-out also cancels a held request when its slot comes (pending.py)
    also = {"opted_out": 2}
    said = {path: decided(path) for path in MODELS.rglob("*.py")}
    for reason in sorted(reasons):
        where = sorted(str(path.relative_to(MODELS)) for path, found in said.items() if reason in found)
        assert len(where) == also.get(reason, 1), (reason, where)


def schema_reasons() -> list[str]:
    """The reasons the decisions schema's prose lists ("known values: a, b (note); c ...")."""
    doc = json.loads((MODELS / "schemas" / "decision.json").read_text())
    text = doc["properties"]["reason"]["description"].split("known values:", 1)[1]
    while (bare := re.sub(r"\([^()]*\)", "", text)) != text:  # notes, nested ones too
        text = bare
    return [name.strip(" .") for part in text.split(";") for name in part.split(",") if name.strip(" .")]


def test_the_schema_lists_the_reasons_and_outcomes_of_the_enums():
    listed = schema_reasons()
    assert len(listed) == len(set(listed)) and set(listed) == set(Reason)
    doc = json.loads((MODELS / "schemas" / "decision.json").read_text())
    assert doc["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
