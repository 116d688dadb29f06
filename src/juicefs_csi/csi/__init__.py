"""The CSI boundary: gRPC services that turn requests into calls on the driver's core."""
