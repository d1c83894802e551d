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

KAFKA_VERSION = "4.1.1"
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
    for tool, package in (("java", "a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)"),
                          ("mvn", "Maven (Debian: apt-get install maven)")):
        if shutil.which(tool) is None:
            raise BrokerError(f"'{tool}' is not on PATH: install {package} to run the local Kafka broker, "
                              f"or set SENDGATE_BOOTSTRAP=host:port to use an existing one")


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
        ["mvn", "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"mvn could not fetch Kafka {version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)  # only a complete download becomes the cache
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_properties(port: int, controller_port: int, log_dir: Path) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
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
    ])


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


async def wait_for_metadata(bootstrap: str, deadline: float) -> None:
    """Wait until the broker answers a metadata request (a listening port is not enough)."""
    from aiokafka import AIOKafkaClient

    host, port = bootstrap.rsplit(":", 1)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if _port_open(host, int(port)):  # avoids aiokafka logging every refused connection
            client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                await client.bootstrap()
                return
            except Exception as exc:  # listening, but not serving yet
                last = exc
            finally:
                await client.close()
        await asyncio.sleep(0.2)
    raise BrokerError(f"Kafka at {bootstrap} did not answer metadata requests in time: {last}")


class LocalKafka:
    """One KRaft broker+controller process on loopback. Use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, data_dir: str | os.PathLike | None = None,
                 heap: str = "512m") -> None:
        self.port = port or free_port()
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="sendgate-kafka-")
        self.data_dir = Path(data_dir or self._tmp).resolve()
        self.heap = heap
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def start(self, timeout: float = 90.0) -> "LocalKafka":
        libs = kafka_jars()
        require_tools()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        controller_port = free_port()
        props.write_text(server_properties(self.port, controller_port, self.data_dir / "logs"))
        classpath = f"{libs}/*"
        java = ["java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(java + ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        log = open(self.log_file, "ab")
        # Own session: stop() can signal the whole group, and no java outlives us by accident.
        self.process = subprocess.Popen(java + ["kafka.Kafka", str(props)], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        try:
            asyncio.run(self._wait(deadline))
        except BaseException:
            self.close()
            raise
        return self

    async def _wait(self, deadline: float) -> None:
        task = asyncio.ensure_future(wait_for_metadata(self.bootstrap, deadline))
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
