#!/bin/sh
# Container entrypoint (run from the project root, the image's WORKDIR):
#   (no arguments)          dvc repro             the whole stage graph
#   stage NAME [ARGS...]    python stages/NAME.py ARGS...   one stage, e.g. `stage pretrain --help`
#   anything else           exec'd as given, e.g. `dvc exp run -S pretrain.nu=1.0`, `snakemake -n`, `bash`
set -eu

if [ "$#" -eq 0 ]; then
    exec dvc repro
fi

if [ "$1" = "stage" ]; then
    shift
    if [ "$#" -eq 0 ]; then
        echo "usage: stage NAME [ARGS...]; stages: $(cd stages && ls -- *.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
        exit 2
    fi
    name=$1
    shift
    case "$name" in
        */* | .* | "")
            echo "stage: invalid name '$name'" >&2
            exit 2
            ;;
    esac
    if [ ! -f "stages/$name.py" ]; then
        echo "stage: no stage '$name'; stages: $(cd stages && ls -- *.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
        exit 2
    fi
    exec python "stages/$name.py" "$@"
fi

exec "$@"
