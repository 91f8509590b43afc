#!/usr/bin/env bash
# The main job, on real images that ship inside a PyPI package: install, then segment the pyradiomics
# CT (lung tumour) and MR (brain lesions) test volumes with the shipped model; writes demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh .venv
bin=.venv/bin
data=demo-data/pyradiomics-3.0.1/data
if [ ! -f "$data/lung2_image.nrrd" ]; then
  mkdir -p demo-data
  # pyradiomics' sdist needs versioneer to report its version when pip reads its metadata.
  "$bin/pip" install --quiet --disable-pip-version-check versioneer==0.29
  "$bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
    pyradiomics==3.0.1 -d demo-data
  tar -xzf demo-data/pyradiomics-3.0.1.tar.gz -C demo-data \
    pyradiomics-3.0.1/data/lung2_image.nrrd pyradiomics-3.0.1/data/lung2_label.nrrd \
    pyradiomics-3.0.1/data/brain1_image.nrrd pyradiomics-3.0.1/data/brain1_label.nrrd
fi
# --overwrite: demo-output/ belongs to this script; rerunning it replaces its own results.
"$bin/qmedsam" segment "$data/lung2_image.nrrd" --boxes demo/lung2_tumour.boxes.json --window 40,400 \
  -o demo-output --overlay --overwrite
"$bin/qmedsam" segment "$data/brain1_image.nrrd" --boxes demo/brain1_lesions.boxes.json \
  -o demo-output --overlay --overwrite
"$bin/python" demo/dice_against_label.py demo-output/lung2_image_labels.nii.gz "$data/lung2_label.nrrd"
"$bin/python" demo/dice_against_label.py demo-output/brain1_image_labels.nii.gz "$data/brain1_label.nrrd"
echo "label images and overlay PNGs are in demo-output/"
