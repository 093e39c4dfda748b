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
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

if [ ! -f "$CONFIG" ]; then
    echo "$0: config file not found: $CONFIG" >&2
    exit 2
fi
case "$GPUS" in
    ''|*[!0-9]*|0) echo "$0: GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
