"""One way to get a Spark session, the same in a SageMaker container, on one machine and in tests."""

from __future__ import annotations

import os
import shutil
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


def _local_jit_options(master: str | None) -> str:
    """On one machine most Spark jobs are short: the C1 JIT alone cut the first ETL run on Online Retail
    from ~65 s to ~42 s of CPU. ECOMREC_SPARK_JIT=full keeps the full tiered JIT (long, large runs)."""
    local = master is not None or not (os.path.exists("/opt/ml/processing") or os.path.exists("/opt/ml/config"))
    if not local or os.environ.get("ECOMREC_SPARK_JIT", "c1") == "full":
        return ""
    return "-XX:TieredStopAtLevel=1"


def get_spark(app_name: str = "ecomrec", *, master: str | None = None, driver_memory: str | None = None,
              shuffle_partitions: int | None = None) -> SparkSession:
    """Return the active session or build one.

    Defaults suit a small machine: few shuffle partitions (the default 200 makes every small job slow),
    UTC session time (naive timestamps are UTC by contract), Arrow for toPandas, no UI.
    On SageMaker the processing container sets the master and memory; ``master`` stays None there.
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
                f"-Duser.timezone=UTC -XX:G1PeriodicGCInterval=10000 {_local_jit_options(master)}".strip())
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    in_sagemaker = os.path.exists("/opt/ml/processing") or os.path.exists("/opt/ml/config")
    if master or not in_sagemaker:
        builder = builder.master(master or os.environ.get("ECOMREC_SPARK_MASTER", f"local[{cores}]"))
        # one machine: bind to loopback instead of whatever the hostname resolves to
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.driver.memory", driver_memory or os.environ.get(
            "ECOMREC_SPARK_DRIVER_MEMORY", "8g"))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
