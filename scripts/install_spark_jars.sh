#!/usr/bin/env bash
# Install the S3A connector jars that pip's pyspark lacks.
#
#   scripts/install_spark_jars.sh [DEST]      # DEST defaults to vendor/jars/ in the repository
#
# pyspark from PyPI has no s3a:// filesystem and Maven Central may be out of
# reach, so the jars come from the PyPI source package sagemaker-pyspark,
# which bundles them. Only the two jars are kept; the package itself is never
# installed (it pins an old pyspark). Running it again is a no-op once both
# jars are in DEST with the pinned hashes.
set -euo pipefail

PACKAGE="sagemaker-pyspark==1.4.5"
ARCHIVE_DIR="sagemaker_pyspark-1.4.5/deps/jars"
# sha256 of the jars as shipped in sagemaker-pyspark 1.4.5; a different value
# means a corrupted or substituted download.
declare -A SHA256=(
  [hadoop-aws-3.3.1.jar]=6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e
  [aws-java-sdk-bundle-1.11.901.jar]=b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead
)

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo_root/vendor/jars}
# pip of the project's virtualenv when there is one, so the download uses its index settings.
python=${PYTHON:-$repo_root/.venv/bin/python}
[[ -x $python ]] || python=python3

has_pinned_hash() {
  local jar=$1
  [[ -f $dest/$jar ]] && [[ $(sha256sum "$dest/$jar" | cut -d' ' -f1) == "${SHA256[$jar]}" ]]
}

missing=()
for jar in "${!SHA256[@]}"; do
  has_pinned_hash "$jar" || missing+=("$jar")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "S3A jars already in $dest"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading $PACKAGE (~180 MB) for ${missing[*]}"
"$python" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" "$PACKAGE"
archive=$(ls "$work"/sagemaker_pyspark-*.tar.gz)
members=()
for jar in "${missing[@]}"; do members+=("$ARCHIVE_DIR/$jar"); done
tar -xzf "$archive" -C "$work" "${members[@]}"

# Check every jar before installing any: a failed run leaves DEST as it was.
for jar in "${missing[@]}"; do
  actual=$(sha256sum "$work/$ARCHIVE_DIR/$jar" | cut -d' ' -f1)
  if [[ $actual != "${SHA256[$jar]}" ]]; then
    echo "error: $jar from $PACKAGE has sha256 $actual, expected ${SHA256[$jar]};" \
      "the download is corrupt or the package changed on the index; nothing was installed in $dest" >&2
    exit 1
  fi
done
mkdir -p "$dest"
for jar in "${missing[@]}"; do
  # Copy then rename, so an interrupted run never leaves a partial jar under its final name.
  cp "$work/$ARCHIVE_DIR/$jar" "$dest/.$jar.partial"
  mv "$dest/.$jar.partial" "$dest/$jar"
  echo "installed $dest/$jar"
done
