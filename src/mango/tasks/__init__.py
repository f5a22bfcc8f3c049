"""Tasks: readers, transforms, metrics and data checks per dataset."""
