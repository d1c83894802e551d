"""docs/: the generated pages are what the code says (docs/generate.py), the configuration page
names every setting and every policy key, every relative link points at a file (and heading) that
exists, and the README stays a front page that names the test command CI runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from sendgate.models.policy import Policy
from sendgate.streams.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
generate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate)

ENV_RE = re.compile(r"\bSENDGATE_[A-Z0-9_]*[A-Z0-9]\b")


def env_rows() -> list[tuple[str, str | None, str]]:
    return [row for _, rows in generate.ENV_SECTIONS for row in rows]


@pytest.mark.parametrize("page", sorted(generate.PAGES))
def test_the_generated_pages_are_up_to_date(page):
    assert (DOCS / page).read_text() == generate.PAGES[page](), f"run: .venv/bin/python docs/generate.py ({page})"


def test_every_settings_field_has_its_variable_on_the_configuration_page():
    documented = {field for _, field, _ in env_rows() if field}
    missing = [f.name for f in dataclasses.fields(Settings) if f.name not in documented]
    assert not missing, f"Settings fields without a row in docs/generate.py ENV_SECTIONS: {missing}"


def test_every_variable_the_code_reads_is_on_the_configuration_page():
    page = (DOCS / "configuration.md").read_text()
    read = set()
    for path in [*(ROOT / "streams").rglob("*.py"), *(ROOT / "models").rglob("*.py")]:
        read.update(ENV_RE.findall(path.read_text()))
    missing = sorted(name for name in read if f"| `{name}` |" not in page)
    assert not missing, f"variables read under streams/ or models/ but not on docs/configuration.md: {missing}"


def test_the_settings_variables_are_the_ones_from_env_reads():
    # a row's variable must be the one Settings.from_env reads for its field: set it, and the field changes
    values = {
        "SENDGATE_WEB": "0",
        "SENDGATE_FAST_RESTORE": "0",
        "SENDGATE_AUTH": "off",
        "SENDGATE_STORE": "memory://",
        "SENDGATE_PROCESSING_GUARANTEE": "exactly_once",
        "SENDGATE_EVENTS_TIMESTAMP_TYPE": "LogAppendTime",
        "SENDGATE_LOG_FORMAT": "json",
        "SENDGATE_TOPIC_PREFIX": "x.",
        "SENDGATE_SECURITY_PROTOCOL": "SSL",
        "SENDGATE_API_MAX_BODY": "2048",
        "SENDGATE_LOG_LEVEL": "debug",
    }
    skip = {"SENDGATE_SASL_MECHANISM", "SENDGATE_SASL_USERNAME", "SENDGATE_SASL_PASSWORD", "SENDGATE_SSL_KEYFILE"}
    for name, field, _ in env_rows():
        if not field or name in skip:
            continue
        env = {name: values.get(name, "7")}
        if name.startswith("SENDGATE_SSL_"):
            env["SENDGATE_SECURITY_PROTOCOL"] = "SSL"
        assert getattr(Settings.from_env(env), field) != getattr(Settings(), field), (name, field)


def test_every_policy_key_is_on_the_configuration_page_and_its_toml_gives_the_defaults():
    keys = [key for _, key, _ in generate.POLICY]
    assert sorted(keys) == sorted(f.name for f in dataclasses.fields(Policy)), "docs/generate.py POLICY vs Policy"
    page = (DOCS / "configuration.md").read_text()
    block = re.search(r"```toml\n(.*?)```", page, re.S).group(1)
    flat = {k: v for table in tomllib.loads(block).values() for k, v in table.items()}
    assert Policy.from_mapping(flat) == Policy()


def test_the_variables_missing_from_the_old_table_are_there():
    page = (DOCS / "configuration.md").read_text()
    assert "| `SENDGATE_USERKEY_SECRET` |" in page and "| `SENDGATE_CACHE` |" in page


def test_the_event_contract_lists_every_schema():
    page = (DOCS / "event-contract.md").read_text()
    for schema in (ROOT / "models" / "schemas").glob("*.json"):
        if schema.stem not in ("common", "event"):
            assert f"### `{schema.stem}`" in page, schema.stem


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md")), ROOT / "deploy" / "k8s" / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: {target}"


def test_the_readme_is_a_front_page_that_names_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert ".venv/bin/python -m pytest" in readme and ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
    assert "deliveries.<network>" in readme and "delivers nothing" in readme
    for page in (
        "getting-started",
        "concepts",
        "event-contract",
        "rules",
        "configuration",
        "command-line",
        "client",
        "operations",
        "deployment",
        "guarantees",
        "security-and-privacy",
        "performance",
    ):
        assert f"(docs/{page}.md)" in readme, page
