#!/usr/bin/env bash
# Distributed testing with torchrun and mmengine's PyTorch launcher.
#
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py arguments]
#   GPUS is the number of processes on this node (see tools/dist_train.sh).
#
# Multi-node (run on every node, same MASTER_ADDR and PORT):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_test.sh CONFIG CKPT 8
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_test.sh CONFIG CKPT 8
#
# Environment: as tools/dist_train.sh.
set -e
if [ "$#" -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
    exit 2
fi
[ -f "$1" ] || { echo "$0: config file not found: $1" >&2; exit 2; }
[ -f "$2" ] || { echo "$0: checkpoint file not found: $2" >&2; exit 2; }
DIST_CALLER=$0 exec "$(dirname "$0")/dist_launch.sh" test.py "$3" \
    "$1" "$2" --launcher pytorch "${@:4}"
