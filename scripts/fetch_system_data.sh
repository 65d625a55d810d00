#!/usr/bin/env bash
# Make sure the offline Fashion-MNIST copy exists on this machine (Debian package
# dataset-fashion-mnist). As root it is installed; otherwise the exact command is printed.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
[ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
if [ -d data/fashion_mnist ] && ls data/fashion_mnist/*.gz >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
else
  echo "Fashion-MNIST is missing. Install it with:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
  echo "or place the four *-ubyte.gz files in data/fashion_mnist/ and run 'make data' again." >&2
  exit 1
fi
