"""Mount pod mode, pure part: names, the global ConfigMap, and the mount pod and Secret it produces.

Nothing here does I/O; the node plugin sends what these builders return with lightkube.
"""
