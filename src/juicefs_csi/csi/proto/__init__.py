"""Generated protobuf/gRPC code for the CSI spec (csi.v1); see scripts/gen-proto.sh."""
