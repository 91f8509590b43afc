#!/usr/bin/env bash
# The main job, on real images that ship inside a PyPI package: install the engine's runtime only
# (requirements/runtime.txt: numpy, openvino, SimpleITK, tqdm, matplotlib, surface-distance; no torch, no
# test stack) into its own environment, then segment the pyradiomics CT (lung tumour) and MR (brain
# lesions) test volumes with the shipped model; writes demo-output/. Everything downloaded goes to
# demo-data/ (its environment included): delete that folder to start again.
# usage: scripts/demo.sh [VENV_DIR]   (default demo-data/venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-demo-data/venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
bin="$venv/bin"
pip=("$bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -r requirements/runtime.txt
"${pip[@]}" --no-deps -e .
data=demo-data/pyradiomics-3.0.1/data
if [ ! -f "$data/lung2_image.nrrd" ]; then
  mkdir -p demo-data
  # pip reads the metadata of pyradiomics' sdist in this environment: it needs versioneer (its version) and a
  # setuptools with bdist_wheel (the venv's bundled one is too old); the same setuptools pin as lock.txt.
  "${pip[@]}" versioneer==0.29 "setuptools==$(sed -n 's/^setuptools==//p' requirements/lock.txt)"
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
