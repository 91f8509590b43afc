#!/usr/bin/env bash
# The main job, on real images that ship inside a PyPI package: install the main job's runtime only
# (requirements/runtime.txt: numpy, openvino, tqdm, matplotlib, nibabel for NIfTI, pynrrd for NRRD; no SimpleITK,
# scipy, torch or test stack) into its own environment, then segment the pyradiomics CT (lung tumour) and MR
# (brain lesions) test volumes with the shipped model; writes demo-output/. Everything downloaded goes to
# demo-data/ (its environment included): delete that folder to start again.
# usage: scripts/demo.sh [VENV_DIR]   (default demo-data/venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-demo-data/venv}"
bin="$venv/bin"
# The environment is made once per runtime.txt + pyproject.toml (their hash is its stamp) and holds only what runs:
# pip and setuptools, which came with the venv, are removed after the install (about 26 MB), so a change of
# requirements rebuilds it instead of topping it up.
stamp="$venv/qmedsam-runtime.sha256"
wanted="$(cat requirements/runtime.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  if [ -e "$venv" ] && [ ! -f "$stamp" ] && [ "$venv" != demo-data/venv ]; then
    echo "$venv exists and was not made by scripts/demo.sh; give a new folder (it is deleted when rebuilt)." >&2
    exit 2
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  pip=("$bin/python" -m pip --quiet --disable-pip-version-check)
  "${pip[@]}" install -r requirements/runtime.txt
  "${pip[@]}" install --no-deps -e .
  "${pip[@]}" uninstall --yes pip setuptools
  echo "$wanted" > "$stamp"
fi
data=demo-data/pyradiomics-3.0.1/data
if [ ! -f "$data/lung2_image.nrrd" ]; then
  mkdir -p demo-data
  # The sdist itself, checked against its pinned sha256 (pip would have to build its metadata first, which needs
  # setuptools and versioneer in this environment).
  "$bin/python" - demo-data/pyradiomics-3.0.1.tar.gz <<'PY'
import hashlib, os, sys, urllib.request
URL = ("https://files.pythonhosted.org/packages/1b/35/c7f7fb7affd302fd8107dcee6b6e7aaf3708b75ad69d5f9a3dfcadb73eaa/"
       "pyradiomics-3.0.1.tar.gz")
SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
target = sys.argv[1]
if not (os.path.isfile(target) and hashlib.sha256(open(target, "rb").read()).hexdigest() == SHA256):
    with urllib.request.urlopen(URL, timeout=600) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        sys.exit(f"{URL} does not have the pinned sha256 {SHA256}; not using it.")
    with open(target + ".part", "wb") as file:
        file.write(data)
    os.replace(target + ".part", target)
PY
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
