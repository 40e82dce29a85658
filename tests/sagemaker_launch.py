"""Execute a rendered SageMaker Pipeline definition step by step, the way SageMaker's containers launch it.

No SageMaker container runs here, so each launcher is emulated from its source:

- **S3** is a folder (``s3://bucket/key`` is ``<root>/s3/bucket/key``). An ``S3Prefix`` input takes every
  key that starts with the prefix, placed at ``key[len(prefix):]`` under the local path (a prefix that is a
  whole key lands as its base name): the layout of the SageMaker SDK's own local mode,
  ``sagemaker/core/common_utils.py::download_folder`` (sagemaker 3.27.0). An input whose prefix matches
  nothing fails the job, as the service does. Outputs (``EndOfJob``) upload the local path's tree.
- **Container paths**: each job gets its own folder ``<root>/jobs/<step>``, and every ``/opt/ml/`` prefix in
  the job's entrypoint, arguments and environment is rewritten to ``<that folder>/opt/ml/`` (nothing else
  is changed: the steps' own code and argv are what SageMaker would run).
- **PySpark processing** (``smspark-submit``): the command line is built as
  ``_construct_spark_submit_command`` of aws/sagemaker-spark-container builds it (src/smspark/cli.py at
  commit 7d90eeb1461f614340475dc4644313a629c3750b: ``spark-submit --master yarn --deploy-mode client``, the
  options, the app and its arguments, **each item ``shlex.quote``d**, joined by spaces) and run through
  ``/bin/sh`` as ``ProcessingJobManager.run`` does (src/smspark/job.py, ``subprocess.run(cmd, shell=True)``).
  A ``spark-submit`` shim first on PATH turns ``--master yarn`` into ``local[N]`` (there is no YARN here)
  and runs pyspark's own spark-submit. Spark runs under the container's Hadoop configuration: the
  bootstrapper copies core-site.xml with ``fs.defaultFS = hdfs://nn_uri/`` and replaces ``nn_uri`` by the
  primary's IP (src/smspark/bootstrapper.py ``copy_cluster_config`` / ``write_runtime_cluster_config``;
  spark/processing/3.5/py3/hadoop-config/core-site.xml). Here ``HADOOP_CONF_DIR`` holds a core-site.xml
  whose default file system is an ``hdfs://`` URI with no NameNode behind it, so a scheme-less path fails
  as it would there (there: nothing found on the empty HDFS; here: connection refused). An ``s3://``
  ``--py-files`` value (smspark passes s3 URIs through unchanged, ``_get_list_of_files``) is read from the
  S3 folder as a ``file://`` URI: Spark's S3A client is the one thing replaced.
- **Plain processing**: the entrypoint runs as an exec-form command (no shell); the image's Python is this
  interpreter. Java is replaced by a stub that fails: a plain step must not start a JVM.
- **Training**: channels are downloaded to ``/opt/ml/input/data/<channel>`` and the job's HyperParameters
  (a string-to-string map in the API) written to ``/opt/ml/input/config/hyperparameters.json``; the
  built-in CatBoost container itself cannot run here, so its stand-in is this project's own trainer
  (components/ranker/train.py, the local runner's) on the same channel layout and formats, with the
  hyperparameters decoded as aws/sagemaker-training-toolkit decodes them
  (src/sagemaker_training/environment.py ``read_hyperparameters``: ``json.loads`` per value, else the
  string; commit 33839372faf8017edb7dafc6290c1ef63557b404) and passed to the script as its command-line
  strings (src/sagemaker_training/mapping.py ``to_cmd_args``). It writes the built-in's ``/opt/ml/model``
  (the native CatBoost file ``model``), which the platform tars to
  ``<S3OutputPath>/<job name>/output/model.tar.gz`` (``ModelArtifacts.S3ModelArtifacts``).
- **Condition / RegisterModel / Fail**: the conditions' ``Std:JsonGet`` paths are resolved in the property
  file the evaluation step uploaded; a passing gate records the model package request (its ModelMetrics
  URI must name an uploaded file), a failing one raises with the Fail step's rendered message.

The steps image's defaults are run as they are: a job whose ``ECOMREC_PIP_INSTALL`` renders non-empty fails
(the packages come from this interpreter's environment, the "image", as they come from the steps image).
The editable install of ecomrec in that environment is hidden from the jobs (a ``sitecustomize`` on their
PYTHONPATH), so their code comes from the uploaded zip only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPT_ML = "/opt/ml/"
EXECUTION_ID = "launch-0001"
TRAINING_JOB_NAME = "ecomrec-train-launch-0001"
STEP_TIMEOUT = 600


class LaunchError(AssertionError):
    """A step failed the way it would fail on SageMaker (the message says which and why)."""


# ------------------------------------------------------------------------------------------------ S3 folder
@dataclass
class S3Folder:
    root: Path

    def path(self, uri: str) -> Path:
        if not uri.startswith("s3://"):
            raise LaunchError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[len("s3://"):].partition("/")
        return self.root / bucket / key

    def keys(self, bucket: str) -> list[str]:
        base = self.root / bucket
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def put(self, uri: str, body: bytes) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)

    def upload_tree(self, local: Path, uri: str) -> None:
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            target = self.path(uri.rstrip("/") + "/" + file.relative_to(local).as_posix())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)

    def download_prefix(self, uri: str, local: Path, *, what: str) -> None:
        """Every key starting with the prefix (S3Prefix), laid out as the SDK's local mode lays it out."""
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        matched = [key for key in self.keys(bucket) if key.startswith(prefix)]
        if not matched:
            raise LaunchError(f"{what}: no S3 object under the prefix {uri} (the job would fail to download "
                              "its input)")
        local.mkdir(parents=True, exist_ok=True)
        for key in matched:
            relative = key[len(prefix):].lstrip("/") or Path(key).name
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.root / bucket / key, target)


# ------------------------------------------------------------------------------------------------ expressions
@dataclass
class Context:
    parameters: dict[str, Any]
    properties: dict[str, str] = field(default_factory=dict)  # "Steps.x.<property path>" -> value
    property_files: dict[str, Any] = field(default_factory=dict)  # "Steps.x.PropertyFiles.Name" -> parsed

    def render(self, expr: Any) -> Any:
        """The run-time value of a definition expression (Get, Std:Join, Std:JsonGet)."""
        if isinstance(expr, str | int | float | bool) or expr is None:
            return expr
        if isinstance(expr, list):
            return [self.render(item) for item in expr]
        if isinstance(expr, dict) and set(expr) == {"Get"}:
            ref = expr["Get"]
            if ref.startswith("Parameters."):
                return self.parameters[ref.removeprefix("Parameters.")]
            if ref == "Execution.PipelineExecutionId":
                return EXECUTION_ID
            if ref not in self.properties:
                raise LaunchError(f"{ref} is not known yet: is the producing step before this one?")
            return self.properties[ref]
        if isinstance(expr, dict) and set(expr) == {"Std:Join"}:
            join = expr["Std:Join"]
            return join["On"].join(_text(self.render(value)) for value in join["Values"])
        if isinstance(expr, dict) and set(expr) == {"Std:JsonGet"}:
            get = expr["Std:JsonGet"]
            document = self.property_files.get(get["PropertyFile"]["Get"])
            if document is None:
                raise LaunchError(f"property file {get['PropertyFile']['Get']} was not produced")
            return json_get(document, get["Path"])
        if isinstance(expr, dict):
            return {key: self.render(value) for key, value in expr.items()}
        raise LaunchError(f"unexpected expression {expr!r}")


def _text(value: Any) -> str:
    """How the service prints a value inside Std:Join (JSON-like: 0.05, 256, true)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_get(document: Any, path: str) -> Any:
    node = document
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise LaunchError(f"JsonGet path {path!r} does not resolve (no {key!r})")
        node = node[key]
    return node


# ------------------------------------------------------------------------------------------------ the machine
@dataclass
class Machine:
    """Stand-ins for what the images bring: an hdfs default file system, spark-submit, no-JVM java."""

    root: Path
    spark_bin: Path = field(init=False)
    hadoop_conf: Path = field(init=False)
    no_java: Path = field(init=False)
    site: Path = field(init=False)
    cores: int = field(default_factory=lambda: os.cpu_count() or 2)

    def __post_init__(self) -> None:
        import pyspark

        self.spark_bin = self.root / "spark-bin"
        self.hadoop_conf = self.root / "hadoop-conf"
        self.no_java = self.root / "no-java"
        self.site = self.root / "site"
        for folder in (self.spark_bin, self.hadoop_conf, self.no_java / "bin", self.site):
            folder.mkdir(parents=True, exist_ok=True)
        real = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        shim = self.spark_bin / "spark-submit"
        shim.write_text(f"""#!{sys.executable}
# smspark-submit runs on YARN; here the same command runs Spark in local mode.
import os, sys
argv = sys.argv[1:]
for i in range(len(argv) - 1):
    if argv[i] == "--master" and argv[i + 1] == "yarn":
        argv[i + 1] = "local[{self.cores}]"
        break
os.execv({str(real)!r}, [{str(real)!r}, "--driver-memory", "2g", *argv])
""")
        shim.chmod(0o755)
        with socket.socket() as probe:  # a port nothing listens on: the NameNode that is not there
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        (self.hadoop_conf / "core-site.xml").write_text(f"""<?xml version="1.0"?>
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:{port}/</value></property>
  <property><name>ipc.client.connect.max.retries</name><value>0</value></property>
  <property><name>ipc.client.connect.max.retries.on.timeouts</name><value>0</value></property>
</configuration>
""")
        java = self.no_java / "bin" / "java"
        java.write_text("#!/bin/sh\necho 'launch harness: a plain processing step started a JVM' >&2\nexit 97\n")
        java.chmod(0o755)
        # The image has no ecomrec installed: hide this environment's editable install from the jobs.
        (self.site / "sitecustomize.py").write_text(
            "import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith("
            "'__editable__')]\n")

    def env(self, job_root: Path, step_env: Mapping[str, str], *, spark: bool) -> dict[str, str]:
        base = {key: value for key, value in os.environ.items()
                if key not in ("PYTHONPATH", "HADOOP_CONF_DIR", "SPARK_HOME", "PYSPARK_SUBMIT_ARGS")
                and not key.startswith(("ECOMREC_", "PYTEST_"))}
        base.update({key: map_opt_ml(value, job_root) for key, value in step_env.items()})
        if base.get("ECOMREC_PIP_INSTALL"):  # the steps image's default is "": a job installs nothing at start
            raise LaunchError(f"the job would pip-install {base['ECOMREC_PIP_INSTALL']!r} at start (needs internet "
                              "egress; the steps image already holds the locked dependencies)")
        base["PYTHONPATH"] = str(self.site)
        base["PYSPARK_PYTHON"] = sys.executable
        base["PYSPARK_DRIVER_PYTHON"] = sys.executable
        base["HADOOP_CONF_DIR"] = str(self.hadoop_conf)
        if spark:
            base["PATH"] = f"{self.spark_bin}{os.pathsep}{base.get('PATH', '')}"
        else:
            base["JAVA_HOME"] = str(self.no_java)
            base["PATH"] = f"{self.no_java / 'bin'}{os.pathsep}{base.get('PATH', '')}"
        return base


def map_opt_ml(value: str, job_root: Path) -> str:
    """Rewrite the /opt/ml prefixes of a container string to the job's folder (nothing else changes)."""
    return value.replace(OPT_ML, f"{job_root}{OPT_ML}")


# ------------------------------------------------------------------------------------------------ smspark
SMSPARK_OPTIONS = ("--class", "--jars", "--py-files", "--files", "--spark-event-logs-s3-uri",
                   "--local-spark-event-logs-dir")


def smspark_submit_command(entrypoint_args: Sequence[str], container_arguments: Sequence[str],
                           map_s3: Callable[[str], str]) -> str:
    """smspark-submit's command line for ``smspark-submit <entrypoint_args> <container_arguments>``.

    Transcribes src/smspark/cli.py (aws/sagemaker-spark-container at 7d90eeb1): click parses the options up
    to the app (``allow_interspersed_args=False``: everything after the app is the app's), the event-log
    options are dropped, ``--jars/--files/--py-files`` keep s3 URIs as they are, and
    ``_construct_spark_submit_command`` quotes every item with ``shlex.quote``."""
    argv = [*entrypoint_args, *container_arguments]
    options: dict[str, str] = {}
    verbose = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("-v", "--verbose"):
            verbose, i = True, i + 1
            continue
        if argv[i] not in SMSPARK_OPTIONS:
            raise LaunchError(f"smspark-submit: no such option {argv[i]} (the job exits: Couldn't parse input)")
        options[argv[i]] = argv[i + 1]
        i += 2
    if i >= len(argv):
        raise LaunchError("smspark-submit: missing the app argument")
    app, app_arguments = argv[i], argv[i + 1:]
    spark_options: list[str] = []
    for name in ("--class", "--jars", "--py-files", "--files"):  # click's declaration order
        value = options.get(name)
        if value:
            if name != "--class":
                value = ",".join(map_s3(part) for part in value.split(","))
            spark_options += [name, value]
    if verbose:
        spark_options.append("--verbose")
    cmd = ["spark-submit", "--master", "yarn", "--deploy-mode", "client", *spark_options, app, *app_arguments]
    return " ".join(shlex.quote(c) for c in cmd)


# ------------------------------------------------------------------------------------------------ training
def decode_hyperparameters(raw: Mapping[str, str]) -> dict[str, Any]:
    """sagemaker_training.environment.read_hyperparameters: each value through json.loads, else as is."""
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except (ValueError, TypeError):
            decoded[key] = value
    return decoded


def script_argument(value: Any) -> str:
    """sagemaker_training.mapping.to_cmd_args -> _decode: how a decoded value reaches the script's argv."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return str(value)


def builtin_catboost_stand_in(opt_ml: Path) -> None:
    """The built-in CatBoost's job, done by the project's local trainer on the container's layout."""
    from components.ranker.train import train_catboost

    raw = json.loads((opt_ml / "input/config/hyperparameters.json").read_text())
    decoded = decode_hyperparameters(raw)
    algorithm = {key: script_argument(value) for key, value in decoded.items() if not key.startswith("sagemaker_")}
    data = opt_ml / "input/data"
    with tempfile.TemporaryDirectory(prefix="builtin-") as scratch:
        train_catboost(data / "training", data / "validation", algorithm, Path(scratch))
        with tarfile.open(Path(scratch) / "model.tar.gz") as archive:
            archive.extractall(opt_ml / "model", filter="data")


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class LaunchResult:
    s3: S3Folder
    outputs: dict[str, str]  # step name -> its output S3 URI (the model archive for training)
    registered: dict[str, Any] | None  # the rendered RegisterModel request, None when the gate failed
    logs: dict[str, str]

    def local(self, uri: str) -> Path:
        return self.s3.path(uri)


def run_definition(definition: Mapping[str, Any], raw: Path, root: Path, code_objects: Mapping[str, bytes],
                   *, stand_in_objects: Mapping[str, bytes] | None = None,
                   parameters: Mapping[str, Any] | None = None) -> LaunchResult:
    """Run every step of ``definition`` in order with its parameters' defaults (``parameters`` overrides).
    ``raw`` is uploaded to ``InputDataUri``, ``code_objects`` ({s3 uri: bytes}, what ``runner.upsert``
    uploads) and ``stand_in_objects`` (e.g. the JumpStart model artefact) to theirs."""
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    context = Context(parameters={**defaults, **(parameters or {})})
    s3 = S3Folder(root / "s3")
    machine = Machine(root / "machine")
    s3.upload_tree(raw, str(context.parameters["InputDataUri"]))
    for uri, body in {**code_objects, **(stand_in_objects or {})}.items():
        s3.put(uri, body)
    outputs: dict[str, str] = {}
    logs: dict[str, str] = {}
    registered: dict[str, Any] | None = None
    for step in definition["Steps"]:
        name, kind, args = step["Name"], step["Type"], step["Arguments"]
        job_root = root / "jobs" / name
        if kind == "Processing":
            logs[name] = _processing(step, job_root, context, s3, machine)
            (output,) = args["ProcessingOutputConfig"]["Outputs"]
            outputs[name] = context.properties[
                f"Steps.{name}.ProcessingOutputConfig.Outputs['{output['OutputName']}'].S3Output.S3Uri"]
        elif kind == "Training":
            outputs[name] = _training(step, job_root, context, s3)
        elif kind == "Condition":
            registered = _condition(step, context, s3)
        else:
            raise LaunchError(f"step {name}: type {kind} is not emulated")
    return LaunchResult(s3=s3, outputs=outputs, registered=registered, logs=logs)


def _download_inputs(inputs: Sequence[Mapping[str, Any]], job_root: Path, context: Context, s3: S3Folder,
                     step: str) -> None:
    for item in inputs:
        source = item["S3Input"]
        if source["S3DataType"] != "S3Prefix" or source.get("S3InputMode", "File") != "File":
            raise LaunchError(f"{step}: only File-mode S3Prefix inputs are emulated, got {source}")
        local = Path(map_opt_ml(source["LocalPath"], job_root))
        s3.download_prefix(str(context.render(source["S3Uri"])), local, what=f"{step} input {item['InputName']}")


def _processing(step: Mapping[str, Any], job_root: Path, context: Context, s3: S3Folder, machine: Machine) -> str:
    name, args = step["Name"], step["Arguments"]
    app = args["AppSpecification"]
    _download_inputs(args.get("ProcessingInputs", []), job_root, context, s3, name)
    outputs = args["ProcessingOutputConfig"]["Outputs"]
    for output in outputs:
        Path(map_opt_ml(output["S3Output"]["LocalPath"], job_root)).mkdir(parents=True, exist_ok=True)
    entrypoint = [map_opt_ml(str(context.render(x)), job_root) for x in app["ContainerEntrypoint"]]
    arguments = [map_opt_ml(_text(context.render(x)), job_root) for x in app.get("ContainerArguments", [])]
    step_env = {key: _text(context.render(value)) for key, value in args.get("Environment", {}).items()}
    spark = entrypoint[0] == "smspark-submit"
    env = machine.env(job_root, step_env, spark=spark)
    if spark:
        command = smspark_submit_command(entrypoint[1:], arguments, lambda uri: (
            f"file://{s3.path(uri)}" if uri.startswith("s3://") else uri))
        result = subprocess.run(command, shell=True, env=env, cwd=job_root, capture_output=True, text=True,
                                timeout=STEP_TIMEOUT)
    else:
        if Path(entrypoint[0]).name.startswith("python"):
            entrypoint[0] = sys.executable  # the image's Python
        result = subprocess.run([*entrypoint, *arguments], env=env, cwd=job_root, capture_output=True, text=True,
                                timeout=STEP_TIMEOUT)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise LaunchError(f"step {name} exited {result.returncode}:\n{log[-6000:]}")
    for output in outputs:
        uri = str(context.render(output["S3Output"]["S3Uri"]))
        s3.upload_tree(Path(map_opt_ml(output["S3Output"]["LocalPath"], job_root)), uri)
        context.properties[f"Steps.{name}.ProcessingOutputConfig.Outputs['{output['OutputName']}'].S3Output.S3Uri"] \
            = uri
    by_output = {o["OutputName"]: str(context.render(o["S3Output"]["S3Uri"])) for o in outputs}
    for prop in step.get("PropertyFiles", []):
        path = s3.path(by_output[prop["OutputName"]].rstrip("/") + "/" + prop["FilePath"])
        if not path.is_file():
            raise LaunchError(f"step {name}: property file {prop['FilePath']} not in its output")
        context.property_files[f"Steps.{name}.PropertyFiles.{prop['PropertyFileName']}"] = json.loads(path.read_text())
    return log


def _training(step: Mapping[str, Any], job_root: Path, context: Context, s3: S3Folder) -> str:
    name, args = step["Name"], step["Arguments"]
    opt_ml = job_root / "opt/ml"
    for channel in args["InputDataConfig"]:
        source = channel["DataSource"]["S3DataSource"]
        if source["S3DataType"] != "S3Prefix":
            raise LaunchError(f"{name}: channel {channel['ChannelName']}: only S3Prefix is emulated")
        s3.download_prefix(str(context.render(source["S3Uri"])), opt_ml / "input/data" / channel["ChannelName"],
                           what=f"{name} channel {channel['ChannelName']}")
    hyperparameters = context.render(args.get("HyperParameters", {}))
    for key, value in hyperparameters.items():  # CreateTrainingJob's HyperParameters: string -> string
        if not isinstance(value, str):
            raise LaunchError(f"{name}: hyperparameter {key}={value!r} is not a string (the API refuses it)")
    script = hyperparameters.get("sagemaker_submit_directory", "")
    if script.startswith("s3://") and not s3.path(script).is_file():  # the toolkit downloads it first
        raise LaunchError(f"{name}: sagemaker_submit_directory {script} does not exist")
    config = opt_ml / "input/config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (opt_ml / "model").mkdir(parents=True, exist_ok=True)
    builtin_catboost_stand_in(opt_ml)
    archive = Path(tempfile.mkdtemp(prefix="model-", dir=job_root)) / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for file in sorted((opt_ml / "model").rglob("*")):
            tar.add(file, arcname=file.relative_to(opt_ml / "model").as_posix())
    output_path = str(context.render(args["OutputDataConfig"]["S3OutputPath"]))
    uri = f"{output_path.rstrip('/')}/{TRAINING_JOB_NAME}/output/model.tar.gz"
    s3.put(uri, archive.read_bytes())
    context.properties[f"Steps.{name}.ModelArtifacts.S3ModelArtifacts"] = uri
    return uri


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualTo": lambda a, b: a >= b, "GreaterThan": lambda a, b: a > b,
    "LessThanOrEqualTo": lambda a, b: a <= b, "LessThan": lambda a, b: a < b, "Equals": lambda a, b: a == b,
}


def _condition(step: Mapping[str, Any], context: Context, s3: S3Folder) -> dict[str, Any] | None:
    args = step["Arguments"]
    passed = all(_COMPARE[c["Type"]](float(context.render(c["LeftValue"])), float(context.render(c["RightValue"])))
                 for c in args["Conditions"])
    branch = args["IfSteps"] if passed else args["ElseSteps"]
    registered = None
    for inner in branch:
        if inner["Type"] == "Fail":
            raise LaunchError(f"step {inner['Name']}: {context.render(inner['Arguments']['ErrorMessage'])}")
        if inner["Type"] != "RegisterModel":
            raise LaunchError(f"step {inner['Name']}: type {inner['Type']} is not emulated")
        registered = context.render(inner["Arguments"])
        for container in registered["InferenceSpecification"]["Containers"]:
            if not s3.path(container["ModelDataUrl"]).is_file():
                raise LaunchError(f"{inner['Name']}: ModelDataUrl {container['ModelDataUrl']} does not exist")
        statistics = registered["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
        if not s3.path(statistics).is_file():
            raise LaunchError(f"{inner['Name']}: ModelMetrics {statistics} does not exist")
    return registered
