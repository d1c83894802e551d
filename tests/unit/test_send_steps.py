"""The send pipeline as documented: the step table of models/gate/ is `SEND_STEPS`, and each
reason of a send is decided in one module (`grep '"burst_paced"'` lands there)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import sendgate.models.gate as gate_package
from sendgate.models.gate import SEND_STEPS

MODELS = Path(gate_package.__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\w+) \| (.+) \| (\w+) \|$")


def table() -> list[tuple[str, str, str]]:
    return [m.groups() for line in gate_package.__doc__.splitlines() if (m := ROW.match(line))
            and m.group(1) != "step"]


def test_the_documented_table_is_the_send_steps_in_order():
    documented = [(step, module) for step, _, module in table()]
    assert documented == [(f.__name__, f.__module__.rsplit(".", 1)[1]) for f in SEND_STEPS]


def literals(path: Path) -> set[str]:
    """The strings a module says (not those it compares a value with, nor lists of names)."""
    tree = ast.parse(path.read_text())
    compared = {id(node) for cmp in ast.walk(tree) if isinstance(cmp, ast.Compare) for node in ast.walk(cmp)}
    compared |= {id(node) for names in ast.walk(tree) if isinstance(names, (ast.Tuple, ast.List))
                 for node in names.elts}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in compared}


def test_each_reason_of_a_send_is_decided_in_one_module():
    listed = [re.match(r"[\w, ]*", cell).group().strip(", ") for _, cell, _ in table()]
    reasons = {reason for names in listed if names for reason in names.split(", ")}
    assert {"burst_paced", "expired_before_slot", "no_conversation"} <= reasons
    # an opt-out also cancels a held request when its slot comes (pending.py)
    also = {"opted_out": 2}
    said = {path: literals(path) for path in MODELS.rglob("*.py")}
    for reason in sorted(reasons):
        where = sorted(str(path.relative_to(MODELS)) for path, found in said.items() if reason in found)
        assert len(where) == also.get(reason, 1), (reason, where)
