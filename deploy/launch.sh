#!/usr/bin/env bash
# Builds one WIDER FACE split on Google Cloud Dataflow.
#
#   deploy/launch.sh PROJECT REGION BUCKET IMAGE [SPLIT] [-- --FLAG=VALUE ...]
#   deploy/launch.sh --help      prints this
#
#   PROJECT   Google Cloud project id
#   REGION    Dataflow region, e.g. us-central1
#   BUCKET    bucket with the data, written with or without gs://
#   IMAGE     the Flex Template image (deploy/flex/Dockerfile); the workers run it too
#   SPLIT     train (default), val or test
#   after --  more facegrid flags (--num_shards=64, --image_format=raw, ...) and, in direct
#             mode, any Beam/Dataflow option
#
# Reads gs://BUCKET/wider_face/ laid out as deploy/README.md uploads it, and writes the split's
# shards, manifest and errors.jsonl to gs://BUCKET/facegrid/shards/. Environment:
#
#   MODE=flex      (default) put the Flex Template spec at gs://BUCKET/facegrid/templates/ with
#                  gcloud, then launch it: nothing runs on this machine but gcloud
#   MODE=direct    submit from this machine: `python -m pipeline --runner=DataflowRunner`; needs
#                  this repository installed, with the Beam and Python versions of IMAGE
#   DATA=gs://...  where the WIDER FACE folders are (default gs://BUCKET/wider_face)
#   OUTPUT=gs://...  where the shards go (default gs://BUCKET/facegrid/shards)
#   MACHINE_TYPE, MAX_WORKERS, NUM_SHARDS  worker settings; defaults from deploy/README.md's sizing
#   SERVICE_ACCOUNT  email of the service account the launcher and workers run as (default: the
#                  project's Compute Engine default account)
#   PYTHON         interpreter for MODE=direct (default python3)
set -euo pipefail
# Empty arrays expand as ${A[@]+"${A[@]}"}: bash 3.2 (macOS) calls a bare "${A[@]}" unbound.

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
[[ $# -ge 4 ]] || usage
PROJECT=$1
REGION=$2
BUCKET=${3#gs://}
BUCKET=${BUCKET%/}
IMAGE=$4
shift 4
SPLIT=train
if [[ $# -gt 0 && $1 != -- ]]; then
  SPLIT=$1
  shift
fi
if [[ $# -gt 0 ]]; then
  [[ $1 == -- ]] || usage
  shift
fi
EXTRA=("$@")

DATA=${DATA:-gs://$BUCKET/wider_face}
OUTPUT=${OUTPUT:-gs://$BUCKET/facegrid/shards}
MODE=${MODE:-flex}
# Sizing (deploy/README.md): one SDK process per vCPU, measured at most ~250 MB each, so 1 GB per
# vCPU (highcpu) leaves room; 8 vCPUs turn a WIDER split into shards in minutes.
MACHINE_TYPE=${MACHINE_TYPE:-n2-highcpu-8}
MAX_WORKERS=${MAX_WORKERS:-4}

case $SPLIT in
  train) ANNOTATIONS=$DATA/wider_face_split/wider_face_train_bbx_gt.txt IMAGES=$DATA/WIDER_train/images SHARDS=32 ;;
  val) ANNOTATIONS=$DATA/wider_face_split/wider_face_val_bbx_gt.txt IMAGES=$DATA/WIDER_val/images SHARDS=8 ;;
  test) ANNOTATIONS=$DATA/wider_face_split/wider_face_test_filelist.txt IMAGES=$DATA/WIDER_test/images SHARDS=32 ;;
  *) echo "launch.sh: SPLIT must be train, val or test, got '$SPLIT'" >&2; exit 2 ;;
esac
NUM_SHARDS=${NUM_SHARDS:-$SHARDS}
JOB_NAME=facegrid-$SPLIT-$(date -u +%Y%m%d-%H%M%S)
STAGING=gs://$BUCKET/facegrid/staging
TEMP=gs://$BUCKET/facegrid/tmp
ACCOUNT=()

case $MODE in
  flex)
    [[ -z ${SERVICE_ACCOUNT:-} ]] || ACCOUNT=("--service-account-email=$SERVICE_ACCOUNT")
    TEMPLATE=gs://$BUCKET/facegrid/templates/facegrid-build.json
    HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    PARAMETERS=(
      "--parameters=annotations=$ANNOTATIONS"
      "--parameters=images_dir=$IMAGES"
      "--parameters=output_dir=$OUTPUT"
      "--parameters=split=$SPLIT"
      "--parameters=num_shards=$NUM_SHARDS"
      # The workers run the template's own image, where facegrid is installed.
      "--parameters=sdk_container_image=$IMAGE"
    )
    for flag in ${EXTRA[@]+"${EXTRA[@]}"}; do
      [[ $flag == --*=* ]] || { echo "launch.sh: flex mode takes --name=value flags, got '$flag'" >&2; exit 2; }
      name=${flag%%=*}
      case ${name#--} in
        annotations | images_dir | output_dir | split | num_shards | sdk_container_image)
          echo "launch.sh: $name is launch.sh's to set (see SPLIT, IMAGE, DATA, OUTPUT, NUM_SHARDS)" >&2
          exit 2
          ;;
      esac
      PARAMETERS+=("--parameters=${flag#--}")
    done
    gcloud dataflow flex-template build "$TEMPLATE" \
      --project="$PROJECT" \
      --image="$IMAGE" \
      --sdk-language=PYTHON \
      --metadata-file="$HERE/flex/metadata.json"
    gcloud dataflow flex-template run "$JOB_NAME" \
      --project="$PROJECT" \
      --region="$REGION" \
      --template-file-gcs-location="$TEMPLATE" \
      --staging-location="$STAGING" \
      --temp-location="$TEMP" \
      --worker-machine-type="$MACHINE_TYPE" \
      --max-workers="$MAX_WORKERS" \
      ${ACCOUNT[@]+"${ACCOUNT[@]}"} \
      "${PARAMETERS[@]}"
    ;;
  direct)
    [[ -z ${SERVICE_ACCOUNT:-} ]] || ACCOUNT=("--service_account_email=$SERVICE_ACCOUNT")
    exec "${PYTHON:-python3}" -m pipeline \
      --annotations="$ANNOTATIONS" \
      --images_dir="$IMAGES" \
      --output_dir="$OUTPUT" \
      --split="$SPLIT" \
      --num_shards="$NUM_SHARDS" \
      --runner=DataflowRunner \
      --project="$PROJECT" \
      --region="$REGION" \
      --job_name="$JOB_NAME" \
      --staging_location="$STAGING" \
      --temp_location="$TEMP" \
      --sdk_container_image="$IMAGE" \
      --sdk_location=container \
      --machine_type="$MACHINE_TYPE" \
      --max_num_workers="$MAX_WORKERS" \
      ${ACCOUNT[@]+"${ACCOUNT[@]}"} \
      ${EXTRA[@]+"${EXTRA[@]}"}
    ;;
  *) echo "launch.sh: MODE must be flex or direct, got '$MODE'" >&2; exit 2 ;;
esac
