#!/usr/bin/env bash
# Regenerate the Python code for the CSI protobuf definitions.
#
#   src/juicefs_csi/csi/proto/csi.proto  ->  csi_pb2.py, csi_pb2.pyi,
#                                            csi_pb2_grpc.py, csi_pb2_grpc.pyi
#
# Uses grpc_tools.protoc and mypy-protobuf (protoc-gen-mypy, protoc-gen-mypy_grpc)
# from the project's virtualenv; no network access. Override the interpreter
# with PYTHON=/path/to/python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-.venv/bin/python}"
if ! command -v "$PYTHON" >/dev/null 2>&1 && [[ ! -x "$PYTHON" ]]; then
    echo "gen-proto: python interpreter not found: $PYTHON" >&2
    exit 1
fi

# The mypy-protobuf plugins are console scripts installed next to the interpreter.
BIN_DIR="$("$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))')"
for plugin in protoc-gen-mypy protoc-gen-mypy_grpc; do
    if [[ ! -x "$BIN_DIR/$plugin" ]]; then
        echo "gen-proto: $plugin not found in $BIN_DIR (pip install mypy-protobuf)" >&2
        exit 1
    fi
done

SRC_ROOT="src"
PROTO_DIR="juicefs_csi/csi/proto"
OUT_DIR="$SRC_ROOT/$PROTO_DIR"

rm -f "$OUT_DIR"/csi_pb2.py "$OUT_DIR"/csi_pb2.pyi \
      "$OUT_DIR"/csi_pb2_grpc.py "$OUT_DIR"/csi_pb2_grpc.pyi

# Compiling with -I src and the package-relative path makes protoc emit
# package-qualified imports (from juicefs_csi.csi.proto import csi_pb2).
# `python -m grpc_tools.protoc` adds the bundled well-known types
# (google/protobuf/*.proto) to the include path by itself.
"$PYTHON" -m grpc_tools.protoc \
    -I "$SRC_ROOT" \
    --plugin=protoc-gen-mypy="$BIN_DIR/protoc-gen-mypy" \
    --plugin=protoc-gen-mypy_grpc="$BIN_DIR/protoc-gen-mypy_grpc" \
    --python_out="$SRC_ROOT" \
    --grpc_python_out="$SRC_ROOT" \
    --mypy_out="$SRC_ROOT" \
    --mypy_grpc_out="$SRC_ROOT" \
    "$PROTO_DIR/csi.proto"

# Safety net: never leave a top-level `import csi_pb2` in the generated code.
sed -i -E \
    -e 's/^import csi_pb2 as /from juicefs_csi.csi.proto import csi_pb2 as /' \
    -e 's/^import csi_pb2$/from juicefs_csi.csi.proto import csi_pb2/' \
    "$OUT_DIR"/csi_pb2_grpc.py "$OUT_DIR"/csi_pb2_grpc.pyi
if grep -nE '^(import|from) csi_pb2( |$)' "$OUT_DIR"/csi_pb2_grpc.py "$OUT_DIR"/csi_pb2_grpc.pyi; then
    echo "gen-proto: generated code still imports csi_pb2 as a top-level module" >&2
    exit 1
fi

# Smoke check: the modules import and expose the three CSI services.
PYTHONPATH="$SRC_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - <<'EOF'
from juicefs_csi.csi.proto import csi_pb2, csi_pb2_grpc

services = sorted(csi_pb2.DESCRIPTOR.services_by_name)
assert services == ["Controller", "Identity", "Node"], services
for name in ("IdentityServicer", "ControllerServicer", "NodeServicer"):
    assert hasattr(csi_pb2_grpc, name), name
EOF

echo "gen-proto: generated $(ls "$OUT_DIR"/csi_pb2*.py* | tr '\n' ' ')"
