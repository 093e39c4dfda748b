#!/usr/bin/env bash
# Distributed training with torchrun and mmengine's PyTorch launcher.
#
# Usage: tools/dist_train.sh CONFIG GPUS [tools/train.py arguments]
#   GPUS is the number of processes on this node (one per GPU; on a machine
#   without CUDA, CPU processes: train.py then uses the gloo backend and
#   the DeviceAwareDistributedDataParallel wrapper by itself).
#
# Multi-node (run on every node, same MASTER_ADDR and PORT):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# PORT (29500), PYTHON (python; the interpreter that has torch and mmseg).
set -e
if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments]" >&2
    exit 2
fi
if [ ! -f "$1" ]; then
    echo "$0: config file not found: $1" >&2
    exit 2
fi
DIST_CALLER=$0 exec "$(dirname "$0")/dist_launch.sh" train.py "$2" \
    "$1" --launcher pytorch "${@:3}"
