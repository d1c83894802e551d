"""policy.py: the frozen settings object, its validation and its TOML loading."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from sendgate.models.policy import Policy, PolicyError


def write(tmp_path, body: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def load_error(tmp_path, body: str) -> tuple[str, str]:
    """(path of the policy file, message of the PolicyError that loading it raised)."""
    path = write(tmp_path, body)
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(path)
    return path, str(info.value)


def test_defaults_are_the_documented_rules():
    p = Policy()
    assert p.opt_out_keywords == ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE")
    assert p.opt_in_keywords == ("START", "UNSTOP", "YES")
    assert p.reply_window_s == 15 * 60
    assert p.similarity_threshold == 0.6
    assert p.free_recipients == 10
    assert p.burst_window_s == 10 * 60
    assert p.pace_interval_s == 60
    assert p.max_delay_s == 6 * 3600
    assert p.cluster_idle_s == 24 * 3600
    assert p.young_sender_days == 90
    assert p.min_conversations == 3
    assert p.risky_free_recipients == 5
    assert p.risky_interval_factor == 2
    assert p.junk_reject_reporters == 3
    assert (p.reputation_junk_report, p.reputation_not_delivered, p.reputation_failed) == (0.5, 0.9, 0.95)
    assert (p.reputation_paced_blast, p.reputation_delivered, p.reputation_conversation) == (0.9, 1.02, 1.05)
    assert p.reputation_half_life_s == 24 * 3600


def test_policy_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Policy().free_recipients = 99  # type: ignore[misc]


def test_keywords_are_normalised_to_stripped_upper_case():
    p = Policy(opt_out_keywords=(" stop ", "Halt"), opt_in_keywords=["go"])
    assert p.opt_out_keywords == ("STOP", "HALT")
    assert p.opt_in_keywords == ("GO",)


def test_a_keyword_cannot_be_both_opt_out_and_opt_in():
    with pytest.raises(PolicyError, match="cannot be both an opt-out and an opt-in keyword"):
        Policy(opt_in_keywords=("START", "stop"))


def test_as_dict_round_trips_through_from_mapping():
    p = Policy(free_recipients=3, similarity_threshold=0.75)
    assert Policy.from_mapping(p.as_dict()) == p


def test_from_mapping_turns_lists_into_tuples():
    p = Policy.from_mapping({"opt_in_keywords": ["start", "go"], "free_recipients": 4})
    assert p.opt_in_keywords == ("START", "GO")
    assert p.free_recipients == 4


def test_from_mapping_rejects_unknown_keys_and_lists_them():
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping({"free_recipents": 4, "zzz": 1})
    msg = str(info.value)
    assert msg.startswith("policy: unknown key(s) free_recipents, zzz; known keys: ")
    assert "free_recipients" in msg


def test_from_toml_reads_flat_keys_and_sections(tmp_path):
    path = write(
        tmp_path,
        """
        max_delay_s = 7200

        [consent]
        reply_window_s = 600
        opt_out_keywords = ["stop", "basta"]

        [burst]
        free_recipients = 20
        pace_interval_s = 30.5
        similarity_threshold = 0.8
    """,
    )
    p = Policy.from_toml(path)
    assert (p.max_delay_s, p.reply_window_s, p.free_recipients) == (7200, 600, 20)
    assert p.pace_interval_s == 30.5
    assert p.similarity_threshold == 0.8
    assert p.opt_out_keywords == ("STOP", "BASTA")
    assert p.opt_in_keywords == Policy().opt_in_keywords  # untouched keys keep their defaults


def test_empty_toml_gives_the_defaults(tmp_path):
    assert Policy.from_toml(write(tmp_path, "")) == Policy()


def test_toml_unknown_key_names_file_and_key(tmp_path):
    path, msg = load_error(tmp_path, "[burst]\nfree_recipeints = 5\n")
    assert msg.startswith(f"policy file {path}: policy: unknown key(s) free_recipeints; known keys: ")


@pytest.mark.parametrize(
    "body, expected",
    [
        ("free_recipients = -1", "policy 'free_recipients' must be a non-negative integer, got -1"),
        ("free_recipients = 2.5", "policy 'free_recipients' must be a non-negative integer, got 2.5"),
        ("free_recipients = true", "policy 'free_recipients' must be a non-negative integer, got True"),
        ("reply_window_s = 0", "policy 'reply_window_s' must be a positive integer, got 0"),
        ("reply_window_s = 900.0", "policy 'reply_window_s' must be a positive integer, got 900.0"),
        ("max_delay_s = '6h'", "policy 'max_delay_s' must be a positive integer, got '6h'"),
        ("pace_interval_s = 0", "policy 'pace_interval_s' must be a positive number, got 0"),
        ("pace_interval_s = true", "policy 'pace_interval_s' must be a positive number, got True"),
        ("risky_interval_factor = -2.0", "policy 'risky_interval_factor' must be a positive number, got -2.0"),
        ("similarity_threshold = 0", "policy 'similarity_threshold' must be in (0, 1], got 0"),
        ("similarity_threshold = 1.5", "policy 'similarity_threshold' must be in (0, 1], got 1.5"),
        ("similarity_threshold = '0.6'", "policy 'similarity_threshold' must be in (0, 1], got '0.6'"),
        ("similarity_measure = 'cosine'", "policy 'similarity_measure' must be containment or jaccard, got 'cosine'"),
        ("opt_out_keywords = ['STOP', '']", "policy 'opt_out_keywords' must be a list of non-empty strings"),
        ("opt_in_keywords = [1, 2]", "policy 'opt_in_keywords' must be a list of non-empty strings"),
        ("opt_in_keywords = ['START', 'STOP']", "policy: a keyword cannot be both an opt-out and an opt-in keyword"),
    ],
)
def test_toml_bad_value_names_file_key_and_value(tmp_path, body, expected):
    path, msg = load_error(tmp_path, body)
    assert msg == f"policy file {path}: {expected}"


@pytest.mark.parametrize(
    "body, key",
    [
        ("opt_out_keywords = 'STOP'", "opt_out_keywords"),  # once iterated as the keywords S, T, O, P
        ("opt_in_keywords = 5", "opt_in_keywords"),  # once a TypeError
        ("similarity_threshold = true", "similarity_threshold"),  # once accepted as threshold 1
    ],
)
def test_toml_values_of_the_wrong_kind_are_policy_errors(tmp_path, body, key):
    path, msg = load_error(tmp_path, body)
    assert msg.startswith(f"policy file {path}: policy '{key}' must be")


def test_toml_syntax_error_is_a_policy_error(tmp_path):
    path, msg = load_error(tmp_path, "free_recipients = = 3\n")
    assert msg.startswith(f"policy file {path}: not valid TOML: ")


def test_missing_toml_file_is_a_policy_error(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(str(path))
    assert str(info.value) == f"policy file {path}: No such file or directory"


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)
