"""Starting, watching and stopping inference servers, and classifying why they failed."""
