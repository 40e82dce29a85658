"""One way to get a Spark session, the same in a SageMaker container, on one machine and in tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from components.errors import EcomrecError


def _check_java() -> None:
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    raise EcomrecError(
        "Spark needs Java 17 and none was found (no JAVA_HOME, no java on PATH): run `bash .ci/setup`, "
        "which installs it."
    )


def _in_sagemaker() -> bool:
    """A SageMaker processing or training container, where the platform sets master and memory."""
    return os.path.exists("/opt/ml/processing") or os.path.exists("/opt/ml/config")


# Raw input from which the local JVM keeps its full tiered JIT. Measured on this 2-core machine (ETL step
# alone, wall): Online Retail (2.7 MB of raw Parquet) 22.7-24.7 s with C1 only vs 26.7-30.3 s with the full
# JIT; 1M synthetic events (18 MB) a wash (35-40 s either way, but the JVM grew to 4.3 GB PSS instead of 2.6
# in the pipeline); 10M (161 MB) 218 vs 132 s.
FULL_JIT_MIN_INPUT_BYTES = 64 << 20


def _local_jit_options(master: str | None, input_bytes: int | None) -> str:
    """Most Spark jobs on one machine are short, and C1 alone compiles them sooner (the first ETL run on
    Online Retail: ~65 s -> ~42 s of CPU); a large input's long jobs want C2's optimised loops.
    ECOMREC_SPARK_JIT=c1|full overrides the choice made from ``input_bytes`` (None: assume small)."""
    local = master is not None or not _in_sagemaker()
    choice = os.environ.get("ECOMREC_SPARK_JIT", "auto")
    if choice not in ("auto", "c1", "full"):
        raise EcomrecError(f"ECOMREC_SPARK_JIT={choice!r}: expected auto, c1 or full")
    if choice == "auto":
        choice = "full" if (input_bytes or 0) >= FULL_JIT_MIN_INPUT_BYTES else "c1"
    return "-XX:TieredStopAtLevel=1" if local and choice == "c1" else ""


def local_uri(path: Path | str) -> str:
    """What Spark should read or write for a local path: an explicit ``file://`` URI (a URI is kept). In
    SageMaker's Spark container the Hadoop default file system is HDFS (the bootstrapper's core-site.xml:
    fs.defaultFS = hdfs://<primary>/), so a bare /opt/ml/processing/... path would name an HDFS path: the
    inputs would not be found and the outputs would never reach the folder SageMaker uploads."""
    text = str(path)
    return text if "://" in text else "file://" + os.path.abspath(text)


def local_input_bytes(root: Path) -> int:
    """Size of the files under a local directory (0 for a URI or a missing path): sizes the session."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def get_spark(app_name: str = "ecomrec", *, master: str | None = None, driver_memory: str | None = None,
              shuffle_partitions: int | None = None, input_bytes: int | None = None) -> SparkSession:
    """Return the active session or build one.

    Defaults suit a small machine: few shuffle partitions (the default 200 makes every small job slow),
    UTC session time (naive timestamps are UTC by contract), Arrow for toPandas, no UI.
    On SageMaker the processing container sets the master and memory; ``master`` stays None there.
    ``input_bytes`` (the raw input's size, when known) picks the local JIT (see _local_jit_options).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    _check_java()
    cores = os.cpu_count() or 2
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions or max(4, 2 * cores)))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.compression.codec", "snappy")
        # The local pipeline runs pandas steps beside an idle JVM: a periodic G1 cycle hands the heap it no
        # longer uses back to the OS instead of holding the ETL's high-water mark for the whole run.
        .config("spark.driver.extraJavaOptions",
                f"-Duser.timezone=UTC -XX:G1PeriodicGCInterval=10000 {_local_jit_options(master, input_bytes)}".strip())
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if master or not _in_sagemaker():
        builder = builder.master(master or os.environ.get("ECOMREC_SPARK_MASTER", f"local[{cores}]"))
        # one machine: bind to loopback instead of whatever the hostname resolves to
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.driver.memory", driver_memory or os.environ.get(
            "ECOMREC_SPARK_DRIVER_MEMORY", "8g"))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
