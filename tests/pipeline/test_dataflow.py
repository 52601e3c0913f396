"""The Dataflow path, proven offline: Beam's own DataflowRunner translates and templates the job,
the launch script and the flex entry point hand it the right settings, the container files stay in
step with pyproject.toml, and no launch reads or writes Cloud Storage (the workers do that).

Google's APIs are replaced by a recorder on loopback (tests/support/cloud_fixtures.py): google-cloud-storage
is pointed at it through STORAGE_EMULATOR_HOST, gcloud through its endpoint overrides.
"""

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

from pipeline import cli, finalize, transforms, worker_setup
from tests.support import cloud_fixtures
from tests.support.paths import FIXTURE_ANNOTATIONS, ROOT

DEPLOY = ROOT / "deploy"
PROJECT = "facegrid-project"
REGION = "us-central1"
BUCKET = "facegrid-bucket"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/facegrid/facegrid-flex:test"
ACCOUNT = f"facegrid-runner@{PROJECT}.iam.gserviceaccount.com"
# The settings deploy/launch.sh and deploy/README.md recommend.
WORKER_SETTINGS = ["--machine_type=n2-highcpu-8", "--max_num_workers=4"]
OUR_STEPS = {
    "BeginBuild",
    "WriteShards/ShardIndices",
    "WriteShards/SpreadShards",
    "WriteShards/PrepareAndWrite",
    "Finalize/Gather",
    "Finalize/Commit",
}


@pytest.fixture
def google_apis(monkeypatch, tmp_path):
    """Every Cloud Storage call of this process goes to a recorder; returns its call list."""
    with cloud_fixtures.fake_google_apis() as (endpoint, calls):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        monkeypatch.setenv(
            "GOOGLE_APPLICATION_CREDENTIALS", str(cloud_fixtures.write_fake_google_credentials(tmp_path / "adc.json"))
        )
        yield calls


def _job_flags(split: str = "train") -> list[str]:
    """The build as a Dataflow user writes it: every path on gs:// (the workers read the annotation file)."""
    return [
        f"--annotations=gs://{BUCKET}/wider_face_split/wider_face_{split}_bbx_gt.txt",
        f"--images_dir=gs://{BUCKET}/images",
        f"--output_dir=gs://{BUCKET}/shards",
        f"--split={split}",
        "--runner=DataflowRunner",
        f"--project={PROJECT}",
        f"--region={REGION}",
        "--no_auth",
        "--sdk_location=container",
        f"--sdk_container_image={IMAGE}",
    ]


def _python_dofns(proto: beam_runner_api_pb2.Pipeline) -> dict[str, object]:
    """{transform name: DoFn} for every Python ParDo of a pipeline proto, unpickled as a worker
    would (facegrid's own as they run inside the worker_setup.Configured that carries them)."""
    found = {}
    for transform in proto.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        do_fn = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn
        if do_fn.urn == python_urns.PICKLED_DOFN_INFO:
            fn = pickler.loads(do_fn.payload)[0]
            found[transform.unique_name] = fn._fn if isinstance(fn, worker_setup.Configured) else fn
    return found


def _check_graph(proto: beam_runner_api_pb2.Pipeline, template: bool = False) -> None:
    """Our steps, with our DoFns and their gs:// settings, all to run in the container image."""
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert names >= OUR_STEPS
    dofns = _python_dofns(proto)
    (write_fn,) = [fn for name, fn in dofns.items() if name.startswith("WriteShards/PrepareAndWrite")]
    assert isinstance(write_fn, transforms.WriteShardFn)
    assert f"gs://{BUCKET}/images" in repr(vars(write_fn))  # what the workers get, untouched at launch
    assert write_fn._annotations.startswith(f"gs://{BUCKET}/wider_face_split/")  # each writer reads the annotation file
    begin = dofns["BeginBuild"]
    assert isinstance(begin, transforms.BeginBuildFn) and begin._output.output_dir == f"gs://{BUCKET}/shards"
    # A template's graph runs many times: each run draws its own build id, none is baked in.
    # Nor is the launcher's process: on Dataflow a lease lives by its heartbeats.
    assert (begin._output.build_id is None) == template and begin._output.pid is None
    assert isinstance(dofns["Finalize/Commit"], finalize.FinalizeFn)

    used = {t.environment_id for t in proto.components.transforms.values() if t.environment_id}
    assert used
    for env_id in used:
        environment = proto.components.environments[env_id]
        assert environment.urn == common_urns.environments.DOCKER.urn
        assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == IMAGE


def test_dry_run_translates_the_job_for_dataflow(google_apis):
    result = cli.run([*_job_flags(), "--dry_run=True", f"--temp_location=gs://{BUCKET}/tmp"])

    assert result.state == beam.runners.runner.PipelineState.DONE
    _check_graph(result.job.proto_pipeline)
    options = result.job.options.get_all_options()
    assert options["sdk_container_image"] == IMAGE and options["project"] == PROJECT
    assert google_apis == []  # the launcher never touched gs://: the workers read and write it


def test_classic_template_carries_the_image_and_worker_settings(google_apis, tmp_path):
    template, staging = tmp_path / "template.json", tmp_path / "staging"
    staging.mkdir()
    cli.run(
        [
            *_job_flags(),
            f"--template_location={template}",
            f"--staging_location={staging}",
            f"--temp_location={staging}",
            "--dataflow_endpoint=http://localhost:1",  # any call to the Dataflow API would fail
            *WORKER_SETTINGS,
        ]
    )

    spec = json.loads(template.read_text())
    (pool,) = spec["environment"]["workerPools"]
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [image["containerImage"] for image in pool["sdkHarnessContainerImages"]] == [IMAGE]
    # One SDK process per vCPU, the basis of deploy/README.md's worker sizing.
    assert pool["sdkHarnessContainerImages"][0]["useSingleCorePerContainer"] is True
    assert (pool["machineType"], pool["autoscalingSettings"]["maxNumWorkers"]) == ("n2-highcpu-8", 4)
    options = spec["environment"]["sdkPipelineOptions"]["options"]
    assert (options["sdk_container_image"], options["machine_type"], options["max_num_workers"]) == (IMAGE, "n2-highcpu-8", 4)
    # The graph the workers will run was staged beside the template.
    staged = pathlib.Path(options["pipelineUrl"])
    assert staged.parent == staging
    _check_graph(beam_runner_api_pb2.Pipeline.FromString(staged.read_bytes()), template=True)
    assert google_apis == []


def test_flex_entry_point_defaults_to_dataflow(google_apis, tmp_path):
    """The launcher runs deploy/flex/main.py with parameters and Dataflow options, no --runner."""
    template = tmp_path / "job.json"
    flags = [f for f in _job_flags() if not f.startswith("--runner=")]
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "flex" / "main.py"), *flags, f"--template_location={template}",
         f"--staging_location={tmp_path}", f"--temp_location={tmp_path}", "--dataflow_endpoint=http://localhost:1"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "train: written as a template by DataflowRunner; nothing was built" in done.stdout
    (pool,) = json.loads(template.read_text())["environment"]["workerPools"]
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert google_apis == []


def _metadata() -> dict:
    return json.loads((DEPLOY / "flex" / "metadata.json").read_text())


def test_flex_metadata_parameters_are_the_pipeline_flags():
    from absl import flags

    fv = flags.FlagValues()
    cli.define_flags(fv)
    parameters = {p["name"]: p for p in _metadata()["parameters"]}
    assert list(parameters) == list(dict.fromkeys(fv))  # every flag, in order, nothing else
    assert all(fv[name].default is None for name in cli.REQUIRED)
    for name, parameter in parameters.items():
        flag = fv[name]
        assert parameter["isOptional"] == (name not in cli.REQUIRED)
        assert parameter.get("defaultValue") == (None if flag.default is None else str(flag.default))
        assert flag.help.split(": ", 1)[-1] in parameter["helpText"]
        if isinstance(flag, flags.EnumFlag):
            assert [o["value"] for o in parameter["enumOptions"]] == flag.parser.enum_values
        for regex in parameter.get("regexes", []):
            assert parameter.get("defaultValue") is None or re.fullmatch(regex, parameter["defaultValue"])

    # Regenerating it changes nothing, and Dataflow's own schema accepts every field.
    spec = importlib.util.spec_from_file_location("make_metadata", DEPLOY / "flex" / "make_metadata.py")
    make_metadata = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_metadata)
    assert make_metadata.main(["--check"]) == 0
    from google.cloud import dataflow_v1beta3

    parsed = dataflow_v1beta3.TemplateMetadata.from_json((DEPLOY / "flex" / "metadata.json").read_text())
    assert [p.name for p in parsed.parameters] == list(parameters)


def test_make_metadata_help_prints_and_writes_nothing(capsys):
    metadata = DEPLOY / "flex" / "metadata.json"
    before = (metadata.read_bytes(), metadata.stat().st_mtime_ns)
    spec = importlib.util.spec_from_file_location("make_metadata", DEPLOY / "flex" / "make_metadata.py")
    make_metadata = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_metadata)
    assert make_metadata.main(["--help"]) == 0
    assert "--check" in capsys.readouterr().out
    assert make_metadata.main(["--chek"]) == 2
    assert "unexpected arguments --chek" in capsys.readouterr().err
    assert (metadata.read_bytes(), metadata.stat().st_mtime_ns) == before


def test_launch_script_help():
    done = subprocess.run(["bash", str(DEPLOY / "launch.sh"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "deploy/launch.sh PROJECT REGION BUCKET IMAGE" in done.stdout and not done.stderr


def test_the_images_are_built_on_pinned_bases():
    """No moving tag: the worker image on Beam's own 2.77.0 image, the launcher from one dated
    release (Google tags those by date, not Beam version) or a digest."""
    for path in (DEPLOY / "Dockerfile", DEPLOY / "flex" / "Dockerfile"):
        for base in re.findall(r"^FROM (\S+)", path.read_text(), re.M):
            assert base.startswith("${") or re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", base), (path, base)
            assert not base.endswith(":latest"), (path, base)
    flex = (DEPLOY / "flex" / "Dockerfile").read_text()
    launcher = re.search(r"^ARG LAUNCHER_IMAGE=(\S+)$", flex, re.M).group(1)
    assert re.fullmatch(
        r"gcr\.io/dataflow-templates-base/python3\d+-template-launcher-base"
        r"(:flex_templates_base_image_release_\d{8}_RC\d\d|@sha256:[0-9a-f]{64})",
        launcher,
    ), launcher
    assert re.search(r"^FROM \$\{LAUNCHER_IMAGE\} AS launcher$", flex, re.M)
    assert re.search(r"^FROM \$\{WORKER_IMAGE\}$", flex, re.M)  # the worker image's Beam 2.77.0


def _gcloud_env(tmp_path, endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"{endpoint}/storage/v1/",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_DATAFLOW": f"{endpoint}/",
    }


def test_launch_script_builds_and_runs_the_flex_template(tmp_path):
    # The python machine image ships the gcloud CLI; users of launch.sh have it too.
    assert shutil.which("gcloud"), "the gcloud CLI is expected on PATH (Google Cloud SDK)"
    with cloud_fixtures.fake_google_apis() as (endpoint, calls):
        done = subprocess.run(
            ["bash", str(DEPLOY / "launch.sh"), PROJECT, REGION, f"gs://{BUCKET}", IMAGE, "val", "--", "--image_format=raw"],
            capture_output=True, text=True, timeout=120, env={**_gcloud_env(tmp_path, endpoint), "SERVICE_ACCOUNT": ACCOUNT},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    upload, launch = calls  # the template spec to Cloud Storage, then the launch: nothing else

    name, spec = cloud_fixtures.uploaded(upload)
    template = f"gs://{BUCKET}/{name}"
    assert upload.path.startswith(f"/upload/storage/v1/b/{BUCKET}/o") and name == "facegrid/templates/facegrid-build.json"
    spec = json.loads(spec)
    assert spec["image"] == IMAGE and spec["sdkInfo"]["language"] == "PYTHON" and spec["metadata"] == _metadata()

    assert launch.path.startswith(f"/v1b3/projects/{PROJECT}/locations/{REGION}/flexTemplates:launch")
    request = json.loads(launch.body)["launchParameter"]
    assert request["containerSpecGcsPath"] == template
    assert request["environment"]["machineType"] == "n2-highcpu-8" and request["environment"]["maxWorkers"] == 4
    assert request["environment"]["tempLocation"] == f"gs://{BUCKET}/facegrid/tmp"
    assert request["environment"]["serviceAccountEmail"] == ACCOUNT
    values = request["parameters"]
    assert values.pop("sdk_container_image") == IMAGE  # the workers run the template's own image
    assert values == {
        "annotations": f"gs://{BUCKET}/wider_face/wider_face_split/wider_face_val_bbx_gt.txt",
        "images_dir": f"gs://{BUCKET}/wider_face/WIDER_val/images",
        "output_dir": f"gs://{BUCKET}/facegrid/shards",
        "split": "val",
        "num_shards": "8",
        "image_format": "raw",
    }
    # Each value passes the checks Dataflow makes against metadata.json before launching.
    declared = {p["name"]: p for p in _metadata()["parameters"]}
    assert {n for n, p in declared.items() if not p["isOptional"]} <= set(values)
    for name, value in values.items():
        assert all(re.fullmatch(regex, value) for regex in declared[name].get("regexes", [])), (name, value)


def test_launch_script_direct_mode_submits_without_touching_storage(tmp_path):
    """MODE=direct runs `python -m pipeline` on this machine; a dry run stops before submitting."""
    with cloud_fixtures.fake_google_apis() as (endpoint, calls):
        env = {
            **os.environ,
            "MODE": "direct",
            "PYTHON": sys.executable,
            "STORAGE_EMULATOR_HOST": endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(cloud_fixtures.write_fake_google_credentials(tmp_path / "adc.json")),
        }
        done = subprocess.run(
            ["bash", str(DEPLOY / "launch.sh"), PROJECT, REGION, BUCKET, IMAGE, "test", "--", "--dry_run=True", "--no_auth"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "test: translated by DataflowRunner (dry run); nothing was built or written" in done.stdout
    assert calls == []


@pytest.mark.parametrize(
    "args, env",
    [
        ([PROJECT, REGION, BUCKET], {}),
        ([PROJECT, REGION, BUCKET, IMAGE, "training"], {}),
        ([PROJECT, REGION, BUCKET, IMAGE, "train"], {"MODE": "local"}),
        ([PROJECT, REGION, BUCKET, IMAGE, "train", "--", "--no_auth"], {}),  # flex takes --name=value only
        ([PROJECT, REGION, BUCKET, IMAGE, "train", "--", "--num_shards=64"], {}),  # that is NUM_SHARDS
    ],
)
def test_launch_script_rejects_bad_usage(args, env, tmp_path):
    done = subprocess.run(["bash", str(DEPLOY / "launch.sh"), *args], capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 2 and done.stderr


def test_worker_image_installs_the_pinned_beam_and_only_worker_dependencies():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = pyproject["dependencies"]
    worker = [
        line.strip()
        for line in (DEPLOY / "requirements-worker.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The build's own dependencies, the very ranges pyproject.toml declares; TensorFlow and Keras
    # are the `train` extra's, never a worker's.
    assert set(worker) == set(dependencies)
    assert not {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0] for d in dependencies} & {"tensorflow", "tensorflow-cpu", "keras"}

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    python, beam_version = re.search(r"^FROM apache/beam_python(3\.\d+)_sdk:(\S+)$", dockerfile, re.M).groups()
    assert beam_version == beam.__version__ and f"apache-beam[gcp,aws]=={beam_version}" in dependencies
    assert f"apache_beam.__version__ == '{beam_version}'" in dockerfile
    assert dockerfile.rstrip().endswith('ENTRYPOINT ["/opt/apache/beam/boot"]')
    flex = (DEPLOY / "flex" / "Dockerfile").read_text()
    assert f"/python{python.replace('.', '')}-template-launcher-base:" in flex  # the launcher runs the same Python
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py" in flex and "COPY deploy/flex/main.py /template/main.py" in flex
    assert flex.rstrip().endswith('ENTRYPOINT ["/opt/apache/beam/boot"]')
    # docker build cannot run here: check that what each image copies exists and is in its context.
    for dockerfile in (DEPLOY / "Dockerfile", DEPLOY / "flex" / "Dockerfile"):
        allowed = [
            line[1:].rstrip("/")
            for line in pathlib.Path(f"{dockerfile}.dockerignore").read_text().splitlines()
            if line.startswith("!")
        ]
        sources = [
            source.rstrip("/")
            for line in dockerfile.read_text().splitlines()
            if line.startswith("COPY ") and "--from=" not in line
            for source in line.split()[1:-1]
        ]
        assert sources and all((ROOT / source).exists() and source in allowed for source in sources), (dockerfile, sources)

    import yaml

    build = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    assert [step["args"][:3] for step in build["steps"]] == [
        ["build", "-f", "deploy/Dockerfile"],
        ["build", "-f", "deploy/flex/Dockerfile"],
    ]


def test_what_the_worker_image_copies_runs_a_build_alone(tmp_path):
    """The worker image ships pipeline/ and reader/'s format core only (deploy/Dockerfile): a build
    run from a copy of just those files must work and never reach the readers, the checker or
    TensorFlow."""
    image = tmp_path / "src"
    copies = [line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    for source in copies:
        if source.endswith(".py") or os.path.isdir(ROOT / source):
            target = image / source
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, target)
    assert sorted(p.name for p in (image / "reader").iterdir()) == ["__init__.py", "core"]
    script = (
        "import sys, runpy\n"
        # This checkout is installed editable: its finder would serve reader.* from here, not the copy.
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        f"sys.argv = ['pipeline', '--annotations={FIXTURE_ANNOTATIONS}', '--images_dir={FIXTURE_ANNOTATIONS.parent / 'images'}',\n"
        f"            '--output_dir={tmp_path / 'out'}', '--split=val', '--max_error_fraction=0.5',\n"
        "            '--runner=FnApiRunner', '--direct_running_mode=in_memory']\n"
        "try:\n"
        "    runpy.run_module('pipeline', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "import reader\n"
        f"assert reader.__file__.startswith({str(image)!r}), reader.__file__\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    # The copy comes first on sys.path, so `reader` is the copy's, whose reader/ holds nothing else.
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=image,
        env={**os.environ, "PYTHONPATH": str(image)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "val.manifest.json").read_text())["counts"]["records"] > 0
