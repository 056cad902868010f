"""Small synthetic datasets in the workloads' real raw layouts, for the demo and tests."""
