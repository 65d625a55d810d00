#!/usr/bin/env bash
# Runs a command on a PATH without SLURM, as on a machine that has never seen it:
#
#   tests/slurm/without_slurm.sh COMMAND [ARG...]
#
# Debian installs SLURM's commands in /usr/bin beside python, git and make, so dropping PATH
# entries cannot hide them. PATH becomes one temporary directory holding, for every executable of
# the current PATH (the first of each name, as a lookup would find it) except SLURM's commands and
# daemons, a two-line script that execs it by its full path. Not a symlink: a virtualenv's python
# finds its environment from the path it was started by, and multi-call programs read their name.
# The directory is removed when the command ends. Exit status: the command's; 2 for a usage
# error; 1 if a SLURM command is still found (a bug here, not in the command).
set -euo pipefail

readonly SLURM_COMMANDS="sacct sacctmgr salloc sattach sbatch sbcast scancel scontrol scrontab sdiag seff
sh5util sinfo sjobexitmod sjstat smail smap sprio squeue sreport srun sshare sstat strigger sview"

if (($# == 0)); then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

is_slurm() { [[ $1 == slurm* || " ${SLURM_COMMANDS//$'\n'/ } " == *" $1 "* ]]; }

bin=$(mktemp -d "${TMPDIR:-/tmp}/path-without-slurm.XXXXXX")
trap 'rm -rf "$bin"' EXIT
declare -A seen=()
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    [[ -n $dir && -d $dir ]] || continue
    for file in "$dir"/*; do
        name=${file##*/}
        [[ -z ${seen[$name]:-} && -x $file && ! -d $file ]] || continue
        seen[$name]=1
        is_slurm "$name" || printf '#!/bin/bash\nexec %q "$@"\n' "$file" >"$bin/$name"
    done
done
chmod -R a+x "$bin"

for name in $SLURM_COMMANDS; do
    if PATH=$bin command -v "$name" >/dev/null; then
        echo "without_slurm.sh: $name is still on the new PATH" >&2
        exit 1
    fi
done
PATH=$bin "$@"
