#!/usr/bin/env bash
# torchrun launch of a tools/ script with mmengine's PyTorch launcher, shared
# by tools/dist_train.sh and tools/dist_test.sh.
#
# Usage: tools/dist_launch.sh SCRIPT GPUS [SCRIPT arguments]
#   SCRIPT is a file name in tools/ (train.py, test.py); GPUS is the number
#   of processes on this node (one per GPU; on a machine without CUDA, CPU
#   processes: the script then uses the gloo backend and the
#   DeviceAwareDistributedDataParallel wrapper by itself).
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# PORT (29500), PYTHON (python; the interpreter that has torch and mmseg).
set -e
CALLER=${DIST_CALLER:-$0}
SCRIPT=$1
GPUS=$2
case "$GPUS" in
    ''|*[!0-9]*|0) echo "$CALLER: GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
shift 2
TOOLS="$(dirname "$0")"
PYTHONPATH="$TOOLS/..":$PYTHONPATH \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" \
    --master_port="${PORT:-29500}" \
    "$TOOLS/$SCRIPT" "$@"
