"""logs.py: SENDGATE_LOG_FORMAT=json gives one JSON object per line, through Faust's own logging
set-up for the worker, and never carries a caller's extra fields (a userkey, a text)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from mode.utils.logging import setup_logging

from sendgate.streams.config import ConfigError, Settings
from sendgate.streams.logs import JsonFormatter, configure, faust_logging_config


@pytest.fixture(autouse=True)
def _restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    return log, stream


def line(record_args: dict) -> dict:
    log, stream = json_logger("sendgate.test.json")
    log.warning(*record_args.pop("args"), **record_args)
    text = stream.getvalue()
    assert text.count("\n") == 1, text
    return json.loads(text)


def test_a_line_is_one_object_with_time_level_logger_and_message():
    doc = line({"args": ("batch failed at %s[%d]", "sendgate.decisions", 3)})
    assert doc["message"] == "batch failed at sendgate.decisions[3]"
    assert doc["level"] == "WARNING" and doc["logger"] == "sendgate.test.json"
    assert doc["time"].endswith("Z") and doc["time"][10] == "T", doc["time"]
    assert set(doc) == {"time", "level", "logger", "message"}


def test_extra_fields_with_personal_data_are_dropped_and_bounded_ones_kept():
    doc = line(
        {
            "args": ("refused",),
            "extra": {"userkey": "+15550001", "text": "Is my order shipped?", "app": "shop", "partition": 2},
        }
    )
    assert "+15550001" not in json.dumps(doc) and "order" not in json.dumps(doc)
    assert doc["app"] == "shop" and doc["partition"] == 2


def test_a_traceback_stays_inside_its_line():
    log, stream = json_logger("sendgate.test.exc")
    try:
        raise RuntimeError("store failed")
    except RuntimeError:
        log.exception("batch failed")
    doc = json.loads(stream.getvalue())
    assert stream.getvalue().count("\n") == 1 and "RuntimeError: store failed" in doc["exc_info"]


def test_the_worker_logs_json_through_fausts_own_logging_setup(capsys):
    # what faust.Worker does with app.conf.logging_config when it starts (mode.utils.logging)
    setup_logging(loglevel="info", logging_config=faust_logging_config("json"))
    logging.getLogger("sendgate.worker").info("ready on %d partition(s)", 8)
    out = capsys.readouterr().err.strip().splitlines()
    assert json.loads(out[-1])["message"] == "ready on 8 partition(s)"


def test_text_is_the_default_and_leaves_fausts_logging_alone():
    assert Settings().log_format == "text" and faust_logging_config("text") is None


def test_the_format_comes_from_the_environment_and_a_bad_one_is_refused():
    assert Settings.from_env({"SENDGATE_LOG_FORMAT": " JSON "}).log_format == "json"
    with pytest.raises(ConfigError, match="SENDGATE_LOG_FORMAT must be text or json, got 'yaml'"):
        Settings.from_env({"SENDGATE_LOG_FORMAT": "yaml"})
    with pytest.raises(ValueError, match="SENDGATE_LOG_FORMAT"):
        faust_logging_config("yaml")


def test_configure_sets_the_root_logger_for_other_commands(capsys):
    configure("info", "json")
    logging.getLogger("sendgate.api").info("listening")
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["logger"] == "sendgate.api"
    configure("warning", "text")
    logging.getLogger("sendgate.api").warning("plain")
    assert capsys.readouterr().err.strip().endswith("WARNING sendgate.api: plain")
