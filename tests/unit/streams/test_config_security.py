"""Kafka security settings (streams/config.py): SASL and TLS options for aiokafka, Faust and child
processes, refused combinations, and the SSL context `kafka_options()` builds, checked in a real TLS
handshake with an in-process server (certificates made with openssl). No broker."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from sendgate.streams.config import ConfigError, Settings


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SENDGATE_SECURITY_PROTOCOL": "TLS"}, "SENDGATE_SECURITY_PROTOCOL must be one of"),
        (
            {"SENDGATE_SECURITY_PROTOCOL": "SASL_SSL", "SENDGATE_SASL_USERNAME": "u"},
            "SASL_SSL needs SENDGATE_SASL_MECHANISM and SENDGATE_SASL_PASSWORD",
        ),
        (
            {
                "SENDGATE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "SENDGATE_SASL_MECHANISM": "GSSAPI",
                "SENDGATE_SASL_USERNAME": "u",
                "SENDGATE_SASL_PASSWORD": "p",
            },
            "SENDGATE_SASL_MECHANISM must be one of",
        ),
        ({"SENDGATE_SASL_USERNAME": "u"}, "PLAINTEXT does not use SASL"),
        (
            {
                "SENDGATE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "SENDGATE_SASL_MECHANISM": "PLAIN",
                "SENDGATE_SASL_USERNAME": "u",
                "SENDGATE_SASL_PASSWORD": "p",
                "SENDGATE_SSL_CAFILE": "ca.pem",
            },
            "SASL_PLAINTEXT does not use TLS",
        ),
        ({"SENDGATE_SECURITY_PROTOCOL": "SSL", "SENDGATE_SSL_KEYFILE": "k.pem"}, "needs SENDGATE_SSL_CERTFILE"),
    ],
)
def test_inconsistent_security_settings_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_sasl_settings_for_aiokafka_faust_and_child_processes():
    env = {
        "SENDGATE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SENDGATE_SASL_MECHANISM": "SCRAM-SHA-512",
        "SENDGATE_SASL_USERNAME": "u",
        "SENDGATE_SASL_PASSWORD": "p",
    }
    settings = Settings.from_env(env)
    assert settings.kafka_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
    creds = settings.broker_credentials()
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert Settings.from_env(settings.to_env()) == settings  # what a worker process receives
    assert "'p'" not in repr(settings)
    assert Settings().kafka_options() == {"security_protocol": "PLAINTEXT"} and Settings().broker_credentials() is None


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: the TLS context was only checked for argument validation")
    for name, cn in (("ca", "sendgate-test-ca"), ("other-ca", "someone-else")):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            cwd=tmp_path,
        )
    for name, cn, ext in (
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "sendgate-client", "extendedKeyUsage=clientAuth\n"),
    ):
        (tmp_path / f"{name}.ext").write_text(ext)
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
            cwd=tmp_path,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=tmp_path,
        )
    return tmp_path


async def tls_handshake(client_context: ssl.SSLContext, certs: Path) -> str | None:
    """Connect to a TLS server that requires a client certificate from our CA; returns the client's CN."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
    server_context.load_cert_chain(certs / "server.pem", certs / "server.key")
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: list[str | None] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        seen.append(subject.get("commonName"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        # as aiokafka connects: to the host name it was given, which the certificate must match
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        assert await reader.read() == b"ok"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return seen[0] if seen else None


def test_tls_context_verifies_the_broker_and_presents_the_client_certificate(certs):
    settings = Settings(
        security_protocol="SSL",
        ssl_cafile=str(certs / "ca.pem"),
        ssl_certfile=str(certs / "client.pem"),
        ssl_keyfile=str(certs / "client.key"),
    )
    options = settings.kafka_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert asyncio.run(asyncio.wait_for(tls_handshake(context, certs), 10)) == "sendgate-client"

    # a broker certificate from another CA is refused
    stranger = settings.with_(ssl_cafile=str(certs / "other-ca.pem")).kafka_options()["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(asyncio.wait_for(tls_handshake(stranger, certs), 10))

    # Faust gets the same: SSL alone, or SASL over TLS
    assert settings.broker_credentials().protocol.value == "SSL"
    sasl_ssl = settings.with_(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
    )
    assert set(sasl_ssl.kafka_options()) == {
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_context",
    }
    creds = sasl_ssl.broker_credentials()
    assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)


def test_unusable_tls_files_are_a_config_error(certs):
    mismatched = Settings(
        security_protocol="SSL",
        ssl_cafile=str(certs / "ca.pem"),
        ssl_certfile=str(certs / "client.pem"),
        ssl_keyfile=str(certs / "server.key"),
    )
    with pytest.raises(ConfigError, match="cannot load TLS files"):
        mismatched.kafka_options()
    with pytest.raises(ConfigError, match="cannot load TLS files"):
        Settings(security_protocol="SSL", ssl_cafile=str(certs / "missing.pem")).kafka_options()
