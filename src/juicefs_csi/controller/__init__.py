"""Controller side: creating, deleting and resizing volumes inside a JuiceFS file system."""
