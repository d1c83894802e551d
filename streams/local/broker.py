"""A real single-node Apache Kafka (KRaft) on 127.0.0.1, provisioned from Maven Central.

`sendgate broker`, `sendgate demo`, the test suite and the benchmarks all start Kafka through
`LocalKafka`. The jars are fetched once with Maven (`dependency:copy-dependencies` on a generated
pom) into ~/.cache/sendgate/kafka-<version>/libs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from ..config import Settings
from .acls import Acl

KAFKA_VERSION = "4.1.1"
SCRAM = "SCRAM-SHA-256"  # the mechanism of the optional SASL listener (`LocalKafka(scram=...)`)
SLF4J_VERSION = "1.7.36"  # the slf4j line kafka 4.1 is built against
CACHE = Path(os.environ.get("SENDGATE_CACHE", Path.home() / ".cache" / "sendgate"))

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>sendgate</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""


class BrokerError(RuntimeError):
    """The local broker could not be provisioned or started; the message says what to do."""


def require_tools() -> None:
    for tool, package in (
        ("java", "a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)"),
        ("mvn", "Maven (Debian: apt-get install maven)"),
    ):
        if shutil.which(tool) is None:
            raise BrokerError(
                f"'{tool}' is not on PATH: install {package} to run the local Kafka broker, "
                f"or set SENDGATE_BOOTSTRAP=host:port to use an existing one"
            )


def kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory holding Kafka's runtime classpath, downloading it on first use."""
    libs = CACHE / f"kafka-{version}" / "libs"
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    require_tools()
    work = CACHE / f"kafka-{version}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(POM.format(kafka=version, slf4j=SLF4J_VERSION))
    tmp = work / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"sendgate: fetching Apache Kafka {version} jars from Maven Central into {libs} (once)", file=sys.stderr)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BrokerError(f"mvn could not fetch Kafka {version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)  # only a complete download becomes the cache
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"  # KRaft's ACL authorizer


def server_properties(
    port: int, controller_port: int, log_dir: Path, sasl_port: int | None = None, super_users: tuple[str, ...] = ()
) -> str:
    """With `super_users` (principals, `User:NAME`) the broker authorizes every request with ACLs."""
    # The SASL listener is an extra door for clients; the broker itself keeps talking PLAINTEXT.
    sasl = f",SASL_PLAINTEXT://127.0.0.1:{sasl_port}" if sasl_port else ""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{sasl}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            *(
                [
                    f"sasl.enabled.mechanisms={SCRAM}",
                    # the broker side of SCRAM needs no credentials of its own: they are checked against the metadata log
                    f"listener.name.sasl_plaintext.{SCRAM.lower()}.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                ]
                if sasl_port
                else []
            ),
            *(
                [
                    f"authorizer.class.name={AUTHORIZER}",
                    f"super.users={';'.join(super_users)}",
                    "allow.everyone.if.no.acl.found=false",
                ]
                if super_users
                else []
            ),
            f"log.dirs={log_dir}",
            # One node: internal topics cannot have more than one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # A lone consumer should not wait for others to join.
            "group.initial.rebalance.delay.ms=0",
            # The app creates its topics with explicit partition counts.
            "auto.create.topics.enable=false",
            "num.partitions=1",
            "",
        ]
    )


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


async def wait_for_metadata(bootstrap: str, deadline: float, **client_options: Any) -> None:
    """Wait until the broker answers a metadata request (a listening port is not enough).

    `client_options` are aiokafka's security arguments (`Settings.kafka_options()`)."""
    from aiokafka import AIOKafkaClient

    host, port = bootstrap.rsplit(":", 1)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if _port_open(host, int(port)):  # avoids aiokafka logging every refused connection
            client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, **client_options)
            try:
                await client.bootstrap()
                return
            except Exception as exc:  # listening, but not serving yet
                last = exc
            finally:
                await client.close()
        await asyncio.sleep(0.2)
    raise BrokerError(f"Kafka at {bootstrap} did not answer metadata requests in time: {last}")


def _check_scram_user(user: str, password: str) -> None:
    # Kafka's SCRAM syntax (`SCRAM-SHA-256=[name=U,password=P]`) has no quoting.
    if not user or not password or any(c in user + password for c in ",[]") or "=" in user:
        raise BrokerError(
            "SCRAM user and password must be non-empty, without ',', '[' or ']' (and no '=' in the user name)"
        )


async def create_acls(settings: Settings, acls: list[Acl]) -> None:
    """Send each ACL binding in a CreateAcls request (aiokafka has no admin call for it)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import CreateAclsRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_options())
    await admin.start()
    try:
        for acl in acls:
            for binding in acl.bindings():
                response = await admin._send_request(CreateAclsRequest(*binding))
                [(code, message)] = response.creation_responses
                if code:
                    raise BrokerError(f"adding ACL {acl} failed: {for_code(code).__name__} {message or ''}")
    finally:
        await admin.close()


class LocalKafka:
    """One KRaft broker+controller process on loopback. Use as a context manager or start()/stop().

    With `scram=(user, password)` it also listens for SASL_PLAINTEXT clients with SCRAM-SHA-256 on
    `sasl_bootstrap`, where that user can log in; `users={name: password}` adds more SCRAM users
    (`login(name)` gives the `Settings` fields of one).

    With `authorizer=True` (needs `scram`) every request is authorized by KRaft's StandardAuthorizer
    and its ACLs (`add_acls`), nothing is allowed without one, and the `scram` user is a super user:
    the admin that adds the ACLs.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | os.PathLike | None = None,
        heap: str = "512m",
        scram: tuple[str, str] | None = None,
        sasl_port: int | None = None,
        users: dict[str, str] | None = None,
        authorizer: bool = False,
    ) -> None:
        if (users or authorizer) and scram is None:
            raise BrokerError(
                "SCRAM users and the authorizer need scram=(admin user, password): the SASL "
                "listener they log in on, and the super user that adds ACLs"
            )
        self.scram_users = {scram[0]: scram[1], **(users or {})} if scram else {}
        for user, password in self.scram_users.items():
            _check_scram_user(user, password)
        self.port = port or free_port()
        self.scram = scram
        self.authorizer = authorizer
        self.sasl_port = (sasl_port or free_port()) if scram else None
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="sendgate-kafka-")
        self.data_dir = Path(data_dir or self._tmp).resolve()
        self.heap = heap
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else None

    @property
    def super_users(self) -> tuple[str, ...]:
        """The principals the authorizer lets do anything (none without `authorizer`).

        The broker talks to itself (controller, inter-broker) on PLAINTEXT listeners, as
        `User:ANONYMOUS`, so that principal must be a super user: a separate listener would not
        help, since every PLAINTEXT connection is ANONYMOUS. The PLAINTEXT client listener on
        `bootstrap` is therefore a loopback door with every right (the tests' own checks and
        tools use it); the clients under test are given `sasl_bootstrap` only, where each logs in
        as its own user and gets exactly its ACLs."""
        return ("User:ANONYMOUS", f"User:{self.scram[0]}") if self.authorizer else ()

    @property
    def scram_settings(self) -> dict[str, str]:
        """The `Settings` fields that log in on `sasl_bootstrap` (with `bootstrap=kafka.sasl_bootstrap`)."""
        return self.login(self.scram[0]) if self.scram else {}

    def login(self, user: str) -> dict[str, str]:
        """The `Settings` fields that log in on `sasl_bootstrap` as SCRAM user `user`."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": SCRAM,
            "sasl_username": user,
            "sasl_password": self.scram_users[user],
        }

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def start(self, timeout: float = 90.0) -> "LocalKafka":
        libs = kafka_jars()
        require_tools()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        controller_port = free_port()
        props.write_text(
            server_properties(self.port, controller_port, self.data_dir / "logs", self.sasl_port, self.super_users)
        )
        classpath = f"{libs}/*"
        java = [
            "java",
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            classpath,
        ]
        formatted_now = not (self.data_dir / "logs" / "meta.properties").exists()
        if formatted_now:
            cluster_id = "-"
            while cluster_id.startswith("-"):  # as Kafka's own Uuid.randomUuid: "-..." reads as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # SCRAM credentials live in the metadata log; the first ones can be written with it.
            scram = [
                arg
                for user, password in self.scram_users.items()
                for arg in ("--add-scram", f"{SCRAM}=[name={user},password={password}]")
            ]
            fmt = subprocess.run(
                java + ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), *scram],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        log = open(self.log_file, "ab")
        # Own session: stop() can signal the whole group, and no java outlives us by accident.
        self.process = subprocess.Popen(
            java + ["kafka.Kafka", str(props)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        try:
            asyncio.run(self._wait(self.bootstrap, deadline))
            if self.scram:
                if not formatted_now:  # a kept --data-dir: add or update the users on the running broker
                    for user, password in self.scram_users.items():
                        self._alter_scram(java, user, password)
                # proves the listener and the credentials, not just that the port is open
                login = Settings(bootstrap=self.sasl_bootstrap, **self.scram_settings).kafka_options()
                asyncio.run(self._wait(self.sasl_bootstrap, deadline, **login))
        except BaseException:
            self.close()
            raise
        return self

    def _alter_scram(self, java: list[str], user: str, password: str) -> None:
        result = subprocess.run(
            java
            + [
                "kafka.admin.ConfigCommand",
                "--bootstrap-server",
                self.bootstrap,
                "--alter",
                "--add-config",
                f"{SCRAM}=[password={password}]",
                "--entity-type",
                "users",
                "--entity-name",
                user,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"adding SCRAM user {user!r} failed:\n{result.stdout}{result.stderr}")

    def add_acls(self, acls: Iterable[Acl]) -> None:
        """Add ACLs (streams/local/acls.py), logged in on `sasl_bootstrap` as the super user.

        Kafka 4 moved `kafka-acls.sh` (AclCommand) into the kafka-tools jar, which the broker's
        classpath does not hold, so the same bindings (`Acl.bindings`) go in CreateAcls requests."""
        if not self.authorizer:
            raise BrokerError("ACLs need LocalKafka(authorizer=True)")
        asyncio.run(create_acls(Settings(bootstrap=self.sasl_bootstrap, **self.scram_settings), list(acls)))

    async def _wait(self, bootstrap: str, deadline: float, **client_options: Any) -> None:
        task = asyncio.ensure_future(wait_for_metadata(bootstrap, deadline, **client_options))
        while not task.done():
            if self.process.poll() is not None:
                task.cancel()
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise BrokerError(f"Kafka exited with code {self.process.returncode} while starting:\n{tail}")
            await asyncio.sleep(0.2)
        task.result()

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        """Stop, and remove the data directory if it was a temporary one."""
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "LocalKafka":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
