"""JuiceFS CSI driver."""

DRIVER_NAME = "csi.juicefs.com"
__version__ = "0.1.0"
